/*
 * vunify's native seam: the few Linux system calls Node does not offer.
 * This header is what the addon's C files share: argument and error
 * helpers, the packed record layouts (as C structs, so offsetof and sizeof
 * are the one source the addon exports to TypeScript at load time, see
 * layout in module.c), and the functions each file contributes to the
 * module.
 *
 * Why these calls exist at all: vunify runs as host root inside directory
 * trees that untrusted guest root users change while it works. Node's fs API
 * only takes whole paths, and every path lookup re-walks components a guest
 * may have swapped for a symlink to the host's "/". So every lookup here is
 * relative to a directory file descriptor and refuses symlinks, ".." and
 * mount crossings (openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
 * RESOLVE_NO_XDEV; on kernels without openat2, the same one component at a
 * time with O_NOFOLLOW and a mount check).
 *
 * Policy: the addon is thin, one JavaScript function per system call (or per
 * tight loop of them), and what to do on a failure is decided in
 * TypeScript. It holds exactly two checks of its own, both "is this still
 * what the caller saw", because they must run on the descriptor just opened,
 * before anything is read through it, and a round trip to JavaScript for
 * each cost more than the work itself:
 *   - the walk (walk.c) refuses a directory whose (dev, ino) is not the
 *     one its parent's listing gave;
 *   - hashFiles refuses a file that is no longer the regular file of the
 *     job record (type, dev, ino, size, mode, owner, mtime, ctime), the
 *     checks of openRegular in src/os/confine.ts (HASH_CHANGED).
 * Everything else (which files to hash, what a refusal means) is policy in
 * TypeScript.
 *
 * Paths and names are Buffers (bytes), never strings: Linux file names need
 * not be UTF-8, and decoding could name a different file.
 *
 * Errors are thrown (or rejected) as Error objects shaped like Node's own fs
 * errors: code ("ENOENT"), errno (negative), syscall.
 *
 * Every symbol here is hidden (binding.gyp builds with -fvisibility=hidden):
 * Node loads the addon into its own process, whose exported names would
 * otherwise take the place of ours.
 */
#ifndef VUNIFY_H
#define VUNIFY_H

#define _GNU_SOURCE
#include <node_api.h>

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

/* ---- errors and arguments (args.c) ---------------------------------------- */

/* An Error like Node's fs errors; err <= 0 is ECHANGED ("file changed while
 * being examined"). */
napi_value make_error(napi_env env, int err, const char *syscall_name);
napi_value throw_errno(napi_env env, int err, const char *syscall_name);

#define CHECK(call)                                                            \
  do {                                                                         \
    if ((call) != napi_ok) {                                                   \
      napi_throw_type_error(env, NULL, "vunify native: bad arguments");        \
      return NULL;                                                             \
    }                                                                          \
  } while (0)

int arg_int(napi_env env, napi_value v, int64_t *out);
int fd_arg(napi_env env, napi_callback_info info, const char *usage, int *fd);
int arg_buffer(napi_env env, napi_value v, void **data, size_t *len);
int arg_doubles(napi_env env, napi_value v, double **data, size_t *len);
char *arg_bytes(napi_env env, napi_value v, size_t *len_out);

/* A growing byte buffer the packed records are appended to. */
typedef struct {
  char *data;
  size_t len, cap;
} outbuf;

int out_reserve(outbuf *o, size_t n);
napi_value buffer_from(napi_env env, outbuf *o);

/* Run `execute` on libuv's thread pool, then `complete` on the JS thread;
 * returns the promise `complete` settles through *deferred. */
napi_value queue_work(napi_env env, const char *name, napi_async_execute_callback execute,
                      napi_async_complete_callback complete, void *data, napi_deferred *deferred,
                      napi_async_work *work);

/* ---- packed stat records (records.c) ---------------------------------------
 * One fixed little-endian header per entry, then the name, the whole record
 * padded to RECORD_ALIGN bytes. src/os/sys.ts decodes it with the offsets
 * the addon exports (layout.stat), never with numbers of its own. */
#define RECORD_ALIGN 8

struct stat_rec {
  uint32_t rec_len;  /* the whole record, name and padding included */
  uint8_t type;      /* T_* below */
  uint8_t unused;
  uint16_t name_len;
  uint32_t mode;     /* or, for T_ERR, the errno of the failed statx */
  uint32_t uid;
  uint32_t gid;
  uint32_t nlink;
  uint64_t ino;
  uint64_t dev;
  uint64_t size;
  uint64_t blocks;
  int64_t mtime_sec;
  uint32_t mtime_nsec;
  uint32_t ctime_nsec;
  int64_t ctime_sec;
  uint64_t mnt_id;   /* 0 when the kernel has no STATX_MNT_ID */
};                   /* then name_len name bytes */
_Static_assert(sizeof(struct stat_rec) % RECORD_ALIGN == 0, "records stay aligned");

/* File types, in the order of FileType in src/os/sys.ts (checked at load). */
#define FILE_TYPES(X) \
  X(T_OTHER, 0, "Other") X(T_REG, 1, "Regular") X(T_DIR, 2, "Directory") X(T_LNK, 3, "Symlink") \
  X(T_FIFO, 4, "Fifo") X(T_SOCK, 5, "Socket") X(T_CHR, 6, "CharDevice") X(T_BLK, 7, "BlockDevice") \
  X(T_ERR, 255, "Error")
#define AS_ENUM(name, value, js) name = value,
enum { FILE_TYPES(AS_ENUM) };

int type_of_mode(mode_t m);
int type_of_dtype(unsigned char d);
/* Append one record; st may be NULL (type only) and err nonzero (T_ERR). */
int out_record(outbuf *o, int type, const struct statx *st, int err, const char *name, size_t name_len);
/* Fill the fixed part of a record in place (name and length kept). */
void fill_record(struct stat_rec *r, int type, const struct statx *st, int err);
/* statx that never follows a symlink nor triggers an automount. */
int do_statx(int dirfd, const char *name, int flags, struct statx *st);
/* statx of an open descriptor, with what records need. */
int fd_statx(int fd, struct statx *st);
uint64_t statx_dev(const struct statx *st);

/* ---- confined lookup, descriptors (lookup.c) ------------------------------ */

/* Open relpath beneath dirfd, never leaving it (see above); -1 and errno. */
int open_beneath(int dirfd, const char *relpath, int flags, mode_t mode);

/* ---- xattrs (xattr.c) ---------------------------------------------------- */

/* The one reader of a file's xattrs, for getXattrs and hashFiles alike:
 * every name flistxattr lists, sorted by name (strcmp), with its value;
 * names removed between the list and the get are left out. `sink` gets each
 * one and returns nonzero to stop (out of memory). Returns the number
 * passed to sink, or -1 with errno set and *failed naming the call. */
enum { XATTR_LIST, XATTR_GET };
typedef int (*xattr_sink)(void *ctx, const char *name, size_t name_len, const char *value, size_t value_len);
long read_xattrs(int fd, xattr_sink sink, void *ctx, int *failed);

/* At most this many bytes of names and values per file (64 MiB): a file
 * with more is refused whole (E2BIG), by the hash stage and the linker
 * alike, so the linker can hold two sets to compare them exactly. The
 * kernel refuses a name list over 64 KiB (XATTR_LIST_MAX) with E2BIG too. */
#define XATTR_TOTAL_MAX ((size_t)64 << 20)

/* ---- data extents (extents.c) ------------------------------------------- */
/* The block size of the content hash's zero runs (see extents.c). */
#define ZERO_BLOCK ((uint64_t)1 << 20)
/* A file that ended before its size: hash.c's HASH_SHRANK. */
enum { DATA_SHRANK = -2 };
/* The content hash of `size` bytes of fd (extents.c) under the 192-byte
 * XXH3 secret (xxh3.h), reading with `buf`
 * (at least ZERO_BLOCK bytes); 0, an errno or DATA_SHRANK. *elf: the bytes
 * start with the ELF magic. */
int hash_data(int fd, uint64_t size, char *buf, size_t cap, const uint8_t *secret, uint64_t *out, int *elf);

/* ---- SHA-256 (sha256.c): the digest of a file's xattr set ---------------- */
typedef struct {
  uint32_t h[8];
  uint64_t len;
  uint8_t buf[64];
  size_t n;
} sha256_ctx;
void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t len);
void sha256_final(sha256_ctx *c, uint8_t out[32]);

/* ---- the module's functions, by file ------------------------------------- */

/* lease.c, for link.c */
int lease_signal_safe(void);
int lease_local_filesystem(int fd);
int lease_one(int fd);
int lease_set_signal(int fd);
/* hash.c, for link.c: an O_PATH descriptor reopened O_RDONLY | O_NONBLOCK through /proc/self/fd */
int reopen_for_reading(int pathfd);

/* lookup.c: close on the background closer thread */
void close_later(int fd);

/* link.c: the linker's steps, for the test-only fault hook (STEP_CHANGE: any
 * of link, exchange, unlink). files.c's linkAt/renameAt/unlinkAt pass their
 * step | STEP_SEAM: counted as changes, but a fault on one step alone is the
 * native linker's (the JS path's steps have the sys seam for that). */
enum { STEP_OPEN, STEP_COMPARE, STEP_LINK, STEP_JOURNAL, STEP_EXCHANGE, STEP_SETTLE, STEP_UNLINK, STEP_CHANGE, STEP_LEASE, STEP_SEAM = 256 };
int link_fault(int step, int after);

#define DECLARE(fn) napi_value fn(napi_env env, napi_callback_info info);
/* lookup.c */
DECLARE(OpenBeneath) DECLARE(ForceLegacyLookup) DECLARE(OpenPath) DECLARE(CloseFd)
DECLARE(CloseLater) DECLARE(CloseLaterDrain)
/* files.c */
DECLARE(Fstatx) DECLARE(StatAt) DECLARE(LinkAt) DECLARE(RenameAt) DECLARE(UnlinkAt)
DECLARE(GetFlags) DECLARE(SetFlags) DECLARE(Flock) DECLARE(Vserver)
/* xattr.c */
DECLARE(GetXattrs)
/* copy.c */
DECLARE(SetXattr) DECLARE(RemoveXattr) DECLARE(CopyData) DECLARE(Futimens) DECLARE(Fstatvfs)
/* hash.c */
DECLARE(HashFiles) DECLARE(Xxh64) DECLARE(Xxh3) DECLARE(Xxh3Stream)
/* sha256.c */
DECLARE(Sha256)
/* extents.c */
DECLARE(SeekData) DECLARE(HashFd)
/* memory.c */
DECLARE(ResidentPages) DECLARE(PageSize) DECLARE(MallocTrim)
/* fsattr.c */
DECLARE(FsGetXattr) DECLARE(SetProject) DECLARE(DirXattrsSync)
/* walk.c: the parallel walk into the record tables (src/pipeline/table.ts) */
DECLARE(Walk)
/* glob.c (the matcher itself: glob.h) */
DECLARE(GlobExcluded)
/* lease.c */
DECLARE(LeasePair) DECLARE(LeaseHeld) DECLARE(LeaseRelease)
DECLARE(LinkBatch) DECLARE(LinkBatchStart) DECLARE(LinkBatchWait) DECLARE(SetLinkFault) DECLARE(SetLinkHook) DECLARE(ErrnoError)
DECLARE(OpenChecked)
#undef DECLARE

/* Inode flags and project ID of fd, 0 each where the filesystem has none;
 * 0 or an errno (fsattr.c; hashFiles reads them through its descriptor). */
int vunify_fsattr(int fd, uint32_t *flags, uint32_t *projid);

/* One record of getdents64(2) (glibc declares no such struct): walk.c steps
 * through a buffer of them by d_reclen. */
struct vu_dirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

/* The layouts, as JavaScript values, for module.c's `layout`. */
napi_value stat_layout(napi_env env);
napi_value file_types(napi_env env);
napi_value link_layout(napi_env env);
void hash_layouts(napi_env env, napi_value layout);
void hash_release_buffers(void); /* hash.c: the read buffers kept between batches, freed */

/* Layout helpers: { headerSize, fields: { name: { offset, width } } }. */
napi_value layout_new(napi_env env, size_t header_size);
void layout_field(napi_env env, napi_value layout, const char *name, size_t offset, size_t width);
#define FIELD(env, obj, type, member, js) \
  layout_field(env, obj, js, offsetof(type, member), sizeof(((type *)0)->member))

#endif
