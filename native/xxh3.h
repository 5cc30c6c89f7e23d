/*
 * XXH3-64 (xxHash's 64-bit XXH3) under a 192-byte secret, one-shot and
 * streaming, written from the xxHash specification (doc/xxhash_spec.md):
 * the content hash of the hash stage (extents.c, hash.c). With the
 * specification's default secret its values are `xxhsum -H3`'s
 * (test/os/xxh3.test.ts checks every length 0..300 and more).
 *
 * The secret is the key: the host's hash key derives a random 192-byte
 * secret (src/state/hash-key.ts), rather than a 64-bit seed over the
 * default secret, because with the default secret a fixed pair of 32-byte
 * inputs collides for about 2^-10.5 of all seeds (xxHash issue #1127): a
 * guest could plant such pairs without knowing the seed. Under a random
 * secret the same kind of pair collides with probability about 2^-27 per
 * key; the linker compares every byte anyway (README, threat model).
 *
 * The long-input loop (stripes of 64 bytes, 16 to a block) has a portable
 * scalar form and an AVX2 form, chosen once at run time; both give the
 * same values (tested).
 */
#ifndef VUNIFY_XXH3_H
#define VUNIFY_XXH3_H
#include <stddef.h>
#include <stdint.h>

#define XXH3_SECRET_SIZE 192
#define XXH3_STRIPE 64
#define XXH3_STRIPES_PER_BLOCK ((XXH3_SECRET_SIZE - XXH3_STRIPE) / 8) /* 16 */
#define XXH3_MIDSIZE_MAX 240
#define XXH3_BUF 256 /* a multiple of the stripe, larger than XXH3_MIDSIZE_MAX */

extern const uint8_t xxh3_default_secret[XXH3_SECRET_SIZE];

typedef struct xxh3_impl xxh3_impl; /* the long-input loop: scalar or AVX2 */

typedef struct {
  const xxh3_impl *impl;
  uint64_t acc[8];
  uint64_t total;     /* bytes given so far */
  const uint8_t *secret;
  unsigned stripes;   /* stripes of the current block already accumulated */
  unsigned n;         /* bytes in buf, not yet accumulated (1..XXH3_BUF once total > 0) */
  unsigned char buf[XXH3_BUF];
  unsigned char last[XXH3_STRIPE]; /* the last stripe accumulated, for a digest whose tail is short */
} xxh3_state;

/* Which form of the long-input loop runs: XXH3_AUTO (AVX2 when the CPU has
 * it), or one forced, for tests and benchmarks. NULL when the one asked
 * for is not available on this CPU. */
enum { XXH3_AUTO = 0, XXH3_SCALAR = 1, XXH3_AVX2 = 2 };
const xxh3_impl *xxh3_impl_get(int which);

/* The secret must stay valid while it is used (a state keeps a pointer). */
uint64_t xxh3_64_with(const xxh3_impl *impl, const void *data, size_t len, const uint8_t *secret);
void xxh3_init_with(xxh3_state *s, const xxh3_impl *impl, const uint8_t *secret);
#define xxh3_64(data, len, secret) xxh3_64_with(xxh3_impl_get(XXH3_AUTO), data, len, secret)
#define xxh3_init(s, secret) xxh3_init_with(s, xxh3_impl_get(XXH3_AUTO), secret)
void xxh3_update(xxh3_state *s, const void *data, size_t len);
uint64_t xxh3_digest(const xxh3_state *s);
#endif
