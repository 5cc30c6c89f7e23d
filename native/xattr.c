/*
 * Reading a file's xattrs, once for the whole addon: getXattrs (the linker's
 * and split's checks) and hashFiles (the hash stage's key) must see a file's
 * xattrs alike, or files the hash stage grouped could be refused later, or
 * the other way round. Every namespace the caller may read (root sees
 * trusted.* and security.*; system.posix_acl_* come back as their binary
 * form), sorted by name so equal sets compare equal.
 *
 * More than XATTR_TOTAL_MAX bytes of names and values is E2BIG: such a
 * file is left alone (see vunify.h).
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

/* Ask `fn` (list or get) for the size, read into a buffer of that size,
 * and again while the answer is ERANGE (it grew in between). Size first,
 * not a guessed buffer: almost no file has xattrs, and the kernel
 * allocates whatever size it is offered. A size of 0 is never passed to a
 * read (that only asks the size again). Returns the length and the
 * malloc()ed bytes in *out (NULL when empty), or -1 with errno. */
typedef ssize_t (*xread)(int fd, const char *proc, const char *key, char *buf, size_t n);
static ssize_t read_sized(int fd, const char *proc, const char *key, xread fn, char **out) {
  char *buf = NULL;
  ssize_t n;
  for (int attempt = 0;; attempt++) {
    ssize_t want = fn(fd, proc, key, NULL, 0);
    if (want <= 0) {
      n = want;
      break;
    }
    free(buf);
    buf = malloc((size_t)want);
    if (!buf) {
      errno = ENOMEM;
      n = -1;
      break;
    }
    n = fn(fd, proc, key, buf, (size_t)want);
    if (n >= 0 || errno != ERANGE || attempt > GROWTH_RETRIES) break;
  }
  if (n <= 0) {
    int e = errno;
    free(buf);
    errno = e;
    buf = NULL;
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
  char procbuf[64], *proc = NULL, *names;
  *failed = XATTR_LIST;
  ssize_t n = read_sized(fd, NULL, NULL, read_list, &names);
  if (n < 0 && errno == EBADF) { /* O_PATH descriptor */
    snprintf(procbuf, sizeof procbuf, "/proc/self/fd/%d", fd);
    proc = procbuf;
    n = read_sized(fd, proc, NULL, read_list, &names);
  }
  if (n <= 0) return n < 0 ? -1 : 0;
  size_t count = 0;
  for (ssize_t i = 0; i < n; i += (ssize_t)strlen(names + i) + 1) count++;
  char **keys = malloc(count * sizeof *keys);
  if (!keys) {
    free(names);
    errno = ENOMEM;
    return -1;
  }
  count = 0;
  for (ssize_t i = 0; i < n; i += (ssize_t)strlen(names + i) + 1) keys[count++] = names + i;
  qsort(keys, count, sizeof *keys, cmpstr);

  long kept = 0;
  int e = 0;
  size_t total = 0;
  *failed = XATTR_GET;
  for (size_t k = 0; k < count; k++) {
    char *val;
    ssize_t vl = read_sized(fd, proc, keys[k], read_value, &val);
    if (vl < 0 && errno == ENODATA) continue; /* removed between list and get */
    if (vl >= 0) total += strlen(keys[k]) + (size_t)vl;
    int big = vl >= 0 && total > XATTR_TOTAL_MAX;
    int stop = vl < 0 || big || sink(ctx, keys[k], strlen(keys[k]), val ? val : "", (size_t)vl);
    e = vl < 0 ? errno : big ? E2BIG : ENOMEM;
    free(val);
    if (stop) {
      kept = -1;
      break;
    }
    kept++;
  }
  free(keys);
  free(names);
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
