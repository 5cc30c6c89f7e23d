/*
 * Confined lookup and descriptors. Every path vunify opens inside a guest is
 * resolved here, beneath a directory descriptor, refusing symlinks, ".." and
 * mount crossings, because a guest may swap any component for a symlink to
 * the host's "/" while vunify (as host root) works. Every descriptor is
 * opened and closed here rather than by Node's fs (see openPath), and the
 * last close of a replaced inode can be handed to a background thread (see
 * closeLater).
 */
#include "vunify.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int have_openat2 = 1; /* cleared on ENOSYS, or by forceLegacyLookup() */

static int mount_of(int fd, uint64_t *mnt) {
  struct statx st;
  if (fd_statx(fd, &st)) return -1;
  *mnt = ((uint64_t)st.stx_dev_major << 32) ^ st.stx_dev_minor;
#ifdef STATX_MNT_ID
  if (st.stx_mask & STATX_MNT_ID) *mnt ^= st.stx_mnt_id * 0x9e3779b97f4a7c15ULL;
#endif
  return 0;
}

/* Kernels before 5.6: walk one component at a time. Each intermediate is
 * opened O_PATH|O_DIRECTORY|O_NOFOLLOW relative to the previous one, so a
 * symlink anywhere fails with ELOOP/ENOTDIR, and ".." is refused outright;
 * a component on another mount fails with EXDEV like RESOLVE_NO_XDEV. */
static int open_components(int dirfd, char *path, int flags, mode_t mode) {
  uint64_t mnt0, mnt;
  if (mount_of(dirfd, &mnt0)) return -1;
  int cur = -1; /* -1 means dirfd itself */
  char *save = NULL;
  char *comp = strtok_r(path, "/", &save);
  if (!comp) return openat(dirfd, ".", flags | O_NOFOLLOW | O_CLOEXEC, mode);
  for (;;) {
    char *next = strtok_r(NULL, "/", &save);
    int base = cur < 0 ? dirfd : cur;
    int fd;
    if (strcmp(comp, "..") == 0) {
      errno = EXDEV;
      fd = -1;
    } else if (next) {
      fd = openat(base, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    } else {
      fd = openat(base, comp, flags | O_NOFOLLOW | O_CLOEXEC, mode);
    }
    if (fd >= 0) {
      int bad = mount_of(fd, &mnt) ? errno : (mnt != mnt0 ? EXDEV : 0);
      if (bad) {
        close(fd);
        fd = -1;
        errno = bad;
      }
    }
    int saved = errno;
    if (cur >= 0) close(cur);
    errno = saved;
    if (fd < 0) return -1;
    if (!next) return fd;
    cur = fd;
    comp = next;
  }
}

/* openat2 takes at most PATH_MAX bytes; deeper trees are resolved in
 * slices, each slice confined beneath the directory the previous one
 * reached (which is itself beneath dirfd). */
int open_beneath(int dirfd, const char *relpath, int flags, mode_t mode) {
  size_t len = strlen(relpath);
  if (len == 0) relpath = ".", len = 1;
  if (relpath[0] == '/') {
    errno = EXDEV;
    return -1;
  }
  char *copy = strdup(relpath);
  if (!copy) return -1;
  int base = dirfd, owned = -1, fd = -1;
  char *p = copy;
  for (;;) {
    size_t rest = strlen(p);
    char *cut = NULL;
    if (rest >= 4000) {
      cut = p + 3999;
      while (cut > p && *cut != '/') cut--;
      if (cut == p) {
        errno = ENAMETOOLONG;
        break;
      }
      *cut = 0;
    }
    int f = cut ? (O_PATH | O_DIRECTORY) : flags;
    if (have_openat2) {
      struct open_how how = {.flags = (uint64_t)(f | O_NOFOLLOW | O_CLOEXEC),
                             .mode = (f & O_CREAT) ? mode : 0,
                             .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
                                        RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV};
      fd = (int)syscall(SYS_openat2, base, p, &how, sizeof how);
      if (fd < 0 && errno == ENOSYS) have_openat2 = 0;
    }
    if (!have_openat2) fd = open_components(base, p, f, mode);
    int saved = errno;
    if (owned >= 0) close(owned);
    errno = saved;
    if (fd < 0 || !cut) break;
    base = owned = fd;
    fd = -1;
    p = cut + 1;
  }
  int saved = errno;
  free(copy);
  errno = saved;
  return fd;
}

/* openBeneath(dirFd, relPath: Buffer, flags, mode?) -> fd */
napi_value OpenBeneath(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t dirfd, flags, mode = 0;
  if (argc < 3 || arg_int(env, argv[0], &dirfd) || arg_int(env, argv[2], &flags) ||
      (argc > 3 && arg_int(env, argv[3], &mode))) {
    napi_throw_type_error(env, NULL, "openBeneath(dirFd, path, flags[, mode])");
    return NULL;
  }
  char *path = arg_bytes(env, argv[1], NULL);
  if (!path) return NULL;
  int fd = open_beneath((int)dirfd, path, (int)flags, (mode_t)mode);
  int err = errno;
  free(path);
  if (fd < 0) return throw_errno(env, err, "openat2");
  napi_value r;
  napi_create_int32(env, fd, &r);
  return r;
}

/* openPath(path: Buffer, flags, mode?) -> fd, and closeFd(fd). Every
 * descriptor vunify uses is opened and closed here rather than by Node's fs,
 * because Node's worker threads track the descriptors their fs opened and
 * warn about (or close again) those that something else closed. */
napi_value OpenPath(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int64_t flags, mode = 0;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2 || arg_int(env, argv[1], &flags) || (argc > 2 && arg_int(env, argv[2], &mode))) {
    napi_throw_type_error(env, NULL, "openPath(path, flags[, mode])");
    return NULL;
  }
  char *path = arg_bytes(env, argv[0], NULL);
  if (!path) return NULL;
  int fd = open(path, (int)flags | O_CLOEXEC, (mode_t)mode), err = errno;
  free(path);
  if (fd < 0) return throw_errno(env, err, "open");
  napi_value r;
  napi_create_int32(env, fd, &r);
  return r;
}

napi_value CloseFd(napi_env env, napi_callback_info info) {
  int fd;
  if (fd_arg(env, info, "closeFd(fd)", &fd)) return NULL;
  if (close((int)fd) < 0 && errno != EINTR) return throw_errno(env, errno, "close");
  return NULL;
}

/* closeLater(fd) and closeLaterDrain() -> Promise. Closing the last
 * descriptor of an unlinked inode frees its blocks there and then: ext4
 * truncates it, and on a filesystem mounted -o discard waits for the device
 * to trim every extent (submit_bio_wait: ~200 us a file measured here, the
 * thread asleep, not busy). The linker holds each replaced inode open until
 * it is unlinked, so that cost fell on its threads, once per freed file.
 * Background threads take it instead, while the linker goes on: CLOSERS of
 * them, so that that many trims are in flight at once (one thread paced the
 * whole linking run: its queue stayed full and the linker's own threads
 * closed, one trim at a time). A full queue closes on the caller's thread,
 * so descriptors never pile up.
 *
 * A closer is woken only when one waits for work (the others are busy and
 * take the next descriptor when their close returns), and after the queue's
 * lock is let go: woken under it, the closer ran at once on the caller's
 * CPU, found the lock still held and slept again, and the linker thread
 * that held it waited its turn behind the closers (~0.2 s of its time in a
 * fleet run, ~1,500 waits).
 *
 * And only once WAKE_AT descriptors wait (a drain wakes them for fewer): a
 * woken closer goes on while the queue holds any, so the closers mostly
 * stay at work instead of being woken for each freed file, one wake-up and
 * two context switches apiece on these two cores. Up to WAKE_AT - 1 freed
 * inodes keep their blocks until more come or the linking run drains.
 * While a drain waits (cl_draining), every descriptor handed over wakes a
 * closer as before: one queued after the drain's own wake-up, with every
 * closer asleep again, would otherwise stay in the queue, and the drain,
 * which only a closer wakes, would never return. */
#define CLOSE_QUEUE 1024
#define CLOSERS 8
#define WAKE_AT 64
static pthread_mutex_t cl_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cl_work = PTHREAD_COND_INITIALIZER, cl_idle = PTHREAD_COND_INITIALIZER;
static int cl_queue[CLOSE_QUEUE];
static size_t cl_head, cl_len;
static int cl_busy, cl_started, cl_waiting, cl_draining;

static void *closer(void *arg) {
  (void)arg;
  pthread_mutex_lock(&cl_mu);
  for (;;) {
    while (!cl_len) {
      cl_waiting++;
      pthread_cond_wait(&cl_work, &cl_mu);
      cl_waiting--;
    }
    int fd = cl_queue[cl_head];
    cl_head = (cl_head + 1) % CLOSE_QUEUE;
    cl_len--;
    cl_busy++;
    pthread_mutex_unlock(&cl_mu);
    close(fd);
    pthread_mutex_lock(&cl_mu);
    cl_busy--;
    if (!cl_len && !cl_busy) pthread_cond_broadcast(&cl_idle);
  }
  return NULL;
}

void close_later(int fd) {
  pthread_mutex_lock(&cl_mu);
  /* started one at a time as the queue fills: a run that frees little starts
   * few. Closers asleep below WAKE_AT let it fill too, so a few dozen freed
   * files, however far apart, start all CLOSERS (3 of them before WAKE_AT
   * for 40 a millisecond apart): at most CLOSERS x 64 KiB of stacks. */
  if (cl_started < CLOSERS && cl_len >= (size_t)cl_started) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 << 10);
    if (pthread_create(&t, &attr, closer, NULL) == 0) cl_started++;
    pthread_attr_destroy(&attr);
  }
  int queued = cl_started && cl_len < CLOSE_QUEUE, wake = 0;
  if (queued) {
    cl_queue[(cl_head + cl_len) % CLOSE_QUEUE] = fd;
    cl_len++;
    wake = cl_waiting > 0 && (cl_len >= WAKE_AT || cl_draining);
  }
  pthread_mutex_unlock(&cl_mu);
  if (wake) pthread_cond_signal(&cl_work);
  if (!queued) close(fd);
}

napi_value CloseLater(napi_env env, napi_callback_info info) {
  int fd;
  if (fd_arg(env, info, "closeLater(fd)", &fd)) return NULL;
  close_later(fd);
  return NULL;
}

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
} drain_req;

static void drain_execute(napi_env env, void *data) {
  (void)env;
  (void)data;
  pthread_mutex_lock(&cl_mu);
  cl_draining++; /* from here each descriptor handed over wakes a closer */
  if (cl_len && cl_waiting) pthread_cond_broadcast(&cl_work); /* fewer than WAKE_AT may wait */
  while (cl_len || cl_busy) pthread_cond_wait(&cl_idle, &cl_mu);
  cl_draining--;
  pthread_mutex_unlock(&cl_mu);
}

static void drain_complete(napi_env env, napi_status status, void *data) {
  drain_req *r = data;
  napi_value undef;
  napi_get_undefined(env, &undef);
  napi_resolve_deferred(env, r->deferred, undef);
  napi_delete_async_work(env, r->work);
  free(r);
}

napi_value CloseLaterDrain(napi_env env, napi_callback_info info) {
  drain_req *r = calloc(1, sizeof *r);
  if (!r) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  return queue_work(env, "vunify.closeLaterDrain", drain_execute, drain_complete, r, &r->deferred, &r->work);
}

/* forceLegacyLookup(): tests exercise the pre-openat2 path. */
napi_value ForceLegacyLookup(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  bool legacy = true;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc > 0) napi_get_value_bool(env, argv[0], &legacy);
  have_openat2 = !legacy;
  return NULL;
}

