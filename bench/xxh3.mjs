#!/usr/bin/env node
/*
 * The content hash alone, in memory: the addon's XXH3-64 (native/xxh3.c:
 * scalar, AVX2, and the form this CPU runs) against its XXH64 (what the
 * content hash was before; still the cache's checksum), on inputs that stay
 * in cache (4 KiB .. 1 MiB: the hash stage hashes each file from its 1 MiB
 * read buffer) and one that does not (256 MiB). Each figure is the median
 * GB/s of 7 timed passes of >= 256 MiB each; one core.
 *
 *   node bench/xxh3.mjs [--quick]
 *
 * Exits 1 when XXH3 (as this CPU runs it) is not at least 2x XXH64 on the
 * 1 MiB input, the case that matters for the hash stage.
 */
import crypto from 'node:crypto';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { args } from './args.mjs';

const { flag } = args('usage: node bench/xxh3.mjs [--quick]   (the addon must be built: npm ci)');
const quick = flag('--quick');
const native = createRequire(import.meta.url)(fileURLToPath(new URL('../build/Release/vunify.node', import.meta.url)));
const PASSES = quick ? 3 : 7;
const PASS_BYTES = (quick ? 64 : 256) << 20;
const SCALAR = 1, AVX2 = 2;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function gbps(buf, fn) {
  const reps = Math.max(1, Math.round(PASS_BYTES / buf.length));
  fn(buf); // warm
  const out = [];
  for (let p = 0; p < PASSES; p++) {
    const t = process.hrtime.bigint();
    for (let r = 0; r < reps; r++) fn(buf);
    out.push((buf.length * reps) / Number(process.hrtime.bigint() - t));
  }
  return median(out);
}

const avx2 = native.xxh3(Buffer.alloc(0), undefined, AVX2) !== null;
const secret = crypto.randomBytes(192);
const sizes = [4 << 10, 64 << 10, 1 << 20, 256 << 20];
const rows = [];
console.log(`| input | XXH64 GB/s | XXH3 scalar GB/s | XXH3 AVX2 GB/s | XXH3 as run here GB/s | XXH3 / XXH64 |`);
console.log(`|---|---|---|---|---|---|`);
for (const size of sizes) {
  const buf = crypto.randomBytes(size);
  const x64 = gbps(buf, (b) => native.xxh64(b));
  const scalar = gbps(buf, (b) => native.xxh3(b, secret, SCALAR));
  const vec = avx2 ? gbps(buf, (b) => native.xxh3(b, secret, AVX2)) : NaN;
  const auto = gbps(buf, (b) => native.xxh3(b, secret));
  rows.push({ size, x64, auto });
  const f = (v) => (Number.isNaN(v) ? '-' : v.toFixed(2));
  console.log(`| ${size >= 1 << 20 ? `${size >> 20} MiB` : `${size >> 10} KiB`} | ${f(x64)} | ${f(scalar)} | ${f(vec)} | ${f(auto)} | ${(auto / x64).toFixed(2)}x |`);
}
const mib = rows.find((r) => r.size === 1 << 20);
const ok = mib.auto >= 2 * mib.x64;
console.log(`\nAVX2 ${avx2 ? 'available' : 'not available'}; medians of ${PASSES} passes of ${PASS_BYTES >> 20} MiB, one core.`);
console.log(`target: XXH3 >= 2x XXH64 on 1 MiB: ${(mib.auto / mib.x64).toFixed(2)}x ${ok ? 'met' : 'MISSED'}`);
process.exit(ok ? 0 : 1);
