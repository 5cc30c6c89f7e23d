// XXH3-64, the content hash: the addon's C (native/xxh3.c, scalar and AVX2,
// one shot and streaming) and the TypeScript reference (src/core/xxh3.ts)
// against `xxhsum -H3` under the default secret, against each other under
// random secrets, and the streaming form against one shot over random splits.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_SECRET, xxh3 } from '../../src/core/xxh3.js';
import { sys } from '../../src/os/sys.js';
import { rng } from '../helpers/hostile.js';
import { rmTree, tempDir } from '../helpers/tree.js';
import { forgeXxh3Pair, xxhsumH3 } from '../helpers/xxh3.js';

const SCALAR = 1, AVX2 = 2;
const SEED = Number(process.env.VUNIFY_SEED ?? 0x5eed);
const MiB = 2 ** 20;
/** Has this CPU the AVX2 loop (the addon answers null for a form it cannot run)? */
const hasAvx2 = sys.xxh3(Buffer.alloc(0), undefined, AVX2) !== null;

/** Lengths where the algorithm changes form or the streaming buffer and blocks turn over. */
const LENGTHS = [
  ...Array.from({ length: 301 }, (_, i) => i),
  ...[1024, 4096, 256 * 4, 512].flatMap((c) => [c - 65, c - 64, c - 63, c - 2, c - 1, c, c + 1, c + 2, c + 63, c + 64, c + 65]),
  2047, 2048, 2049, 16383, 16384, 16385, 100_000,
];

let dir: string;
beforeAll(() => void (dir = tempDir('vunify-xxh3-')));
afterAll(() => rmTree(dir));

const random = (seed: number, n: number): Buffer => {
  const r = rng(seed);
  return Buffer.from(Array.from({ length: n }, () => Math.floor(r() * 256)));
};

describe('XXH3-64 under the default secret', () => {
  it('is what xxhsum -H3 prints, for every length 0..300, around 512/1024/4096, and a few MiB, in C and in TypeScript', () => {
    const data = random(SEED, 100_000);
    const bufs = [...new Set(LENGTHS)].map((n) => data.subarray(0, n));
    bufs.push(randomBytes(3 * MiB + 13), Buffer.alloc(2 * MiB, 0xa5));
    const want = xxhsumH3(dir, bufs);
    expect(bufs.map((b) => sys.xxh3(b))).toEqual(want);
    expect(bufs.map((b) => xxh3(b))).toEqual(want);
    // The addon's default and DEFAULT_SECRET passed explicitly are one secret.
    expect(bufs.slice(0, 50).map((b) => sys.xxh3(b, Buffer.from(DEFAULT_SECRET)))).toEqual(want.slice(0, 50));
  });
});

describe('the C forms agree', () => {
  it.skipIf(!hasAvx2)('scalar and AVX2 give the same values, default and random secrets, every length up to 2,100 and a few MiB', () => {
    const data = random(SEED + 1, 5 * MiB);
    for (const secret of [undefined, randomBytes(192), random(SEED + 2, 192)]) {
      for (let n = 0; n <= 2100; n++) expect([n, sys.xxh3(data.subarray(0, n), secret, AVX2)]).toEqual([n, sys.xxh3(data.subarray(0, n), secret, SCALAR)]);
      expect(sys.xxh3(data, secret, AVX2)).toBe(sys.xxh3(data, secret, SCALAR));
    }
  });

  it('streaming gives the one-shot value for every split tried, in each form', () => {
    const r = rng(SEED + 3);
    const data = random(SEED + 4, 40_000);
    const secret = randomBytes(192);
    for (const impl of hasAvx2 ? [SCALAR, AVX2] : [SCALAR]) {
      for (const n of [...LENGTHS.filter((x) => x <= 40_000), 39_999]) {
        const b = data.subarray(0, n);
        const want = sys.xxh3(b, secret, impl);
        // Random cuts, many small pieces, every stripe boundary, and a single piece.
        const cuts = Array.from({ length: 1 + Math.floor(r() * 8) }, () => Math.floor(r() * (n + 1))).sort((x, y) => x - y);
        const small = Array.from({ length: Math.min(n, 600) }, (_, i) => i * Math.max(1, Math.floor(n / 600)) + Math.floor(r() * 3)).filter((c) => c <= n);
        const stripes = Array.from({ length: Math.floor(n / 64) }, (_, i) => 64 * (i + 1));
        for (const c of [cuts, small.sort((x, y) => x - y), stripes, []]) expect([impl, n, c.length, sys.xxh3Stream(b, c, secret, impl)]).toEqual([impl, n, c.length, want]);
      }
    }
    // Pieces of 1 byte, as a file of one byte per read would arrive, across the 240- and 256-byte turns.
    const b = data.subarray(0, 700);
    expect(sys.xxh3Stream(b, Array.from({ length: 700 }, (_, i) => i), secret)).toBe(sys.xxh3(b, secret));
  });
});

describe('the TypeScript reference', () => {
  it('gives the C values under random secrets, at every length up to 1,100 and some long ones', () => {
    const data = random(SEED + 5, 2 * MiB + 7);
    for (const secret of [randomBytes(192), random(SEED + 6, 192)]) {
      for (let n = 0; n <= 1100; n++) expect([n, xxh3(data.subarray(0, n), secret)]).toEqual([n, sys.xxh3(data.subarray(0, n), secret)]);
      for (const n of [4095, 4096, 4097, 65_537, data.length]) expect([n, xxh3(data.subarray(0, n), secret)]).toEqual([n, sys.xxh3(data.subarray(0, n), secret)]);
    }
  });

  it('refuses a secret of another size', () => {
    expect(() => xxh3(Buffer.alloc(10), new Uint8Array(191))).toThrow(/192/);
    expect(() => sys.xxh3(Buffer.alloc(10), Buffer.alloc(191))).toThrow(TypeError);
  });
});

describe('the key', () => {
  it('another secret, another value, at every form (short, mid-size, long)', () => {
    const data = random(SEED + 7, 5000);
    const [k1, k2] = [randomBytes(192), randomBytes(192)];
    for (const n of [0, 1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 1024, 5000]) {
      const b = data.subarray(0, n);
      const values = [sys.xxh3(b), sys.xxh3(b, k1), sys.xxh3(b, k2)];
      expect([n, new Set(values).size]).toEqual([n, 3]);
    }
  });

  it('a collision forged under a known secret (the default one) does not survive another secret', () => {
    const base = random(SEED + 8, 4096);
    const [a, b] = forgeXxh3Pair(base);
    expect(a.equals(b)).toBe(false);
    // The forgery works: xxhsum itself sees one hash.
    const [ha, hb] = xxhsumH3(dir, [a, b]);
    expect(ha).toBe(hb);
    expect(sys.xxh3(a)).toBe(sys.xxh3(b));
    const key = randomBytes(192);
    expect(sys.xxh3(a, key)).not.toBe(sys.xxh3(b, key));
    // And forged for that key (were it known), it works there too.
    const [c, d] = forgeXxh3Pair(base, key);
    expect(sys.xxh3(c, key)).toBe(sys.xxh3(d, key));
  });
});
