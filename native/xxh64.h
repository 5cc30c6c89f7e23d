/*
 * XXH64 (Yann Collet's xxHash, 64-bit variant, seed 0), streaming, in plain
 * C: the checksums of the hash cache's shards (src/state/cache.ts, through
 * the addon's xxh64()). Content is hashed with XXH3 (xxh3.c). The values
 * are the same as xxhash-wasm's h64 (test/pipeline/hash.test.ts checks both
 * against each other and against published vectors).
 */
#ifndef VUNIFY_XXH64_H
#define VUNIFY_XXH64_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define XXH_P1 0x9E3779B185EBCA87ULL
#define XXH_P2 0xC2B2AE3D27D4EB4FULL
#define XXH_P3 0x165667B19E3779F9ULL
#define XXH_P4 0x85EBCA77C2B2AE63ULL
#define XXH_P5 0x27D4EB2F165667C5ULL

typedef struct {
  uint64_t total, v[4];
  unsigned char mem[32];
  size_t memsize;
} xxh64_state;

static inline uint64_t xxh_rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t xxh_read64(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, 8); /* little-endian hosts only, like the rest of the addon */
  return v;
}
static inline uint32_t xxh_read32(const unsigned char *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
static inline uint64_t xxh_round(uint64_t acc, uint64_t in) {
  acc += in * XXH_P2;
  return xxh_rotl(acc, 31) * XXH_P1;
}
static inline uint64_t xxh_merge(uint64_t acc, uint64_t v) {
  acc ^= xxh_round(0, v);
  return acc * XXH_P1 + XXH_P4;
}

static void xxh64_init_seed(xxh64_state *s, uint64_t seed) {
  memset(s, 0, sizeof *s);
  s->v[0] = seed + XXH_P1 + XXH_P2;
  s->v[1] = seed + XXH_P2;
  s->v[2] = seed;
  s->v[3] = seed - XXH_P1;
}
static void xxh64_init(xxh64_state *s) { xxh64_init_seed(s, 0); }

static void xxh64_update(xxh64_state *s, const void *data, size_t len) {
  const unsigned char *p = data, *end = p + len;
  s->total += len;
  if (s->memsize + len < 32) {
    memcpy(s->mem + s->memsize, p, len);
    s->memsize += len;
    return;
  }
  if (s->memsize) {
    size_t fill = 32 - s->memsize;
    memcpy(s->mem + s->memsize, p, fill);
    for (int i = 0; i < 4; i++) s->v[i] = xxh_round(s->v[i], xxh_read64(s->mem + 8 * i));
    p += fill;
    s->memsize = 0;
  }
  uint64_t v0 = s->v[0], v1 = s->v[1], v2 = s->v[2], v3 = s->v[3];
  for (; p + 32 <= end; p += 32) {
    v0 = xxh_round(v0, xxh_read64(p));
    v1 = xxh_round(v1, xxh_read64(p + 8));
    v2 = xxh_round(v2, xxh_read64(p + 16));
    v3 = xxh_round(v3, xxh_read64(p + 24));
  }
  s->v[0] = v0, s->v[1] = v1, s->v[2] = v2, s->v[3] = v3;
  if (p < end) {
    memcpy(s->mem, p, (size_t)(end - p));
    s->memsize = (size_t)(end - p);
  }
}

static uint64_t xxh64_digest(const xxh64_state *s) {
  uint64_t h;
  if (s->total >= 32) {
    h = xxh_rotl(s->v[0], 1) + xxh_rotl(s->v[1], 7) + xxh_rotl(s->v[2], 12) + xxh_rotl(s->v[3], 18);
    for (int i = 0; i < 4; i++) h = xxh_merge(h, s->v[i]);
  } else {
    h = s->v[2] + XXH_P5;
  }
  h += s->total;
  const unsigned char *p = s->mem, *end = p + s->memsize;
  for (; p + 8 <= end; p += 8) h = xxh_rotl(h ^ xxh_round(0, xxh_read64(p)), 27) * XXH_P1 + XXH_P4;
  if (p + 4 <= end) {
    h = xxh_rotl(h ^ (uint64_t)xxh_read32(p) * XXH_P1, 23) * XXH_P2 + XXH_P3;
    p += 4;
  }
  for (; p < end; p++) h = xxh_rotl(h ^ *p * XXH_P5, 11) * XXH_P1;
  h ^= h >> 33;
  h *= XXH_P2;
  h ^= h >> 29;
  h *= XXH_P3;
  h ^= h >> 32;
  return h;
}
#endif
