// Test helper only (never in src/): forge a file with the same XXH64 under a
// KNOWN seed as a target file, as a hostile guest can for the public seed 0.
//
// XXH64 runs four 64-bit lanes over 32-byte stripes; each lane step
// round(acc, x) = rotl(acc + x * P2, 31) * P1 is a bijection in x. So after
// an arbitrary first stripe, the second stripe can be solved lane by lane to
// bring all four lanes back to the target's state; the rest of the file is
// the target's own bytes, and the digest (lanes, length, tail) is the same.
const M = (1n << 64n) - 1n;
const P1 = 0x9e3779b185ebca87n;
const P2 = 0xc2b2ae3d27d4eb4fn;

const rotl = (x: bigint, r: bigint) => ((x << r) | (x >> (64n - r))) & M;
const rotr = (x: bigint, r: bigint) => ((x >> r) | (x << (64n - r))) & M;
/** Inverse of an odd number modulo 2^64 (Newton's iteration). */
function inverse(p: bigint): bigint {
  let x = p;
  for (let i = 0; i < 6; i++) x = (x * ((2n - ((p * x) & M)) & M)) & M;
  return x;
}
const round = (acc: bigint, x: bigint) => (rotl((acc + x * P2) & M, 31n) * P1) & M;

function lanes(seed: bigint): bigint[] {
  return [(seed + P1 + P2) & M, (seed + P2) & M, seed & M, (seed - P1) & M];
}
function stripe(v: bigint[], buf: Buffer, off: number): bigint[] {
  return v.map((acc, i) => round(acc, buf.readBigUInt64LE(off + 8 * i)));
}

/**
 * A buffer of `target`'s length, different from it, whose XXH64 under
 * `seed` equals target's; its first 32 bytes are `first` (repeated to 32).
 */
export function forgeXxh64(target: Buffer, seed: bigint, first: Buffer): Buffer {
  if (target.length < 64) throw new Error('forgeXxh64 needs at least 64 bytes');
  const out = Buffer.from(target);
  for (let i = 0; i < 32; i++) out[i] = first[i % first.length]!;
  const want = stripe(stripe(lanes(seed), target, 0), target, 32);
  const have = stripe(lanes(seed), out, 0);
  const p1inv = inverse(P1), p2inv = inverse(P2);
  for (let i = 0; i < 4; i++) {
    const x = ((rotr((want[i]! * p1inv) & M, 31n) - have[i]! + (1n << 64n)) * p2inv) & M;
    out.writeBigUInt64LE(x, 32 + 8 * i);
  }
  return out;
}
