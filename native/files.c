/*
 * Single-file calls, each one system call on a descriptor or relative to a
 * directory descriptor: stat records of one file, linkat/renameat2/unlinkat
 * (the linker's steps), inode flags (chattr), flock, and the Linux-VServer
 * call. Nothing here looks a path up from "/".
 */
#include "vunify.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/* fstatx(fd) -> Buffer holding one packed record (empty name) */
napi_value Fstatx(napi_env env, napi_callback_info info) {
  int fd;
  if (fd_arg(env, info, "fstatx(fd)", &fd)) return NULL;
  struct statx st;
  if (fd_statx(fd, &st)) return throw_errno(env, errno, "statx");
  char rec[sizeof(struct stat_rec)];
  outbuf o = {rec, 0, sizeof rec};
  out_record(&o, type_of_mode(st.stx_mode), &st, 0, "", 0);
  return buffer_from(env, &o);
}

/* statAt(dirFd, name: Buffer) -> packed record; never follows a symlink */
napi_value StatAt(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int64_t fd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2 || arg_int(env, argv[0], &fd)) {
    napi_throw_type_error(env, NULL, "statAt(dirFd, name)");
    return NULL;
  }
  size_t nl;
  char *name = arg_bytes(env, argv[1], &nl);
  if (!name) return NULL;
  struct statx st;
  int r = do_statx((int)fd, name, 0, &st), err = errno;
  if (r) {
    free(name);
    return throw_errno(env, err, "statx");
  }
  char rec[sizeof(struct stat_rec)];
  outbuf o = {rec, 0, sizeof rec};
  out_record(&o, type_of_mode(st.stx_mode), &st, 0, "", 0);
  free(name);
  return buffer_from(env, &o);
}

/* linkAt(fd, newDirFd, newName): give the open file (exactly that inode,
 * whatever its paths are now) one more name. AT_EMPTY_PATH needs
 * CAP_DAC_READ_SEARCH; without it, the /proc/self/fd link does the same. */
napi_value LinkAt(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int64_t fd, dirfd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3 || arg_int(env, argv[0], &fd) || arg_int(env, argv[1], &dirfd)) {
    napi_throw_type_error(env, NULL, "linkAt(fd, dirFd, name)");
    return NULL;
  }
  char *name = arg_bytes(env, argv[2], NULL);
  if (!name) return NULL;
  int fault = link_fault(STEP_LINK | STEP_SEAM, 0);
  if (fault) {
    free(name);
    return throw_errno(env, fault, "linkat");
  }
  int r = linkat((int)fd, "", (int)dirfd, name, AT_EMPTY_PATH);
  if (r < 0 && errno == ENOENT) {
    /* ENOENT here means either "no capability" or "the file has no links
     * left"; the /proc route tells the two apart. */
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", (int)fd);
    r = linkat(AT_FDCWD, proc, (int)dirfd, name, AT_SYMLINK_FOLLOW);
  }
  int err = r < 0 ? errno : link_fault(STEP_LINK | STEP_SEAM, 1);
  free(name);
  if (err) return throw_errno(env, err, "linkat");
  return NULL;
}

/* renameAt(oldDirFd, oldName, newDirFd, newName, flags) — renameat2 */
napi_value RenameAt(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  int64_t ofd, nfd, flags;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 5 || arg_int(env, argv[0], &ofd) || arg_int(env, argv[2], &nfd) ||
      arg_int(env, argv[4], &flags)) {
    napi_throw_type_error(env, NULL, "renameAt(oldDirFd, oldName, newDirFd, newName, flags)");
    return NULL;
  }
  char *on = arg_bytes(env, argv[1], NULL);
  if (!on) return NULL;
  char *nn = arg_bytes(env, argv[3], NULL);
  if (!nn) {
    free(on);
    return NULL;
  }
  int err = link_fault(STEP_EXCHANGE | STEP_SEAM, 0);
  if (!err) err = syscall(SYS_renameat2, (int)ofd, on, (int)nfd, nn, (unsigned)flags) < 0 ? errno : link_fault(STEP_EXCHANGE | STEP_SEAM, 1);
  free(on);
  free(nn);
  if (err) return throw_errno(env, err, "renameat2");
  return NULL;
}

/* unlinkAt(dirFd, name, flags) */
napi_value UnlinkAt(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int64_t fd, flags = 0;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2 || arg_int(env, argv[0], &fd) || (argc > 2 && arg_int(env, argv[2], &flags))) {
    napi_throw_type_error(env, NULL, "unlinkAt(dirFd, name[, flags])");
    return NULL;
  }
  char *name = arg_bytes(env, argv[1], NULL);
  if (!name) return NULL;
  int err = link_fault(STEP_UNLINK | STEP_SEAM, 0);
  if (!err) err = unlinkat((int)fd, name, (int)flags) < 0 ? errno : link_fault(STEP_UNLINK | STEP_SEAM, 1);
  free(name);
  if (err) return throw_errno(env, err, "unlinkat");
  return NULL;
}

/* getFlags(fd) / setFlags(fd, flags): inode flags (chattr), FS_IOC_*FLAGS */
napi_value GetFlags(napi_env env, napi_callback_info info) {
  int fd;
  if (fd_arg(env, info, "getFlags(fd)", &fd)) return NULL;
  int flags = 0;
  if (ioctl((int)fd, FS_IOC_GETFLAGS, &flags) < 0) return throw_errno(env, errno, "ioctl(FS_IOC_GETFLAGS)");
  napi_value r;
  napi_create_uint32(env, (uint32_t)flags, &r);
  return r;
}

napi_value SetFlags(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int64_t fd, flags;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2 || arg_int(env, argv[0], &fd) || arg_int(env, argv[1], &flags)) {
    napi_throw_type_error(env, NULL, "setFlags(fd, flags)");
    return NULL;
  }
  int f = (int)flags;
  if (ioctl((int)fd, FS_IOC_SETFLAGS, &f) < 0) return throw_errno(env, errno, "ioctl(FS_IOC_SETFLAGS)");
  return NULL;
}

/* flock(fd, op) -> true when taken, false when LOCK_NB and held elsewhere */
napi_value Flock(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int64_t fd, op;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2 || arg_int(env, argv[0], &fd) || arg_int(env, argv[1], &op)) {
    napi_throw_type_error(env, NULL, "flock(fd, op)");
    return NULL;
  }
  napi_value r;
  if (flock((int)fd, (int)op) < 0) {
    if (errno != EWOULDBLOCK) return throw_errno(env, errno, "flock");
    napi_get_boolean(env, false, &r);
  } else {
    napi_get_boolean(env, true, &r);
  }
  return r;
}

/* vserver(cmd, id, data: Buffer | null) -> result. The Linux-VServer
 * system call (236 on x86_64, 273 on i386), used by --iunlink to set the
 * immutable + immutable-unlink inode attributes the way util-vserver does.
 * A vanilla kernel answers ENOSYS. */
#if defined(__x86_64__)
#define NR_VSERVER 236
#elif defined(__i386__)
#define NR_VSERVER 273
#endif
napi_value Vserver(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int64_t cmd, id;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3 || arg_int(env, argv[0], &cmd) || arg_int(env, argv[1], &id)) {
    napi_throw_type_error(env, NULL, "vserver(cmd, id, data)");
    return NULL;
  }
  void *data = NULL; /* null (no data) unless a Buffer is given */
  size_t len = 0;
  if (arg_buffer(env, argv[2], &data, &len)) data = NULL;
#ifdef NR_VSERVER
  long r = syscall(NR_VSERVER, (uint32_t)cmd, (uint32_t)id, data);
  if (r < 0) return throw_errno(env, errno, "vserver");
#else
  long r = -1;
  return throw_errno(env, ENOSYS, "vserver");
#endif
  napi_value out;
  napi_create_int64(env, r, &out);
  return out;
}
