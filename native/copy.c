/*
 * Private copies (vunify split): everything a copy needs is done on the new
 * file's descriptor (xattrs, data, mtime), so the file being made is exactly
 * the file that gets them, whatever a guest does to the names meanwhile.
 * copyData keeps holes as holes so a split does not grow sparse files.
 */
#include "vunify.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

/* setXattr(fd, name: Buffer, value: Buffer): one xattr on an open file, by
 * descriptor, so the copy being made is exactly the file that gets it. */
napi_value SetXattr(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int64_t fd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *val;
  size_t vlen;
  if (argc < 3 || arg_int(env, argv[0], &fd) || arg_buffer(env, argv[2], &val, &vlen)) {
    napi_throw_type_error(env, NULL, "setXattr(fd, name, value)");
    return NULL;
  }
  char *name = arg_bytes(env, argv[1], NULL);
  if (!name) return NULL;
  int r = fsetxattr((int)fd, name, val, vlen, 0), err = errno;
  free(name);
  if (r < 0) return throw_errno(env, err, "fsetxattr");
  return NULL;
}

/* removeXattr(fd, name: Buffer): drop one xattr of an open file (a copy
 * made in a directory with a default ACL inherits an access ACL the source
 * may not have). */
napi_value RemoveXattr(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int64_t fd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2 || arg_int(env, argv[0], &fd)) {
    napi_throw_type_error(env, NULL, "removeXattr(fd, name)");
    return NULL;
  }
  char *name = arg_bytes(env, argv[1], NULL);
  if (!name) return NULL;
  int r = fremovexattr((int)fd, name), err = errno;
  free(name);
  if (r < 0) return throw_errno(env, err, "fremovexattr");
  return NULL;
}

/* copyData(srcFd, dstFd, size): copy `size` bytes between open files,
 * keeping holes holes (SEEK_DATA/SEEK_HOLE), in the kernel where it can
 * (copy_file_range), else through a buffer. The destination ends at exactly
 * `size` bytes; a source that ends early is ECHANGED. */
static int copy_span(int in, int out, off_t pos, off_t end) {
  while (pos < end) {
    loff_t ip = pos, op = pos;
    ssize_t n = copy_file_range(in, &ip, out, &op, (size_t)(end - pos), 0);
    if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL)) {
      char buf[65536];
      size_t want = (size_t)(end - pos) < sizeof buf ? (size_t)(end - pos) : sizeof buf;
      n = pread(in, buf, want, pos);
      if (n > 0 && pwrite(out, buf, (size_t)n, pos) != n) return -1;
    }
    if (n < 0) return -1;
    if (n == 0) {
      errno = 0; /* shorter than the scan said */
      return -1;
    }
    pos += n;
  }
  return 0;
}

napi_value CopyData(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int64_t in, out, size;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3 || arg_int(env, argv[0], &in) || arg_int(env, argv[1], &out) || arg_int(env, argv[2], &size)) {
    napi_throw_type_error(env, NULL, "copyData(srcFd, dstFd, size)");
    return NULL;
  }
  for (off_t pos = 0; pos < size;) {
    off_t data = lseek((int)in, pos, SEEK_DATA);
    if (data < 0 && errno == ENXIO) break; /* only a hole is left */
    if (data < 0) return throw_errno(env, errno, "lseek");
    if (data >= size) break;
    off_t hole = lseek((int)in, data, SEEK_HOLE);
    if (hole < 0) return throw_errno(env, errno, "lseek");
    if (hole > size) hole = size;
    if (copy_span((int)in, (int)out, data, hole)) return throw_errno(env, errno ? errno : -1, "copy_file_range");
    pos = hole;
  }
  if (ftruncate((int)out, (off_t)size) < 0) return throw_errno(env, errno, "ftruncate");
  return NULL;
}

/* futimens(fd, mtimeSec, mtimeNsec): set the mtime to the nanosecond (Node's
 * futimes takes a double, which cannot hold nanoseconds at today's epoch);
 * the access time is left as it is. */
napi_value Futimens(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int64_t fd, sec, nsec;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3 || arg_int(env, argv[0], &fd) || arg_int(env, argv[1], &sec) || arg_int(env, argv[2], &nsec)) {
    napi_throw_type_error(env, NULL, "futimens(fd, mtimeSec, mtimeNsec)");
    return NULL;
  }
  struct timespec ts[2] = {{.tv_sec = 0, .tv_nsec = UTIME_OMIT}, {.tv_sec = (time_t)sec, .tv_nsec = (long)nsec}};
  if (futimens((int)fd, ts) < 0) return throw_errno(env, errno, "futimens");
  return NULL;
}

/* fstatvfs(fd) -> [bytes available (f_bavail: without the blocks reserved
 * for root, which vunify should not eat even though it runs as root),
 * inodes available (f_favail)] on the filesystem of fd. */
napi_value Fstatvfs(napi_env env, napi_callback_info info) {
  int fd;
  if (fd_arg(env, info, "fstatvfs(fd)", &fd)) return NULL;
  struct statvfs sv;
  if (fstatvfs((int)fd, &sv) < 0) return throw_errno(env, errno, "fstatvfs");
  napi_value result, bytes, files;
  napi_create_double(env, (double)sv.f_bavail * (double)sv.f_frsize, &bytes);
  napi_create_double(env, (double)sv.f_favail, &files);
  napi_create_array_with_length(env, 2, &result);
  napi_set_element(env, result, 0, bytes);
  napi_set_element(env, result, 1, files);
  return result;
}
