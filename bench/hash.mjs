#!/usr/bin/env node
/*
 * Hashing hot path: what vunify's hashing costs, in memory and on files.
 *
 *   npm run bench:hash                 (either way, dist/ is rebuilt first when stale)
 *   node bench/hash.mjs [--quick] [--dir DIR] [--concurrency N]
 *
 * 1. In memory, xxhash-wasm as vunify loads it: one-shot h64Raw against
 *    create64().update().digest() on 200 B, 4 KiB, 64 KiB and 1 MiB inputs
 *    (ns per call, GB/s), and one long-lived create64 stream fed chunks of
 *    4 KiB .. 4 MiB (GB/s): the large-file path.
 * 2. On files, vunify's own hashFd from dist/hash.js (whatever it is now):
 *    200 B, 4 KiB, 1 MiB and 64 MiB files in a temp dir on /var/tmp (warm page
 *    cache), each file opened (O_RDONLY|O_NOATIME), hashed, closed; one file at
 *    a time and N files in flight like splitByHash; files/s and GB/s. Also the
 *    bare open+close cost, and xxh64sum (Debian's xxhash, native, one process,
 *    one core) on the same files as a reference.
 *
 * Each figure is the median of several batches (in memory: batches of
 * >= 50 ms; on files: full passes over the set). The temp dir is removed at
 * the end. Output is markdown, ready to paste into bench/README.md.
 */
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import xxhash from 'xxhash-wasm';
import { args } from './args.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const { flag, opt } = args('usage: node bench/hash.mjs [--quick] [--dir DIR] [--concurrency N]');
const QUICK = flag('--quick');
const BATCHES = QUICK ? 3 : 7;
const BATCH_MS = QUICK ? 20 : 50;
const CONCURRENCY = Number(opt('--concurrency', '4'));

const dist = spawnSync('bash', [path.join(here, 'ensure-dist.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
if (dist.status !== 0) process.exit(2);
const hashMod = await import(path.join(here, '../dist/pipeline/hash.js'));
const sysMod = await import(path.join(here, '../dist/os/sys.js'));
const h = typeof hashMod.getHasher === 'function' ? await hashMod.getHasher() : await xxhash();

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const now = () => process.hrtime.bigint();
const ms = (t0, t1) => Number(t1 - t0) / 1e6;
let sink = 0n; // results go here, so no call is optimised away

/**
 * Median ns per call over BATCHES batches of >= BATCH_MS each. `loop(n)` makes
 * n calls in its own loop and returns the last result: one loop per call site,
 * so each is optimised for its own callee (a shared `fn()` call would be
 * megamorphic and cost more than a 200-byte hash).
 */
function perCall(loop) {
  let iters = 1;
  for (;;) {
    const t0 = now();
    sink ^= loop(iters);
    const dt = ms(t0, now());
    if (dt >= BATCH_MS / 4) {
      iters = Math.max(1, Math.ceil((iters * BATCH_MS) / dt));
      break;
    }
    iters *= 4;
  }
  sink ^= loop(iters); // one more batch untimed: the optimised code settles
  const samples = [];
  for (let b = 0; b < BATCHES; b++) {
    const t0 = now();
    sink ^= loop(iters);
    samples.push((ms(t0, now()) * 1e6) / iters);
  }
  return { med: median(samples), best: Math.min(...samples) };
}

const KiB = 1024;
const MiB = 1024 * KiB;
const human = (n) => (n >= MiB ? `${n / MiB} MiB` : n >= KiB ? `${n / KiB} KiB` : `${n} B`);
const fmt = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '–');
const gbps = (bytes, ns) => bytes / ns; // bytes per ns = GB/s

const cpu = (os.cpus()[0]?.model ?? '?').trim();
console.log(`# vunify hashing benchmark, ${new Date().toISOString().slice(0, 16).replace('T', ' ')}`);
console.log('');
console.log(
  `${dist.stdout.trim()}; node ${process.version}, ${os.availableParallelism()} cores (${cpu}), ${Math.round(os.totalmem() / 2 ** 30)} GiB, ` +
    `Linux ${os.release()}; xxhash-wasm ${JSON.parse(fs.readFileSync(path.join(here, '../node_modules/xxhash-wasm/package.json'), 'utf8')).version}; ` +
    `dist/pipeline/hash.js CHUNK = ${hashMod.CHUNK !== undefined ? human(hashMod.CHUNK) : '(not exported)'}`,
);

// ---------------------------------------------------------------- in memory
console.log('');
console.log('## In memory: one-shot h64Raw vs create64().update().digest()');
console.log('');
console.log('Median of the batches, best batch in parentheses (this machine is shared and noisy).');
console.log('');
console.log('| input | h64Raw ns/call | h64Raw GB/s | create64 ns/call | create64 GB/s | create64 / h64Raw | addon xxh64 ns/call | addon GB/s |');
console.log('|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const size of [200, 4 * KiB, 64 * KiB, MiB]) {
  const buf = crypto.randomBytes(size);
  const raw = perCall((n) => {
    let r = 0n;
    for (let i = 0; i < n; i++) r = h.h64Raw(buf);
    return r;
  });
  const str = perCall((n) => {
    let r = 0n;
    for (let i = 0; i < n; i++) r = h.create64().update(buf).digest();
    return r;
  });
  if (h.h64Raw(buf) !== h.create64().update(buf).digest()) throw new Error('h64Raw and create64 disagree');
  // The addon's C XXH64 (what the hash stage uses since hashing moved into native batches), via one napi call.
  const nat = sysMod.sys.xxh64 ? perCall((n) => {
    let r = 0n;
    for (let i = 0; i < n; i++) r = sysMod.sys.xxh64(buf);
    return r;
  }) : { med: NaN, best: NaN };
  if (sysMod.sys.xxh64 && sysMod.sys.xxh64(buf) !== h.h64Raw(buf)) throw new Error('addon xxh64 and h64Raw disagree');
  console.log(
    `| ${human(size)} | ${fmt(raw.med)} (${fmt(raw.best)}) | ${fmt(gbps(size, raw.med), 2)} | ${fmt(str.med)} (${fmt(str.best)}) | ${fmt(gbps(size, str.med), 2)} | ${fmt(str.med / raw.med, 2)}× | ${fmt(nat.med)} (${fmt(nat.best)}) | ${fmt(gbps(size, nat.med), 2)} |`,
  );
}

console.log('');
console.log('## In memory: one create64 stream, 64 MiB fed in chunks (the large-file path)');
console.log('');
console.log('| chunk | GB/s (best) | ns per update |');
console.log('|---:|---:|---:|');
{
  const TOTAL = 64 * MiB;
  const big = crypto.randomBytes(4 * MiB);
  for (const chunk of [4 * KiB, 64 * KiB, 256 * KiB, MiB, 4 * MiB]) {
    const piece = big.subarray(0, chunk);
    const n = TOTAL / chunk;
    const ns = perCall((reps) => {
      let r = 0n;
      for (let j = 0; j < reps; j++) {
        const s = h.create64();
        for (let i = 0; i < n; i++) s.update(piece);
        r = s.digest();
      }
      return r;
    });
    console.log(`| ${human(chunk)} | ${fmt(gbps(TOTAL, ns.med), 2)} (${fmt(gbps(TOTAL, ns.best), 2)}) | ${fmt(ns.med / n)} |`);
  }
}

{
  // native reference: xxh64sum's own in-memory benchmark of XXH64 (100 KB sample)
  const r = spawnSync('xxh64sum', ['-b3', `-i${QUICK ? 1 : 3}`, '-q'], { encoding: 'utf8' });
  const m = /XXH64\s*:.*\(\s*([\d.]+) MB\/s\)/.exec(`${r.stdout}${r.stderr}`.replaceAll('\r', '\n'));
  console.log('');
  console.log(
    m
      ? `Native reference: \`xxh64sum -b3\` (XXH64, 100 KB in memory, one core): ${fmt(Number(m[1]) / 1000, 2)} GB/s.`
      : `Native reference: \`xxh64sum -b3\` gave no figure (${r.error?.message ?? `exit ${r.status}`}).`,
  );
}

// ---------------------------------------------------------------- on files
const sets = QUICK
  ? [
      { size: 200, count: 2000 },
      { size: 4 * KiB, count: 2000 },
      { size: MiB, count: 64 },
      { size: 64 * MiB, count: 2 },
    ]
  : [
      { size: 200, count: 5000 },
      { size: 4 * KiB, count: 5000 },
      { size: MiB, count: 256 },
      { size: 64 * MiB, count: 4 },
    ];
const base = opt('--dir', '/var/tmp');
const dir = fs.mkdtempSync(path.join(base, 'vunify-bench-hash-'));
const cleanup = () => fs.rmSync(dir, { recursive: true, force: true });
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

const noise = crypto.randomBytes(64 * MiB + 4096);
for (const set of sets) {
  set.files = [];
  const d = path.join(dir, human(set.size).replace(' ', ''));
  fs.mkdirSync(d);
  for (let i = 0; i < set.count; i++) {
    const p = path.join(d, `f${i}`);
    const off = (i * 4099) % 4096;
    const content = Buffer.from(noise.subarray(off, off + set.size));
    content.writeUInt32LE(i, 0); // every file differs
    fs.writeFileSync(p, content);
    set.files.push(p);
  }
}
spawnSync('sync');
for (const set of sets) for (const p of set.files) fs.readFileSync(p); // warm, and settle

const O_NOATIME = fs.constants.O_NOATIME ?? 0o1000000;
const OPEN_FLAGS = fs.constants.O_RDONLY | O_NOATIME;

/** The hashFd variants dist/hash.js exports; each checked against h64Raw on a real file first. */
const variants = [];
for (const [name, fn] of Object.entries(hashMod)) {
  if (!/^hashFd/.test(name) || typeof fn !== 'function') continue;
  variants.push({ name, fn });
}
const chunk = typeof hashMod.CHUNK === 'number' ? hashMod.CHUNK : MiB;
const problems = [];
for (const v of [...variants]) {
  try {
    for (const set of sets) {
      const p = set.files[0];
      const want = h.h64Raw(fs.readFileSync(p));
      const fd = fs.openSync(p, OPEN_FLAGS);
      try {
        const got = await v.fn(h, fd, set.size, Buffer.allocUnsafe(chunk));
        if (got !== want) throw new Error(`hash of a ${human(set.size)} file is ${got}, expected ${want}`);
      } finally {
        fs.closeSync(fd);
      }
    }
  } catch (er) {
    problems.push(`${v.name}(h, fd, size, buf) did not work as expected (${er.message}): not measured`);
    variants.splice(variants.indexOf(v), 1);
  }
}

/** One full pass over the set's files with `inFlight` files at once; returns ms. */
async function pass(set, inFlight, hashOne) {
  let next = 0;
  const t0 = now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      const buf = Buffer.allocUnsafe(chunk);
      while (next < set.files.length) {
        const p = set.files[next++];
        const fd = fs.openSync(p, OPEN_FLAGS);
        try {
          const r = await hashOne(fd, set.size, buf);
          if (typeof r === 'bigint') sink ^= r;
        } finally {
          fs.closeSync(fd);
        }
      }
    }),
  );
  return ms(t0, now());
}
async function passes(set, inFlight, hashOne) {
  const samples = [];
  for (let b = 0; b < Math.max(3, BATCHES - 2); b++) samples.push(await pass(set, inFlight, hashOne));
  return median(samples);
}
function xxh64sum(set) {
  // >= 256 MiB or >= 20,000 files per pass, so the process starts do not dominate; at most
  // 2000 names per process (argv limit), run one after another (one core)
  const reps = Math.max(1, Math.min(Math.ceil((256 * MiB) / (set.size * set.count)), Math.ceil(20000 / set.count)));
  const list = Array.from({ length: reps }, () => set.files).flat();
  const samples = [];
  for (let b = 0; b < Math.max(3, BATCHES - 2); b++) {
    const t0 = now();
    for (let i = 0; i < list.length; i += 2000) {
      const r = spawnSync('xxh64sum', list.slice(i, i + 2000), { stdio: ['ignore', 'ignore', 'ignore'] });
      if (r.error || r.status !== 0) return { error: r.error?.message ?? `exit ${r.status}` };
    }
    samples.push(ms(t0, now()) / reps);
  }
  return { ms: median(samples) };
}

console.log('');
console.log(
  `## On files: dist/hash.js hashFd, open(O_NOATIME) + hash + close per file, warm page cache (${path.dirname(dir)})`,
);
console.log('');
for (const p of problems) console.log(`> ${p}`);
if (problems.length) console.log('');
const cols = ['open+close only', ...variants.flatMap((v) => [`${v.name}, 1 at a time`, `${v.name}, ${CONCURRENCY} in flight`]), 'xxh64sum (1 process)'];
console.log(`| file size × count | ${cols.map((c) => `${c}: files/s · GB/s`).join(' | ')} |`);
console.log(`|---|${cols.map(() => '---:').join('|')}|`);
for (const set of sets) {
  const cells = [];
  const cell = (t, bytes = true) => {
    const fps = (set.count / t) * 1000;
    return `${fps >= 1000 ? Math.round(fps).toLocaleString('en-US') : fmt(fps, 1)} · ${bytes ? fmt((set.size * set.count) / (t * 1e6), 2) : '–'}`;
  };
  cells.push(cell(await passes(set, 1, async () => 0n), false));
  for (const v of variants) {
    const hashOne = (fd, size, buf) => v.fn(h, fd, size, buf);
    cells.push(cell(await passes(set, 1, hashOne)));
    cells.push(cell(await passes(set, CONCURRENCY, hashOne)));
  }
  const x = xxh64sum(set);
  cells.push(x.error ? `failed: ${x.error}` : cell(x.ms));
  console.log(`| ${human(set.size)} × ${set.count} | ${cells.join(' | ')} |`);
}
console.log('');
console.log(
  'files/s counts whole files (open, hash, close); GB/s is file bytes per second. ' +
    'xxh64sum hashes the same files (listed several times for the small sets so the process start is amortised) and prints each hash.',
);
if (sink === 42n) console.log(''); // keep sink alive
