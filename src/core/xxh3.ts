/*
 * XXH3-64 under a 192-byte secret in TypeScript, one shot, written again
 * from the xxHash specification apart from the addon's C (native/xxh3.c):
 * the reference the addon's content hash is tested against, and the hash
 * of the in-thread path (hash.ts, `inFlight: 0`). It shares no code with
 * the C: BigInt for the per-input steps, 32-bit halves for the hot stripe
 * loop (about 50 MB/s here, enough for tests). Pure: loads without the addon.
 */

const M64 = (1n << 64n) - 1n;
const P32_1 = 0x9e3779b1n;
const P32_2 = 0x85ebca77n;
const P32_3 = 0xc2b2ae3dn;
const P64_1 = 0x9e3779b185ebca87n;
const P64_2 = 0xc2b2ae3d27d4eb4fn;
const P64_3 = 0x165667b19e3779f9n;
const P64_4 = 0x85ebca77c2b2ae63n;
const P64_5 = 0x27d4eb2f165667c5n;
const PMX1 = 0x165667919e3779f9n;
const PMX2 = 0x9fb21c651e98df25n;

export const SECRET_SIZE = 192;

/** The specification's default secret: with it, values are `xxhsum -H3`'s. */
export const DEFAULT_SECRET: Uint8Array = Uint8Array.from(
  Buffer.from(
    'b8fe6c3923a44bbe7c01812cf721ad1cded46de9839097db7240a4a4b7b3671fcb79e64eccc0e578825ad07dccff7221b8084674f743248ee03590e6813a264c' +
      '3c2852bb91c300cb88d0658b1b532ea371644897a20df94e3819ef46a9deacd8a8fa763fe39c343ff9dcbbc7c70b4f1d8a51e04bcdb45931c89f7ec9d9787364' +
      'eac5ac8334d3ebc3c581a0fffa1363eb170ddd51b7f0da49d316552629d4689e2b16be587d47a1fc8ff8b8d17ad031ce45cb3a8f95160428afd7fbcabb4b407e',
    'hex',
  ),
);

const r64 = (b: Uint8Array, at: number): bigint => {
  let v = 0n;
  for (let i = 7; i >= 0; i--) v = (v << 8n) | BigInt(b[at + i]!);
  return v;
};
const r32 = (b: Uint8Array, at: number): number => (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
const rotl = (x: bigint, r: bigint): bigint => ((x << r) | (x >> (64n - r))) & M64;
const mul = (a: bigint, b: bigint): bigint => (a * b) & M64;
const fold = (a: bigint, b: bigint): bigint => {
  const m = a * b;
  return (m & M64) ^ (m >> 64n);
};
const bswap64 = (x: bigint): bigint => {
  let r = 0n;
  for (let i = 0; i < 8; i++) r = (r << 8n) | ((x >> BigInt(8 * i)) & 0xffn);
  return r;
};
const avalanche = (h: bigint): bigint => {
  h = mul(h ^ (h >> 37n), PMX1);
  return h ^ (h >> 32n);
};
const avalancheXxh64 = (h: bigint): bigint => {
  h = mul(h ^ (h >> 33n), P64_2);
  h = mul(h ^ (h >> 29n), P64_3);
  return h ^ (h >> 32n);
};
const mix16 = (p: Uint8Array, at: number, s: Uint8Array, sat: number): bigint => fold(r64(p, at) ^ r64(s, sat), r64(p, at + 8) ^ r64(s, sat + 8));

function short(p: Uint8Array, len: number, s: Uint8Array): bigint {
  if (len === 0) return avalancheXxh64(r64(s, 56) ^ r64(s, 64));
  if (len <= 3) {
    const c = (p[len - 1]! | (len << 8) | (p[0]! << 16) | (p[len >> 1]! << 24)) >>> 0;
    return avalancheXxh64(BigInt((r32(s, 0) ^ r32(s, 4)) >>> 0) ^ BigInt(c));
  }
  if (len <= 8) {
    const input = BigInt(r32(p, len - 4)) | (BigInt(r32(p, 0)) << 32n);
    let h = r64(s, 8) ^ r64(s, 16) ^ input;
    h ^= rotl(h, 49n) ^ rotl(h, 24n);
    h = mul(h, PMX2);
    h ^= ((h >> 35n) + BigInt(len)) & M64;
    h = mul(h, PMX2);
    return h ^ (h >> 28n);
  }
  const lo = r64(s, 24) ^ r64(s, 32) ^ r64(p, 0);
  const hi = r64(s, 40) ^ r64(s, 48) ^ r64(p, len - 8);
  return avalanche((BigInt(len) + bswap64(lo) + hi + fold(lo, hi)) & M64);
}

function mid(p: Uint8Array, len: number, s: Uint8Array): bigint {
  let acc = mul(BigInt(len), P64_1);
  if (len <= 128) {
    // From the spec: the i-th chunk from the start and the i-th from the end, for i from the innermost out.
    for (let i = ((len - 1) >> 5); i >= 0; i--) {
      acc = (acc + mix16(p, 16 * i, s, 32 * i)) & M64;
      acc = (acc + mix16(p, len - 16 * i - 16, s, 32 * i + 16)) & M64;
    }
    return avalanche(acc);
  }
  for (let i = 0; i < 8; i++) acc = (acc + mix16(p, 16 * i, s, 16 * i)) & M64;
  acc = avalanche(acc);
  for (let i = 8; i < len >> 4; i++) acc = (acc + mix16(p, 16 * i, s, 16 * (i - 8) + 3)) & M64;
  acc = (acc + mix16(p, len - 16, s, 119)) & M64;
  return avalanche(acc);
}

/**
 * The eight accumulators as 32-bit halves (lo at 2i, hi at 2i + 1): the
 * stripe loop runs per 8 input bytes, where BigInt would cost ~1 us each.
 */
function accumulate(acc: Uint32Array, p: Uint8Array, at: number, s: Uint8Array, sat: number): void {
  for (let i = 0; i < 8; i++) {
    const dlo = r32(p, at + 8 * i), dhi = r32(p, at + 8 * i + 4);
    const vlo = (dlo ^ r32(s, sat + 8 * i)) >>> 0, vhi = (dhi ^ r32(s, sat + 8 * i + 4)) >>> 0;
    // acc[i ^ 1] += data
    const j = 2 * (i ^ 1);
    const l = acc[j]! + dlo;
    acc[j] = l;
    acc[j + 1] = acc[j + 1]! + dhi + (l > 0xffffffff ? 1 : 0);
    // acc[i] += vlo * vhi (32 x 32 -> 64, by 16-bit halves)
    const a0 = vlo & 0xffff, a1 = vlo >>> 16, b0 = vhi & 0xffff, b1 = vhi >>> 16;
    const p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    const midSum = (p00 >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
    const plo = (((midSum & 0xffff) << 16) | (p00 & 0xffff)) >>> 0;
    const phi = p11 + (p01 >>> 16) + (p10 >>> 16) + Math.floor(midSum / 65536);
    const k = 2 * i;
    const l2 = acc[k]! + plo;
    acc[k] = l2;
    acc[k + 1] = acc[k + 1]! + phi + (l2 > 0xffffffff ? 1 : 0);
  }
}

const get = (acc: Uint32Array, i: number): bigint => (BigInt(acc[2 * i + 1]!) << 32n) | BigInt(acc[2 * i]!);
const put = (acc: Uint32Array, i: number, v: bigint): void => {
  acc[2 * i] = Number(v & 0xffffffffn);
  acc[2 * i + 1] = Number(v >> 32n);
};

function long(p: Uint8Array, len: number, s: Uint8Array): bigint {
  const acc = new Uint32Array(16);
  [P32_3, P64_1, P64_2, P64_3, P64_4, P32_2, P64_5, P32_1].forEach((v, i) => put(acc, i, v));
  const stripesPerBlock = (s.length - 64) / 8;
  const block = 64 * stripesPerBlock;
  const blocks = Math.floor((len - 1) / block);
  for (let b = 0; b < blocks; b++) {
    for (let n = 0; n < stripesPerBlock; n++) accumulate(acc, p, b * block + 64 * n, s, 8 * n);
    for (let i = 0; i < 8; i++) {
      let a = get(acc, i);
      a ^= a >> 47n;
      a ^= r64(s, s.length - 64 + 8 * i);
      put(acc, i, mul(a, P32_1));
    }
  }
  const stripes = Math.floor((len - 1 - blocks * block) / 64);
  for (let n = 0; n < stripes; n++) accumulate(acc, p, blocks * block + 64 * n, s, 8 * n);
  accumulate(acc, p, len - 64, s, s.length - 64 - 7);
  let r = mul(BigInt(len), P64_1);
  for (let i = 0; i < 4; i++) r = (r + fold(get(acc, 2 * i) ^ r64(s, 11 + 16 * i), get(acc, 2 * i + 1) ^ r64(s, 11 + 16 * i + 8))) & M64;
  return avalanche(r);
}

/** XXH3-64 of `data` under `secret` (192 bytes; the default secret when omitted). */
export function xxh3(data: Uint8Array, secret: Uint8Array = DEFAULT_SECRET): bigint {
  if (secret.length !== SECRET_SIZE) throw new RangeError(`xxh3: the secret is ${secret.length} bytes, not ${SECRET_SIZE}`);
  const len = data.length;
  if (len <= 16) return short(data, len, secret);
  if (len <= 240) return mid(data, len, secret);
  return long(data, len, secret);
}
