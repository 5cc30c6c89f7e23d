/*
 * Inode flags and project IDs (FS_IOC_GETFLAGS, FS_IOC_FSGETXATTR), for the
 * sharing policy (src/pipeline/policy.ts): two files may only become one
 * inode when their per-file flags and project IDs agree, and a directory
 * with the project-inherit flag refuses links of another project (EXDEV).
 *
 * vunify_fsattr() is what hashFiles (hash.c) calls on the descriptor it
 * hashes, so every candidate's flags and project come with its hash at no
 * extra open; fsGetXattr(fd) and setProject(fd, projid) are the same read
 * (for the linker and for directories) and split's one write (a private
 * copy keeps its original's project).
 */
#include "vunify.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* Errors meaning "this filesystem has no such attribute": the value is 0. */
static int unsupported(int e) { return e == ENOTTY || e == EINVAL || e == EOPNOTSUPP || e == ENOSYS; }

int vunify_fsattr(int fd, uint32_t *flags, uint32_t *projid) {
  int f = 0;
  *flags = 0, *projid = 0;
  if (ioctl(fd, FS_IOC_GETFLAGS, &f) == 0)
    *flags = (uint32_t)f;
  else if (!unsupported(errno))
    return errno;
  struct fsxattr x;
  memset(&x, 0, sizeof x);
  if (ioctl(fd, FS_IOC_FSGETXATTR, &x) == 0)
    *projid = x.fsx_projid;
  else if (!unsupported(errno))
    return errno;
  return 0;
}

/* fsGetXattr(fd) -> [fsx_xflags, fsx_projid]; throws (ENOTTY, ...) where unsupported. */
napi_value FsGetXattr(napi_env env, napi_callback_info info) {
  int fd;
  if (fd_arg(env, info, "fsGetXattr(fd)", &fd)) return NULL;
  struct fsxattr x;
  memset(&x, 0, sizeof x);
  if (ioctl(fd, FS_IOC_FSGETXATTR, &x) < 0) return throw_errno(env, errno, "ioctl(FS_IOC_FSGETXATTR)");
  napi_value r, v;
  napi_create_array_with_length(env, 2, &r);
  napi_create_uint32(env, x.fsx_xflags, &v);
  napi_set_element(env, r, 0, v);
  napi_create_uint32(env, x.fsx_projid, &v);
  napi_set_element(env, r, 1, v);
  return r;
}

/* setProject(fd, projid): FS_IOC_FSGETXATTR, then FS_IOC_FSSETXATTR with the new fsx_projid. */
napi_value SetProject(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int64_t fd, projid;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2 || arg_int(env, argv[0], &fd) || arg_int(env, argv[1], &projid) || projid < 0 || projid > UINT32_MAX) {
    napi_throw_type_error(env, NULL, "setProject(fd, projid)");
    return NULL;
  }
  struct fsxattr x;
  memset(&x, 0, sizeof x);
  if (ioctl((int)fd, FS_IOC_FSGETXATTR, &x) < 0) return throw_errno(env, errno, "ioctl(FS_IOC_FSGETXATTR)");
  x.fsx_projid = (uint32_t)projid;
  if (ioctl((int)fd, FS_IOC_FSSETXATTR, &x) < 0) return throw_errno(env, errno, "ioctl(FS_IOC_FSSETXATTR)");
  return NULL;
}

/* dirXattrsSync(rootFd, paths: Buffer, expect: Float64Array, out: Uint32Array):
 * for each of n directories (paths: n relative paths beneath rootFd, each
 * ended by a NUL; expect: dev, ino of each as scanned, 2n numbers) what
 * fsGetXattr reads through openDir in pipeline/projects.ts: the same
 * confined open (O_RDONLY | O_NONBLOCK | O_DIRECTORY), the same check that
 * it is still the scanned directory (dev and ino compared as JS numbers),
 * FS_IOC_FSGETXATTR, close. out gets 3n numbers: status (DX_*), xflags,
 * projid. One call per root rather than four per directory: the plan reads
 * thousands of directories. */
enum { DX_OK = 0, DX_GONE = 1, DX_UNSUPPORTED = 2, DX_FAILED = 3 };

napi_value DirXattrsSync(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t root;
  char *paths;
  size_t plen, elen, olen;
  double *expect;
  void *ov;
  napi_typedarray_type ot;
  if (argc < 4 || arg_int(env, argv[0], &root) || arg_buffer(env, argv[1], (void **)&paths, &plen) ||
      arg_doubles(env, argv[2], &expect, &elen) ||
      napi_get_typedarray_info(env, argv[3], &ot, &olen, &ov, NULL, NULL) != napi_ok || ot != napi_uint32_array ||
      elen % 2 || olen != elen / 2 * 3) {
    napi_throw_type_error(env, NULL, "dirXattrsSync(rootFd, paths, expect: Float64Array, out: Uint32Array)");
    return NULL;
  }
  uint32_t *out = ov;
  size_t n = elen / 2, off = 0;
  for (size_t k = 0; k < n; k++) {
    const char *path = paths + off;
    const char *end = off < plen ? memchr(path, 0, plen - off) : NULL;
    if (!end) {
      napi_throw_type_error(env, NULL, "dirXattrsSync: fewer paths than directories");
      return NULL;
    }
    off += (size_t)(end - path) + 1;
    uint32_t *o = out + 3 * k;
    o[0] = DX_GONE, o[1] = o[2] = 0;
    int fd = open_beneath((int)root, path, O_RDONLY | O_NONBLOCK | O_DIRECTORY, 0);
    if (fd < 0) continue;
    struct statx st;
    if (fd_statx(fd, &st) == 0 && (double)statx_dev(&st) == expect[2 * k] && (double)st.stx_ino == expect[2 * k + 1]) {
      struct fsxattr x;
      memset(&x, 0, sizeof x);
      if (ioctl(fd, FS_IOC_FSGETXATTR, &x) == 0)
        o[0] = DX_OK, o[1] = x.fsx_xflags, o[2] = x.fsx_projid;
      else
        o[0] = unsupported(errno) ? DX_UNSUPPORTED : DX_FAILED;
    }
    close(fd);
  }
  return NULL;
}
