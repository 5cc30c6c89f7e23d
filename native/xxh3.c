/*
 * XXH3-64 under a 192-byte secret (see xxh3.h): the short and mid-size
 * inputs (0..240 bytes) straight from the specification, the long ones as
 * stripes of 64 bytes accumulated into 8 lanes, a scramble after each
 * block of 16 stripes, and a final stripe and merge. The long loop is the
 * only hot part: it has a scalar form and an AVX2 form (target attribute,
 * chosen once with __builtin_cpu_supports), which must agree bit for bit.
 *
 * Streaming keeps the rule that makes it equal to one shot for every
 * split of the input: a stripe is accumulated only once at least one byte
 * after it is known (the one-shot form leaves the last stripe, and a last
 * block that ends the input, to its final step), so the buffered tail is
 * never empty at a digest, and the 64 bytes accumulated last are kept for
 * a tail shorter than a stripe.
 */
#include "xxh3.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define XXH3_X86 1
#endif

#define P32_1 0x9E3779B1U
#define P32_2 0x85EBCA77U
#define P32_3 0xC2B2AE3DU
#define P64_1 0x9E3779B185EBCA87ULL
#define P64_2 0xC2B2AE3D27D4EB4FULL
#define P64_3 0x165667B19E3779F9ULL
#define P64_4 0x85EBCA77C2B2AE63ULL
#define P64_5 0x27D4EB2F165667C5ULL
#define PMX1 0x165667919E3779F9ULL
#define PMX2 0x9FB21C651E98DF25ULL

/* The specification's default secret (XXH3_64bits() and `xxhsum -H3` use it). */
const uint8_t xxh3_default_secret[XXH3_SECRET_SIZE] = {
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
};

/* Where the long form reads the secret: the scramble's 64 bytes end it; the
 * last stripe's start 7 bytes before those; the merge's at 11. */
#define SCRAMBLE_AT (XXH3_SECRET_SIZE - XXH3_STRIPE)
#define LAST_STRIPE_AT (XXH3_SECRET_SIZE - XXH3_STRIPE - 7)
#define MERGE_AT 11
/* Mid-size (129..240): chunks after the eighth read the secret from 3; the last chunk from 119. */
#define MID_START 3
#define MID_LAST (136 - 17)

static inline uint64_t rd64(const void *p) {
  uint64_t v;
  memcpy(&v, p, 8); /* little-endian hosts only, like the rest of the addon */
  return v;
}
static inline uint32_t rd32(const void *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

/* The 128-bit product of a and b, its halves xored. */
static inline uint64_t fold_mul(uint64_t a, uint64_t b) {
  unsigned __int128 m = (unsigned __int128)a * b;
  return (uint64_t)m ^ (uint64_t)(m >> 64);
}

static inline uint64_t avalanche(uint64_t h) {
  h ^= h >> 37;
  h *= PMX1;
  return h ^ (h >> 32);
}

static inline uint64_t avalanche_xxh64(uint64_t h) {
  h ^= h >> 33;
  h *= P64_2;
  h ^= h >> 29;
  h *= P64_3;
  return h ^ (h >> 32);
}

static inline uint64_t mix16(const uint8_t *p, const uint8_t *s) {
  return fold_mul(rd64(p) ^ rd64(s), rd64(p + 8) ^ rd64(s + 8));
}

/* 0..16 bytes. */
static uint64_t short_64(const uint8_t *p, size_t len, const uint8_t *s) {
  if (len > 8) {
    uint64_t lo = (rd64(s + 24) ^ rd64(s + 32)) ^ rd64(p);
    uint64_t hi = (rd64(s + 40) ^ rd64(s + 48)) ^ rd64(p + len - 8);
    return avalanche(len + __builtin_bswap64(lo) + hi + fold_mul(lo, hi));
  }
  if (len >= 4) {
    uint64_t in = (uint64_t)rd32(p + len - 4) | ((uint64_t)rd32(p) << 32);
    uint64_t h = (rd64(s + 8) ^ rd64(s + 16)) ^ in;
    h ^= rotl64(h, 49) ^ rotl64(h, 24);
    h *= PMX2;
    h ^= (h >> 35) + len;
    h *= PMX2;
    return h ^ (h >> 28);
  }
  if (len) {
    uint32_t c = (uint32_t)p[len - 1] | ((uint32_t)len << 8) | ((uint32_t)p[0] << 16) | ((uint32_t)p[len >> 1] << 24);
    return avalanche_xxh64((uint64_t)(rd32(s) ^ rd32(s + 4)) ^ c);
  }
  return avalanche_xxh64(rd64(s + 56) ^ rd64(s + 64));
}

/* 17..240 bytes. */
static uint64_t mid_64(const uint8_t *p, size_t len, const uint8_t *s) {
  uint64_t acc = len * P64_1;
  if (len <= 128) {
    /* Chunks from both ends, paired: (0, len-16), (16, len-32), ... */
    size_t rounds = ((len - 1) >> 5) + 1;
    for (size_t i = 0; i < rounds; i++) {
      acc += mix16(p + 16 * i, s + 32 * i);
      acc += mix16(p + len - 16 * i - 16, s + 32 * i + 16);
    }
    return avalanche(acc);
  }
  for (size_t i = 0; i < 8; i++) acc += mix16(p + 16 * i, s + 16 * i);
  acc = avalanche(acc);
  for (size_t i = 8; i < len / 16; i++) acc += mix16(p + 16 * i, s + 16 * (i - 8) + MID_START);
  acc += mix16(p + len - 16, s + MID_LAST);
  return avalanche(acc);
}

/* ---- the long form's loop: n stripes from p, stripe k reading secret s + 8k ---- */

struct xxh3_impl {
  void (*accumulate)(uint64_t *acc, const uint8_t *p, const uint8_t *s, size_t n);
  void (*scramble)(uint64_t *acc, const uint8_t *s);
};

static void accumulate_scalar(uint64_t *acc, const uint8_t *p, const uint8_t *s, size_t n) {
  for (size_t k = 0; k < n; k++, p += XXH3_STRIPE, s += 8) {
    for (int i = 0; i < 8; i++) {
      uint64_t d = rd64(p + 8 * i), v = d ^ rd64(s + 8 * i);
      acc[i ^ 1] += d; /* the data itself too: a product by zero loses nothing */
      acc[i] += (v & 0xFFFFFFFFU) * (v >> 32);
    }
  }
}

static void scramble_scalar(uint64_t *acc, const uint8_t *s) {
  for (int i = 0; i < 8; i++) {
    uint64_t a = acc[i];
    a ^= a >> 47;
    a ^= rd64(s + 8 * i);
    acc[i] = a * P32_1;
  }
}

static const xxh3_impl impl_scalar = {accumulate_scalar, scramble_scalar};

#ifdef XXH3_X86
/* Four lanes per 256-bit register, two registers per stripe. The lane swap
 * (acc[i ^ 1] += data) is a swap of the 64-bit halves of each 128-bit
 * half: shuffle_epi32 with (1, 0, 3, 2). */
__attribute__((target("avx2"))) static void accumulate_avx2(uint64_t *acc, const uint8_t *p, const uint8_t *s, size_t n) {
  __m256i a0 = _mm256_loadu_si256((const __m256i *)acc), a1 = _mm256_loadu_si256((const __m256i *)(acc + 4));
  for (size_t k = 0; k < n; k++, p += XXH3_STRIPE, s += 8) {
    __m256i d0 = _mm256_loadu_si256((const __m256i *)p), d1 = _mm256_loadu_si256((const __m256i *)(p + 32));
    __m256i v0 = _mm256_xor_si256(d0, _mm256_loadu_si256((const __m256i *)s));
    __m256i v1 = _mm256_xor_si256(d1, _mm256_loadu_si256((const __m256i *)(s + 32)));
    __m256i m0 = _mm256_mul_epu32(v0, _mm256_srli_epi64(v0, 32));
    __m256i m1 = _mm256_mul_epu32(v1, _mm256_srli_epi64(v1, 32));
    a0 = _mm256_add_epi64(a0, _mm256_add_epi64(m0, _mm256_shuffle_epi32(d0, _MM_SHUFFLE(1, 0, 3, 2))));
    a1 = _mm256_add_epi64(a1, _mm256_add_epi64(m1, _mm256_shuffle_epi32(d1, _MM_SHUFFLE(1, 0, 3, 2))));
  }
  _mm256_storeu_si256((__m256i *)acc, a0);
  _mm256_storeu_si256((__m256i *)(acc + 4), a1);
}

__attribute__((target("avx2"))) static void scramble_avx2(uint64_t *acc, const uint8_t *s) {
  const __m256i prime = _mm256_set1_epi32((int)P32_1);
  for (int h = 0; h < 2; h++) {
    __m256i a = _mm256_loadu_si256((const __m256i *)(acc + 4 * h));
    a = _mm256_xor_si256(a, _mm256_srli_epi64(a, 47));
    a = _mm256_xor_si256(a, _mm256_loadu_si256((const __m256i *)(s + 32 * h)));
    /* a * P32_1 in 64 bits: lo32(a) * P + (hi32(a) * P) << 32 */
    __m256i lo = _mm256_mul_epu32(a, prime);
    __m256i hi = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), prime);
    _mm256_storeu_si256((__m256i *)(acc + 4 * h), _mm256_add_epi64(lo, _mm256_slli_epi64(hi, 32)));
  }
}

static const xxh3_impl impl_avx2 = {accumulate_avx2, scramble_avx2};
#endif

static const xxh3_impl *impl_auto = &impl_scalar;
static pthread_once_t impl_once = PTHREAD_ONCE_INIT;
static void impl_choose(void) {
#ifdef XXH3_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) impl_auto = &impl_avx2;
#endif
}

const xxh3_impl *xxh3_impl_get(int which) {
  pthread_once(&impl_once, impl_choose);
  switch (which) {
  case XXH3_AUTO: return impl_auto;
  case XXH3_SCALAR: return &impl_scalar;
#ifdef XXH3_X86
  case XXH3_AVX2: return impl_auto == &impl_avx2 ? &impl_avx2 : NULL;
#endif
  default: return NULL;
  }
}

static void acc_init(uint64_t *acc) {
  static const uint64_t init[8] = {P32_3, P64_1, P64_2, P64_3, P64_4, P32_2, P64_5, P32_1};
  memcpy(acc, init, sizeof init);
}

static uint64_t merge(const uint64_t *acc, const uint8_t *s, uint64_t start) {
  uint64_t r = start;
  for (int i = 0; i < 4; i++) r += fold_mul(acc[2 * i] ^ rd64(s + 16 * i), acc[2 * i + 1] ^ rd64(s + 16 * i + 8));
  return avalanche(r);
}

static uint64_t long_64(const xxh3_impl *im, const uint8_t *p, size_t len, const uint8_t *s) {
  uint64_t acc[8];
  acc_init(acc);
  const size_t block = XXH3_STRIPE * XXH3_STRIPES_PER_BLOCK;
  size_t blocks = (len - 1) / block; /* full blocks with at least one byte after them */
  for (size_t b = 0; b < blocks; b++) {
    im->accumulate(acc, p + b * block, s, XXH3_STRIPES_PER_BLOCK);
    im->scramble(acc, s + SCRAMBLE_AT);
  }
  size_t stripes = (len - 1 - blocks * block) / XXH3_STRIPE;
  im->accumulate(acc, p + blocks * block, s, stripes);
  im->accumulate(acc, p + len - XXH3_STRIPE, s + LAST_STRIPE_AT, 1);
  return merge(acc, s + MERGE_AT, (uint64_t)len * P64_1);
}

uint64_t xxh3_64_with(const xxh3_impl *im, const void *data, size_t len, const uint8_t *secret) {
  const uint8_t *p = data;
  if (len <= 16) return short_64(p, len, secret);
  if (len <= XXH3_MIDSIZE_MAX) return mid_64(p, len, secret);
  return long_64(im, p, len, secret);
}

/* ---- streaming ---- */

void xxh3_init_with(xxh3_state *s, const xxh3_impl *im, const uint8_t *secret) {
  memset(s, 0, sizeof *s);
  s->impl = im;
  s->secret = secret;
  acc_init(s->acc);
}

/* Accumulate n stripes from p (each with at least one byte after it), scrambling at each block's end. */
static void consume(const xxh3_impl *im, uint64_t *acc, unsigned *stripes, const uint8_t *p, size_t n, const uint8_t *secret) {
  while (n) {
    size_t take = XXH3_STRIPES_PER_BLOCK - *stripes;
    if (take > n) take = n;
    im->accumulate(acc, p, secret + 8 * *stripes, take);
    p += take * XXH3_STRIPE, n -= take, *stripes += (unsigned)take;
    if (*stripes == XXH3_STRIPES_PER_BLOCK) im->scramble(acc, secret + SCRAMBLE_AT), *stripes = 0;
  }
}

void xxh3_update(xxh3_state *s, const void *data, size_t len) {
  const uint8_t *p = data;
  s->total += len;
  if (s->n + len <= XXH3_BUF) {
    memcpy(s->buf + s->n, p, len);
    s->n += (unsigned)len;
    return;
  }
  /* More than the buffer holds: what is buffered has bytes after it now. */
  if (s->n) {
    size_t fill = XXH3_BUF - s->n;
    memcpy(s->buf + s->n, p, fill);
    p += fill, len -= fill;
    consume(s->impl, s->acc, &s->stripes, s->buf, XXH3_BUF / XXH3_STRIPE, s->secret);
    memcpy(s->last, s->buf + XXH3_BUF - XXH3_STRIPE, XXH3_STRIPE);
    s->n = 0;
  }
  if (len > XXH3_BUF) {
    size_t n = (len - 1) / XXH3_STRIPE; /* leaves 1..64 bytes */
    consume(s->impl, s->acc, &s->stripes, p, n, s->secret);
    memcpy(s->last, p + n * XXH3_STRIPE - XXH3_STRIPE, XXH3_STRIPE);
    p += n * XXH3_STRIPE, len -= n * XXH3_STRIPE;
  }
  memcpy(s->buf, p, len);
  s->n = (unsigned)len;
}

uint64_t xxh3_digest(const xxh3_state *s) {
  /* Up to 240 bytes nothing was accumulated: they are all in the buffer. */
  if (s->total <= XXH3_MIDSIZE_MAX) return xxh3_64_with(s->impl, s->buf, (size_t)s->total, s->secret);
  uint64_t acc[8];
  unsigned stripes = s->stripes;
  memcpy(acc, s->acc, sizeof acc);
  consume(s->impl, acc, &stripes, s->buf, (s->n - 1) / XXH3_STRIPE, s->secret);
  uint8_t tail[XXH3_STRIPE];
  const uint8_t *last = s->buf + s->n - XXH3_STRIPE;
  if (s->n < XXH3_STRIPE) {
    memcpy(tail, s->last + s->n, XXH3_STRIPE - s->n);
    memcpy(tail + XXH3_STRIPE - s->n, s->buf, s->n);
    last = tail;
  }
  s->impl->accumulate(acc, last, s->secret + LAST_STRIPE_AT, 1);
  return merge(acc, s->secret + MERGE_AT, s->total * P64_1);
}
