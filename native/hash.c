/*
 * Hashing a batch of files, asynchronously on libuv's thread pool: the hash
 * stage's per-file work, done here for a whole batch per call, because a
 * trip into JavaScript per file (open O_PATH, fstat, reopen, xattrs, reads,
 * closes, each a separate call) cost more than reading and hashing a
 * typical small file.
 *
 * The checks are those of openRegular in src/os/confine.ts (the one policy
 * this file holds, see vunify.h): the file is looked up confined beneath
 * its root (open_beneath, one path component at a time from the
 * directories the previous file was opened in: see dir_cache) and opened
 * O_PATH, which never runs a device's
 * open routine nor waits on a FIFO; only when statx says it is still the
 * regular file the job record describes (type, dev, ino, size, mode, owner,
 * mtime, ctime) is it reopened for reading through /proc/self/fd, with
 * O_NONBLOCK and O_NOATIME (when permitted). Its xattrs are read through
 * that descriptor (xattr.c), then its inode flags and project ID
 * (fsattr.c), then its bytes, hashed with XXH3-64 (xxh3.c) under the secret
 * hashFiles is given (derived from the host's hash key,
 * src/state/hash-key.ts).
 *
 * Input, one record per file, RECORD_ALIGN-aligned (src/pipeline/hash.ts
 * encodes it): struct hash_in, then the path bytes, relative to the root.
 * Output, one record per file, in order, RECORD_ALIGN-aligned: struct
 * hash_out, then, on success with xattr_count > 0, the 32-byte SHA-256 of
 * the xattr set's canonical encoding (per xattr, sorted by name: struct
 * hash_xattr with little-endian lengths, the name, the value; see
 * digest_xattr). Not the names and values themselves: a guest can give a
 * file hundreds of MiB of them. The offsets are exported as layout.hashIn,
 * layout.hashOut and layout.hashXattr; the content hash is defined in
 * extents.c (XXH3-64 of the bytes, except for files with long zero runs).
 *
 * Attributes only (hashFiles' third argument): the same opens, checks,
 * xattrs, inode flags and project ID, but no byte of content is read (hash
 * 0, no ELF bit). A linking run uses it for a new file whose metadata group
 * holds one content class the cache already knows: the linker's comparison
 * with the canonical reads it then, once (src/commands/session.ts).
 */
#include "vunify.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xxh3.h"
#include "xxh64.h"

struct hash_in {
  uint32_t rec_len; /* the whole record, path and padding included */
  int32_t root_fd;
  uint32_t path_len;
  uint32_t mode; /* what the scan saw, all checked again here */
  uint32_t uid;
  uint32_t gid;
  uint64_t ino;
  uint64_t dev;
  uint64_t size;
  int64_t mtime_sec;
  uint32_t mtime_nsec;
  uint32_t ctime_nsec;
  int64_t ctime_sec;
}; /* then path_len path bytes */
_Static_assert(sizeof(struct hash_in) % RECORD_ALIGN == 0, "records stay aligned");

struct hash_out {
  uint32_t rec_len;
  int32_t error;   /* 0, an errno, or HASH_CHANGED / HASH_SHRANK */
  uint32_t detail; /* on error, the failing call (HASH_CALLS); on success, flags (HASH_ELF) */
  uint32_t xattr_count;
  uint64_t hash;   /* the content hash (extents.c) under the secret hashFiles was given */
  uint32_t flags;  /* inode flags (FS_IOC_GETFLAGS), 0 where the filesystem has none */
  uint32_t projid; /* project ID (FS_IOC_FSGETXATTR fsx_projid), 0 where none */
}; /* then, when xattr_count > 0, the 32-byte digest of the xattr set */
_Static_assert(sizeof(struct hash_out) % RECORD_ALIGN == 0, "records stay aligned");

struct hash_xattr {
  uint32_t name_len;
  uint32_t value_len;
};

enum { HASH_CHANGED = -1, HASH_SHRANK = DATA_SHRANK };
enum { HASH_ELF = 1 }; /* flag bits in detail of a successful record */

/* The calls a file can fail at, in the order of their index in detail. */
#define HASH_CALLS(X) X(CALL_OPENAT2, "openat2") X(CALL_STATX, "statx") X(CALL_OPEN, "open") \
  X(CALL_FLISTXATTR, "flistxattr") X(CALL_FGETXATTR, "fgetxattr") X(CALL_READ, "read") X(CALL_IOCTL, "ioctl")
#define CALL_ENUM(name, js) name,
#define CALL_NAME(name, js) js,
enum { HASH_CALLS(CALL_ENUM) };
static const char *const hash_call_names[] = {HASH_CALLS(CALL_NAME)};

static int proc_fd = -1; /* /proc/self/fd, opened once: saves walking it per file */
static pthread_once_t proc_once = PTHREAD_ONCE_INIT;
static void open_proc_fd(void) { proc_fd = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC); }
static volatile int hash_noatime = 1;

/* Reopen an O_PATH descriptor for reading: same inode, no second lookup
 * (the linker's reopen too, native/link.c). */
int reopen_for_reading(int pathfd) {
  pthread_once(&proc_once, open_proc_fd);
  char name[16]; /* the decimal number, by hand: snprintf was a visible part of the per-file cost */
  char *e = name + sizeof name;
  *--e = 0;
  unsigned v = (unsigned)pathfd;
  do *--e = (char)('0' + v % 10); while (v /= 10);
  memmove(name, e, (size_t)(name + sizeof name - e));
  int base = proc_fd >= 0 ? proc_fd : AT_FDCWD;
  char full[40];
  if (proc_fd < 0) snprintf(full, sizeof full, "/proc/self/fd/%d", pathfd);
  const char *p = proc_fd >= 0 ? name : full;
  int flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC;
  if (hash_noatime) {
    int fd = openat(base, p, flags | O_NOATIME);
    if (fd >= 0 || errno != EPERM) return fd;
    hash_noatime = 0; /* O_NOATIME needs ownership or CAP_FOWNER */
  }
  return openat(base, p, flags);
}

/* The xattr set's canonical encoding, fed to SHA-256 as it is read: per
 * xattr, sorted by name, struct hash_xattr (little-endian lengths), the
 * name, the value. Only the digest is kept: the set may be tens of MiB. */
static int digest_xattr(void *ctx, const char *name, size_t name_len, const char *value, size_t value_len) {
  struct hash_xattr x = {(uint32_t)name_len, (uint32_t)value_len};
  sha256_update(ctx, &x, sizeof x);
  sha256_update(ctx, name, name_len);
  sha256_update(ctx, value, value_len);
  return 0;
}

/* Whether statx still describes the file of the job record. */
static int unchanged(const struct statx *st, const struct hash_in *j) {
  return S_ISREG(st->stx_mode) && st->stx_mode == j->mode && st->stx_uid == j->uid && st->stx_gid == j->gid &&
         st->stx_ino == j->ino && statx_dev(st) == j->dev && st->stx_size == j->size &&
         st->stx_mtime.tv_sec == j->mtime_sec && st->stx_mtime.tv_nsec == j->mtime_nsec &&
         st->stx_ctime.tv_nsec == j->ctime_nsec && st->stx_ctime.tv_sec == j->ctime_sec;
}

/* The directories the previous file of the batch was opened in, one
 * descriptor per path component: the caller hands files over in walk
 * order, so most files of a batch share their directory with the one
 * before, and the next directory is mostly a sibling or a child. A name
 * lookup is the costly part of an open here (profiled on the fleet with
 * the host's dentry cache full: ~3 us each, path walks 25-30% of the run's
 * CPU), so a file is looked up from its directory's descriptor (one
 * component instead of the whole path), and a directory from the deepest
 * one it shares with the previous (the components that differ, only).
 *
 * Every component is opened with open_beneath beneath its parent's
 * descriptor (no symlink, no "..", no mount crossed, O_PATH|O_DIRECTORY),
 * the first beneath the root, so a file is still reached only through
 * names inside the root, on the root's mount, as one open_beneath of its
 * whole path from the root reached it. Each component is opened with a
 * trailing slash: a symlink swapped in for a directory then fails as it
 * does in the middle of a whole path (ELOOP), not as a last O_NOFOLLOW
 * component would (ENOTDIR). A directory renamed meanwhile is still inside
 * the guest (a guest cannot move its directories out of its own root);
 * and as before, what makes the file the one the walk saw is the statx
 * check against the scan (type, dev, ino, size, mode, owner, times), not
 * the path it was reached by. Deeper than DIR_FDS components, the rest of
 * a directory's path is opened in one open_beneath, as before. */
enum { DIR_FDS = 32 };
typedef struct {
  int root_fd;
  int depth;            /* components held: fd[0..depth) */
  int fd[DIR_FDS];      /* fd[i]: path[0, end[i]), opened beneath fd[i - 1] (the root for i = 0) */
  size_t end[DIR_FDS];  /* just after component i's slash */
  int tail;             /* path[0, len) when deeper than DIR_FDS, else -1 */
  size_t len;           /* bytes of path the descriptors stand for (directories and their slashes) */
  char *path;
  size_t cap;
} dir_cache;

static void dir_drop(dir_cache *dc, int keep) {
  if (dc->tail >= 0) close(dc->tail);
  dc->tail = -1;
  while (dc->depth > keep) close(dc->fd[--dc->depth]);
  dc->len = dc->depth ? dc->end[dc->depth - 1] : 0;
}

/* Whether path[0, dl) is all plain components, each followed by one slash (what the walk writes). */
static int plain_dirs(const char *path, size_t dl) {
  for (size_t a = 0; a < dl;) {
    const char *q = memchr(path + a, '/', dl - a);
    size_t n = (size_t)(q - (path + a));
    if (n == 0 || (n == 1 && path[a] == '.') || (n == 2 && path[a] == '.' && path[a + 1] == '.')) return 0;
    a += n + 1;
  }
  return 1;
}

/* The directory path[0, dl) (ending in its slash) through the cache: a descriptor the cache owns, or -1. */
static int dir_open(dir_cache *dc, int root_fd, const char *path, size_t dl) {
  if (dc->root_fd != root_fd) dir_drop(dc, 0), dc->root_fd = root_fd;
  int keep = 0;
  while (keep < dc->depth && dc->end[keep] <= dl && memcmp(dc->path, path, dc->end[keep]) == 0) keep++;
  if (keep == dc->depth && dc->len == dl && memcmp(dc->path, path, dl) == 0)
    return dc->tail >= 0 ? dc->tail : dc->fd[dc->depth - 1];
  dir_drop(dc, keep);
  if (dl + 1 > dc->cap) {
    char *p = realloc(dc->path, dl + 1);
    if (!p) return -1;
    dc->path = p, dc->cap = dl + 1;
  }
  memcpy(dc->path, path, dl);
  dc->path[dl] = 0;
  size_t a = dc->len;
  while (a < dl && dc->depth < DIR_FDS) {
    size_t b = (size_t)((char *)memchr(dc->path + a, '/', dl - a) - dc->path) + 1;
    char saved = dc->path[b];
    dc->path[b] = 0; /* "name/" */
    int fd = open_beneath(dc->depth ? dc->fd[dc->depth - 1] : root_fd, dc->path + a, O_PATH | O_DIRECTORY, 0);
    dc->path[b] = saved;
    if (fd < 0) return -1;
    dc->fd[dc->depth] = fd, dc->end[dc->depth] = b, dc->depth++;
    dc->len = a = b;
  }
  if (a < dl) {
    int fd = open_beneath(dc->fd[dc->depth - 1], dc->path + a, O_PATH | O_DIRECTORY, 0);
    if (fd < 0) return -1;
    dc->tail = fd, dc->len = dl;
  }
  return dc->tail >= 0 ? dc->tail : dc->fd[dc->depth - 1];
}

/* open_beneath(root, path, O_PATH) through the directory cache. */
static int open_cached(dir_cache *dc, int root_fd, const char *path, size_t path_len) {
  const char *slash = NULL;
  for (size_t i = path_len; i > 0; i--)
    if (path[i - 1] == '/') {
      slash = path + i - 1;
      break;
    }
  size_t dl = slash ? (size_t)(slash - path) + 1 : 0;
  /* In the root itself, or not as the walk writes paths: one lookup from the root, as before. */
  if (!slash || slash[1] == 0 || !plain_dirs(path, dl)) return open_beneath(root_fd, path, O_PATH, 0);
  int dir = dir_open(dc, root_fd, path, dl);
  return dir < 0 ? -1 : open_beneath(dir, path + dl, O_PATH, 0);
}

/* One file: open confined, check, reopen, xattrs, hash; appends its output
 * record. -1 only when out of memory (the whole batch fails). */
static int hash_one(const char *in, char *buf, size_t cap, const uint8_t *secret, int attrs_only, dir_cache *dc, outbuf *o) {
  struct hash_in j;
  memcpy(&j, in, sizeof j);
  size_t start = o->len;
  if (out_reserve(o, sizeof(struct hash_out))) return -1;
  o->len += sizeof(struct hash_out);
  int err = 0, call = 0, elf = 0;
  long nx = 0;
  uint64_t hash = 0;
  uint32_t iflags = 0, projid = 0;
  /* NUL-terminated for the kernel: on the stack unless long (up to ~1 MiB, walk.ts MAX_DEPTH). */
  char small[512];
  char *path = j.path_len < sizeof small ? small : malloc(j.path_len + 1);
  if (!path) return -1;
  memcpy(path, in + sizeof j, j.path_len);
  path[j.path_len] = 0;
  int pfd = memchr(path, 0, j.path_len) ? (errno = EINVAL, -1) : open_cached(dc, j.root_fd, path, j.path_len);
  if (path != small) free(path);
  struct statx st;
  if (pfd < 0) {
    err = errno, call = CALL_OPENAT2;
  } else if (fd_statx(pfd, &st)) {
    err = errno, call = CALL_STATX;
  } else if (!unchanged(&st, &j)) {
    err = HASH_CHANGED;
  } else {
    int fd = reopen_for_reading(pfd);
    if (fd < 0) {
      err = errno, call = CALL_OPEN;
    } else {
      int failed;
      sha256_ctx xc;
      sha256_init(&xc);
      nx = read_xattrs(fd, digest_xattr, &xc, &failed);
      if (nx > 0) {
        if (out_reserve(o, 32)) {
          close(fd);
          close(pfd);
          return -1;
        }
        sha256_final(&xc, (uint8_t *)o->data + o->len);
        o->len += 32;
      }
      if (nx < 0) {
        if (errno == ENOMEM) {
          close(fd);
          close(pfd);
          return -1;
        }
        err = errno, call = failed == XATTR_LIST ? CALL_FLISTXATTR : CALL_FGETXATTR;
      } else if ((err = vunify_fsattr(fd, &iflags, &projid))) {
        call = CALL_IOCTL;
      } else if (!attrs_only) {
        err = hash_data(fd, st.stx_size, buf, cap, secret, &hash, &elf);
        if (err > 0) call = CALL_READ;
      }
      close(fd);
    }
  }
  if (pfd >= 0) close(pfd);
  if (err) o->len = start + sizeof(struct hash_out), nx = 0; /* drop the digest */
  size_t rec = (o->len - start + RECORD_ALIGN - 1) & ~(size_t)(RECORD_ALIGN - 1);
  if (out_reserve(o, rec - (o->len - start))) return -1;
  memset(o->data + o->len, 0, rec - (o->len - start));
  struct hash_out r = {
      .rec_len = (uint32_t)rec,
      .error = err,
      .detail = err ? (uint32_t)call : (uint32_t)(elf ? HASH_ELF : 0),
      .xattr_count = (uint32_t)nx,
      .hash = hash,
      .flags = err ? 0 : iflags,
      .projid = err ? 0 : projid,
  };
  memcpy(o->data + start, &r, sizeof r);
  o->len = start + rec;
  return 0;
}

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char *in;
  size_t in_len;
  uint8_t secret[XXH3_SECRET_SIZE];
  int attrs_only; /* open, check, xattrs, flags, project; no content read */
  int err;
  outbuf out;
  napi_ref into; /* the caller's Buffer for the results, or NULL */
} hash_batch;

#define HASH_BUF (1 << 20)

/* Read buffers, kept between batches: one malloc'd per batch came from a
 * fresh mmap each time (340 on the fleet), its pages faulted in and zeroed
 * again by every batch. At most one per batch in flight is kept; mallocTrim
 * (memory.c), which the pipeline calls between stages, gives them back. */
enum { HASH_BUFS_KEPT = 8 };
static pthread_mutex_t bufs_lock = PTHREAD_MUTEX_INITIALIZER;
static char *bufs[HASH_BUFS_KEPT];
static int bufs_kept;

static char *buf_take(void) {
  char *b = NULL;
  pthread_mutex_lock(&bufs_lock);
  if (bufs_kept) b = bufs[--bufs_kept];
  pthread_mutex_unlock(&bufs_lock);
  return b ? b : malloc(HASH_BUF);
}

static void buf_give(char *b) {
  pthread_mutex_lock(&bufs_lock);
  if (bufs_kept < HASH_BUFS_KEPT) bufs[bufs_kept++] = b, b = NULL;
  pthread_mutex_unlock(&bufs_lock);
  free(b);
}

void hash_release_buffers(void) {
  pthread_mutex_lock(&bufs_lock);
  while (bufs_kept) free(bufs[--bufs_kept]);
  pthread_mutex_unlock(&bufs_lock);
}

static void hash_execute(napi_env env, void *data) {
  (void)env;
  hash_batch *b = data;
  char *buf = buf_take();
  if (!buf) {
    b->err = ENOMEM;
    return;
  }
  dir_cache dc = {.root_fd = -1, .tail = -1};
  for (size_t off = 0; off + sizeof(struct hash_in) <= b->in_len;) {
    struct hash_in j;
    memcpy(&j, b->in + off, sizeof j);
    if (j.rec_len < sizeof j || off + j.rec_len > b->in_len || sizeof j + j.path_len > j.rec_len) {
      b->err = EINVAL;
      break;
    }
    if (hash_one(b->in + off, buf, HASH_BUF, b->secret, b->attrs_only, &dc, &b->out)) {
      b->err = ENOMEM;
      break;
    }
    off += j.rec_len;
  }
  dir_drop(&dc, 0);
  free(dc.path);
  buf_give(buf);
}

static void hash_complete(napi_env env, napi_status status, void *data) {
  hash_batch *b = data;
  if (status != napi_ok || b->err) {
    napi_reject_deferred(env, b->deferred, make_error(env, status != napi_ok ? ECANCELED : b->err, "hashFiles"));
  } else {
    napi_value buf = NULL, into;
    void *p;
    size_t cap;
    /* Into the caller's buffer when they fit: resolved with the byte count, no new Buffer per batch. */
    if (b->into && napi_get_reference_value(env, b->into, &into) == napi_ok && into &&
        napi_get_buffer_info(env, into, &p, &cap) == napi_ok && b->out.len <= cap) {
      if (b->out.len) memcpy(p, b->out.data, b->out.len);
      napi_create_double(env, (double)b->out.len, &buf);
    } else {
      buf = buffer_from(env, &b->out);
    }
    if (buf)
      napi_resolve_deferred(env, b->deferred, buf);
    else {
      napi_value e;
      napi_get_and_clear_last_exception(env, &e);
      napi_reject_deferred(env, b->deferred, e);
    }
  }
  napi_delete_async_work(env, b->work);
  if (b->into) napi_delete_reference(env, b->into);
  free(b->out.data);
  free(b->in);
  free(b);
}

/* hashFiles(jobs: Buffer, secret: Buffer, attrsOnly?: boolean, into?: Buffer)
 * -> Promise<Buffer | number>: see the layout above. The secret (192 bytes)
 * comes from the host's hash key (src/state/hash-key.ts). attrsOnly: the same opens and
 * checks, xattrs, flags and project; no content read. With `into`, results
 * that fit are copied there (on the JavaScript thread, at completion) and the
 * promise gets their length: a caller that reuses one buffer per batch in
 * flight makes no garbage per batch. */
napi_value HashFiles(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *data;
  size_t len;
  void *secret;
  size_t secret_len;
  if (argc < 2 || arg_buffer(env, argv[0], &data, &len) || arg_buffer(env, argv[1], &secret, &secret_len) || secret_len != XXH3_SECRET_SIZE) {
    napi_throw_type_error(env, NULL, "hashFiles(jobs: Buffer, secret: Buffer of 192 bytes, attrsOnly?: boolean, into?: Buffer)");
    return NULL;
  }
  bool attrs_only = false;
  if (argc >= 3) {
    napi_valuetype t;
    if (napi_typeof(env, argv[2], &t) != napi_ok || (t != napi_undefined && (t != napi_boolean || napi_get_value_bool(env, argv[2], &attrs_only) != napi_ok))) {
      napi_throw_type_error(env, NULL, "hashFiles(jobs: Buffer, secret: Buffer of 192 bytes, attrsOnly?: boolean, into?: Buffer)");
      return NULL;
    }
  }
  hash_batch *b = calloc(1, sizeof *b);
  char *in = malloc(len ? len : 1);
  if (!b || !in) {
    free(b);
    free(in);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  memcpy(in, data, len); /* the worker thread must not touch a JS-owned buffer */
  bool is_buf = false;
  if (argc > 3 && napi_is_buffer(env, argv[3], &is_buf) == napi_ok && is_buf) napi_create_reference(env, argv[3], 1, &b->into);
  b->in = in;
  b->in_len = len;
  memcpy(b->secret, secret, XXH3_SECRET_SIZE);
  b->attrs_only = attrs_only;
  return queue_work(env, "vunify.hashFiles", hash_execute, hash_complete, b, &b->deferred, &b->work);
}

/* xxh64(data: Buffer) -> bigint: XXH64 with seed 0, the hash cache's checksums (src/state/cache.ts). */
napi_value Xxh64(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *data;
  size_t len;
  if (argc < 1 || arg_buffer(env, argv[0], &data, &len)) {
    napi_throw_type_error(env, NULL, "xxh64(data: Buffer)");
    return NULL;
  }
  xxh64_state s;
  xxh64_init(&s);
  xxh64_update(&s, data, len);
  napi_value r;
  napi_create_bigint_uint64(env, xxh64_digest(&s), &r);
  return r;
}

/* The secret argument of xxh3 and xxh3Stream: a 192-byte Buffer, or undefined for the default. */
static int secret_arg(napi_env env, napi_value v, const uint8_t **secret) {
  napi_valuetype t;
  void *p;
  size_t n;
  if (napi_typeof(env, v, &t) == napi_ok && t == napi_undefined) return *secret = xxh3_default_secret, 0;
  if (arg_buffer(env, v, &p, &n) || n != XXH3_SECRET_SIZE) return -1;
  *secret = p;
  return 0;
}

/* The impl argument: 0 (or undefined) as the CPU allows, 1 scalar, 2 AVX2. */
static const xxh3_impl *impl_arg(napi_env env, napi_value v) {
  napi_valuetype t;
  int32_t which = XXH3_AUTO;
  if (napi_typeof(env, v, &t) != napi_ok || (t != napi_undefined && napi_get_value_int32(env, v, &which) != napi_ok)) return NULL;
  return xxh3_impl_get(which);
}

/* xxh3(data: Buffer, secret?: Buffer, impl?: 0 | 1 | 2) -> bigint | null:
 * XXH3-64 in one shot, under the default secret unless one is given; null
 * when the impl asked for is not available on this CPU. For tests and
 * benchmarks: the hash stage hashes files with hash_data (extents.c). */
napi_value Xxh3(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *data;
  size_t len;
  const uint8_t *secret;
  if (argc < 1 || arg_buffer(env, argv[0], &data, &len) || secret_arg(env, argv[1], &secret)) {
    napi_throw_type_error(env, NULL, "xxh3(data: Buffer, secret?: Buffer of 192 bytes, impl?: number)");
    return NULL;
  }
  const xxh3_impl *im = impl_arg(env, argv[2]);
  napi_value r;
  if (!im) return napi_get_null(env, &r), r;
  napi_create_bigint_uint64(env, xxh3_64_with(im, data, len, secret), &r);
  return r;
}

/* xxh3Stream(data: Buffer, cuts: number[], secret?: Buffer, impl?) -> bigint | null:
 * the same through the streaming form, data fed in pieces ending at each
 * cut (ascending offsets), then the rest. */
napi_value Xxh3Stream(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *data;
  size_t len;
  const uint8_t *secret;
  bool is_array = false;
  if (argc < 2 || arg_buffer(env, argv[0], &data, &len) || napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array ||
      secret_arg(env, argv[2], &secret)) {
    napi_throw_type_error(env, NULL, "xxh3Stream(data: Buffer, cuts: number[], secret?: Buffer of 192 bytes, impl?: number)");
    return NULL;
  }
  const xxh3_impl *im = impl_arg(env, argv[3]);
  napi_value r;
  if (!im) return napi_get_null(env, &r), r;
  xxh3_state s;
  xxh3_init_with(&s, im, secret);
  uint32_t n;
  napi_get_array_length(env, argv[1], &n);
  size_t at = 0;
  for (uint32_t k = 0; k <= n; k++) {
    int64_t cut = (int64_t)len;
    napi_value v;
    if (k < n && (napi_get_element(env, argv[1], k, &v) != napi_ok || arg_int(env, v, &cut) || cut < (int64_t)at || cut > (int64_t)len)) {
      napi_throw_range_error(env, NULL, "xxh3Stream: cuts must be ascending offsets within the data");
      return NULL;
    }
    xxh3_update(&s, (const char *)data + at, (size_t)cut - at);
    at = (size_t)cut;
  }
  napi_create_bigint_uint64(env, xxh3_digest(&s), &r);
  return r;
}

/* layout.hashIn, hashOut, hashXattr, and the codes a result can carry. */
void hash_layouts(napi_env env, napi_value layout) {
  napi_value in = layout_new(env, sizeof(struct hash_in));
  FIELD(env, in, struct hash_in, rec_len, "recordLength");
  FIELD(env, in, struct hash_in, root_fd, "rootFd");
  FIELD(env, in, struct hash_in, path_len, "pathLength");
  FIELD(env, in, struct hash_in, mode, "mode");
  FIELD(env, in, struct hash_in, uid, "uid");
  FIELD(env, in, struct hash_in, gid, "gid");
  FIELD(env, in, struct hash_in, ino, "ino");
  FIELD(env, in, struct hash_in, dev, "dev");
  FIELD(env, in, struct hash_in, size, "size");
  FIELD(env, in, struct hash_in, mtime_sec, "mtimeSec");
  FIELD(env, in, struct hash_in, mtime_nsec, "mtimeNsec");
  FIELD(env, in, struct hash_in, ctime_nsec, "ctimeNsec");
  FIELD(env, in, struct hash_in, ctime_sec, "ctimeSec");
  napi_set_named_property(env, layout, "hashIn", in);

  napi_value out = layout_new(env, sizeof(struct hash_out));
  FIELD(env, out, struct hash_out, rec_len, "recordLength");
  FIELD(env, out, struct hash_out, error, "error");
  FIELD(env, out, struct hash_out, detail, "detail");
  FIELD(env, out, struct hash_out, xattr_count, "xattrCount");
  FIELD(env, out, struct hash_out, hash, "hash");
  FIELD(env, out, struct hash_out, flags, "flags");
  FIELD(env, out, struct hash_out, projid, "projid");
  napi_set_named_property(env, layout, "hashOut", out);

  napi_value x = layout_new(env, sizeof(struct hash_xattr));
  FIELD(env, x, struct hash_xattr, name_len, "nameLength");
  FIELD(env, x, struct hash_xattr, value_len, "valueLength");
  napi_set_named_property(env, layout, "hashXattr", x);

  napi_value codes, v;
  napi_create_object(env, &codes);
  napi_create_int32(env, HASH_CHANGED, &v);
  napi_set_named_property(env, codes, "changed", v);
  napi_create_int32(env, HASH_SHRANK, &v);
  napi_set_named_property(env, codes, "shrank", v);
  napi_create_int32(env, HASH_ELF, &v);
  napi_set_named_property(env, codes, "elf", v);
  napi_set_named_property(env, layout, "hashCodes", codes);
  napi_create_double(env, (double)XATTR_TOTAL_MAX, &v);
  napi_set_named_property(env, layout, "xattrTotalMax", v);
  napi_create_double(env, (double)ZERO_BLOCK, &v);
  napi_set_named_property(env, layout, "zeroBlock", v);
  napi_create_double(env, (double)XXH3_SECRET_SIZE, &v);
  napi_set_named_property(env, layout, "hashSecretSize", v);

  napi_value calls;
  size_t n = sizeof hash_call_names / sizeof *hash_call_names;
  napi_create_array_with_length(env, n, &calls);
  for (size_t k = 0; k < n; k++) {
    napi_create_string_utf8(env, hash_call_names[k], NAPI_AUTO_LENGTH, &v);
    napi_set_element(env, calls, (uint32_t)k, v);
  }
  napi_set_named_property(env, layout, "hashCalls", calls);
}
