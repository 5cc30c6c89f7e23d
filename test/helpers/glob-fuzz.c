/*
 * native/glob.c on its own, built with AddressSanitizer and UBSan by
 * test/pipeline/excludes.test.ts: random rule sets (valid and not) and
 * random byte paths with random `base` offsets, to show that no pattern the
 * operator writes and no name a guest makes reads or writes out of bounds.
 * Correctness is the differential test's job; this one only has to survive.
 * Prints "compiled N refused N excluded N".
 */
#include "glob.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned long long state;
static unsigned rnd(void) {
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return (unsigned)state;
}

int main(int argc, char **argv) {
  state = argc > 1 ? strtoull(argv[1], NULL, 10) | 1 : 88172645463325252ULL;
  long iterations = argc > 2 ? atol(argv[2]) : 100000;
  static const char *alpha[] = {"a", "b", "/", "*", "?", "**", "[", "]", "!", "^", "-", "\\", "[:alpha:]", "[:",
                                "=]", ".", "..", "\xff", "\xc3\xa9", "[a-z]", "[!a]", "\\/", "/**/", "[]", "[!]"};
  long ok = 0, bad = 0, hits = 0;
  for (long it = 0; it < iterations; it++) {
    char pats[4][64];
    const char *pp[4];
    size_t lens[4];
    unsigned char inc[4];
    size_t n = 1 + rnd() % 4;
    for (size_t k = 0; k < n; k++) {
      size_t len = 0;
      int parts = (int)(rnd() % 8);
      for (int j = 0; j < parts; j++) {
        const char *a = alpha[rnd() % (sizeof alpha / sizeof *alpha)];
        size_t l = strlen(a);
        if (len + l < 63) {
          memcpy(pats[k] + len, a, l);
          len += l;
        }
      }
      if (rnd() % 50 == 0 && len < 63) pats[k][len++] = (char)(rnd() & 0xff);
      /* exactly lens[k] bytes, no NUL after: the matcher must not read past */
      char *exact = malloc(len ? len : 1);
      memcpy(exact, pats[k], len);
      pp[k] = exact;
      lens[k] = len;
      inc[k] = rnd() & 1;
    }
    char err[128];
    struct vu_rules *rs = vu_rules_new(pp, lens, inc, n, err, sizeof err);
    for (size_t k = 0; k < n; k++) free((void *)pp[k]);
    if (rs == NULL) {
      if (err[0] == '\0') return 3; /* a refusal always says why */
      bad++;
      continue;
    }
    ok++;
    for (int q = 0; q < 20; q++) {
      size_t plen = 1 + rnd() % 60;
      char *path = malloc(plen);
      path[0] = '/';
      for (size_t j = 1; j < plen; j++) {
        unsigned c = rnd() % 6;
        path[j] = c == 0 ? '/' : c == 1 ? (char)(rnd() & 0xff) : "ab*[\\"[rnd() % 5];
      }
      hits += vu_rules_excludes(rs, path, plen, rnd() % (plen + 2));
      free(path);
    }
    vu_rules_free(rs);
  }
  printf("compiled %ld refused %ld excluded %ld\n", ok, bad, hits);
  return 0;
}
