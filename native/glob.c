/*
 * The exclude matcher in C (API and contract in glob.h): compileRule of
 * src/pipeline/excludes.ts, byte for byte, without a regex engine.
 *
 * A pattern compiles to a small NFA whose states each consume one byte
 * from a 256-bit set:
 *   CONSUME  one byte of its set, then the next state (literals, '?', [...])
 *   LOOP     any number of bytes of its set, then (epsilon) the next state
 *            ('*' is LOOP over every byte but '/')
 *   OPT      like CONSUME, and also an epsilon edge over the following
 *            state (a non-trailing '**' component, see below)
 * The reference turns a '**' component into (?:/[^/]*)* ("zero or more
 * components") or, as the last component, (?:/[^/]*)+ ("at least one").
 * Those languages are simply "" | "/"any* and "/"any*, so '**' compiles to
 * '/' (OPT or CONSUME) followed by LOOP over all 256 bytes.
 *
 * Matching simulates the NFA on a bitset of states (Thompson), so the cost
 * is bounded by path length x states whatever the guest named its files: no
 * backtracking. As in the reference, a rule whose pattern starts or ends
 * with literal bytes is rejected by memcmp before the NFA runs, and a rule
 * that is entirely literal is one comparison.
 */
#ifndef VU_GLOB_STANDALONE
#include "vunify.h"
#endif
#include "glob.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A pattern with more states than this is refused (4 KiB of stack per
 * match). A path component is at most 255 bytes, so only a pattern of
 * dozens of deep components could need more. */
#define MAX_STATES 16384

enum { K_CONSUME, K_LOOP, K_OPT };

struct state {
  unsigned char kind;
  unsigned char set[32];
};

struct rule {
  unsigned char include;
  unsigned char anchored;
  unsigned char exact;       /* every state is a one-byte CONSUME: lit is the whole pattern */
  unsigned char *lit;        /* the bytes of the leading literal states, then the trailing ones */
  size_t plen, slen;         /* literal prefix / suffix lengths (slen 0 when exact) */
  size_t nmid;               /* states between them; state nmid accepts */
  size_t words;              /* 64-bit words of a bitset over nmid + 1 states */
  struct state *mid;
  uint32_t *eps;             /* states with epsilon edges (LOOP, OPT), ascending */
  size_t neps;
};

struct vu_rules {
  size_t n;
  size_t max_words;
  struct rule r[];
};

static inline int in_set(const unsigned char *set, unsigned c) { return set[c >> 3] >> (c & 7) & 1; }
static inline void set_add(unsigned char *set, unsigned c) { set[c >> 3] |= (unsigned char)(1u << (c & 7)); }

/* ---- compiling ----------------------------------------------------------- */

struct builder {
  struct state *st;
  size_t n, cap;
  char *err;
  size_t errlen;
  int failed;
  int anchored;
};

static void fail(struct builder *b, const char *fmt, ...) {
  if (b->failed) return;
  b->failed = 1;
  if (b->errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->err, b->errlen, fmt, ap);
    va_end(ap);
  }
}

static struct state *push(struct builder *b, unsigned kind) {
  if (b->failed) return NULL;
  if (b->n >= MAX_STATES) {
    fail(b, "pattern too long for the matcher (more than %d elements)", MAX_STATES);
    return NULL;
  }
  if (b->n == b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 16;
    struct state *st = realloc(b->st, cap * sizeof *st);
    if (st == NULL) {
      fail(b, "out of memory");
      return NULL;
    }
    b->st = st;
    b->cap = cap;
  }
  struct state *s = &b->st[b->n++];
  memset(s, 0, sizeof *s);
  s->kind = (unsigned char)kind;
  return s;
}

static void push_byte(struct builder *b, unsigned c) {
  struct state *s = push(b, K_CONSUME);
  if (s) set_add(s->set, c);
}

/* Every byte but '/': the set of '*' and '?'. */
static void set_not_slash(unsigned char *set) {
  memset(set, 0xff, 32);
  set[0x2f >> 3] &= (unsigned char)~(1u << (0x2f & 7));
}

static int posix_class(const unsigned char *name, size_t len, unsigned c) {
#define IS(s) (len == sizeof(s) - 1 && memcmp(name, s, len) == 0)
  if (IS("alpha")) return (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
  if (IS("digit")) return c >= 48 && c <= 57;
  if (IS("alnum")) return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
  if (IS("upper")) return c >= 65 && c <= 90;
  if (IS("lower")) return c >= 97 && c <= 122;
  if (IS("xdigit")) return (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
  if (IS("space")) return c == 32 || (c >= 9 && c <= 13);
  if (IS("blank")) return c == 32 || c == 9;
  if (IS("punct"))
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
  if (IS("cntrl")) return c < 32 || c == 127;
  if (IS("print")) return c >= 32 && c <= 126;
  if (IS("graph")) return c >= 33 && c <= 126;
  return -1;
#undef IS
}

/* [...] starting at comp[start] == '['; returns the index of its ']'. */
static size_t bracket(struct builder *b, const unsigned char *comp, size_t len, size_t start) {
  struct state *s = push(b, K_CONSUME);
  if (s == NULL) return len;
  unsigned char set[32] = {0};
  size_t j = start + 1;
  int negate = 0, first = 1;
  if (j < len && (comp[j] == '!' || comp[j] == '^')) {
    negate = 1;
    j++;
  }
  for (;;) {
    if (j >= len) goto unterminated;
    if (comp[j] == ']' && !first) break;
    first = 0;
    if (comp[j] == '[' && j + 1 < len && (comp[j + 1] == ':' || comp[j + 1] == '.' || comp[j + 1] == '=')) {
      unsigned char kind = comp[j + 1];
      size_t close = j + 2;
      while (close + 1 < len && !(comp[close] == kind && comp[close + 1] == ']')) close++;
      if (close + 1 >= len) goto unterminated;
      if (kind != ':') {
        fail(b, "collating elements are not supported");
        return len;
      }
      for (unsigned c = 0; c < 128; c++) {
        int in = posix_class(comp + j + 2, close - (j + 2), c);
        if (in < 0) {
          fail(b, "unknown character class");
          return len;
        }
        if (in) set_add(set, c);
      }
      j = close + 2;
      continue;
    }
    unsigned lo = 0, hi = 0;
    /* readChar of the reference, twice at most */
    for (int k = 0; k < 2; k++) {
      if (j >= len) goto unterminated;
      if (comp[j] == '\\' && ++j >= len) goto unterminated;
      unsigned c = comp[j++];
      if (c >= 0x80) {
        fail(b, "non-ASCII characters are not supported inside [...]");
        return len;
      }
      if (k == 0) {
        lo = hi = c;
        if (!(j < len && comp[j] == '-' && j + 1 < len && comp[j + 1] != ']')) break;
        j++;
      } else {
        hi = c;
      }
    }
    if (hi < lo) {
      fail(b, "reversed range");
      return len;
    }
    for (unsigned c = lo; c <= hi; c++) set_add(set, c);
  }
  if (negate)
    for (int i = 0; i < 32; i++) set[i] = (unsigned char)~set[i];
  set[0x2f >> 3] &= (unsigned char)~(1u << (0x2f & 7));
  set[0] &= (unsigned char)~1u;
  int empty = 1;
  for (int i = 0; i < 32; i++) empty &= set[i] == 0;
  if (empty) {
    fail(b, "a bracket expression that can never match");
    return len;
  }
  memcpy(s->set, set, 32);
  return j;
unterminated:
  fail(b, "unterminated '['");
  return len;
}

static void component(struct builder *b, const unsigned char *comp, size_t len) {
  for (size_t i = 0; i < len && !b->failed; i++) {
    unsigned c = comp[i];
    if (c == '\\') {
      if (i + 1 >= len) {
        fail(b, "'\\' at the end of the pattern escapes nothing");
        return;
      }
      push_byte(b, comp[++i]);
    } else if (c == '*') {
      while (i + 1 < len && comp[i + 1] == '*') i++;
      struct state *s = push(b, K_LOOP);
      if (s) set_not_slash(s->set);
    } else if (c == '?') {
      struct state *s = push(b, K_CONSUME);
      if (s) set_not_slash(s->set);
    } else if (c == '[') {
      i = bracket(b, comp, len, i);
    } else {
      push_byte(b, c);
    }
  }
}

struct span {
  size_t start, len;
};

/* Pattern -> states, as compileRule splits and tokenizes it. */
static void tokenize(struct builder *b, const unsigned char *p, size_t n) {
  if (n == 0) {
    fail(b, "empty pattern");
    return;
  }
  if (memchr(p, 0, n) != NULL) {
    fail(b, "NUL cannot occur in file names");
    return;
  }
  /* Components are substrings: an escape keeps both its bytes, a separator
   * ('/' or '\/') belongs to none. At most n + 1 of them. */
  struct span *comps = malloc((n + 1) * sizeof *comps);
  if (comps == NULL) {
    fail(b, "out of memory");
    return;
  }
  size_t nc = 0, start = 0, i = 0;
  while (i < n) {
    if (p[i] == '\\' && i + 1 < n && p[i + 1] != '/') {
      i += 2;
    } else if (p[i] == '/' || (p[i] == '\\' && i + 1 < n)) {
      comps[nc++] = (struct span){start, i - start};
      i += p[i] == '\\' ? 2 : 1;
      start = i;
    } else {
      i++;
    }
  }
  comps[nc++] = (struct span){start, n - start};

  const int anchored = nc > 1;
  if (nc > 1 && comps[nc - 1].len == 0) {
    fail(b, "trailing '/' is not supported");
    goto out;
  }
  size_t c0 = anchored && comps[0].len == 0 ? 1 : 0;
  int prev_globstar = 0;
  for (size_t ci = c0; ci < nc && !b->failed; ci++) {
    const unsigned char *comp = p + comps[ci].start;
    size_t len = comps[ci].len;
    if (len == 0) {
      fail(b, "empty path component ('//')");
      break;
    }
    if ((len == 1 && comp[0] == '.') || (len == 2 && comp[0] == '.' && comp[1] == '.')) {
      fail(b, "'.' and '..' components never occur in walked paths");
      break;
    }
    if (anchored && len == 2 && comp[0] == '*' && comp[1] == '*') {
      if (prev_globstar) continue; /* '**' after '**' adds nothing, and decides nothing */
      prev_globstar = 1;
      struct state *s = push(b, ci == nc - 1 ? K_CONSUME : K_OPT);
      if (s) set_add(s->set, '/');
      s = push(b, K_LOOP);
      if (s) memset(s->set, 0xff, 32);
      continue;
    }
    prev_globstar = 0;
    if (anchored) push_byte(b, '/');
    component(b, comp, len);
  }
out:
  b->anchored = anchored;
  free(comps);
}

static int single_byte(const struct state *s, unsigned *out) {
  if (s->kind != K_CONSUME) return 0;
  int found = -1;
  for (unsigned i = 0; i < 32; i++) {
    if (s->set[i] == 0) continue;
    if (found >= 0 || (s->set[i] & (s->set[i] - 1))) return 0;
    found = (int)(i * 8 + (unsigned)__builtin_ctz(s->set[i]));
  }
  if (found < 0) return 0;
  *out = (unsigned)found;
  return 1;
}

static int compile(struct rule *r, const unsigned char *p, size_t n, char *err, size_t errlen) {
  struct builder b = {.err = err, .errlen = errlen};
  tokenize(&b, p, n);
  if (b.failed) {
    free(b.st);
    return -1;
  }
  r->anchored = (unsigned char)b.anchored;
  size_t ns = b.n;
  unsigned c = 0;
  size_t pre = 0, suf = 0;
  while (pre < ns && single_byte(&b.st[pre], &c)) pre++;
  if (pre == ns) {
    r->exact = 1;
  } else {
    while (suf < ns - pre && single_byte(&b.st[ns - 1 - suf], &c)) suf++;
  }
  r->plen = pre;
  r->slen = suf;
  r->lit = malloc(pre + suf + 1);
  r->nmid = ns - pre - suf;
  r->words = (r->nmid + 1 + 63) / 64;
  r->mid = malloc((r->nmid ? r->nmid : 1) * sizeof *r->mid);
  r->eps = malloc((r->nmid ? r->nmid : 1) * sizeof *r->eps);
  if (r->lit == NULL || r->mid == NULL || r->eps == NULL) {
    free(b.st);
    if (errlen) snprintf(err, errlen, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < pre; i++) {
    single_byte(&b.st[i], &c);
    r->lit[i] = (unsigned char)c;
  }
  for (size_t i = 0; i < suf; i++) {
    single_byte(&b.st[ns - suf + i], &c);
    r->lit[pre + i] = (unsigned char)c;
  }
  memcpy(r->mid, b.st + pre, r->nmid * sizeof *r->mid);
  r->neps = 0;
  for (size_t i = 0; i < r->nmid; i++)
    if (r->mid[i].kind != K_CONSUME) r->eps[r->neps++] = (uint32_t)i;
  free(b.st);
  return 0;
}

struct vu_rules *vu_rules_new(const char *const *patterns, const size_t *lens,
                              const unsigned char *include, size_t n, char *err, size_t errlen) {
  if (errlen) err[0] = '\0';
  struct vu_rules *rs = calloc(1, sizeof *rs + n * sizeof rs->r[0]);
  if (rs == NULL) {
    if (errlen) snprintf(err, errlen, "out of memory");
    return NULL;
  }
  rs->max_words = 1;
  for (size_t i = 0; i < n; i++) {
    struct rule *r = &rs->r[i];
    char why[200];
    if (compile(r, (const unsigned char *)patterns[i], lens[i], why, sizeof why) < 0) {
      if (errlen) {
        int shown = lens[i] > 200 ? 200 : (int)lens[i];
        snprintf(err, errlen, "invalid pattern '%.*s%s': %s", shown, patterns[i], lens[i] > 200 ? "..." : "",
                 why);
      }
      rs->n = i + 1; /* free what compile() left allocated or NULL */
      vu_rules_free(rs);
      return NULL;
    }
    r->include = include[i] ? 1 : 0;
    if (r->words > rs->max_words) rs->max_words = r->words;
    rs->n = i + 1;
  }
  return rs;
}

void vu_rules_free(struct vu_rules *rs) {
  if (rs == NULL) return;
  for (size_t i = 0; i < rs->n; i++) {
    free(rs->r[i].lit);
    free(rs->r[i].mid);
    free(rs->r[i].eps);
  }
  free(rs);
}

/* ---- matching ------------------------------------------------------------ */

static inline void closure(const struct rule *r, uint64_t *set) {
  /* Epsilon edges only go forward, so one ascending pass reaches everything. */
  for (size_t k = 0; k < r->neps; k++) {
    size_t i = r->eps[k];
    if (!(set[i >> 6] >> (i & 63) & 1)) continue;
    size_t to = i + (r->mid[i].kind == K_OPT ? 2 : 1);
    set[to >> 6] |= (uint64_t)1 << (to & 63);
  }
}

static int nfa(const struct rule *r, const unsigned char *s, size_t len, uint64_t *cur, uint64_t *nxt) {
  const size_t w = r->words, m = r->nmid;
  memset(cur, 0, w * sizeof *cur);
  cur[0] = 1;
  closure(r, cur);
  for (size_t pos = 0; pos < len; pos++) {
    const unsigned c = s[pos];
    uint64_t any = 0;
    memset(nxt, 0, w * sizeof *nxt);
    for (size_t wi = 0; wi < w; wi++) {
      for (uint64_t bits = cur[wi]; bits; bits &= bits - 1) {
        size_t i = wi * 64 + (size_t)__builtin_ctzll(bits);
        if (i >= m) continue; /* the accepting state consumes nothing */
        const struct state *st = &r->mid[i];
        if (!in_set(st->set, c)) continue;
        size_t to = st->kind == K_LOOP ? i : i + 1;
        nxt[to >> 6] |= (uint64_t)1 << (to & 63);
        any = 1;
      }
    }
    if (!any) return 0;
    closure(r, nxt);
    uint64_t *t = cur;
    cur = nxt;
    nxt = t;
  }
  return cur[m >> 6] >> (m & 63) & 1;
}

static int rule_matches(const struct rule *r, const unsigned char *path, size_t len, size_t base, uint64_t *a,
                        uint64_t *b) {
  const size_t from = r->anchored ? 0 : base;
  const size_t avail = len - from;
  /* The last literal byte first, then the whole: most rules are rejected
   * there without a call (an anchored literal's first byte is always '/'). */
  if (r->exact)
    return avail == r->plen && (r->plen == 0 || path[len - 1] == r->lit[r->plen - 1]) &&
           memcmp(path + from, r->lit, r->plen) == 0;
  if (avail < r->plen + r->slen) return 0;
  if (r->slen && path[len - 1] != r->lit[r->plen + r->slen - 1]) return 0;
  if (r->plen && path[from + r->plen - 1] != r->lit[r->plen - 1]) return 0;
  if (memcmp(path + from, r->lit, r->plen) != 0) return 0;
  if (memcmp(path + len - r->slen, r->lit + r->plen, r->slen) != 0) return 0;
  return nfa(r, path + from + r->plen, avail - r->plen - r->slen, a, b);
}

int vu_rules_excludes(const struct vu_rules *rs, const char *path, size_t len, size_t base) {
  if (rs == NULL || rs->n == 0) return 0;
  if (base > len) base = len;
  uint64_t a[rs->max_words], b[rs->max_words];
  for (size_t i = 0; i < rs->n; i++) {
    const struct rule *r = &rs->r[i];
    if (rule_matches(r, (const unsigned char *)path, len, base, a, b)) return !r->include;
  }
  return 0;
}

#ifndef VU_GLOB_STANDALONE
/* ---- globExcluded: the whole verdict, for the differential tests ---------- */

/* globExcluded(patterns: Buffer[], include: Uint8Array, path: Buffer) ->
 * boolean: the path's own level and every ancestor's, each first match wins,
 * an excluded ancestor excludes (what compileRules(...).match says). */
napi_value GlobExcluded(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], result;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint32_t n = 0;
  bool is_array = false;
  void *inc = NULL, *path = NULL;
  size_t inc_len = 0, len = 0;
  napi_typedarray_type type;
  napi_value ab;
  size_t ab_off;
  if (argc < 3 || napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[0], &n) != napi_ok ||
      napi_get_typedarray_info(env, argv[1], &type, &inc_len, &inc, &ab, &ab_off) != napi_ok ||
      type != napi_uint8_array || inc_len != n || arg_buffer(env, argv[2], &path, &len) || len == 0 ||
      ((const char *)path)[0] != '/') {
    napi_throw_type_error(env, NULL, "globExcluded(patterns: Buffer[], include: Uint8Array, path: Buffer '/...')");
    return NULL;
  }
  const char **pats = calloc(n ? n : 1, sizeof *pats);
  size_t *lens = calloc(n ? n : 1, sizeof *lens);
  if (pats == NULL || lens == NULL) {
    free(pats);
    free(lens);
    return throw_errno(env, 12, "malloc");
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value el;
    void *d;
    if (napi_get_element(env, argv[0], i, &el) != napi_ok || arg_buffer(env, el, &d, &lens[i])) {
      free(pats);
      free(lens);
      napi_throw_type_error(env, NULL, "globExcluded: every pattern must be a Buffer");
      return NULL;
    }
    pats[i] = d;
  }
  char err[512];
  struct vu_rules *rs = vu_rules_new(pats, lens, inc, n, err, sizeof err);
  free(pats);
  free(lens);
  if (rs == NULL) {
    napi_throw_error(env, "EGLOB", err);
    return NULL;
  }
  const char *p = path;
  int excluded = 0;
  size_t base = 1;
  for (size_t k = 1; k <= len && !excluded; k++) {
    if (k < len && p[k] != '/') continue;
    excluded = vu_rules_excludes(rs, p, k, base);
    base = k + 1;
  }
  vu_rules_free(rs);
  CHECK(napi_get_boolean(env, excluded != 0, &result));
  return result;
}
#endif
