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
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>

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
