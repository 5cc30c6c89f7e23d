/*
 * Inode flags and project IDs (FS_IOC_GETFLAGS, FS_IOC_FSGETXATTR), for the
 * sharing policy (src/pipeline/policy.ts): two files may only become one
 * inode when their per-file flags and project IDs agree, and a directory
 * with the project-inherit flag refuses links of another project (EXDEV).
 *
 * vunify_fsattr() is what hashFiles calls on the descriptor it hashes, so
 * every candidate's flags and project come with its hash at no extra open;
 * fsGetXattr(fd) and setProject(fd, projid) are the same reads (and split's
 * one write) for the linker, directories and private copies.
 *
 * A file of its own (not in vunify.c) while the addon is being split into
 * several files: it needs only the two N-API registrations in Init.
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <uv.h>

#include <errno.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

/* Errors meaning "this filesystem has no such attribute": the value is 0. */
static int unsupported(int e) { return e == ENOTTY || e == EINVAL || e == EOPNOTSUPP || e == ENOSYS; }

/* Inode flags and project ID of fd, 0 each where the filesystem has none; 0 or an errno. */
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

static napi_value fail(napi_env env, int err, const char *call) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s: %s, %s", uv_err_name(-err), strerror(err), call);
  napi_value code, text, error, errno_v, sys_v;
  napi_create_string_utf8(env, uv_err_name(-err), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &text);
  napi_create_error(env, code, text, &error);
  napi_create_int32(env, -err, &errno_v);
  napi_create_string_utf8(env, call, NAPI_AUTO_LENGTH, &sys_v);
  napi_set_named_property(env, error, "errno", errno_v);
  napi_set_named_property(env, error, "syscall", sys_v);
  napi_throw(env, error);
  return NULL;
}

static int int_args(napi_env env, napi_callback_info info, size_t want, int64_t *out, const char *usage) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) goto bad;
  for (size_t i = 0; i < want; i++)
    if (napi_get_value_int64(env, argv[i], &out[i]) != napi_ok) goto bad;
  return 0;
bad:
  napi_throw_type_error(env, NULL, usage);
  return -1;
}

/* fsGetXattr(fd) -> [fsx_xflags, fsx_projid]; throws (ENOTTY, ...) where unsupported. */
napi_value FsGetXattr(napi_env env, napi_callback_info info) {
  int64_t a[1];
  if (int_args(env, info, 1, a, "fsGetXattr(fd)")) return NULL;
  struct fsxattr x;
  memset(&x, 0, sizeof x);
  if (ioctl((int)a[0], FS_IOC_FSGETXATTR, &x) < 0) return fail(env, errno, "ioctl(FS_IOC_FSGETXATTR)");
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
  int64_t a[2];
  if (int_args(env, info, 2, a, "setProject(fd, projid)")) return NULL;
  struct fsxattr x;
  memset(&x, 0, sizeof x);
  if (ioctl((int)a[0], FS_IOC_FSGETXATTR, &x) < 0) return fail(env, errno, "ioctl(FS_IOC_FSGETXATTR)");
  x.fsx_projid = (uint32_t)a[1];
  if (ioctl((int)a[0], FS_IOC_FSSETXATTR, &x) < 0) return fail(env, errno, "ioctl(FS_IOC_FSSETXATTR)");
  return NULL;
}
