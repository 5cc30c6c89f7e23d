/*
 * The walk: every guest root listed on N threads, straight into the record
 * tables of src/pipeline/table.ts (columns in memory reserved here with
 * mmap and handed to JavaScript as external ArrayBuffers).
 *
 * Why in C and on threads: one JavaScript object per entry, and one trip
 * into the addon per directory, were most of a run's memory and time at
 * millions of files. Here a directory is a row, a file is a row, and the
 * JavaScript thread only receives the finished columns.
 *
 * The confinement rules are today's (see src/pipeline/walk.ts):
 *  - every directory is opened with openat2 (open_beneath: RESOLVE_BENEATH,
 *    NO_SYMLINKS, NO_MAGICLINKS, NO_XDEV; O_DIRECTORY|O_NOFOLLOW) relative
 *    to the root's descriptor or to a held ancestor's, then checked
 *    (dev, ino) against what its parent's listing said: a guest that swaps
 *    a directory for a symlink gets an error for that directory, not a walk
 *    of the host;
 *  - mount points (the mount table's, per root) and excluded names are
 *    decided on the name, before any statx, and never stat'ed (a statx on
 *    a mount point asks its filesystem, which may never answer); after
 *    statx, an entry on another st_dev or mount id than its root's is a
 *    mount point too, and skipped;
 *  - symlinks are never followed (statx with AT_SYMLINK_NOFOLLOW);
 *  - names stay bytes;
 *  - MAX_DEPTH levels at most; a descriptor is held every STRIDE levels so
 *    a lookup never walks more than STRIDE names, whatever the depth.
 *
 * Memory stays bounded on hostile input: a directory is read with getdents64
 * into one fixed buffer per thread and its entries are handled as they
 * come (a directory of millions of names never has them all in memory
 * twice); rows go to the tables in batches, one lock per batch; and the
 * tables refuse to grow past `maxBytes` (the walk then stops and rejects
 * with EBUDGET, before anything is changed).
 *
 * Rows come in whatever order the threads produce them; errors carry their
 * directory row and name so JavaScript sorts them by path (deterministic).
 */
#include "vunify.h"
#include "glob.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_DEPTH 4096
#define STRIDE 16
#define HOLD_CAP 256
#define WIDE32 0xffffffffu
#define WIDE16 0xffffu
#define WIDE8 0xffu
#define BLOCKS_BIAS 128
#define BATCH_ROWS 1024
#define BATCH_NAMES (BATCH_ROWS * 256)
#define DENTS_BUF 65536

/* ---- columns: one mapping each, reserved for the budget, never moved ---- */

typedef struct {
  char *data;
  size_t reserved; /* bytes mapped (only touched pages cost memory) */
  size_t width;
} column;

static int col_map(column *c, size_t width, size_t rows) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t bytes = (rows * width + page - 1) / page * page;
  if (!bytes) bytes = page;
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return -1;
  c->data = p, c->reserved = bytes, c->width = width;
  return 0;
}

static void col_unmap(column *c) {
  if (c->data) munmap(c->data, c->reserved);
  c->data = NULL;
}

enum { D_PARENT, D_ROOT, D_DEPTH, D_NAMEOFF, D_NAMELEN, D_INO, D_XSTATE, D_PROJID, D_COLS };
enum { F_DIR, F_NAMEOFF, F_NAMELEN, F_INO, F_SIZE, F_BLOCKS, F_META, F_NLINK, F_MTIME, F_MTIMENS, F_CTIME, F_CTIMENS, F_COLS };
enum { M_UID, M_GID, M_MODE, M_COLS };
enum { W_ROWS, W_INO, W_SIZE, W_BLOCKS, W_META, W_NLINK, W_MTIME, W_CTIME, W_COLS };
static const size_t D_WIDTH[D_COLS] = {4, 2, 2, 4, 1, 8, 1, 4};
/* D_XSTATE: what FS_IOC_FSGETXATTR said of a directory as it was listed
 * (src/pipeline/projects.ts reads it instead of opening each directory of a
 * candidate again): the low two bits XS_*, 0 for a directory never listed
 * (the columns start zeroed); XS_INHERIT, XS_LOCKED from fsx_xflags. */
enum { XS_UNREAD = 0, XS_OK = 1, XS_UNSUPPORTED = 2, XS_FAILED = 3, XS_INHERIT = 4, XS_LOCKED = 8 };
static const size_t F_WIDTH[F_COLS] = {4, 4, 1, 4, 4, 1, 2, 1, 4, 4, 4, 4};
static const size_t M_WIDTH[M_COLS] = {4, 4, 2};
static const size_t W_WIDTH[W_COLS] = {4, 8, 8, 8, 8, 8, 8, 8};
#define COL(c, T, i) (((T *)(c).data)[i])

static size_t row_bytes(const size_t *w, int n) {
  size_t s = 0;
  for (int i = 0; i < n; i++) s += w[i];
  return s;
}

/* ---- the walk's shared state ------------------------------------------- */

typedef struct {
  int fd;
  uint64_t dev, ino, mnt_id;
  char **mounts; /* relative paths of mount points below it, NUL-free bytes */
  size_t *mount_lens;
  size_t nmounts;
} wroot;

typedef struct {
  uint32_t dir;
  int32_t held; /* index into w->held, or -1: the root's descriptor */
} witem;

typedef struct {
  int fd;
  uint32_t dir;
  uint32_t refs;
  int32_t next_free;
} wheld;

typedef struct {
  uint32_t dir;
  int err;              /* errno, or -1 for ECHANGED; 0 for EDEEP */
  const char *syscall;  /* NULL for EDEEP */
  uint32_t count;       /* EDEEP: subdirectories not listed */
  uint16_t name_len;
  char *name;           /* an entry's name (statx errors), else NULL */
} werror;

typedef struct walk {
  /* options */
  wroot *roots;
  size_t nroots;
  struct vu_rules *rules;
  int have_rules;
  double min_size, max_size;
  size_t threads;
  uint64_t max_bytes;
  uint64_t file_bytes; /* charged per file kept, for what the rest of the run holds per file */
  double *progress; /* JS Float64Array(1), kept alive by progress_ref */
  napi_ref progress_ref;
  napi_threadsafe_function hook;

  /* tables */
  column d[D_COLS], f[F_COLS], m[M_COLS], wd[W_COLS], names;
  size_t ndirs, nfiles, nmetas, nwide, nnames;
  size_t cap_dirs, cap_files, cap_metas, cap_wide, cap_names;
  uint32_t *meta_slots; /* open addressing: meta row + 1, 0 empty */
  size_t meta_nslots;

  /* work */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  witem *stack;
  size_t nstack, cap_stack;
  size_t active;
  wheld *held;
  size_t nheld, cap_held;
  int32_t held_free;
  size_t held_open; /* descriptors held now (at most HOLD_CAP beyond the STRIDE ones) */
  werror *errors;
  size_t nerrors, cap_errors, error_bytes;
  int stop;      /* budget hit or out of memory */
  int oom;
  const char *limit; /* what was hit */
  size_t stop_files; /* files kept, the batch that did not fit included */
  uint64_t stop_need; /* bytes the tables and the per-file charge would have needed */

  atomic_uint_fast64_t listed;
  uint64_t special, out_of_bounds, excluded, mount_points;

  napi_async_work work;
  napi_deferred deferred;
} walk;

static size_t used_bytes(walk *w) {
  return w->nfiles * w->file_bytes + w->ndirs * row_bytes(D_WIDTH, D_COLS) + w->nfiles * row_bytes(F_WIDTH, F_COLS) +
         w->nmetas * row_bytes(M_WIDTH, M_COLS) + w->nwide * row_bytes(W_WIDTH, W_COLS) + w->nnames +
         w->meta_nslots * 4 + w->cap_stack * sizeof(witem) + w->error_bytes;
}

/* ---- per-thread batch: a directory's rows, appended under one lock -------- */

typedef struct {
  uint32_t name_at; /* offset in the batch's name bytes */
  uint8_t name_len;
  uint64_t ino, size, blocks;
  uint32_t uid, gid, mode, nlink;
  int64_t mtime, ctime;
  uint32_t mtime_ns, ctime_ns;
} bfile;

typedef struct {
  uint32_t name_at;
  uint8_t name_len;
  uint64_t ino;
} bdir;

typedef struct {
  walk *w;
  bfile files[BATCH_ROWS];
  bdir dirs[BATCH_ROWS];
  size_t nfiles, ndirs;
  char names[BATCH_NAMES];
  size_t nnames;
  uint64_t special, out_of_bounds, excluded, mount_points, listed;
  char *dents;
  char *path; /* the directory's path from the root, "/a/b/" form, for rules and mounts */
  size_t path_cap;
} worker;

static void set_stop(walk *w, const char *limit) {
  if (!w->stop) w->stop = 1, w->limit = limit;
}

static int64_t meta_of(walk *w, uint32_t uid, uint32_t gid, uint32_t mode) {
  uint64_t h = ((uint64_t)uid * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)gid * 0xc2b2ae3d27d4eb4fULL) ^ mode;
  h ^= h >> 29;
  if (w->nmetas * 2 >= w->meta_nslots) {
    size_t n = w->meta_nslots ? w->meta_nslots * 2 : 1024;
    uint32_t *s = calloc(n, 4);
    if (!s) return -1;
    for (size_t i = 0; i < w->nmetas; i++) {
      uint64_t g = ((uint64_t)COL(w->m[M_UID], uint32_t, i) * 0x9e3779b97f4a7c15ULL) ^
                   ((uint64_t)COL(w->m[M_GID], uint32_t, i) * 0xc2b2ae3d27d4eb4fULL) ^ COL(w->m[M_MODE], uint16_t, i);
      g ^= g >> 29;
      size_t k = g & (n - 1);
      while (s[k]) k = (k + 1) & (n - 1);
      s[k] = (uint32_t)i + 1;
    }
    free(w->meta_slots);
    w->meta_slots = s, w->meta_nslots = n;
  }
  size_t k = h & (w->meta_nslots - 1);
  for (; w->meta_slots[k]; k = (k + 1) & (w->meta_nslots - 1)) {
    uint32_t i = w->meta_slots[k] - 1;
    if (COL(w->m[M_UID], uint32_t, i) == uid && COL(w->m[M_GID], uint32_t, i) == gid &&
        COL(w->m[M_MODE], uint16_t, i) == (uint16_t)mode)
      return i;
  }
  if (w->nmetas >= w->cap_metas) return -2;
  size_t i = w->nmetas++;
  COL(w->m[M_UID], uint32_t, i) = uid;
  COL(w->m[M_GID], uint32_t, i) = gid;
  COL(w->m[M_MODE], uint16_t, i) = (uint16_t)mode;
  w->meta_slots[k] = (uint32_t)i + 1;
  return (int64_t)i;
}

static int push_item(walk *w, uint32_t dir, int32_t held) {
  if (w->nstack == w->cap_stack) {
    size_t n = w->cap_stack ? w->cap_stack * 2 : 1024;
    witem *s = realloc(w->stack, n * sizeof *s);
    if (!s) return -1;
    w->stack = s, w->cap_stack = n;
  }
  w->stack[w->nstack++] = (witem){dir, held};
  if (held >= 0) w->held[held].refs++;
  return 0;
}

/* Which of a file's values do not fit the compact columns (the rules of
 * src/pipeline/table.ts; table-builder.ts decides alike): its inode number's
 * upper half is not its directory's, 4 GiB or more, an allocation more than
 * a few blocks from usual_blocks(size), 255 links or more, a time outside
 * 0..2^32-2. The meta row is decided as it is numbered. */
static uint64_t usual_blocks(uint64_t size) { return (size + 4095) / 4096 * 8; }

static int blocks_class(const bfile *b) {
  if (b->size >= ((uint64_t)1 << 53) || b->blocks >= ((uint64_t)1 << 53)) return -1;
  int64_t d = (int64_t)b->blocks - (int64_t)usual_blocks(b->size) + BLOCKS_BIAS;
  return d >= 0 && d < (int64_t)WIDE8 ? (int)d : -1;
}

static int ino_fits(uint64_t ino, uint64_t dir_ino) { return (uint32_t)ino != WIDE32 && ino >> 32 == dir_ino >> 32; }

static int row_wide(const bfile *b, uint64_t dir_ino) {
  return !ino_fits(b->ino, dir_ino) || b->size >= WIDE32 || blocks_class(b) < 0 || b->nlink >= WIDE8 || b->mtime < 0 ||
         b->mtime >= WIDE32 || b->ctime < 0 || b->ctime >= WIDE32;
}

/* Append the batch: files, then subdirectories (whose rows become work),
 * under the lock. `dir` is the listed directory's row, `child_held` the
 * held descriptor its subdirectories are opened from. */
static void flush(worker *t, uint32_t dir, int32_t child_held) {
  walk *w = t->w;
  pthread_mutex_lock(&w->mu);
  w->special += t->special, w->out_of_bounds += t->out_of_bounds;
  w->excluded += t->excluded, w->mount_points += t->mount_points;
  t->special = t->out_of_bounds = t->excluded = t->mount_points = 0;
  if (w->stop) goto out;
  size_t nwide = 0;
  uint64_t dir_ino = (uint64_t)COL(w->d[D_INO], double, dir);
  /* Past 65,534 owner/group/mode triples any row may be wide by its meta alone. */
  int metas_full = w->nmetas + t->nfiles >= WIDE16;
  for (size_t i = 0; i < t->nfiles; i++) nwide += metas_full || row_wide(&t->files[i], dir_ino);
  if (w->nfiles + t->nfiles > w->cap_files || w->ndirs + t->ndirs > w->cap_dirs ||
      w->nnames + t->nnames > w->cap_names || w->nwide + nwide > w->cap_wide) {
    set_stop(w, w->nnames + t->nnames > w->cap_names ? "the name heap's 4 GiB" : "the row limit");
    goto out;
  }
  size_t more = t->nfiles * (row_bytes(F_WIDTH, F_COLS) + w->file_bytes) +
                t->ndirs * (row_bytes(D_WIDTH, D_COLS) + sizeof(witem)) + nwide * row_bytes(W_WIDTH, W_COLS) + t->nnames +
                t->nfiles * (row_bytes(M_WIDTH, M_COLS) + 8);
  if (used_bytes(w) + more > w->max_bytes) {
    if (!w->stop) w->stop_files = w->nfiles + t->nfiles, w->stop_need = used_bytes(w) + more;
    set_stop(w, "maxBytes");
    goto out;
  }
  size_t base = w->nnames;
  memcpy(w->names.data + base, t->names, t->nnames);
  w->nnames += t->nnames;
  for (size_t i = 0; i < t->nfiles; i++) {
    bfile *b = &t->files[i];
    int64_t meta = meta_of(w, b->uid, b->gid, b->mode);
    if (meta < 0) {
      if (meta == -1) w->oom = 1;
      set_stop(w, "the row limit");
      goto out;
    }
    size_t r = w->nfiles++;
    COL(w->f[F_DIR], uint32_t, r) = dir;
    COL(w->f[F_NAMEOFF], uint32_t, r) = (uint32_t)(base + b->name_at);
    COL(w->f[F_NAMELEN], uint8_t, r) = b->name_len;
    COL(w->f[F_MTIMENS], uint32_t, r) = b->mtime_ns;
    COL(w->f[F_CTIMENS], uint32_t, r) = b->ctime_ns;
    int iw = !ino_fits(b->ino, dir_ino), sw = b->size >= WIDE32, bc = blocks_class(b), ew = meta >= WIDE16;
    int nw = b->nlink >= WIDE8, mw = b->mtime < 0 || b->mtime >= WIDE32, cw = b->ctime < 0 || b->ctime >= WIDE32;
    COL(w->f[F_INO], uint32_t, r) = iw ? WIDE32 : (uint32_t)b->ino;
    COL(w->f[F_SIZE], uint32_t, r) = sw ? WIDE32 : (uint32_t)b->size;
    COL(w->f[F_BLOCKS], uint8_t, r) = bc < 0 ? WIDE8 : (uint8_t)bc;
    COL(w->f[F_META], uint16_t, r) = ew ? WIDE16 : (uint16_t)meta;
    COL(w->f[F_NLINK], uint8_t, r) = nw ? WIDE8 : (uint8_t)b->nlink;
    COL(w->f[F_MTIME], uint32_t, r) = mw ? WIDE32 : (uint32_t)b->mtime;
    COL(w->f[F_CTIME], uint32_t, r) = cw ? WIDE32 : (uint32_t)b->ctime;
    if (iw || sw || bc < 0 || ew || nw || mw || cw) {
      /* Rows are numbered under this lock, so the wide table stays sorted by row. */
      size_t k = w->nwide++;
      COL(w->wd[W_ROWS], uint32_t, k) = (uint32_t)r;
      COL(w->wd[W_INO], double, k) = (double)b->ino;
      COL(w->wd[W_SIZE], double, k) = (double)b->size;
      COL(w->wd[W_BLOCKS], double, k) = (double)b->blocks;
      COL(w->wd[W_META], double, k) = (double)meta;
      COL(w->wd[W_NLINK], double, k) = (double)b->nlink;
      COL(w->wd[W_MTIME], double, k) = (double)b->mtime;
      COL(w->wd[W_CTIME], double, k) = (double)b->ctime;
    }
  }
  uint16_t root = COL(w->d[D_ROOT], uint16_t, dir);
  uint16_t depth = COL(w->d[D_DEPTH], uint16_t, dir) + 1;
  for (size_t i = 0; i < t->ndirs; i++) {
    bdir *b = &t->dirs[i];
    size_t r = w->ndirs++;
    COL(w->d[D_PARENT], int32_t, r) = (int32_t)dir;
    COL(w->d[D_ROOT], uint16_t, r) = root;
    COL(w->d[D_DEPTH], uint16_t, r) = depth;
    COL(w->d[D_NAMEOFF], uint32_t, r) = (uint32_t)(base + b->name_at);
    COL(w->d[D_NAMELEN], uint8_t, r) = b->name_len;
    COL(w->d[D_INO], double, r) = (double)b->ino;
    if (push_item(w, (uint32_t)r, child_held)) {
      w->oom = 1;
      set_stop(w, "memory");
      goto out;
    }
  }
  if (t->ndirs) pthread_cond_broadcast(&w->cv);
out:
  t->nfiles = t->ndirs = t->nnames = 0;
  uint64_t n = atomic_fetch_add(&w->listed, t->listed) + t->listed;
  t->listed = 0;
  if (w->progress) w->progress[0] = (double)n;
  pthread_mutex_unlock(&w->mu);
}

static void add_error(walk *w, uint32_t dir, int err, const char *syscall, uint32_t count, const char *name, size_t name_len) {
  pthread_mutex_lock(&w->mu);
  if (w->nerrors == w->cap_errors) {
    size_t n = w->cap_errors ? w->cap_errors * 2 : 16;
    werror *e = realloc(w->errors, n * sizeof *e);
    if (!e) {
      w->oom = 1;
      set_stop(w, "memory");
      goto out;
    }
    w->errors = e, w->cap_errors = n;
  }
  char *copy = NULL;
  if (name) {
    copy = malloc(name_len ? name_len : 1);
    if (!copy) {
      w->oom = 1;
      set_stop(w, "memory");
      goto out;
    }
    memcpy(copy, name, name_len);
  }
  w->errors[w->nerrors++] = (werror){dir, err, syscall, count, (uint16_t)name_len, copy};
  w->error_bytes += sizeof(werror) + name_len;
  if (used_bytes(w) > w->max_bytes) set_stop(w, "maxBytes");
out:
  pthread_mutex_unlock(&w->mu);
}

/* ---- one directory ------------------------------------------------------ */

/* Write the names from `stop` (exclusive; UINT32_MAX: the root) down to
 * `dir` into buf as "a/b/c" ("." when empty); returns its length. */
static size_t rel_path(walk *w, uint32_t dir, uint32_t stop, char *buf, size_t cap) {
  size_t len = 0;
  for (uint32_t d = dir; d != stop && COL(w->d[D_PARENT], int32_t, d) >= 0; d = (uint32_t)COL(w->d[D_PARENT], int32_t, d))
    len += COL(w->d[D_NAMELEN], uint8_t, d) + (len ? 1 : 0);
  if (len + 1 > cap) return (size_t)-1;
  if (!len) {
    memcpy(buf, ".", 2);
    return 1;
  }
  size_t end = len;
  buf[end] = 0;
  for (uint32_t d = dir; d != stop && COL(w->d[D_PARENT], int32_t, d) >= 0; d = (uint32_t)COL(w->d[D_PARENT], int32_t, d)) {
    size_t n = COL(w->d[D_NAMELEN], uint8_t, d);
    if (end != len) buf[--end] = '/';
    end -= n;
    memcpy(buf + end, w->names.data + COL(w->d[D_NAMEOFF], uint32_t, d), n);
  }
  return len;
}

/* "/a/b/" of dir into t->path (grown as needed); its length, or -1. */
static ssize_t full_prefix(worker *t, uint32_t dir) {
  walk *w = t->w;
  size_t len = 1;
  for (uint32_t d = dir; COL(w->d[D_PARENT], int32_t, d) >= 0; d = (uint32_t)COL(w->d[D_PARENT], int32_t, d))
    len += COL(w->d[D_NAMELEN], uint8_t, d) + 1;
  if (len + 256 > t->path_cap) {
    size_t n = (len + 256) * 2;
    char *p = realloc(t->path, n);
    if (!p) return -1;
    t->path = p, t->path_cap = n;
  }
  size_t end = len;
  t->path[--end] = '/';
  for (uint32_t d = dir; COL(w->d[D_PARENT], int32_t, d) >= 0; d = (uint32_t)COL(w->d[D_PARENT], int32_t, d)) {
    size_t n = COL(w->d[D_NAMELEN], uint8_t, d);
    end -= n;
    memcpy(t->path + end, w->names.data + COL(w->d[D_NAMEOFF], uint32_t, d), n);
    t->path[--end] = '/';
  }
  return (ssize_t)len;
}

typedef struct {
  int root;
  char *path;
  size_t len;
  sem_t done;
} hook_call;

static void call_hook(napi_env env, napi_value js, void *ctx, void *data) {
  hook_call *c = data;
  if (env && js) {
    napi_value args[2], undef, r;
    napi_create_int32(env, c->root, &args[0]);
    void *p;
    if (napi_create_buffer_copy(env, c->len, c->path, &p, &args[1]) == napi_ok) {
      napi_get_undefined(env, &undef);
      if (napi_call_function(env, undef, js, 2, args, &r) != napi_ok) {
        napi_value ex;
        napi_get_and_clear_last_exception(env, &ex);
      }
    }
  }
  sem_post(&c->done);
}

static int is_mount_point(wroot *r, const char *path, size_t len) {
  /* path is "/a/b/name"; the table's are "a/b/name" */
  for (size_t i = 0; i < r->nmounts; i++)
    if (r->mount_lens[i] == len - 1 && memcmp(r->mounts[i], path + 1, len - 1) == 0) return 1;
  return 0;
}

static void list_dir(worker *t, witem it) {
  walk *w = t->w;
  uint32_t dir = it.dir;
  uint16_t root_ix = COL(w->d[D_ROOT], uint16_t, dir);
  uint16_t depth = COL(w->d[D_DEPTH], uint16_t, dir);
  wroot *root = &w->roots[root_ix];
  int base_fd = root->fd;
  uint32_t stop = UINT32_MAX;
  uint32_t deep = 0;
  if (it.held >= 0) {
    /* under the lock: another thread may be growing w->held */
    pthread_mutex_lock(&w->mu);
    base_fd = w->held[it.held].fd, stop = w->held[it.held].dir;
    pthread_mutex_unlock(&w->mu);
  }
  /* At most STRIDE names: 16 * 256 bytes. */
  char rel[STRIDE * 256 + 2];
  if (rel_path(w, dir, stop, rel, sizeof rel) == (size_t)-1) {
    add_error(w, dir, ENAMETOOLONG, "openat2", 0, NULL, 0);
    return;
  }
  if (w->hook) {
    /* the hook gets the path from the root ("a/b"), as the tests name it */
    ssize_t fl = full_prefix(t, dir);
    hook_call c = {.root = root_ix, .path = t->path + 1, .len = fl > 1 ? (size_t)fl - 2 : 0};
    sem_init(&c.done, 0, 0);
    if (napi_call_threadsafe_function(w->hook, &c, napi_tsfn_blocking) == napi_ok)
      while (sem_wait(&c.done) && errno == EINTR) {
      }
    sem_destroy(&c.done);
  }
  int fd = open_beneath(base_fd, rel, O_RDONLY | O_DIRECTORY | O_NONBLOCK, 0);
  if (fd < 0) {
    add_error(w, dir, errno, "openat2", 0, NULL, 0);
    return;
  }
  struct statx self;
  if (fd_statx(fd, &self)) {
    add_error(w, dir, errno, "statx", 0, NULL, 0);
    close(fd);
    return;
  }
  if (statx_dev(&self) != root->dev || self.stx_ino != (uint64_t)COL(w->d[D_INO], double, dir)) {
    add_error(w, dir, -1, "scandir", 0, NULL, 0);
    close(fd);
    return;
  }
  /* Its project and flags, on the descriptor the walk has open anyway. */
  struct fsxattr fx;
  memset(&fx, 0, sizeof fx);
  if (ioctl(fd, FS_IOC_FSGETXATTR, &fx) == 0) {
    COL(w->d[D_XSTATE], uint8_t, dir) = XS_OK | (fx.fsx_xflags & FS_XFLAG_PROJINHERIT ? XS_INHERIT : 0) |
                                        (fx.fsx_xflags & (FS_XFLAG_IMMUTABLE | FS_XFLAG_APPEND) ? XS_LOCKED : 0);
    COL(w->d[D_PROJID], uint32_t, dir) = fx.fsx_projid;
  } else {
    int e = errno;
    COL(w->d[D_XSTATE], uint8_t, dir) =
        e == ENOTTY || e == EINVAL || e == EOPNOTSUPP || e == ENOSYS ? XS_UNSUPPORTED : XS_FAILED;
  }
  /* Below the root, each directory's descriptor is held for its
   * subdirectories while fewer than HOLD_CAP are held, so each opens by its
   * one name (from a farther ancestor a lookup walks every name between: a
   * third of the walk's lookups on the fleet); past that, every STRIDE
   * levels, so that a hostile depth costs at most STRIDE names per lookup
   * and a bounded number of descriptors. A held directory was opened and
   * checked like any other. */
  int32_t child_held = it.held;
  if (depth) {
    int need = depth % STRIDE == 0;
    int32_t h = -1;
    pthread_mutex_lock(&w->mu);
    if (need || w->held_open < HOLD_CAP) {
      h = w->held_free;
      if (h >= 0) {
        w->held_free = w->held[h].next_free;
      } else {
        if (w->nheld == w->cap_held) {
          size_t n = w->cap_held * 2 + 16;
          wheld *p = realloc(w->held, n * sizeof *p);
          if (p) w->held = p, w->cap_held = n;
        }
        if (w->nheld < w->cap_held) h = (int32_t)w->nheld++;
      }
      if (h >= 0) w->held[h] = (wheld){fd, dir, 1, -1}, w->held_open++;
    }
    pthread_mutex_unlock(&w->mu);
    if (h >= 0) {
      child_held = h;
    } else if (need) {
      add_error(w, dir, ENOMEM, "scandir", 0, NULL, 0);
      close(fd);
      return;
    }
  }
  ssize_t plen = 0;
  int named = w->have_rules || root->nmounts;
  if (named && (plen = full_prefix(t, dir)) < 0) {
    add_error(w, dir, ENOMEM, "scandir", 0, NULL, 0);
    plen = 0, named = 0;
    goto done;
  }
  for (;;) {
    long n = syscall(SYS_getdents64, fd, t->dents, DENTS_BUF);
    if (n < 0) {
      add_error(w, dir, errno, "getdents64", 0, NULL, 0);
      break;
    }
    if (n == 0 || w->stop) break;
    for (long off = 0; off < n;) {
      struct vu_dirent64 *de = (void *)(t->dents + off);
      off += de->d_reclen;
      const char *nm = de->d_name;
      if (nm[0] == '.' && (nm[1] == 0 || (nm[1] == '.' && nm[2] == 0))) continue;
      size_t nl = strlen(nm);
      t->listed++;
      if (nl > 255) {
        /* Rows, rel paths and t->path are sized for NAME_MAX; FUSE (up to
         * 1024), CIFS, vfat or ntfs3 with UTF-8 can list longer names. */
        add_error(w, dir, ENAMETOOLONG, "getdents64", 0, nm, nl);
        continue;
      }
      int ty = type_of_dtype(de->d_type);
      if (ty >= 0 && ty != T_REG && ty != T_DIR) {
        t->special++;
        continue;
      }
      if (named) {
        memcpy(t->path + plen, nm, nl);
        if (root->nmounts && is_mount_point(root, t->path, (size_t)plen + nl)) {
          t->mount_points++;
          continue;
        }
        if (w->have_rules && vu_rules_excludes(w->rules, t->path, (size_t)plen + nl, (size_t)plen)) {
          t->excluded++;
          continue;
        }
      }
      struct statx st;
      if (do_statx(fd, nm, 0, &st)) {
        add_error(w, dir, errno, "statx", 0, nm, nl);
        continue;
      }
      ty = type_of_mode(st.stx_mode);
      if (ty != T_REG && ty != T_DIR) {
        t->special++;
        continue;
      }
      uint64_t mnt = 0;
#ifdef STATX_MNT_ID
      mnt = (st.stx_mask & STATX_MNT_ID) ? st.stx_mnt_id : 0;
#endif
      if (statx_dev(&st) != root->dev || mnt != root->mnt_id) {
        t->mount_points++;
        continue;
      }
      if (ty == T_DIR) {
        if (depth >= MAX_DEPTH) {
          deep++;
          continue;
        }
        if (t->ndirs == BATCH_ROWS || t->nnames + nl > BATCH_NAMES) flush(t, dir, child_held);
        t->dirs[t->ndirs++] = (bdir){(uint32_t)t->nnames, (uint8_t)nl, st.stx_ino};
      } else {
        if ((double)st.stx_size < w->min_size || (double)st.stx_size > w->max_size) {
          t->out_of_bounds++;
          continue;
        }
        if (t->nfiles == BATCH_ROWS || t->nnames + nl > BATCH_NAMES) flush(t, dir, child_held);
        t->files[t->nfiles++] = (bfile){
            .name_at = (uint32_t)t->nnames, .name_len = (uint8_t)nl, .ino = st.stx_ino, .size = st.stx_size,
            .blocks = st.stx_blocks, .uid = st.stx_uid, .gid = st.stx_gid, .mode = st.stx_mode,
            .nlink = st.stx_nlink, .mtime = st.stx_mtime.tv_sec, .ctime = st.stx_ctime.tv_sec,
            .mtime_ns = st.stx_mtime.tv_nsec, .ctime_ns = st.stx_ctime.tv_nsec};
      }
      memcpy(t->names + t->nnames, nm, nl);
      t->nnames += nl;
    }
  }
  if (deep) add_error(w, dir, 0, NULL, deep, NULL, 0);
done:
  flush(t, dir, child_held);
  if (child_held != it.held) {
    /* release this directory's own hold; its subdirectories keep theirs */
    pthread_mutex_lock(&w->mu);
    if (--w->held[child_held].refs == 0) {
      close(fd);
      w->held[child_held].fd = -1;
      w->held[child_held].next_free = w->held_free;
      w->held_free = child_held;
      w->held_open--;
    }
    pthread_mutex_unlock(&w->mu);
  } else {
    close(fd);
  }
}

static void *worker_main(void *arg) {
  worker *t = arg;
  walk *w = t->w;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    if (w->stop) break;
    if (w->nstack) {
      witem it = w->stack[--w->nstack];
      w->active++;
      pthread_mutex_unlock(&w->mu);
      list_dir(t, it);
      pthread_mutex_lock(&w->mu);
      w->active--;
      if (it.held >= 0 && --w->held[it.held].refs == 0) {
        close(w->held[it.held].fd);
        w->held[it.held].fd = -1;
        w->held[it.held].next_free = w->held_free;
        w->held_free = it.held;
        w->held_open--;
      }
      if (!w->nstack && !w->active) pthread_cond_broadcast(&w->cv);
      continue;
    }
    if (!w->active) break;
    pthread_cond_wait(&w->cv, &w->mu);
  }
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

static void walk_execute(napi_env env, void *data) {
  walk *w = data;
  size_t n = w->threads;
  worker *ts = calloc(n, sizeof *ts);
  pthread_t *ids = calloc(n, sizeof *ids);
  int ok = ts && ids;
  for (size_t i = 0; ok && i < n; i++) {
    ts[i].w = w;
    ts[i].dents = malloc(DENTS_BUF);
    ts[i].path_cap = 4096;
    ts[i].path = malloc(ts[i].path_cap);
    if (!ts[i].dents || !ts[i].path) ok = 0;
  }
  size_t started = 0;
  if (ok) {
    for (size_t i = 1; i < n; i++) {
      if (pthread_create(&ids[i], NULL, worker_main, &ts[i])) break;
      started = i;
    }
    worker_main(&ts[0]);
    for (size_t i = 1; i <= started; i++) pthread_join(ids[i], NULL);
  } else {
    w->oom = 1, set_stop(w, "memory");
  }
  for (size_t i = 0; ts && i < n; i++) free(ts[i].dents), free(ts[i].path);
  free(ts), free(ids);
  /* a stopped walk may leave items (and their held descriptors) behind */
  for (size_t i = 0; i < w->nheld; i++)
    if (w->held[i].fd >= 0) close(w->held[i].fd), w->held[i].fd = -1;
  if (w->hook) napi_release_threadsafe_function(w->hook, napi_tsfn_release);
}

/* ---- handing the tables to JavaScript ------------------------------------ */

static void unmap_finalizer(napi_env env, void *data, void *hint) { munmap(data, (size_t)(uintptr_t)hint); }

static napi_value column_array(napi_env env, column *c, size_t count, napi_typedarray_type type) {
  napi_value ab, ta;
  if (napi_create_external_arraybuffer(env, c->data, count * c->width, unmap_finalizer,
                                       (void *)(uintptr_t)c->reserved, &ab) != napi_ok) {
    /* no external buffers here (a sandboxed V8): copy */
    void *p;
    napi_create_arraybuffer(env, count * c->width, &p, &ab);
    memcpy(p, c->data, count * c->width);
    col_unmap(c);
  }
  c->data = NULL;
  napi_create_typedarray(env, type, count, ab, 0, &ta);
  return ta;
}

static void set_num(napi_env env, napi_value o, const char *k, double v) {
  napi_value x;
  napi_create_double(env, v, &x);
  napi_set_named_property(env, o, k, x);
}

static napi_value table(napi_env env, size_t count, const char *const *names, column *cols,
                        const napi_typedarray_type *types, int n) {
  napi_value o;
  napi_create_object(env, &o);
  set_num(env, o, "count", (double)count);
  for (int i = 0; i < n; i++) napi_set_named_property(env, o, names[i], column_array(env, &cols[i], count, types[i]));
  return o;
}

static void walk_free(walk *w) {
  for (int i = 0; i < D_COLS; i++) col_unmap(&w->d[i]);
  for (int i = 0; i < F_COLS; i++) col_unmap(&w->f[i]);
  for (int i = 0; i < M_COLS; i++) col_unmap(&w->m[i]);
  for (int i = 0; i < W_COLS; i++) col_unmap(&w->wd[i]);
  col_unmap(&w->names);
  for (size_t i = 0; i < w->nroots; i++) {
    for (size_t k = 0; k < w->roots[i].nmounts; k++) free(w->roots[i].mounts[k]);
    free(w->roots[i].mounts), free(w->roots[i].mount_lens);
  }
  free(w->roots);
  for (size_t i = 0; i < w->nerrors; i++) free(w->errors[i].name);
  free(w->errors), free(w->stack), free(w->held), free(w->meta_slots);
  if (w->rules) vu_rules_free(w->rules);
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  free(w);
}

static void walk_complete(napi_env env, napi_status status, void *data) {
  walk *w = data;
  napi_value result, v;
  if (w->progress_ref) napi_delete_reference(env, w->progress_ref);
  if (w->stop) {
    char msg[512];
    napi_value code, m, e;
    if (w->oom)
      snprintf(msg, sizeof msg, "out of memory after listing %llu entries", (unsigned long long)atomic_load(&w->listed));
    else
      snprintf(msg, sizeof msg,
               "the walk stopped after listing %llu entries (%zu files, %zu directories): its tables would grow past %s (%llu bytes)",
               (unsigned long long)atomic_load(&w->listed), w->nfiles, w->ndirs, w->limit,
               (unsigned long long)w->max_bytes);
    napi_create_string_utf8(env, w->oom ? "ENOMEM" : "EBUDGET", NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
    napi_create_error(env, code, m, &e);
    set_num(env, e, "listed", (double)atomic_load(&w->listed));
    set_num(env, e, "limit", (double)w->max_bytes);
    set_num(env, e, "files", (double)(w->stop_files ? w->stop_files : w->nfiles));
    set_num(env, e, "need", (double)(w->stop_need ? w->stop_need : used_bytes(w)));
    napi_reject_deferred(env, w->deferred, e);
    goto out;
  }
  napi_create_object(env, &result);
  static const char *const dn[] = {"parent", "root", "depth", "nameOff", "nameLen", "ino", "xstate", "projid"};
  static const napi_typedarray_type dt[] = {napi_int32_array,  napi_uint16_array,  napi_uint16_array, napi_uint32_array,
                                            napi_uint8_array,  napi_float64_array, napi_uint8_array,  napi_uint32_array};
  static const char *const fn[] = {"dir", "nameOff", "nameLen", "ino", "size", "blocks", "meta", "nlink",
                                   "mtimeSec", "mtimeNsec", "ctimeSec", "ctimeNsec"};
  static const napi_typedarray_type ft[] = {napi_uint32_array, napi_uint32_array, napi_uint8_array, napi_uint32_array,
                                            napi_uint32_array, napi_uint8_array,  napi_uint16_array, napi_uint8_array,
                                            napi_uint32_array, napi_uint32_array, napi_uint32_array, napi_uint32_array};
  static const char *const mn[] = {"uid", "gid", "mode"};
  static const napi_typedarray_type mt[] = {napi_uint32_array, napi_uint32_array, napi_uint16_array};
  static const char *const wn[] = {"rows", "ino", "size", "blocks", "meta", "nlink", "mtimeSec", "ctimeSec"};
  static const napi_typedarray_type wt[] = {napi_uint32_array,  napi_float64_array, napi_float64_array, napi_float64_array,
                                            napi_float64_array, napi_float64_array, napi_float64_array, napi_float64_array};
  napi_set_named_property(env, result, "dirs", table(env, w->ndirs, dn, w->d, dt, D_COLS));
  napi_set_named_property(env, result, "files", table(env, w->nfiles, fn, w->f, ft, F_COLS));
  napi_set_named_property(env, result, "metas", table(env, w->nmetas, mn, w->m, mt, M_COLS));
  napi_set_named_property(env, result, "wide", table(env, w->nwide, wn, w->wd, wt, W_COLS));
  if (napi_create_external_buffer(env, w->nnames, w->names.data, unmap_finalizer, (void *)(uintptr_t)w->names.reserved, &v) !=
      napi_ok) {
    void *p;
    napi_create_buffer_copy(env, w->nnames, w->names.data, &p, &v);
    col_unmap(&w->names);
  }
  w->names.data = NULL;
  napi_set_named_property(env, result, "names", v);
  set_num(env, result, "special", (double)w->special);
  set_num(env, result, "outOfBounds", (double)w->out_of_bounds);
  set_num(env, result, "excluded", (double)w->excluded);
  set_num(env, result, "mountPoints", (double)w->mount_points);
  set_num(env, result, "listed", (double)atomic_load(&w->listed));
  /* errors: [dirRow, name Buffer | null, Error | null (EDEEP), errno, count] */
  napi_value errs;
  napi_create_array_with_length(env, w->nerrors, &errs);
  for (size_t i = 0; i < w->nerrors; i++) {
    werror *e = &w->errors[i];
    napi_value row, x;
    napi_create_array_with_length(env, 5, &row);
    napi_create_uint32(env, e->dir, &x);
    napi_set_element(env, row, 0, x);
    if (e->name) {
      void *p;
      napi_create_buffer_copy(env, e->name_len, e->name, &p, &x);
    } else {
      napi_get_null(env, &x);
    }
    napi_set_element(env, row, 1, x);
    if (e->syscall) x = make_error(env, e->err, e->syscall);
    else napi_get_null(env, &x);
    napi_set_element(env, row, 2, x);
    napi_create_int32(env, e->err, &x);
    napi_set_element(env, row, 3, x);
    napi_create_uint32(env, e->count, &x);
    napi_set_element(env, row, 4, x);
    napi_set_element(env, errs, i, row);
  }
  napi_set_named_property(env, result, "errors", errs);
  napi_resolve_deferred(env, w->deferred, result);
out:
  napi_delete_async_work(env, w->work);
  walk_free(w);
}

/* ---- arguments ------------------------------------------------------------ */

static int get_num(napi_env env, napi_value o, const char *k, double *out) {
  napi_value v;
  bool has = false;
  if (napi_has_named_property(env, o, k, &has) != napi_ok || !has) return 1;
  napi_get_named_property(env, o, k, &v);
  return napi_get_value_double(env, v, out) == napi_ok ? 0 : -1;
}

static napi_value prop(napi_env env, napi_value o, const char *k) {
  napi_value v = NULL;
  napi_get_named_property(env, o, k, &v);
  return v;
}

/* walk({ roots: [{ fd, dev, ino, mntId, mounts: Buffer[] }], patterns: Buffer[],
 *        include: Uint8Array, minSize, maxSize, threads, maxBytes, fileBytes?,
 *        progress?: Float64Array(1), hook?: (root, relPath: Buffer) => void })
 *   -> Promise<{ dirs, files, metas, wide, names, special, outOfBounds,
 *               excluded, mountPoints, listed, errors }>
 * `fileBytes` is charged against maxBytes for every file kept, on top of
 * its rows: what the rest of the run will hold per file (the memory
 * budget's FILE_BYTES), so a tree too big for the run stops here, while
 * it is listed, and not in an OOM kill later. The rejection's `files` and
 * `need` say how many files and how many bytes the stop was about.
 * `hook` is for tests: it runs (on the JavaScript thread, the walk's
 * thread waiting) before each directory is opened. */
napi_value Walk(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value opts;
  CHECK(napi_get_cb_info(env, info, &argc, &opts, NULL, NULL));
  const char *usage = "walk({ roots, patterns, include, minSize, maxSize, threads, maxBytes })";
  walk *w = calloc(1, sizeof *w);
  if (!w) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  w->held_free = -1;
  atomic_init(&w->listed, 0);
  double threads = 1, max_bytes = 0, file_bytes = 0;
  napi_value roots = argc ? prop(env, opts, "roots") : NULL, patterns = argc ? prop(env, opts, "patterns") : NULL;
  uint32_t nroots = 0, npat = 0;
  if (!argc || napi_get_array_length(env, roots, &nroots) != napi_ok || !nroots || nroots > UINT16_MAX ||
      napi_get_array_length(env, patterns, &npat) != napi_ok || get_num(env, opts, "minSize", &w->min_size) ||
      get_num(env, opts, "maxSize", &w->max_size) || get_num(env, opts, "maxBytes", &max_bytes) ||
      get_num(env, opts, "threads", &threads) < 0 || get_num(env, opts, "fileBytes", &file_bytes) < 0 || max_bytes < 1 ||
      !(file_bytes >= 0 && file_bytes < 1e9)) {
    walk_free(w);
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  w->threads = threads < 1 ? 1 : threads > 64 ? 64 : (size_t)threads;
  w->max_bytes = max_bytes >= 0x1p63 ? (uint64_t)1 << 63 : (uint64_t)max_bytes;
  w->file_bytes = (uint64_t)file_bytes;
  w->roots = calloc(nroots, sizeof *w->roots);
  w->nroots = nroots;
  if (!w->roots) goto oom;
  for (uint32_t i = 0; i < nroots; i++) {
    napi_value r, mounts;
    napi_get_element(env, roots, i, &r);
    double fd, dev, ino, mnt;
    uint32_t nm = 0;
    mounts = prop(env, r, "mounts");
    if (get_num(env, r, "fd", &fd) || get_num(env, r, "dev", &dev) || get_num(env, r, "ino", &ino) ||
        get_num(env, r, "mntId", &mnt) || napi_get_array_length(env, mounts, &nm) != napi_ok) {
      walk_free(w);
      napi_throw_type_error(env, NULL, usage);
      return NULL;
    }
    wroot *wr = &w->roots[i];
    wr->fd = (int)fd, wr->dev = (uint64_t)dev, wr->ino = (uint64_t)ino, wr->mnt_id = (uint64_t)mnt;
    wr->mounts = calloc(nm + 1, sizeof *wr->mounts);
    wr->mount_lens = calloc(nm + 1, sizeof *wr->mount_lens);
    if (!wr->mounts || !wr->mount_lens) goto oom;
    for (uint32_t k = 0; k < nm; k++) {
      napi_value b;
      napi_get_element(env, mounts, k, &b);
      void *p;
      size_t len;
      if (arg_buffer(env, b, &p, &len)) {
        walk_free(w);
        napi_throw_type_error(env, NULL, usage);
        return NULL;
      }
      if (!(wr->mounts[k] = malloc(len ? len : 1))) goto oom;
      memcpy(wr->mounts[k], p, len);
      wr->mount_lens[k] = len;
      wr->nmounts++;
    }
  }
  if (npat) {
    const char **pats = calloc(npat, sizeof *pats);
    size_t *lens = calloc(npat, sizeof *lens);
    unsigned char *inc = NULL;
    size_t inc_len = 0;
    napi_value incv = prop(env, opts, "include");
    napi_typedarray_type tt;
    napi_value ab;
    size_t off;
    void *incp = NULL;
    if (napi_get_typedarray_info(env, incv, &tt, &inc_len, &incp, &ab, &off) != napi_ok || inc_len < npat) {
      free(pats), free(lens), walk_free(w);
      napi_throw_type_error(env, NULL, usage);
      return NULL;
    }
    inc = incp;
    for (uint32_t i = 0; pats && lens && i < npat; i++) {
      napi_value b;
      napi_get_element(env, patterns, i, &b);
      void *p;
      if (arg_buffer(env, b, &p, &lens[i])) {
        free(pats), free(lens), walk_free(w);
        napi_throw_type_error(env, NULL, usage);
        return NULL;
      }
      pats[i] = p;
    }
    char err[256] = "out of memory";
    if (pats && lens) w->rules = vu_rules_new(pats, lens, inc, npat, err, sizeof err);
    free(pats), free(lens);
    if (!w->rules) {
      walk_free(w);
      napi_throw_error(env, NULL, err);
      return NULL;
    }
    w->have_rules = 1;
  }
  napi_value progress = prop(env, opts, "progress");
  napi_valuetype pt;
  napi_typeof(env, progress, &pt);
  if (pt == napi_object) {
    napi_typedarray_type tt;
    size_t len, off;
    void *p;
    napi_value ab;
    if (napi_get_typedarray_info(env, progress, &tt, &len, &p, &ab, &off) == napi_ok && tt == napi_float64_array && len >= 1) {
      w->progress = p;
      napi_create_reference(env, progress, 1, &w->progress_ref);
    }
  }
  napi_value hook = prop(env, opts, "hook"), name;
  napi_typeof(env, hook, &pt);
  if (pt == napi_function) {
    napi_create_string_utf8(env, "vunify.walk.hook", NAPI_AUTO_LENGTH, &name);
    if (napi_create_threadsafe_function(env, hook, NULL, name, 0, 1, NULL, NULL, NULL, call_hook, &w->hook) != napi_ok)
      w->hook = NULL;
  }

  /* Reserve the tables: each column as many rows as the budget could pay
   * for (address space only, MAP_NORESERVE); never moved, never copied. */
  uint64_t mb = w->max_bytes;
  w->cap_files = mb / row_bytes(F_WIDTH, F_COLS) + 1;
  if (w->cap_files > UINT32_MAX - 1) w->cap_files = UINT32_MAX - 1;
  w->cap_dirs = mb / row_bytes(D_WIDTH, D_COLS) + nroots;
  if (w->cap_dirs > INT32_MAX) w->cap_dirs = INT32_MAX;
  w->cap_names = mb + 1 > UINT32_MAX ? UINT32_MAX : mb + 1;
  w->cap_metas = mb / row_bytes(M_WIDTH, M_COLS) + 1;
  if (w->cap_metas > w->cap_files) w->cap_metas = w->cap_files;
  w->cap_wide = mb / row_bytes(W_WIDTH, W_COLS) + 1;
  if (w->cap_wide > w->cap_files) w->cap_wide = w->cap_files;
  for (int i = 0; i < D_COLS; i++) if (col_map(&w->d[i], D_WIDTH[i], w->cap_dirs)) goto oom;
  for (int i = 0; i < F_COLS; i++) if (col_map(&w->f[i], F_WIDTH[i], w->cap_files)) goto oom;
  for (int i = 0; i < M_COLS; i++) if (col_map(&w->m[i], M_WIDTH[i], w->cap_metas)) goto oom;
  for (int i = 0; i < W_COLS; i++) if (col_map(&w->wd[i], W_WIDTH[i], w->cap_wide)) goto oom;
  if (col_map(&w->names, 1, w->cap_names)) goto oom;
  /* Rows 0..nroots-1: the roots, in order; walked last-pushed-first, so push in reverse. */
  for (uint32_t i = 0; i < nroots; i++) {
    COL(w->d[D_PARENT], int32_t, i) = -1;
    COL(w->d[D_ROOT], uint16_t, i) = (uint16_t)i;
    COL(w->d[D_INO], double, i) = (double)w->roots[i].ino;
  }
  w->ndirs = nroots;
  for (uint32_t i = nroots; i-- > 0;)
    if (push_item(w, i, -1)) goto oom;
  return queue_work(env, "vunify.walk", walk_execute, walk_complete, w, &w->deferred, &w->work);
oom:
  if (w->hook) napi_release_threadsafe_function(w->hook, napi_tsfn_release);
  if (w->progress_ref) napi_delete_reference(env, w->progress_ref);
  walk_free(w);
  napi_throw_error(env, "ENOMEM", "vunify walk: cannot reserve the tables' address space (maxBytes too large?)");
  return NULL;
}
