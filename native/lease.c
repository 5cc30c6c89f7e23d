/*
 * Read leases on a pair of open inodes (fcntl F_SETLEASE F_RDLCK): the
 * linker's proof that neither was written between its one byte comparison
 * and the moment the swap is settled (src/change/lease.ts says how it is
 * used). The kernel refuses a read lease while anyone has the file open for
 * writing (a writable shared mapping holds such an open too), and breaks it
 * on any later open for writing or truncate(2), whoever makes it, through
 * any of the inode's names (not on open(O_RDONLY | O_TRUNC), which empties
 * the file without a break: the size checks around the swap catch that; see
 * src/change/lease.ts). A breaker waits in open(2)/truncate(2) until the
 * lease is released (or /proc/sys/fs/lease-break-time passes), so while a
 * broken lease is still held nothing has been written yet.
 *
 * A break is announced with a signal to the holder, SIGIO by default, whose
 * default action ends the process. Each descriptor is given SIGURG instead
 * (F_SETSIG) before it is leased: its default action is to ignore, Node and
 * libuv install no handler for it, and the kernel drops an ignored signal
 * at once (no EINTR anywhere). A break is detected with F_GETLEASE, which
 * reports F_UNLCK from the moment a break is pending.
 *
 * Only on local filesystems whose every write goes through this kernel's
 * open(2) and truncate(2): on a network or FUSE filesystem, or overlayfs
 * (its layers can be written directly), a lease proves nothing about what
 * the server, the daemon or a layer's other users do.
 */
#include "vunify.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/vfs.h>
#include <unistd.h>

#ifndef XFS_SUPER_MAGIC
#define XFS_SUPER_MAGIC 0x58465342
#endif
#ifndef F2FS_SUPER_MAGIC
#define F2FS_SUPER_MAGIC 0xF2F52010
#endif

#define LEASE_SIGNAL SIGURG

static int two_fds(napi_env env, napi_callback_info info, const char *usage, int fd[2]) {
  size_t argc = 2;
  napi_value argv[2];
  int64_t a, b;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || arg_int(env, argv[0], &a) ||
      arg_int(env, argv[1], &b)) {
    napi_throw_type_error(env, NULL, usage);
    return -1;
  }
  fd[0] = (int)a;
  fd[1] = (int)b;
  return 0;
}

/* Whether a break's signal is harmless now: SIGURG at its default (ignore)
 * or ignored, not handled (someone else's handler would see our breaks). */
int lease_signal_safe(void) {
  struct sigaction sa;
  if (sigaction(LEASE_SIGNAL, NULL, &sa)) return 0;
  return sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN;
}

int lease_local_filesystem(int fd) {
  struct statfs sf;
  if (fstatfs(fd, &sf)) return 0;
  switch ((unsigned long)sf.f_type) {
  case EXT4_SUPER_MAGIC: /* ext2, ext3 and ext4 share it */
  case XFS_SUPER_MAGIC:
  case BTRFS_SUPER_MAGIC:
  case TMPFS_MAGIC:
  case F2FS_SUPER_MAGIC:
    return 1;
  default:
    return 0;
  }
}

/* The signal a break on this open file sends: kept by the open file until it is closed. */
int lease_set_signal(int fd) { return fcntl(fd, F_SETSIG, LEASE_SIGNAL) ? errno : 0; }

int lease_one(int fd) {
  int err = lease_set_signal(fd);
  if (err) return err;
  if (fcntl(fd, F_SETLEASE, F_RDLCK)) return errno;
  return 0;
}

/* leasePair(fdA, fdB) -> 0 when both descriptors (opened O_RDONLY) now hold
 * a read lease; otherwise the errno that refused one (EAGAIN: open for
 * writing somewhere; EINVAL: leases disabled or not on this filesystem;
 * EOPNOTSUPP: not a filesystem where a lease proves anything (both files
 * are on one, the linker's policy sees to that); EBUSY: SIGURG has a
 * handler in this process) and neither holds one. */
napi_value LeasePair(napi_env env, napi_callback_info info) {
  int fd[2];
  if (two_fds(env, info, "leasePair(fdA, fdB)", fd)) return NULL;
  int err = !lease_signal_safe() ? EBUSY : !lease_local_filesystem(fd[0]) ? EOPNOTSUPP : lease_one(fd[0]);
  if (!err) {
    err = lease_one(fd[1]);
    if (err) fcntl(fd[0], F_SETLEASE, F_UNLCK);
  }
  napi_value r;
  napi_create_int32(env, err, &r);
  return r;
}

/* leaseHeld(fdA, fdB) -> bit 0 set while A's lease is intact, bit 1 for B
 * (F_GETLEASE still says F_RDLCK: no break pending, none timed out). */
napi_value LeaseHeld(napi_env env, napi_callback_info info) {
  int fd[2];
  if (two_fds(env, info, "leaseHeld(fdA, fdB)", fd)) return NULL;
  uint32_t held = 0;
  for (int i = 0; i < 2; i++)
    if (fcntl(fd[i], F_GETLEASE) == F_RDLCK) held |= 1u << i;
  napi_value r;
  napi_create_uint32(env, held, &r);
  return r;
}

/* leaseRelease(fdA, fdB): drop both leases (a waiting writer goes on). A
 * lease already gone (timed out after a break) is no error. */
napi_value LeaseRelease(napi_env env, napi_callback_info info) {
  int fd[2];
  if (two_fds(env, info, "leaseRelease(fdA, fdB)", fd)) return NULL;
  fcntl(fd[0], F_SETLEASE, F_UNLCK);
  fcntl(fd[1], F_SETLEASE, F_UNLCK);
  return NULL;
}
