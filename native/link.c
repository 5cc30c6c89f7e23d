/*
 * The linker's per-pair sequence (src/change/link.ts linkOne, verify and
 * src/change/swap.ts swap/settle) in one call per batch of pairs that share
 * one canonical: confined opens checked against the scan, the checks,
 * leases and the comparison, the journal entry, the temporary link, the
 * exchange, settle and the unlink of the displaced inode. About 25 calls
 * from JavaScript per link become one call per batch.
 *
 * Only the ordinary outcome is decided here. A pair that does not check out
 * before anything was changed stops the batch with FALLBACK: JavaScript
 * redoes that pair on its own path (link.ts), which re-checks everything and
 * says why in its own words. After the temporary link exists, every other
 * outcome is handed back with the descriptors still open (and a lease still
 * held), and swap.ts finishes it (its messages, undo()). So every rule of
 * link.ts/swap.ts holds; only where it is decided moved.
 *
 * The journal entry and settled mark are written here to the journal's
 * descriptor, in exactly the lines journal.ts writes (its directory already
 * declared by the caller), so recovery reads them unchanged.
 *
 * A test-only fault hook (setLinkFault) fails a step with an errno, or
 * SIGKILLs the process, just before or just after the n-th occurrence of a
 * step; the addon's linkAt/renameAt/unlinkAt count as steps too, so a kill
 * "at the n-th change" means the same whichever path made it.
 */
#include "vunify.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#ifndef FS_IOC_FSGETXATTR
struct fsxattr {
  uint32_t fsx_xflags, fsx_extsize, fsx_nextents, fsx_projid, fsx_cowextsize;
  unsigned char fsx_pad[8];
};
#define FS_IOC_FSGETXATTR _IOR('X', 31, struct fsxattr)
#endif

/* ---- the fault hook ---------------------------------------------------- */

static struct {
  int step, nth, after, err, kill, count;
} fault = {-1, 0, 0, 0, 0, 0};
static int change_count;

int link_fault(int step, int after) {
  int seam = step & STEP_SEAM;
  step &= ~STEP_SEAM;
  if (!after && (step == STEP_LINK || step == STEP_EXCHANGE || step == STEP_UNLINK)) __atomic_add_fetch(&change_count, 1, __ATOMIC_RELAXED);
  /* set only by tests, and then a batch runs on one thread: no race on the counts */
  if (fault.step < 0) return 0;
  int match = (fault.step == step && !seam) ||
              (fault.step == STEP_CHANGE && (step == STEP_LINK || step == STEP_EXCHANGE || step == STEP_UNLINK));
  if (!match) return 0;
  if (!after) fault.count++;
  if (fault.count != fault.nth || fault.after != after) return 0;
  if (fault.kill) kill(getpid(), SIGKILL);
  return fault.err;
}

/* A JavaScript function called at some steps (test-only, setLinkHook): a
 * guest acting at an exact point. Only while a batch runs on this thread. */
static napi_env hook_env;
static napi_ref hook_ref;

static void link_call(int step, int after, int dirfd, const char *name) {
  static const char *const steps[] = {"open", "compare", "link", "journal", "exchange", "settle", "unlink", "change", "lease"};
  if (!hook_ref || !hook_env) return;
  napi_env env = hook_env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn, undef, argv[4], r;
  if (napi_get_reference_value(env, hook_ref, &fn) == napi_ok && fn) {
    napi_get_undefined(env, &undef);
    napi_create_string_utf8(env, steps[step], NAPI_AUTO_LENGTH, &argv[0]);
    napi_create_string_utf8(env, after ? "after" : "before", NAPI_AUTO_LENGTH, &argv[1]);
    napi_create_int32(env, dirfd, &argv[2]);
    void *d;
    napi_create_buffer_copy(env, strlen(name), name, &d, &argv[3]);
    if (napi_call_function(env, undef, fn, 4, argv, &r) != napi_ok) {
      napi_value ex;
      napi_get_and_clear_last_exception(env, &ex); /* a hook's error is the test's to see, not the linker's */
    }
  }
  napi_close_handle_scope(env, scope);
}

/* setLinkHook(fn | null): fn(step, 'before' | 'after', dirFd, name) just
 * before each comparison (once the leases are taken), before each link,
 * before and after each exchange, before the checks that settle it and
 * just after each unlink of the native linker; a batch then runs on one thread (this one). */
napi_value SetLinkHook(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (hook_ref) napi_delete_reference(env, hook_ref), hook_ref = NULL;
  napi_valuetype t = napi_undefined;
  if (argc > 0) napi_typeof(env, argv[0], &t);
  if (t == napi_function) napi_create_reference(env, argv[0], 1, &hook_ref);
  return NULL;
}

/* setLinkFault(step, nth, after, errno, kill): step -1 clears it.
 * -> the number of changes (link, exchange, unlink) made so far. */
napi_value SetLinkFault(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  int64_t v[5] = {-1, 0, 0, 0, 0};
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  for (size_t i = 0; i < argc && i < 5; i++)
    if (arg_int(env, argv[i], &v[i])) {
      napi_throw_type_error(env, NULL, "setLinkFault(step, nth, after, errno, kill)");
      return NULL;
    }
  if (argc > 0) {
    fault.step = (int)v[0], fault.nth = (int)v[1], fault.after = (int)v[2], fault.err = (int)v[3], fault.kill = (int)v[4];
    fault.count = 0;
  }
  napi_value r;
  napi_create_int32(env, __atomic_load_n(&change_count, __ATOMIC_RELAXED), &r);
  return r;
}

/* ---- stats as the JS side has them ------------------------------------- */

/* One Stat as doubles: the order LinkBatch's arrays use (see src/os/sys.ts). */
enum { S_TYPE, S_DEV, S_INO, S_SIZE, S_MODE, S_UID, S_GID, S_NLINK, S_MSEC, S_MNSEC, S_CSEC, S_CNSEC, S_MNT, S_BLOCKS, S_N };

static void to_doubles(const struct statx *st, double *d) {
  d[S_TYPE] = type_of_mode(st->stx_mode);
  d[S_DEV] = (double)statx_dev(st);
  d[S_INO] = (double)st->stx_ino;
  d[S_SIZE] = (double)st->stx_size;
  d[S_MODE] = st->stx_mode;
  d[S_UID] = st->stx_uid;
  d[S_GID] = st->stx_gid;
  d[S_NLINK] = st->stx_nlink;
  d[S_MSEC] = (double)st->stx_mtime.tv_sec;
  d[S_MNSEC] = st->stx_mtime.tv_nsec;
  d[S_CSEC] = (double)st->stx_ctime.tv_sec;
  d[S_CNSEC] = st->stx_ctime.tv_nsec;
  struct stat_rec r;
  fill_record(&r, type_of_mode(st->stx_mode), st, 0);
  d[S_MNT] = (double)r.mnt_id;
  d[S_BLOCKS] = (double)st->stx_blocks;
}

/* core/stat.ts sameFile() */
static int same_file(const double *a, const double *b, int ctime, int nlink) {
  for (int k = S_TYPE; k <= S_GID; k++)
    if (a[k] != b[k]) return 0;
  if (a[S_MSEC] != b[S_MSEC] || a[S_MNSEC] != b[S_MNSEC]) return 0;
  if (ctime && (a[S_CSEC] != b[S_CSEC] || a[S_CNSEC] != b[S_CNSEC])) return 0;
  if (nlink && a[S_NLINK] != b[S_NLINK]) return 0;
  return 1;
}

static int same_inode(const double *a, const double *b) { return a[S_DEV] == b[S_DEV] && a[S_INO] == b[S_INO]; }

static int fstat_d(int fd, double *d) {
  struct statx st;
  if (fd_statx(fd, &st)) return -1;
  to_doubles(&st, d);
  return 0;
}

static int stat_at_d(int dirfd, const char *name, double *d) {
  struct statx st;
  if (do_statx(dirfd, name, 0, &st)) return -1;
  to_doubles(&st, d);
  return 0;
}

/* ---- the comparison (change/compare.ts difference) ---------------------- */

/* Inode flags, 0 where the filesystem has none; -1 on another error. */
static long inode_flags(int fd) {
  int f = 0;
  if (ioctl(fd, FS_IOC_GETFLAGS, &f) < 0)
    return (errno == ENOTTY || errno == EINVAL || errno == EOPNOTSUPP || errno == ENOSYS) ? 0 : -1;
  return (long)(unsigned)f;
}

static long project_id(int fd) {
  struct fsxattr fx;
  if (ioctl(fd, FS_IOC_FSGETXATTR, &fx) < 0)
    return (errno == ENOTTY || errno == EINVAL || errno == EOPNOTSUPP || errno == ENOSYS) ? 0 : -1;
  return (long)fx.fsx_projid;
}

typedef struct {
  char *data;
  size_t len, cap;
} xbuf;

static int xsink(void *ctx, const char *name, size_t name_len, const char *value, size_t value_len) {
  xbuf *b = ctx;
  size_t need = b->len + name_len + value_len + 2 * sizeof(size_t);
  if (need > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) return 1;
    b->data = d, b->cap = cap;
  }
  memcpy(b->data + b->len, &name_len, sizeof name_len), b->len += sizeof name_len;
  memcpy(b->data + b->len, name, name_len), b->len += name_len;
  memcpy(b->data + b->len, &value_len, sizeof value_len), b->len += sizeof value_len;
  memcpy(b->data + b->len, value, value_len), b->len += value_len;
  return 0;
}

/* 1 when both have the same xattrs, value by value; 0 when not; -1 when
 * either cannot be read whole (JS then says why). */
static pthread_mutex_t xattrs_mu = PTHREAD_MUTEX_INITIALIZER;

static int same_xattrs(int a, int b) {
  xbuf x = {0}, y = {0};
  int failed, r = -1;
  /* Neither has any (most files): no lock, no buffer, no futex between the
   * threads; what the lists say is as good as read_xattrs' first call. */
  if (flistxattr(a, NULL, 0) == 0 && flistxattr(b, NULL, 0) == 0) return 1;
  /* One comparison at a time across the threads: a guest's xattrs can take
   * up to 64 MiB a file, and the README promises two such sets in memory at
   * most, whatever the number of threads. Most files have none: two
   * flistxattr calls under the lock. */
  pthread_mutex_lock(&xattrs_mu);
  if (read_xattrs(a, xsink, &x, &failed) >= 0 && read_xattrs(b, xsink, &y, &failed) >= 0)
    r = x.len == y.len && (x.len == 0 || memcmp(x.data, y.data, x.len) == 0);
  free(x.data);
  free(y.data);
  pthread_mutex_unlock(&xattrs_mu);
  return r;
}

/* Files this large are compared by data extents (compare.ts's rule). */
#define CHUNK (1 << 20)
/* Bytes read per file per step: a quarter of CHUNK, so that both pieces
 * are still in the CPU's cache when memcmp reads them (1 MiB pieces were
 * not: comparing 476 MB of identical fleet files, page-cached, 10 times,
 * took 0.20-0.25 s a round in 1 MiB pieces and 0.17-0.18 s in 256 KiB). */
#define READ_CHUNK (CHUNK / 4)

static int read_fully(int fd, char *buf, size_t len, off_t pos) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = pread(fd, buf + got, len - got, pos + (off_t)got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1; /* shrank, or a read error */
    got += (size_t)n;
  }
  return 0;
}

static void next_data(int fd, off_t pos, off_t size, off_t *start, off_t *end) {
  off_t s = lseek(fd, pos, SEEK_DATA);
  if (s < 0 || s >= size) {
    *start = *end = size;
    return;
  }
  off_t e = lseek(fd, s, SEEK_HOLE);
  *start = s;
  *end = e < 0 || e > size ? size : e;
}

static int all_zero(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

/* compare.ts sameBytes: 1 same, 0 differ, -1 read error or shrank. */
static int same_bytes(int fa, int fb, off_t size, char **bufs) {
  if (!bufs[0] && !(bufs[0] = malloc(READ_CHUNK))) return -1;
  if (!bufs[1] && !(bufs[1] = malloc(READ_CHUNK))) return -1;
  int sparse = size >= CHUNK;
  off_t as = 0, ae = sparse ? 0 : size, bs = 0, be = sparse ? 0 : size;
  for (off_t pos = 0; pos < size;) {
    if (pos >= ae) next_data(fa, pos, size, &as, &ae);
    if (pos >= be) next_data(fb, pos, size, &bs, &be);
    int ad = as <= pos, bd = bs <= pos;
    if (!ad && !bd) {
      pos = as < bs ? as : bs;
      continue;
    }
    off_t end = pos + READ_CHUNK;
    off_t lim[3] = {ad ? ae : as, bd ? be : bs, size};
    for (int k = 0; k < 3; k++)
      if (lim[k] < end) end = lim[k];
    size_t len = (size_t)(end - pos);
    if (ad && read_fully(fa, bufs[0], len, pos)) return -1;
    if (bd && read_fully(fb, bufs[1], len, pos)) return -1;
    int same = ad && bd ? memcmp(bufs[0], bufs[1], len) == 0 : all_zero(ad ? bufs[0] : bufs[1], len);
    if (!same) return 0;
    pos = end;
  }
  return 1;
}

/* pipeline/policy.ts FS_FILE_FLAGS: passed in by the caller (the flags a
 * file's sharing key includes), so the rule is written down once. */
static uint32_t file_flags_mask;

/* What the caller has just read of both inodes (fstat, and the duplicate's
 * inode flags), so differs() need not read it again: only where the caller
 * checks afterwards, ctime included, that neither changed since (a chmod,
 * chown, chattr, project or xattr change moves the ctime). */
typedef struct {
  const double *canon, *dup;
  int flags_known; /* dup_flags holds the duplicate's inode flags; else they are read */
  long dup_flags;
} known_attrs;

/* same_bytes() where the canonical's bytes are already in memory
 * (`canon`, all `size` of them: under CHUNK, so no data extents): only the
 * duplicate is read. */
static int same_as_held(const char *canon, int fb, off_t size, char *buf) {
  for (off_t pos = 0; pos < size; pos += READ_CHUNK) {
    size_t len = (size_t)(size - pos < READ_CHUNK ? size - pos : READ_CHUNK);
    if (read_fully(fb, buf, len, pos)) return -1;
    if (memcmp(canon + pos, buf, len)) return 0;
  }
  return 1;
}

/* compare.ts difference(): 0 when `dup` may become a link to `canon`,
 * non-zero when anything differs or cannot be read (JS finds out what).
 * `held`: the canonical's bytes, read while its lease was held and intact
 * since (see batch), compared instead of reading it again; NULL reads both. */
static int differs(int canon, int dup, int ignore_mtime, int bytes, char **bufs, const known_attrs *k, const char *held) {
  double sa[S_N], sb[S_N];
  const double *a = sa, *b = sb;
  if (k) a = k->canon, b = k->dup;
  else if (fstat_d(canon, sa) || fstat_d(dup, sb)) return 1;
  if (a[S_DEV] != b[S_DEV] || a[S_MNT] != b[S_MNT] || a[S_SIZE] != b[S_SIZE]) return 1;
  long pa = project_id(canon), pb = project_id(dup);
  if (pa < 0 || pb < 0 || pa != pb) return 1;
  long fa = inode_flags(canon), fb = k && k->flags_known ? k->dup_flags : inode_flags(dup);
  if (fa < 0 || fb < 0 || (fa & file_flags_mask) != (fb & file_flags_mask)) return 1;
  if (a[S_UID] != b[S_UID] || a[S_GID] != b[S_GID]) return 1;
  if (((long)a[S_MODE] & 07777) != ((long)b[S_MODE] & 07777)) return 1;
  if (!ignore_mtime && (a[S_MSEC] != b[S_MSEC] || a[S_MNSEC] != b[S_MNSEC])) return 1;
  if (same_xattrs(dup, canon) != 1) return 1;
  if (!bytes) return 0;
  if (held) return (!bufs[1] && !(bufs[1] = malloc(READ_CHUNK))) || same_as_held(held, dup, (off_t)a[S_SIZE], bufs[1]) != 1;
  return same_bytes(canon, dup, (off_t)a[S_SIZE], bufs) != 1;
}

/* One segment's state on its thread (run_segment). */
typedef struct {
  int canon_fd;
  double canon_expect[S_N];
  int journal_fd;
  int flags;
  char **bufs; /* the comparison's two buffers and the canonical's bytes (CHUNK): one set per thread */
  int leasable; /* canon_leasable()'s answer for canon_fd, -1 until asked */
  int canon_held; /* the canonical's lease is held (from an earlier pair of the segment, see canon_unlease) */
  int held_ok;    /* bufs[2] holds the canonical's bytes (held_size of them), read since canon_held was taken */
  off_t held_size;
} batch;

/* ---- leases (lease.c) --------------------------------------------------- */

/* What a lease on the canonical needs that holds for the whole segment
 * (one canonical descriptor): -1 not asked yet, 0 no lease, 1 leasable.
 * Asked once per segment rather than per pair (three system calls of a
 * leased pair's six):
 * - the filesystem: a descriptor's filesystem never changes, and every
 *   duplicate is on the canonical's (its dev was checked against the scan,
 *   which the plan keeps to one filesystem per set; differs() checks it);
 * - SIGURG at its default or ignored: only a sigaction() in this process
 *   changes it, and while a segment runs the only other code here is
 *   vunify's JavaScript preparing batches and the other linker threads,
 *   none of which installs a handler (nothing in src/ listens for SIGURG);
 * - F_SETSIG on the canonical's descriptor: the signal is a property of the
 *   open file, kept until it is closed, and nothing here sets another. */
static int canon_leasable(int canon_fd, int *state) {
  if (*state < 0) *state = lease_signal_safe() && lease_local_filesystem(canon_fd) && lease_set_signal(canon_fd) == 0;
  return *state;
}

static int lease_intact(int fd) { return fcntl(fd, F_GETLEASE) == F_RDLCK; }

/* The canonical's lease is not given up between the pairs of a segment:
 * taken at its first leased pair, it is held until the segment ends, or
 * until it is found broken (a writer opened the canonical, or truncated it:
 * the writer waits until it is released here, at the next pair's start at
 * the latest), or a pair is handed back. While it is held and intact the
 * canonical's bytes are the ones read after it was taken, so they are read
 * once (held_canonical) and each leased pair reads its duplicate only. The
 * checks that prove a pair (lease_intact at the exchange and at settle)
 * are the same as when the lease was taken per pair: a lease once broken
 * is never intact again. */
static void canon_unlease(batch *b) {
  if (b->canon_held) fcntl(b->canon_fd, F_SETLEASE, F_UNLCK);
  b->canon_held = 0, b->held_ok = 0;
}

/* Both leases for one pair: 0, or -1 with neither held (a pair without
 * leases goes as it always did: compared again after the exchange, and
 * nobody waits on a lease of ours meanwhile). A canonical's lease still
 * held from the last pair is intact or was let go with its bytes just
 * before this pair began (run_segment). */
static int lease_pair(batch *b, int dup) {
  if (link_fault(STEP_LEASE, 0)) { /* tests: leases refused */
    canon_unlease(b);
    return -1;
  }
  if (!b->canon_held) {
    if (!canon_leasable(b->canon_fd, &b->leasable) || fcntl(b->canon_fd, F_SETLEASE, F_RDLCK)) return -1;
    b->canon_held = 1;
  }
  if (lease_one(dup)) {
    canon_unlease(b);
    return -1;
  }
  return 0;
}

/* A pair ends: its duplicate's lease goes; the canonical's too unless
 * `keep_canon` (the pair was LINKED: kept for the next pair). */
static void unlease(batch *b, int dup, int leased, int keep_canon) {
  if (leased) fcntl(dup, F_SETLEASE, F_UNLCK);
  if (!keep_canon) canon_unlease(b);
}

/* The canonical's bytes in memory (its size below CHUNK), read once while
 * its lease is held (see canon_unlease); NULL when they cannot be (the
 * pair reads both files, as without a lease). */
static const char *held_canonical(batch *b, off_t size) {
  if (!b->canon_held) return NULL;
  if (b->held_ok) return b->held_size == size ? b->bufs[2] : NULL;
  if (!b->bufs[2] && !(b->bufs[2] = malloc(CHUNK))) return NULL;
  if (read_fully(b->canon_fd, b->bufs[2], (size_t)size, 0)) return NULL;
  b->held_ok = 1, b->held_size = size;
  return b->bufs[2];
}

/* ---- temporary names and the journal ------------------------------------ */

static __thread unsigned char pool[9 * 512];
static __thread size_t pool_at = sizeof pool;

/* swap.ts tempName(): ".vunify." and nine random bytes in base64url. */
static int temp_name(char out[24]) {
  static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  if (pool_at + 9 > sizeof pool) {
    size_t got = 0;
    while (got < sizeof pool) {
      ssize_t n = getrandom(pool + got, sizeof pool - got, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        return -1;
      }
      got += (size_t)n;
    }
    pool_at = 0;
  }
  const unsigned char *p = pool + pool_at;
  pool_at += 9;
  memcpy(out, ".vunify.", 8);
  char *o = out + 8;
  for (int i = 0; i < 9; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
    *o++ = b64[v >> 18 & 63], *o++ = b64[v >> 12 & 63], *o++ = b64[v >> 6 & 63], *o++ = b64[v & 63];
  }
  *o = 0;
  return 0;
}

static char *hex(char *o, const char *s, size_t n) {
  static const char h[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) *o++ = h[(unsigned char)s[i] >> 4], *o++ = h[(unsigned char)s[i] & 15];
  return o;
}

/* The length of the last journal line written (for a message when it was cut short). */
static __thread size_t journal_len;

/* One journal line, written whole: 0, or the errno (-1 - bytes written when cut short). */
static pthread_mutex_t journal_mu = PTHREAD_MUTEX_INITIALIZER;
/* Set (under journal_mu) once a journal write of this call failed: nothing is
 * appended after it, on any thread, as journal.ts does (a line after a cut
 * one would join it, and recovery would misread both); the pairs then end
 * before anything changed. LinkBatch clears it; JavaScript marks the journal
 * failed and runs no further batch. */
static int journal_broken;

static void journal_break(void) {
  pthread_mutex_lock(&journal_mu);
  journal_broken = 1;
  pthread_mutex_unlock(&journal_mu);
}

static long journal_write(int fd, const char *line, size_t len) {
  journal_len = len;
  /* one line per write, one writer at a time: lines never interleave */
  pthread_mutex_lock(&journal_mu);
  if (journal_broken) {
    pthread_mutex_unlock(&journal_mu);
    return ECANCELED; /* not written: an earlier line failed (link.ts says so) */
  }
  ssize_t n = write(fd, line, len);
  int err = errno;
  if (n < 0 || (size_t)n != len) journal_broken = 1;
  pthread_mutex_unlock(&journal_mu);
  if (n < 0) return err;
  if ((size_t)n != len) return -1 - n;
  return 0;
}

/* A stat field as JSON.stringify writes it: every field here is an integer
 * (from statx, or -1 - n), exact in a double. Written by hand: %.0f cost
 * glibc's float formatting (printf_fp) 15 times a link, a few % of the
 * linker's time. */
static char *num(char *o, double v) {
  long long x = (long long)v;
  unsigned long long u = x < 0 ? 0ull - (unsigned long long)x : (unsigned long long)x;
  char d[24];
  int n = 0;
  do d[n++] = (char)('0' + u % 10); while ((u /= 10));
  if (x < 0) *o++ = '-';
  while (n) *o++ = d[--n];
  return o;
}

static char *str(char *o, const char *s) {
  size_t n = strlen(s);
  memcpy(o, s, n);
  return o + n;
}

/* An entry's inode fields that canon and dup both carry, from "dev" on (its key written by the caller). */
static char *inode_fields(char *o, const double *s) {
  o = num(o, s[S_DEV]);
  o = num(str(o, ",\"ino\":"), s[S_INO]);
  o = num(str(o, ",\"size\":"), s[S_SIZE]);
  o = num(str(o, ",\"mtimeSec\":"), s[S_MSEC]);
  return num(str(o, ",\"mtimeNsec\":"), s[S_MNSEC]);
}

/* journal.ts CompactEntry, as JSON.stringify writes it. */
static long journal_entry(int fd, long at, const char *tmp, const char *name, const double *into, const double *out) {
  size_t nl = strlen(name);
  char *line = malloc(2 * nl + 1024);
  if (!line) return ENOMEM;
  char *o = line;
  o = num(str(o, "{\"at\":"), (double)at);
  o = hex(str(o, ",\"tmp\":\""), tmp, strlen(tmp));
  o = hex(str(o, "\",\"name\":\""), name, nl);
  o = inode_fields(str(o, "\",\"canon\":{\"dev\":"), into);
  o = num(str(o, ",\"mode\":"), into[S_MODE]);
  o = num(str(o, ",\"uid\":"), into[S_UID]);
  o = num(str(o, ",\"gid\":"), into[S_GID]);
  o = inode_fields(str(o, "},\"dup\":{\"dev\":"), out);
  o = str(o, "}}\n");
  long r = journal_write(fd, line, (size_t)(o - line));
  free(line);
  return r;
}

static long journal_settled(int fd, const char *tmp, const double *old) {
  char line[256], *o = line;
  o = hex(str(o, "{\"settled\":\""), tmp, strlen(tmp));
  o = num(str(o, "\",\"ctimeSec\":"), old[S_CSEC]);
  o = num(str(o, ",\"ctimeNsec\":"), old[S_CNSEC]);
  o = str(o, "}\n");
  return journal_write(fd, line, (size_t)(o - line));
}

/* ---- one pair ------------------------------------------------------------ */

/* What a pair came to (out[O_CODE]); see src/os/sys.ts LINK for the JS side. */
enum {
  R_LINKED = 0,    /* done: O_CANON is the canonical now, O_DUP the old inode now */
  R_FALLBACK = 1,  /* nothing changed: redo this pair on the JS path */
  R_JOURNAL = 2,   /* the entry could not be written (O_ERRNO, or -1 - bytes written of O_AUX); nothing changed */
  R_LINK = 3,      /* linkat failed with O_ERRNO; nothing created */
  R_TMP = 4,       /* the temporary name no longer holds the canonical */
  R_KNOWN = 5,     /* `known`, and the duplicate changed before the exchange */
  R_LEASE = 6,     /* a lease broke before the exchange: O_AUX bit 0 canonical, bit 1 duplicate */
  R_RENAME = 7,    /* renameat2 failed with O_ERRNO */
  R_SETTLE = 8,    /* exchanged; settle() decides (lease still held when O_AUX bit 2; bit 5: `into` changed after the exchange) */
  R_SETTLED_J = 9, /* linked; the settled mark could not be written (as R_JOURNAL) */
  R_UNLINK = 10,   /* linked; the temporary name could not be unlinked (O_ERRNO) */
};

/* Pair inputs, per pair (doubles): */
enum { P_ROOT, P_DIRDEV, P_DIRINO, P_KNOWN, P_AT, P_NAMEOFF, P_EXPECT, P_N = P_EXPECT + S_N };
/* Pair outputs: code, errno, aux, the descriptors left open for JS (-1 when closed), a
 * `left` errno for R_TMP/R_RENAME (removeIfInode could not remove the temporary
 * name: -1 none, else the errno), then four stats. */
enum { O_CODE, O_ERRNO, O_AUX, O_DIRFD, O_DUPFD, O_LEFT, O_CANON, O_DUP = O_CANON + S_N, O_INTO_AT = O_DUP + S_N,
       O_OUT_AT = O_INTO_AT + S_N, O_N = O_OUT_AT + S_N };

/* Bytes per temporary name in linkBatch's `tmps` (NUL-ended). */
#define TMP_LEN 24
#define LEASE_MIN_SIZE (16 << 10)
enum { F_IGNORE_MTIME = 1 };

/* The O_PATH descriptor reopened for reading through its /proc/self/fd
 * link, looked up beneath a descriptor of /proc/self/fd kept open (hash.c),
 * not walked from / each time: one component to look up instead of four
 * and a symlink. The same magic link, so the same inode, whatever its
 * names are by now. */
static int reopen(int pathfd) { return reopen_for_reading(pathfd); }

/* How open_checked() compares the file with `expect` (src/os/sys.ts OPEN_CHECKED, through link_layout). */
enum { OC_CTIME = 1, OC_NLINK = 2, OC_INODE = 4 };

/* confine.ts openChecked(): `name` opened O_PATH beneath `dirfd` (so a
 * device's open routine never runs, nor a FIFO blocks), its fstat into
 * `st`, and only if it is a regular file and the inode `expect` describes
 * (how: OC_INODE dev and ino only, core/stat.ts sameInode; else sameFile,
 * ctime with OC_CTIME, nlink with OC_NLINK) reopened for reading. The
 * descriptor; else -1, with *call naming the system call that failed
 * (errno says why) or NULL when the file is not that one. */
static int open_checked(int dirfd, const char *name, const double *expect, int how, double *st, const char **call) {
  *call = NULL;
  int pathfd = open_beneath(dirfd, name, O_PATH, 0), fd = -1;
  if (pathfd < 0) {
    *call = "openat2";
    return -1;
  }
  if (fstat_d(pathfd, st)) *call = "statx";
  else if (st[S_TYPE] == T_REG && ((how & OC_INODE) ? same_inode(st, expect) : same_file(st, expect, (how & OC_CTIME) != 0, (how & OC_NLINK) != 0))) {
    fd = reopen(pathfd);
    if (fd < 0) *call = "open";
  }
  int err = errno;
  close(pathfd);
  errno = err;
  return fd;
}

/* swap.ts removeIfInode(): -1 when nothing of ours is left, else the errno that kept it. */
static int remove_if_inode(int dirfd, const char *tmp, const double *inode) {
  double st[S_N];
  if (stat_at_d(dirfd, tmp, st)) return errno == ENOENT ? -1 : errno;
  if (!same_inode(st, inode)) return -1;
  if (unlinkat(dirfd, tmp, 0) && errno != ENOENT) return errno;
  return -1;
}

/* swap.ts checkDirectory(): whether the directory (opened O_RDONLY, so
 * the ioctl works on it) is immutable or append-only. */
static int dir_locked(int dirfd) {
  long f = inode_flags(dirfd);
  return f < 0 || (f & (FS_IMMUTABLE_FL | FS_APPEND_FL)) != 0;
}

static int later(const double *a, const double *b) {
  return a[S_CSEC] > b[S_CSEC] || (a[S_CSEC] == b[S_CSEC] && a[S_CNSEC] > b[S_CNSEC]);
}

static void link_pair(batch *b, const double *p, const char *dir, const char *name, char *tmp, double *o) {
  int dirfd = -1, dupfd = -1, leased = 0, err;
  double *canon_before = o + O_CANON, *dup_stat = o + O_DUP, st[S_N], into_pre[S_N];
  int known = p[P_KNOWN] != 0;
  const double *expect = p + P_EXPECT;
  o[O_CODE] = R_FALLBACK, o[O_ERRNO] = 0, o[O_AUX] = 0, o[O_DIRFD] = -1, o[O_DUPFD] = -1, o[O_LEFT] = -1;
  tmp[0] = 0;

  /* 1. the directory and the file, confined and checked against the scan */
  if ((err = link_fault(STEP_OPEN, 0))) goto fallback;
  /* O_RDONLY rather than link.ts's O_PATH: checkDirectory()'s flags are read
   * through it, where swap.ts reopens it; O_DIRECTORY fails on anything else */
  dirfd = open_beneath((int)p[P_ROOT], dir, O_RDONLY | O_DIRECTORY | O_NONBLOCK, 0);
  if (dirfd < 0 || fstat_d(dirfd, st) || st[S_DEV] != p[P_DIRDEV] || st[S_INO] != p[P_DIRINO]) goto fallback;
  const char *call;
  dupfd = open_checked(dirfd, name, expect, OC_CTIME, dup_stat, &call);
  if (dupfd < 0) goto fallback;
  if (link_fault(STEP_OPEN, 1)) goto fallback;

  /* 2. neither immutable nor append-only; the canonical unchanged */
  long fl = inode_flags(dupfd);
  if (fl < 0 || (fl & (FS_IMMUTABLE_FL | FS_APPEND_FL))) goto fallback;
  if (!known && dup_stat[S_SIZE] >= LEASE_MIN_SIZE) leased = lease_pair(b, dupfd) == 0;
  if (fstat_d(b->canon_fd, canon_before) || !same_file(canon_before, b->canon_expect, 1, 1)) goto fallback;

  /* 3. the comparison, and nothing written meanwhile */
  link_call(STEP_COMPARE, 0, dirfd, name); /* tests: a guest acting once the leases are taken */
  if (link_fault(STEP_COMPARE, 0)) goto fallback;
  /* the stats and flags just read; the two checks below (ctime included) prove they still hold */
  known_attrs ka = {canon_before, dup_stat, 1, fl};
  /* canon_before's size is the canonical's (checked against canon_expect), and every pair of a segment has it */
  const char *held = leased && canon_before[S_SIZE] < CHUNK ? held_canonical(b, (off_t)canon_before[S_SIZE]) : NULL;
  if (!known && differs(b->canon_fd, dupfd, b->flags & F_IGNORE_MTIME, 1, b->bufs, &ka, held)) goto fallback;
  if (fstat_d(b->canon_fd, st) || !same_file(st, canon_before, 1, 1)) goto fallback;
  if (fstat_d(dupfd, st) || !same_file(st, dup_stat, 1, 1)) goto fallback;
  if (link_fault(STEP_COMPARE, 1)) goto fallback;
  if (dir_locked(dirfd)) goto fallback;

  /* 4. journal, then the temporary link */
  if (temp_name(tmp)) goto fallback;
  if (b->journal_fd >= 0) {
    long j = link_fault(STEP_JOURNAL, 0);
    if (!j) j = journal_entry(b->journal_fd, (long)p[P_AT], tmp, name, canon_before, dup_stat);
    if (!j) link_fault(STEP_JOURNAL, 1);
    if (j) {
      journal_break();
      o[O_CODE] = R_JOURNAL, o[O_ERRNO] = (double)j, o[O_AUX] = (double)journal_len;
      tmp[0] = 0;
      goto handed;
    }
  }
  link_call(STEP_LINK, 0, dirfd, tmp);
  err = link_fault(STEP_LINK, 0);
  if (!err) {
    int r = linkat(b->canon_fd, "", dirfd, tmp, AT_EMPTY_PATH);
    if (r < 0 && errno == ENOENT) {
      char proc[64];
      snprintf(proc, sizeof proc, "/proc/self/fd/%d", b->canon_fd);
      r = linkat(AT_FDCWD, proc, dirfd, tmp, AT_SYMLINK_FOLLOW);
    }
    err = r < 0 ? errno : link_fault(STEP_LINK, 1);
  }
  if (err) {
    o[O_CODE] = R_LINK, o[O_ERRNO] = err;
    goto handed;
  }

  /* 5. still ours, nothing changed, then the exchange */
  int code = 0;
  /* into_pre: the canonical's ctime just before the exchange (after our link) */
  if (stat_at_d(dirfd, tmp, into_pre) || !same_inode(into_pre, canon_before)) code = R_TMP;
  else if (known && (fstat_d(dupfd, st) || !same_file(st, dup_stat, 1, 1))) code = R_KNOWN;
  else if (leased && !(lease_intact(b->canon_fd) && lease_intact(dupfd))) {
    code = R_LEASE;
    o[O_AUX] = (!lease_intact(b->canon_fd) ? 1 : 0) | (!lease_intact(dupfd) ? 2 : 0);
  } else {
    link_call(STEP_EXCHANGE, 0, dirfd, name);
    err = link_fault(STEP_EXCHANGE, 0);
    if (!err && syscall(SYS_renameat2, dirfd, tmp, dirfd, name, 2 /* RENAME_EXCHANGE */) < 0) err = errno;
    if (!err) err = link_fault(STEP_EXCHANGE, 1);
    if (err) code = R_RENAME, o[O_ERRNO] = err;
    else link_call(STEP_EXCHANGE, 1, dirfd, name);
  }
  if (code) {
    unlease(b, dupfd, leased, 0), leased = 0;
    o[O_CODE] = code;
    o[O_LEFT] = remove_if_inode(dirfd, tmp, canon_before);
    goto handed;
  }

  /* 6. settle: the ordinary outcome only; anything else is swap.ts settle()'s */
  double *into_at = o + O_INTO_AT, *out_at = o + O_OUT_AT;
  /* taken first, as settle() does: what both were just after the exchange (O_AUX bit 3: not known) */
  int at = fstat_d(b->canon_fd, into_at) == 0 && fstat_d(dupfd, out_at) == 0;
  link_call(STEP_SETTLE, 0, dirfd, name); /* tests: a guest acting while the swap is checked */
  int ok = at && link_fault(STEP_SETTLE, 0) == 0 && stat_at_d(dirfd, tmp, st) == 0 && same_inode(st, dup_stat) &&
           same_file(out_at, dup_stat, 0, 0);
  /* a break on either lease: settle() weighs it. The duplicate's is asked
   * once, after the checks below (as it always was): a break there ends
   * the pair the same way (R_SETTLE, the lease kept), and the checks in
   * between change nothing. */
  if (ok && leased && !lease_intact(b->canon_fd)) ok = 0;
  /* An `into` changed after the exchange: the guest wrote to its file as
   * linked, the link stands. Later than `out` alone does not say so where
   * the exchange stamps neither ctime (XFS): `into` keeps our link's ctime,
   * later than anything done to `out` before it. */
  int changed_after = at && later(into_at, out_at) && later(into_at, into_pre);
  if (ok && !changed_after) {
    ok = same_file(into_at, canon_before, 0, 0);
    /* leases intact since the comparison: everything but the bytes.
     * Owner, mode, size and mtime as fstat said just after the exchange
     * (into_at, out_at), not read again: for `out`, out_now below must equal
     * out_at, ctime included, so nothing of it (flags, project and xattrs
     * included) changed between the two, and the values are those it had
     * throughout; for `into`, the guest's path has named it since the
     * exchange, so a change to it after into_at is a change to the shared
     * file once linked (as `changed_after` treats one seen at into_at), and
     * anything done to it before the exchange shows in into_at. Its flags,
     * project and xattrs, and the duplicate's, are read now. */
    known_attrs at_exchange = {into_at, out_at, 0, 0};
    if (ok && !known) ok = !differs(b->canon_fd, dupfd, b->flags & F_IGNORE_MTIME, !leased, b->bufs, &at_exchange, NULL);
  }
  double out_now[S_N];
  if (ok) ok = fstat_d(dupfd, out_now) == 0 && same_file(out_now, out_at, 1, 1);
  if (ok && leased && !known) ok = lease_intact(dupfd);
  if (ok && link_fault(STEP_SETTLE, 1)) ok = 0;
  if (!ok) {
    o[O_CODE] = R_SETTLE, o[O_AUX] = (leased ? 4 : 0) | (at ? 0 : 8) | (changed_after ? 32 : 0);
    goto handed; /* lease kept: settle() adopts it */
  }
  if (b->journal_fd >= 0) {
    long j = link_fault(STEP_JOURNAL, 0);
    if (!j) j = journal_settled(b->journal_fd, tmp, out_now);
    if (!j) link_fault(STEP_JOURNAL, 1);
    if (j) {
      journal_break();
      unlease(b, dupfd, leased, 0), leased = 0;
      o[O_CODE] = R_SETTLED_J, o[O_ERRNO] = (double)j, o[O_AUX] = (double)journal_len;
      goto handed;
    }
  }
  err = link_fault(STEP_UNLINK, 0);
  if (!err && unlinkat(dirfd, tmp, 0) < 0) err = errno;
  if (!err) err = link_fault(STEP_UNLINK, 1);
  unlease(b, dupfd, leased, !err), leased = 0; /* linked: the canonical's lease stays for the next pair */
  if (!err) link_call(STEP_UNLINK, 1, dirfd, tmp);
  if (err) {
    o[O_CODE] = R_UNLINK, o[O_ERRNO] = err;
    goto handed;
  }

  /* 7. what the canonical and the old inode are now */
  o[O_CODE] = R_LINKED;
  double after[S_N];
  fstat_d(b->canon_fd, o + O_CANON);
  fstat_d(dupfd, after);
  /* O_AUX bit 4: only ctime and nlink moved since it was opened (link.ts `compared`) */
  if (same_file(after, dup_stat, 0, 0)) o[O_AUX] = 16;
  memcpy(o + O_DUP, after, sizeof after);
  memcpy(b->canon_expect, o + O_CANON, sizeof b->canon_expect);
  /* The last descriptor of a freed inode frees its blocks: not here. */
  if (o[O_DUP + S_NLINK] == 0) close_later(dupfd);
  else close(dupfd);
  close(dirfd);
  return;

handed:
  /* only settle() goes on with the leases (both are its own now); a writer waits on none else */
  if (leased && o[O_CODE] == R_SETTLE) b->canon_held = 0, b->held_ok = 0;
  else unlease(b, dupfd, leased, 0);
  o[O_DIRFD] = dirfd, o[O_DUPFD] = dupfd;
  return;
fallback:
  unlease(b, dupfd, leased, 0);
  if (dupfd >= 0) close(dupfd);
  if (dirfd >= 0) close(dirfd);
  o[O_CODE] = R_FALLBACK;
}

/* ---- batches, on threads ----------------------------------------------- */

/* Per segment (one set's run of pairs with one canonical), doubles: */
enum { G_CANON, G_START, G_COUNT, G_DONE, G_N };

#define MAX_THREADS 8
#define DIR_LOCKS 4096

/* No two threads in one directory at a time: a pair holds its duplicate's
 * directory's lock from its opening to its unlink (one lock at a time, so
 * no deadlock; two directories may share a lock, and then merely wait:
 * 1 in 4096 rather than 256, which were most of the waits left once the
 * lanes below kept sets of one directory on one thread). */
static pthread_mutex_t dir_locks[DIR_LOCKS];
static pthread_once_t dir_locks_once = PTHREAD_ONCE_INIT;
static void dir_locks_init(void) {
  for (int i = 0; i < DIR_LOCKS; i++) pthread_mutex_init(&dir_locks[i], NULL);
}

static uint64_t dir_hash(double dev, double ino) {
  return ((uint64_t)dev * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)ino * 0xC2B2AE3D27D4EB4Full);
}

static pthread_mutex_t *dir_lock(double dev, double ino) { return &dir_locks[(dir_hash(dev, ino) >> 32) % DIR_LOCKS]; }

/* The comparison buffers of each worker, kept for the next batch. */
static char *worker_bufs[MAX_THREADS][3];

typedef struct {
  double *segs, *canon_expect, *pairs, *out;
  const char *names;
  size_t names_len;
  char *tmps;
  size_t nseg;
  int journal_fd, flags;
  size_t next; /* without `order`: the next segment to take (atomic) */
  struct lane_slot *order; /* more than one thread: the segments, costliest first, each with its lane (take() says which is next) */
  /* Set once a pair is handed back after its temporary link: the call ends
   * as soon as every thread is done with the pair it is on. A handed pair
   * may be exchanged but not settled (the canonical at the guest's name,
   * the old inode beside it): swap.ts settles or undoes it only when the
   * call returns, and until then a guest's write through its name goes to
   * the canonical, which other guests share. */
  int stop;
} job;

typedef struct {
  job *j;
  int index;
} worker;

static void run_segment(job *j, size_t g, char **bufs) {
  double *seg = j->segs + g * G_N;
  batch b = {(int)seg[G_CANON], {0}, j->journal_fd, j->flags, bufs, -1, 0, 0, 0};
  memcpy(b.canon_expect, j->canon_expect + g * S_N, sizeof b.canon_expect);
  size_t start = (size_t)seg[G_START], count = (size_t)seg[G_COUNT], done = 0;
  for (size_t i = start; i < start + count; i++) {
    if (__atomic_load_n(&j->stop, __ATOMIC_ACQUIRE)) break;
    const double *p = j->pairs + i * P_N;
    size_t off = (size_t)p[P_NAMEOFF];
    const char *dir = j->names + off;
    const char *dz = off < j->names_len ? memchr(dir, 0, j->names_len - off) : NULL;
    const char *nz = dz ? memchr(dz + 1, 0, (size_t)(j->names + j->names_len - (dz + 1))) : NULL;
    if (!nz) break;
    double *o = j->out + i * O_N;
    pthread_mutex_t *mu = dir_lock(p[P_DIRDEV], p[P_DIRINO]);
    /* The canonical's lease kept from the last pair is let go before this
     * thread waits: another thread's pair may hold this directory's lock for
     * as long as its comparison takes, and a guest's writer on the canonical
     * would wait as long (found by review11). A broken one is let go here,
     * before every pair (the writer goes on; its bytes are forgotten). */
    if (b.canon_held && !lease_intact(b.canon_fd)) canon_unlease(&b);
    if (pthread_mutex_trylock(mu)) {
      canon_unlease(&b);
      pthread_mutex_lock(mu);
    }
    link_pair(&b, p, dir, dz + 1, j->tmps + i * TMP_LEN, o);
    pthread_mutex_unlock(mu);
    done++;
    if (o[O_CODE] == R_LINKED) continue;
    if (o[O_CODE] != R_FALLBACK) __atomic_store_n(&j->stop, 1, __ATOMIC_RELEASE); /* nothing of it changed on a fallback */
    break;
  }
  canon_unlease(&b); /* held from its last LINKED pair, if any */
  seg[G_DONE] = (double)done;
  memcpy(j->canon_expect + g * S_N, b.canon_expect, sizeof b.canon_expect);
}

/* A segment in a call's order: its index, its lane, whether a thread took it (under take_mu). */
struct lane_slot {
  size_t g;
  int lane, taken;
};
static pthread_mutex_t take_mu = PTHREAD_MUTEX_INITIALIZER;

/* The segment thread `t` runs next, -1 when none is left: the costliest of
 * its own lane; once that is empty, the cheapest left in another (whose
 * thread takes them from the costly end: the two meet at the call's end). */
static long take(job *j, int t) {
  if (!j->order) { /* one thread (or no memory for the order): as given */
    size_t k = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
    return k < j->nseg ? (long)k : -1;
  }
  long r = -1;
  pthread_mutex_lock(&take_mu);
  for (size_t k = 0; k < j->nseg && r < 0; k++)
    if (!j->order[k].taken && j->order[k].lane == t) j->order[k].taken = 1, r = (long)j->order[k].g;
  for (size_t k = j->nseg; k-- > 0 && r < 0;)
    if (!j->order[k].taken) j->order[k].taken = 1, r = (long)j->order[k].g;
  pthread_mutex_unlock(&take_mu);
  return r;
}

static void *work(void *arg) {
  worker *w = arg;
  job *j = w->j;
  for (;;) {
    if (__atomic_load_n(&j->stop, __ATOMIC_ACQUIRE)) break;
    long g = take(j, w->index);
    if (g < 0) break;
    run_segment(j, (size_t)g, worker_bufs[w->index]);
  }
  return NULL;
}

/* The arguments of linkBatch and linkBatchStart, checked: 0, or -1 with a TypeError thrown. */
static int job_args(napi_env env, napi_callback_info info, job *j, int *threads_out, napi_value *arrays) {
  size_t argc = 10;
  napi_value argv[10];
  int64_t journal_fd, flags, mask, threads;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return -1;
  double *segs, *ce, *pairs, *out;
  void *names, *tmps;
  size_t sl = 0, cel = 0, pl = 0, nl = 0, ol = 0, tl = 0;
  int bad = argc < 10 || arg_int(env, argv[2], &journal_fd) || arg_int(env, argv[3], &flags) || arg_int(env, argv[4], &mask) ||
            arg_int(env, argv[9], &threads);
  if (!bad) bad = arg_doubles(env, argv[0], &segs, &sl) || sl % G_N;
  if (!bad) bad = arg_doubles(env, argv[1], &ce, &cel);
  if (!bad) bad = arg_doubles(env, argv[5], &pairs, &pl) || pl % P_N;
  if (!bad) bad = arg_buffer(env, argv[6], &names, &nl);
  if (!bad) bad = arg_doubles(env, argv[7], &out, &ol);
  if (!bad) bad = arg_buffer(env, argv[8], &tmps, &tl);
  size_t n = bad ? 0 : pl / P_N, nseg = bad ? 0 : sl / G_N;
  if (!bad)
    for (size_t g = 0; g < nseg && !bad; g++) {
      double *seg = segs + g * G_N;
      bad = seg[G_START] < 0 || seg[G_COUNT] < 0 || seg[G_START] + seg[G_COUNT] > (double)n;
    }
  if (bad || cel < nseg * S_N || ol < n * O_N || tl < n * TMP_LEN) {
    napi_throw_type_error(env, NULL, "linkBatch(segs, canonExpect, journalFd, flags, fileFlagsMask, pairs, names, out, tmps, threads)");
    return -1;
  }
  for (size_t g = 0; g < nseg; g++) segs[g * G_N + G_DONE] = 0; /* a segment never started (the call stops early) did none */
  file_flags_mask = (uint32_t)mask;
  *j = (job){segs, ce, pairs, out, names, nl, tmps, nseg, (int)journal_fd, (int)flags, 0, NULL, 0};
  int nt = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : (int)threads;
  if ((size_t)nt > nseg) nt = nseg ? (int)nseg : 1;
  *threads_out = nt;
  if (arrays) arrays[0] = argv[0], arrays[1] = argv[1], arrays[2] = argv[5], arrays[3] = argv[6], arrays[4] = argv[7], arrays[5] = argv[8];
  return 0;
}

/* A segment's cost for the order below: its bytes (compared) plus, per
 * pair, what the pair's system calls cost in bytes compared (~50 us of a
 * link, measured on the fleet, against ~6 GB/s read from the page cache). */
#define PAIR_COST_BYTES (256 << 10)
typedef struct {
  double cost;
  size_t g;
  int lane;
} seg_cost;
static int costlier_first(const void *a, const void *b) {
  const seg_cost *x = a, *y = b;
  return x->cost < y->cost ? 1 : x->cost > y->cost ? -1 : (x->g > y->g) - (x->g < y->g);
}

/* With more than one thread, segments are taken costliest first: a call
 * lasts until its last segment is done, and one large set taken last kept
 * the other threads idle until it was (the longest-first rule).
 *
 * Each segment is also in one thread's lane: the smallest hash of its
 * pairs' directories, modulo the threads. A set is most often one file of
 * one package in every guest, and the sets of one directory then share all
 * their directories: two threads on two of them at once took turns at each
 * pair's directory lock (~1,600 waits, ~0.2 s of the threads' time in a
 * fleet run). In one lane they run one after the other on one thread; sets
 * that share most of their directories mostly share the smallest hash too.
 *
 * Which thread runs a set, and when, decides no outcome (see linkBatched in
 * link.ts); one thread (the fault hook's tests) keeps the given order. */
static struct lane_slot *order_segments(const job *j, int nt) {
  seg_cost *c = malloc(j->nseg * sizeof *c);
  struct lane_slot *order = malloc(j->nseg * sizeof *order);
  if (!c || !order) {
    free(c), free(order);
    return NULL;
  }
  for (size_t g = 0; g < j->nseg; g++) {
    const double *seg = j->segs + g * G_N;
    size_t start = (size_t)seg[G_START], count = (size_t)seg[G_COUNT];
    double cost = 0;
    uint64_t least = UINT64_MAX;
    for (size_t i = start; i < start + count; i++) {
      const double *p = j->pairs + i * P_N;
      cost += p[P_EXPECT + S_SIZE] + PAIR_COST_BYTES;
      uint64_t h = dir_hash(p[P_DIRDEV], p[P_DIRINO]);
      h ^= h >> 29;
      if (h < least) least = h;
    }
    c[g] = (seg_cost){cost, g, (int)((least >> 7) % (uint64_t)nt)};
  }
  qsort(c, j->nseg, sizeof *c, costlier_first);
  for (size_t k = 0; k < j->nseg; k++) order[k] = (struct lane_slot){c[k].g, c[k].lane, 0};
  free(c);
  return order;
}

/* Run a job on `nt` threads: this one and nt - 1 started for it. */
static void run_job(job *j, int nt) {
  pthread_once(&dir_locks_once, dir_locks_init);
  journal_broken = 0; /* no thread runs yet; a failure of an earlier call ended the native linker's batches */
  if (nt > 1) j->order = order_segments(j, nt);
  worker w[MAX_THREADS];
  pthread_t th[MAX_THREADS];
  int started = 0;
  for (int i = 1; i < nt; i++) {
    w[i] = (worker){j, i};
    if (pthread_create(&th[i], NULL, work, &w[i])) break;
    started = i;
  }
  w[0] = (worker){j, 0};
  work(&w[0]); /* this thread is a worker too */
  for (int i = 1; i <= started; i++) pthread_join(th[i], NULL);
  free(j->order);
  j->order = NULL;
}

/* At most one job runs at a time (linkBatchStart refuses a second): the
 * directory locks keep its threads apart, and JavaScript, which changes
 * guest files and writes the journal only between jobs, waits for it
 * (linkBatchWait) before it does either. */
static pthread_mutex_t running_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t running_cv = PTHREAD_COND_INITIALIZER;
static int running;

static int running_now(void) {
  pthread_mutex_lock(&running_mu);
  int r = running;
  pthread_mutex_unlock(&running_mu);
  return r;
}

static void running_set(int v) {
  pthread_mutex_lock(&running_mu);
  running = v;
  if (!v) pthread_cond_broadcast(&running_cv);
  pthread_mutex_unlock(&running_mu);
}

/* linkBatch(segs: Float64Array(nseg * G_N), canonExpect: Float64Array(nseg * S_N),
 *           journalFd, flags, fileFlagsMask, pairs: Float64Array(n * P_N),
 *           names: Buffer (dir NUL name NUL, at each pair's P_NAMEOFF),
 *           out: Float64Array(n * O_N), tmps: Buffer(n * TMP_LEN), threads)
 * Each segment is one set's pairs with its canonical, linked in order on
 * one thread until the first pair not LINKED (included): its G_DONE. Its
 * canonExpect is updated to the canonical's stat after each link. Segments
 * are shared out between up to `threads` threads (one while the fault hook
 * is set). Returns the number of segments. */
napi_value LinkBatch(napi_env env, napi_callback_info info) {
  job j;
  int nt;
  if (running_now()) {
    napi_throw_error(env, NULL, "linkBatch: a linkBatchStart call is still running");
    return NULL;
  }
  if (job_args(env, info, &j, &nt, NULL)) return NULL;
  if (fault.step >= 0 || hook_ref) nt = 1; /* the fault hook counts in order; the JS hook runs on this thread */
  hook_env = env;
  run_job(&j, nt);
  hook_env = NULL;
  napi_value r;
  napi_create_uint32(env, (uint32_t)j.nseg, &r);
  return r;
}

typedef struct {
  job j;
  int nt;
  napi_ref refs[6]; /* the arrays the threads use, alive until the job is done */
  napi_async_work work;
  napi_deferred deferred;
} async_job;

static void async_execute(napi_env env, void *data) {
  (void)env;
  async_job *a = data;
  run_job(&a->j, a->nt);
  running_set(0);
}

static void async_complete(napi_env env, napi_status status, void *data) {
  async_job *a = data;
  napi_value r;
  napi_create_uint32(env, (uint32_t)a->j.nseg, &r);
  for (int i = 0; i < 6; i++) napi_delete_reference(env, a->refs[i]);
  if (status == napi_ok) napi_resolve_deferred(env, a->deferred, r);
  else {
    napi_value msg, err;
    napi_create_string_utf8(env, "linkBatchStart: the job was cancelled", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &err);
    napi_reject_deferred(env, a->deferred, err);
  }
  napi_delete_async_work(env, a->work);
  free(a);
}

/* linkBatchStart(the arguments of linkBatch) -> Promise<number>: the same
 * job on libuv's thread pool (`threads` threads: a pool thread and
 * threads - 1 more), so that the JavaScript thread prepares the next one
 * meanwhile. While the fault hook or the JS hook is set, the job runs here
 * and now on this thread, as linkBatch, and the promise is already settled. */
napi_value LinkBatchStart(napi_env env, napi_callback_info info) {
  if (running_now()) {
    napi_throw_error(env, NULL, "linkBatchStart: another call is still running");
    return NULL;
  }
  async_job *a = calloc(1, sizeof *a);
  if (!a) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  napi_value arrays[6];
  if (job_args(env, info, &a->j, &a->nt, arrays)) {
    free(a);
    return NULL;
  }
  napi_value promise, r;
  if (fault.step >= 0 || hook_ref) {
    hook_env = env;
    run_job(&a->j, 1);
    hook_env = NULL;
    napi_create_promise(env, &a->deferred, &promise);
    napi_create_uint32(env, (uint32_t)a->j.nseg, &r);
    napi_resolve_deferred(env, a->deferred, r);
    free(a);
    return promise;
  }
  for (int i = 0; i < 6; i++) napi_create_reference(env, arrays[i], 1, &a->refs[i]);
  running_set(1);
  return queue_work(env, "vunify.linkBatch", async_execute, async_complete, a, &a->deferred, &a->work);
}

/* linkBatchWait(): returns once no linkBatchStart job runs any more (its
 * promise may not have settled yet). -> whether one was running. */
napi_value LinkBatchWait(napi_env env, napi_callback_info info) {
  (void)info;
  pthread_mutex_lock(&running_mu);
  int was = running;
  while (running) pthread_cond_wait(&running_cv, &running_mu);
  pthread_mutex_unlock(&running_mu);
  napi_value r;
  napi_get_boolean(env, was, &r);
  return r;
}

/* The linker's arrays, result codes and steps, for module.c's `layout.link`:
 * src/os/native.ts checks it and src/os/sys.ts reads its offsets, so they
 * are written down once, here. */
static void put(napi_env env, napi_value o, const char *name, int v) {
  napi_value x;
  napi_create_int32(env, v, &x);
  napi_set_named_property(env, o, name, x);
}

#define PUT(o, name, v) put(env, o, name, v);
#define GROUP(name, ...)                         \
  do {                                           \
    napi_value g;                                \
    napi_create_object(env, &g);                 \
    __VA_ARGS__                                  \
    napi_set_named_property(env, l, name, g);    \
  } while (0)

napi_value link_layout(napi_env env) {
  napi_value l;
  napi_create_object(env, &l);
  GROUP("stat", PUT(g, "type", S_TYPE) PUT(g, "dev", S_DEV) PUT(g, "ino", S_INO) PUT(g, "size", S_SIZE) PUT(g, "mode", S_MODE)
                    PUT(g, "uid", S_UID) PUT(g, "gid", S_GID) PUT(g, "nlink", S_NLINK) PUT(g, "mtimeSec", S_MSEC)
                        PUT(g, "mtimeNsec", S_MNSEC) PUT(g, "ctimeSec", S_CSEC) PUT(g, "ctimeNsec", S_CNSEC)
                            PUT(g, "mntId", S_MNT) PUT(g, "blocks", S_BLOCKS) PUT(g, "length", S_N));
  GROUP("pair", PUT(g, "root", P_ROOT) PUT(g, "dirDev", P_DIRDEV) PUT(g, "dirIno", P_DIRINO) PUT(g, "known", P_KNOWN)
                    PUT(g, "at", P_AT) PUT(g, "nameOff", P_NAMEOFF) PUT(g, "expect", P_EXPECT) PUT(g, "length", P_N));
  GROUP("out", PUT(g, "code", O_CODE) PUT(g, "errno", O_ERRNO) PUT(g, "aux", O_AUX) PUT(g, "dirFd", O_DIRFD)
                   PUT(g, "dupFd", O_DUPFD) PUT(g, "left", O_LEFT) PUT(g, "canon", O_CANON) PUT(g, "dup", O_DUP)
                       PUT(g, "intoAt", O_INTO_AT) PUT(g, "outAt", O_OUT_AT) PUT(g, "length", O_N));
  GROUP("seg", PUT(g, "canon", G_CANON) PUT(g, "start", G_START) PUT(g, "count", G_COUNT) PUT(g, "done", G_DONE)
                   PUT(g, "length", G_N));
  GROUP("results", PUT(g, "LINKED", R_LINKED) PUT(g, "FALLBACK", R_FALLBACK) PUT(g, "JOURNAL", R_JOURNAL)
                       PUT(g, "LINK", R_LINK) PUT(g, "TMP", R_TMP) PUT(g, "KNOWN", R_KNOWN) PUT(g, "LEASE", R_LEASE)
                           PUT(g, "RENAME", R_RENAME) PUT(g, "SETTLE", R_SETTLE) PUT(g, "SETTLED_JOURNAL", R_SETTLED_J)
                               PUT(g, "UNLINK", R_UNLINK));
  GROUP("steps", PUT(g, "open", STEP_OPEN) PUT(g, "compare", STEP_COMPARE) PUT(g, "link", STEP_LINK)
                     PUT(g, "journal", STEP_JOURNAL) PUT(g, "exchange", STEP_EXCHANGE) PUT(g, "settle", STEP_SETTLE)
                         PUT(g, "unlink", STEP_UNLINK) PUT(g, "change", STEP_CHANGE) PUT(g, "lease", STEP_LEASE));
  GROUP("openChecked", PUT(g, "ctime", OC_CTIME) PUT(g, "nlink", OC_NLINK) PUT(g, "inode", OC_INODE));
  put(env, l, "tmpLength", TMP_LEN);
  return l;
}
#undef GROUP
#undef PUT

/* openChecked(dirFd, name: Buffer, expect: Float64Array(S_N), how, out: Float64Array(S_N))
 * -> a descriptor open for reading, or -1: open_checked() for
 * src/os/confine.ts, in one call instead of five (openBeneath O_PATH,
 * fstat, the check, the reopen through /proc/self/fd, close). The fstat
 * goes into `out`; -1 when the file is not the one expected (confine.ts
 * says why). A failed system call throws. */
napi_value OpenChecked(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  int64_t dirfd, how;
  double *expect, *out;
  size_t el = 0, ol = 0;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int bad = argc < 5 || arg_int(env, argv[0], &dirfd) || arg_int(env, argv[3], &how);
  if (!bad) bad = arg_doubles(env, argv[2], &expect, &el) || el < S_N;
  if (!bad) bad = arg_doubles(env, argv[4], &out, &ol) || ol < S_N;
  if (bad) {
    napi_throw_type_error(env, NULL, "openChecked(dirFd, name, expect, how, out)");
    return NULL;
  }
  char *name = arg_bytes(env, argv[1], NULL);
  if (!name) return NULL;
  const char *call;
  int fd = open_checked((int)dirfd, name, expect, (int)how, out, &call), err = errno;
  free(name);
  if (call) return throw_errno(env, err, call);
  napi_value r;
  napi_create_int32(env, fd, &r);
  return r;
}

/* errnoError(errno, syscall) -> the Error the addon's calls throw for it,
 * for outcomes linkBatch reports by number. */
napi_value ErrnoError(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int64_t err;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char name[32] = "";
  size_t len;
  if (argc < 2 || arg_int(env, argv[0], &err) ||
      napi_get_value_string_utf8(env, argv[1], name, sizeof name, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "errnoError(errno, syscall)");
    return NULL;
  }
  return make_error(env, (int)err, name);
}
