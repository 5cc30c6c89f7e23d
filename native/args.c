/*
 * Errors, arguments and results shared by every call of the addon: errors
 * shaped like Node's fs errors (code, negative errno, syscall) so callers
 * treat both alike; byte-string arguments copied to NUL-terminated C strings
 * (a name holding a NUL cannot be a Linux file name, so it is refused rather
 * than cut short); packed records handed back as one Buffer.
 */
#include "vunify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

napi_value make_error(napi_env env, int err, const char *syscall_name) {
  const char *code = err > 0 ? uv_err_name(-err) : "ECHANGED";
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s, %s", code,
           err > 0 ? strerror(err) : "file changed while being examined", syscall_name);
  napi_value code_v, msg_v, error, errno_v, sys_v;
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_v);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &msg_v);
  napi_create_error(env, code_v, msg_v, &error);
  napi_create_int32(env, -err, &errno_v);
  napi_create_string_utf8(env, syscall_name, NAPI_AUTO_LENGTH, &sys_v);
  napi_set_named_property(env, error, "errno", errno_v);
  napi_set_named_property(env, error, "syscall", sys_v);
  return error;
}

napi_value throw_errno(napi_env env, int err, const char *syscall_name) {
  napi_throw(env, make_error(env, err, syscall_name));
  return NULL;
}

int arg_int(napi_env env, napi_value v, int64_t *out) {
  return napi_get_value_int64(env, v, out) == napi_ok ? 0 : -1;
}

/* The one argument of fstatx(fd), getFlags(fd), closeFd(fd), ...: 0, or -1
 * with a TypeError naming `usage` thrown. */
int fd_arg(napi_env env, napi_callback_info info, const char *usage, int *fd) {
  size_t argc = 1;
  napi_value argv[1];
  int64_t v;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || arg_int(env, argv[0], &v)) {
    napi_throw_type_error(env, NULL, usage);
    return -1;
  }
  *fd = (int)v;
  return 0;
}

/* A Buffer argument's bytes, in place (no copy): 0, or -1 for anything
 * else (nothing thrown: the caller throws its own usage message). */
int arg_buffer(napi_env env, napi_value v, void **data, size_t *len) {
  bool is_buffer = false;
  if (napi_is_buffer(env, v, &is_buffer) != napi_ok || !is_buffer || napi_get_buffer_info(env, v, data, len) != napi_ok) return -1;
  return 0;
}

/* A Float64Array argument's doubles, in place, and how many: 0, or -1 for
 * anything else (nothing thrown, as arg_buffer). */
int arg_doubles(napi_env env, napi_value v, double **data, size_t *len) {
  napi_typedarray_type t;
  napi_value ab;
  size_t off;
  void *d;
  if (napi_get_typedarray_info(env, v, &t, len, &d, &ab, &off) != napi_ok || t != napi_float64_array) return -1;
  *data = d;
  return 0;
}

/* A Buffer argument as a NUL-terminated heap string (the kernel wants C
 * strings); NULL with a TypeError thrown for anything else. */
char *arg_bytes(napi_env env, napi_value v, size_t *len_out) {
  void *data;
  size_t len;
  if (arg_buffer(env, v, &data, &len)) {
    napi_throw_type_error(env, NULL, "vunify native: expected a Buffer path");
    return NULL;
  }
  if (memchr(data, 0, len) != NULL) {
    napi_throw_type_error(env, NULL, "vunify native: path contains a NUL byte");
    return NULL;
  }
  char *s = malloc(len + 1);
  if (!s) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  memcpy(s, data, len);
  s[len] = 0;
  if (len_out) *len_out = len;
  return s;
}

int out_reserve(outbuf *o, size_t n) {
  if (o->len + n <= o->cap) return 0;
  size_t cap = o->cap ? o->cap * 2 : 65536;
  while (cap < o->len + n) cap *= 2;
  char *d = realloc(o->data, cap);
  if (!d) return -1;
  o->data = d;
  o->cap = cap;
  return 0;
}

napi_value buffer_from(napi_env env, outbuf *o) {
  napi_value buf;
  void *dst;
  if (napi_create_buffer_copy(env, o->len, o->data ? o->data : "", &dst, &buf) != napi_ok) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  return buf;
}

napi_value queue_work(napi_env env, const char *name, napi_async_execute_callback execute,
                      napi_async_complete_callback complete, void *data, napi_deferred *deferred,
                      napi_async_work *work) {
  napi_value promise, name_v;
  napi_create_promise(env, deferred, &promise);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &name_v);
  napi_create_async_work(env, NULL, name_v, execute, complete, data, work);
  napi_queue_async_work(env, *work);
  return promise;
}
