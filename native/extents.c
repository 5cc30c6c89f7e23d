/*
 * Data extents: files read by what they hold, not by their size. A sparse
 * file's holes are known zeros (lseek SEEK_DATA/SEEK_HOLE finds them), so
 * a guest's 1 PiB file with no blocks costs a few lseek calls to hash, not
 * a pebibyte of reads.
 *
 * The content hash (hash_data, used by hashFiles and by the memory report's
 * hashFd) is XXH3-64 (xxh3.c), under the secret derived from the host's
 * hash key (src/state/hash-key.ts), of a stream S that is a function of
 * the file's logical bytes only, whatever is a hole and whatever is
 * written zeros:
 *   the file is cut into ZERO_BLOCK (1 MiB) blocks at multiples of
 *   ZERO_BLOCK; each maximal run of k >= 1 consecutive *full* blocks that
 *   are all zero bytes is replaced in S by a 16-byte marker: a keyed tag
 *   (marker_tag), then k, both little-endian u64; every other byte is in
 *   S as it is (a partial last block never counts as a zero block).
 *   The tag is keyed because a public one could be written as data: "a
 *   zero MiB, P, the marker" and "the marker, P, a zero MiB" (P any
 *   MiB - 16 bytes) would give one stream, one hash under every key
 *   (test/scenarios/marker-forgery.test.ts). A guest that cannot read the
 *   key cannot write the tag.
 * So a file with no all-zero aligned MiB (almost every file, and every
 * file under 1 MiB) hashes to plain (keyed) XXH3-64 of its bytes, as the
 * reference path (src/pipeline/hash.ts hashFd) computes it; a file with
 * such runs hashes the same whether they are holes or written zeros, and a
 * hole costs no read. The hash only nominates: the linker still compares
 * every byte (extent by extent as well).
 */
#include "vunify.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xxh3.h"

static const char MARKER_TAG[8] = {0, 'v', 'u', 'n', 'i', 'f', 'y', 0};

/* Whether all `len` bytes are zero; stops at the first that is not. */
static int all_zero(const char *p, size_t len) {
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    if (w) return 0;
  }
  for (; i < len; i++)
    if (p[i]) return 0;
  return 1;
}

/* The marker's tag: XXH3-64 of "\0vunify\0" under the secret, xor the
 * secret's last 8 bytes, so that it is not the hash of any file either (a
 * manifest or cache that leaks holds hashes of files, never the secret). */
static uint64_t marker_tag(const uint8_t *secret) {
  uint64_t last;
  memcpy(&last, secret + XXH3_SECRET_SIZE - 8, 8);
  return xxh3_64(MARKER_TAG, sizeof MARKER_TAG, secret) ^ last;
}

static void emit_run(xxh3_state *s, uint64_t tag, uint64_t *run) {
  if (!*run) return;
  unsigned char m[16];
  for (int i = 0; i < 8; i++) m[i] = (unsigned char)(tag >> (8 * i));
  for (int i = 0; i < 8; i++) m[8 + i] = (unsigned char)(*run >> (8 * i));
  xxh3_update(s, m, sizeof m);
  *run = 0;
}

/* Read exactly len bytes at pos; DATA_SHRANK when the file ends first. */
static int read_at(int fd, char *buf, size_t len, uint64_t pos) {
  for (size_t got = 0; got < len;) {
    ssize_t n = pread(fd, buf + got, len - got, (off_t)(pos + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return DATA_SHRANK;
    got += (size_t)n;
  }
  return 0;
}

int hash_data(int fd, uint64_t size, char *buf, size_t cap, const uint8_t *secret, uint64_t *out, int *elf) {
  if (cap < ZERO_BLOCK) return EINVAL;
  xxh3_state s;
  xxh3_init(&s, secret);
  const uint64_t tag = marker_tag(secret);
  *elf = 0;
  uint64_t run = 0;                   /* zero blocks not yet in the stream */
  uint64_t next_data = 0, next_hole = 0; /* [next_data, next_hole): data, from pos on */
  int skipped = 0;
  for (uint64_t pos = 0; pos < size;) {
    size_t len = size - pos < ZERO_BLOCK ? (size_t)(size - pos) : ZERO_BLOCK;
    if (len == ZERO_BLOCK && pos >= next_hole) {
      off_t d = lseek(fd, (off_t)pos, SEEK_DATA);
      if (d >= 0) {
        next_data = (uint64_t)d;
        off_t h = next_data < size ? lseek(fd, d, SEEK_HOLE) : (off_t)size;
        next_hole = h >= 0 ? (uint64_t)h : size;
      } else if (errno == ENXIO) {
        next_data = next_hole = size; /* a hole up to the end */
      } else {
        next_data = pos, next_hole = size; /* no extent information: all data */
      }
      if (next_hole <= pos) next_data = pos, next_hole = size; /* moved under us: read it */
    }
    if (len == ZERO_BLOCK && next_data >= pos + ZERO_BLOCK) {
      /* Whole blocks of hole: zeros, counted without a read. */
      uint64_t blocks = ((next_data < size ? next_data : size) - pos) / ZERO_BLOCK;
      run += blocks;
      pos += blocks * ZERO_BLOCK;
      skipped = 1;
      continue;
    }
    int err = read_at(fd, buf, len, pos);
    if (err) return err;
    if (pos == 0 && len >= 4 && memcmp(buf, "\x7f" "ELF", 4) == 0) *elf = 1;
    if (len == ZERO_BLOCK && all_zero(buf, len)) {
      run++;
    } else {
      emit_run(&s, tag, &run);
      xxh3_update(&s, buf, len);
    }
    pos += len;
  }
  emit_run(&s, tag, &run);
  if (skipped) {
    /* A hole skipped is a read not made: a file that shrank meanwhile must
     * not pass as hashed. */
    struct statx st;
    if (fd_statx(fd, &st)) return errno;
    if (st.stx_size != size) return DATA_SHRANK;
  }
  *out = xxh3_digest(&s);
  return 0;
}

/* seekData(fd, pos, hole: boolean) -> number: lseek SEEK_DATA (or
 * SEEK_HOLE) from pos; -1 when there is no data from pos on (ENXIO). A
 * filesystem without extent information answers as if it were all data. */
napi_value SeekData(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t fd, pos;
  bool hole = false;
  if (argc < 3 || arg_int(env, argv[0], &fd) || arg_int(env, argv[1], &pos) || napi_get_value_bool(env, argv[2], &hole) != napi_ok) {
    napi_throw_type_error(env, NULL, "seekData(fd, pos, hole)");
    return NULL;
  }
  off_t r = lseek((int)fd, (off_t)pos, hole ? SEEK_HOLE : SEEK_DATA);
  if (r < 0 && errno != ENXIO) return throw_errno(env, errno, "lseek");
  napi_value v;
  napi_create_double(env, r < 0 ? -1 : (double)r, &v);
  return v;
}

/* hashFd(fd, size, secret: Buffer(192)) -> bigint: the content hash of
 * hashFiles (hash_data) for a descriptor already open, in this thread: the
 * memory report hashes mapped files with it, so they match the inodes the
 * hash stage hashed. Throws the errno of a failed read; a file that ended
 * before `size` throws ECHANGED. */
napi_value HashFd(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t fd, size;
  void *secret;
  size_t secret_len;
  if (argc < 3 || arg_int(env, argv[0], &fd) || arg_int(env, argv[1], &size) || size < 0 || arg_buffer(env, argv[2], &secret, &secret_len) ||
      secret_len != XXH3_SECRET_SIZE) {
    napi_throw_type_error(env, NULL, "hashFd(fd, size, secret: Buffer of 192 bytes)");
    return NULL;
  }
  uint8_t key[XXH3_SECRET_SIZE];
  memcpy(key, secret, sizeof key);
  char *buf = malloc(ZERO_BLOCK);
  if (!buf) return throw_errno(env, ENOMEM, "hashFd");
  uint64_t h = 0;
  int elf;
  int err = hash_data((int)fd, (uint64_t)size, buf, ZERO_BLOCK, key, &h, &elf);
  free(buf);
  if (err == DATA_SHRANK) {
    napi_throw_error(env, "ECHANGED", "file shrank while being read");
    return NULL;
  }
  if (err) return throw_errno(env, err, "read");
  napi_value r;
  napi_create_bigint_uint64(env, h, &r);
  return r;
}
