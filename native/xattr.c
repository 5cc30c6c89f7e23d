/*
 * Reading a file's xattrs, once for the whole addon: getXattrs (the linker's
 * and split's checks) and hashFiles (the hash stage's key) must see a file's
 * xattrs alike, or files the hash stage grouped could be refused later, or
 * the other way round. Every namespace the caller may read (root sees
 * trusted.* and security.*; system.posix_acl_* come back as their binary
 * form), sorted by name so equal sets compare equal.
 *
 * A guest can add, grow or remove xattrs between the calls that size and
 * read them; a list or value that grew is read again (ERANGE), a bounded
 * number of times, and a name removed after the list is left out.
 */
#include "vunify.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

/* Reads run through the descriptor, or through its /proc/self/fd link when
 * the descriptor is O_PATH (flistxattr answers EBADF on those). */
static ssize_t xlist(int fd, const char *proc, char *b, size_t n) {
  return proc ? listxattr(proc, b, n) : flistxattr(fd, b, n);
}
static ssize_t xget(int fd, const char *proc, const char *k, void *b, size_t n) {
  return proc ? getxattr(proc, k, b, n) : fgetxattr(fd, k, b, n);
}
static int cmpstr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

#define GROWTH_RETRIES 8

/* Call `fn` (list or get) into a buffer, again with the size it then
 * reports while the answer is ERANGE (it grew in between). The buffer starts as `small`
 * (which most values fit, saving the sizing call); a larger one is
 * malloc()ed and returned in *out, for the caller to free when it is not
 * `small`. Never passes a size of 0, which would only ask for the size. */
typedef ssize_t (*xread)(int fd, const char *proc, const char *key, char *buf, size_t n);
static ssize_t read_growing(int fd, const char *proc, const char *key, xread fn, char *small, size_t small_len,
                            char **out) {
  char *buf = small;
  size_t cap = small_len;
  ssize_t n;
  for (int attempt = 0;; attempt++) {
    n = fn(fd, proc, key, buf, cap);
    if (n >= 0 || errno != ERANGE || attempt > GROWTH_RETRIES) break;
    ssize_t want = fn(fd, proc, key, NULL, 0);
    if (want < 0) {
      n = -1;
      break;
    }
    if (buf != small) free(buf);
    cap = want ? (size_t)want : 1;
    buf = malloc(cap);
    if (!buf) {
      errno = ENOMEM;
      n = -1;
      break;
    }
  }
  if (n < 0) {
    int e = errno;
    if (buf != small) free(buf);
    errno = e;
    buf = small;
  }
  *out = buf;
  return n;
}

static ssize_t read_list(int fd, const char *proc, const char *key, char *buf, size_t n) {
  (void)key;
  return xlist(fd, proc, buf, n);
}
static ssize_t read_value(int fd, const char *proc, const char *key, char *buf, size_t n) {
  return xget(fd, proc, key, buf, n);
}

long read_xattrs(int fd, xattr_sink sink, void *ctx, int *failed) {
  char procbuf[64], *proc = NULL;
  char small_list[4096], small_value[4096], *names;
  *failed = XATTR_LIST;
  ssize_t n = read_growing(fd, NULL, NULL, read_list, small_list, sizeof small_list, &names);
  if (n < 0 && errno == EBADF) { /* O_PATH descriptor */
    snprintf(procbuf, sizeof procbuf, "/proc/self/fd/%d", fd);
    proc = procbuf;
    n = read_growing(fd, proc, NULL, read_list, small_list, sizeof small_list, &names);
  }
  if (n < 0) return -1;
  size_t count = 0;
  for (ssize_t i = 0; i < n; i += (ssize_t)strlen(names + i) + 1) count++;
  char **keys = malloc((count ? count : 1) * sizeof *keys);
  if (!keys) {
    if (names != small_list) free(names);
    errno = ENOMEM;
    return -1;
  }
  count = 0;
  for (ssize_t i = 0; i < n; i += (ssize_t)strlen(names + i) + 1) keys[count++] = names + i;
  qsort(keys, count, sizeof *keys, cmpstr);

  long kept = 0;
  int e = 0;
  *failed = XATTR_GET;
  for (size_t k = 0; k < count; k++) {
    char *val;
    ssize_t vl = read_growing(fd, proc, keys[k], read_value, small_value, sizeof small_value, &val);
    if (vl < 0 && errno == ENODATA) continue; /* removed between list and get */
    int stop = vl < 0 || sink(ctx, keys[k], strlen(keys[k]), val, (size_t)vl);
    e = vl < 0 ? errno : ENOMEM;
    if (val != small_value) free(val);
    if (stop) {
      kept = -1;
      break;
    }
    kept++;
  }
  free(keys);
  if (names != small_list) free(names);
  if (kept < 0) errno = e;
  return kept;
}

/* getXattrs(fd) -> [name: Buffer, value: Buffer][] sorted by name.
 * Works on an O_PATH descriptor too, through its /proc/self/fd link. */
typedef struct {
  napi_env env;
  napi_value result;
  uint32_t count;
} pairs;

static int add_pair(void *ctx, const char *name, size_t name_len, const char *value, size_t value_len) {
  pairs *p = ctx;
  napi_value pair, kb, vb;
  void *dst;
  napi_create_buffer_copy(p->env, name_len, name, &dst, &kb);
  napi_create_buffer_copy(p->env, value_len, value, &dst, &vb);
  napi_create_array_with_length(p->env, 2, &pair);
  napi_set_element(p->env, pair, 0, kb);
  napi_set_element(p->env, pair, 1, vb);
  napi_set_element(p->env, p->result, p->count++, pair);
  return 0;
}

napi_value GetXattrs(napi_env env, napi_callback_info info) {
  int fd;
  if (fd_arg(env, info, "getXattrs(fd)", &fd)) return NULL;
  pairs p = {env, NULL, 0};
  napi_create_array(env, &p.result);
  int failed;
  if (read_xattrs(fd, add_pair, &p, &failed) < 0)
    return throw_errno(env, errno, failed == XATTR_LIST ? "flistxattr" : "fgetxattr");
  return p.result;
}
