/*
 * Page-cache residency for the memory report (vunify report --memory):
 * which pages of a file are in the page cache, measured without reading or
 * faulting anything in, so the report does not change what it measures.
 * And giving the process's freed heap memory back to the kernel between
 * the pipeline's stages (mallocTrim).
 */
#include "vunify.h"

#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

/* residentPages(fd, size) -> Buffer, one byte per page of the first `size`
 * bytes, bit 0 set when that page is in the page cache (mincore on a
 * PROT_READ, MAP_SHARED mapping). Mapped in pieces so a huge (sparse) guest
 * file cannot exhaust the address space. mincore reports page-cache
 * residency only to a caller that could write the file (root can), see
 * mincore(2). */
napi_value ResidentPages(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int64_t fd, size;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2 || arg_int(env, argv[0], &fd) || arg_int(env, argv[1], &size) || size < 0) {
    napi_throw_type_error(env, NULL, "residentPages(fd, size)");
    return NULL;
  }
  const uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), piece = (uint64_t)256 << 20;
  const uint64_t pages = ((uint64_t)size + page - 1) / page;
  napi_value result;
  void *out;
  CHECK(napi_create_buffer(env, pages, &out, &result));
  for (uint64_t off = 0; off < (uint64_t)size; off += piece) {
    size_t len = (size_t)((uint64_t)size - off < piece ? (uint64_t)size - off : piece);
    void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, (int)fd, (off_t)off);
    if (map == MAP_FAILED) return throw_errno(env, errno, "mmap");
    int rc = mincore(map, len, (unsigned char *)out + off / page);
    int err = errno;
    munmap(map, len);
    if (rc < 0) return throw_errno(env, err, "mincore");
  }
  return result;
}

/* pageSize() -> the kernel's page size, the unit of mincore and /proc/PID/pagemap. */
napi_value PageSize(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value r;
  napi_create_double(env, (double)sysconf(_SC_PAGESIZE), &r);
  return r;
}

/* mallocTrim() -> true when memory was given back. The typed arrays a stage
 * leaves are malloc'd; once freed, glibc keeps them in its arenas (a freed
 * mmap'd chunk raises the mmap threshold, so the next ones come from the
 * heap), where the next stage's V8 pages cannot use them: malloc_trim hands
 * the free pages of every arena back (MADV_DONTNEED), so resident memory
 * follows what is live. The hash stage's read buffers (hash.c) go first. */
napi_value MallocTrim(napi_env env, napi_callback_info info) {
  (void)info;
  hash_release_buffers(); /* between stages: no batch is in flight */
  napi_value r;
  napi_get_boolean(env, malloc_trim(0) == 1, &r);
  return r;
}
