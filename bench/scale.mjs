#!/usr/bin/env node
/*
 * Scale: synthetic guest trees of many files, and what vunify costs per file.
 *
 *   npm run bench:scale                           (200,000 files, 100 guests)
 *   node bench/scale.mjs --files 1000000 --guests 100 [--dir D] [--keep] [--runs N]
 *   node bench/scale.mjs --sizes 250000,500000,1000000 [--guests 100] ...
 *   node bench/scale.mjs --files 2000000 --guests 120 --keep
 *
 * For each size it builds (or reuses) a tree D/n<files>-g<guests>-s<seed>/guests/g000..,
 * reads every file once to warm the page cache, times the read floor
 * (find -print0 | xargs -0 -P2 xxh64sum), then runs
 *   node dist/bin.js --dry-run --no-cache --json --no-default-excludes D/.../guests/*
 * (--no-cache: a cold run, as the peers make, and one that neither reads nor
 * fills the host's hash cache: its memory would count, and its entries for
 * trees deleted after measuring would burden the host's next run)
 * under /usr/bin/time (--runs N times, median) and prints files, wall time,
 * peak RSS, bytes of peak RSS per scanned file and µs per file, checking the
 * report against the counts the generator knows (files scanned, duplicate
 * sets, links planned, freeable bytes).
 *
 * The trees (deterministic from --seed, default 1; all files root-owned):
 *   - file sizes: 3 % empty, 94 % 8 B .. 8 KiB (skewed small), 3 % 8 .. 64 KiB;
 *   - ~60 % of each guest's files come from a shared pool at the same paths
 *     (usr/share/pN/fK): each pool file sits in ~75 % of the guests, with the
 *     same content, mode and mtime (these are what vunify links);
 *   - of those, 10 % of the ones over 4 KiB are partial duplicates (same size
 *     and first 4 KiB, different tail) and 3 % differ in mtime only;
 *   - the rest (opt/uN/fK) are unique per guest, with sizes from the same
 *     distribution and, for half of them, one shared mtime: many size
 *     collisions with different content, all of which must be hashed;
 *   - 1 % of a guest's own files are second hardlinks to another of its files.
 *
 * Generation runs in one worker thread per core (plain fs sync calls), prints
 * progress, and resumes: a guest is regenerated unless its done-marker exists,
 * so an interrupted or --keep'ed tree of the same spec is reused. Trees are
 * removed after measuring unless --keep (removal is slow on a discard mount).
 * Budget: ~25-40 µs per file to generate, ~4 KiB of disk per file.
 *
 * Exit status: 0 done; 1 a target missed (for a tree of >= 2,000,000 files: peak RSS
 * over 200 bytes per scanned file; with several sizes: µs per file growing
 * more than 1.5x from the smallest to the largest size); 2 vunify failed or
 * its report disagrees with the generator's counts.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { args } from './args.mjs';

const FORMAT = 1; // bump when the generator changes: old trees are not reused
const T0 = 1_700_000_000;
const COMMON = 0.6; // share of a guest's files taken from the pool
const INCLUDE = 0.75; // chance a guest holds a given pool file
const PARTIAL = 0.1; // pool files > 4 KiB that are partial duplicates in a guest
const MTIME_VARIANT = 0.03;
const HARDLINK = 0.01;

// ---------------------------------------------------------------- deterministic randomness
const fmix = (h) => {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
};
/** uint32 from (seed, salt, a, b) */
const hash = (seed, salt, a, b) =>
  fmix(fmix(fmix(fmix(seed ^ 0x9e3779b9) ^ Math.imul(salt, 0x27d4eb2d)) ^ (a >>> 0)) ^ Math.imul(b >>> 0, 0x165667b1));
const rnd = (seed, salt, a, b) => hash(seed, salt, a, b) / 2 ** 32;

function sizeFrom(u, v) {
  if (u < 0.03) return 0;
  if (u < 0.97) return 8 + Math.floor(8184 * v * v);
  return 8192 + Math.floor(57344 * v);
}

// ---------------------------------------------------------------- the spec
function makeSpec(files, guests, seed) {
  const pool = Math.max(1, Math.ceil((COMMON * files) / guests / INCLUDE));
  return { format: FORMAT, files, guests, seed, pool };
}
const perGuest = (spec, i) => Math.floor(spec.files / spec.guests) + (i < spec.files % spec.guests ? 1 : 0);
const gname = (i) => `g${String(i).padStart(3, '0')}`;

/**
 * Every file of guest i, in creation order, without touching the disk:
 * cb({ rel, kind: 'pool'|'partial'|'mtime'|'unique'|'link', size, mode, mtime, lo, hi, k, target })
 */
function enumerateGuest(spec, i, cb) {
  const { seed } = spec;
  const total = perGuest(spec, i);
  let n = 0;
  for (let k = 0; k < spec.pool && n < total; k++) {
    if (rnd(seed, 3, i, k) >= INCLUDE) continue;
    const size = sizeFrom(rnd(seed, 1, k, 0), rnd(seed, 1, k, 1));
    const mode = rnd(seed, 2, k, 0) < 0.1 ? 0o755 : 0o644;
    let kind = 'pool';
    let mtime = T0 + k;
    if (size > 4096 + 8 && rnd(seed, 4, i, k) < PARTIAL) kind = 'partial';
    else if (rnd(seed, 5, i, k) < MTIME_VARIANT) {
      kind = 'mtime';
      mtime = T0 + 100_000_000 + k * 1000 + (i % 1000);
    }
    cb({ rel: `usr/share/p${Math.floor(k / 100)}/f${k}`, kind, size, mode, mtime, lo: k, hi: 0, k });
    n++;
  }
  let lastUnique;
  for (let u = 0; n < total; u++, n++) {
    const rel = `opt/u${Math.floor(u / 100)}/f${u}`;
    if (lastUnique && rnd(seed, 6, i, u) < HARDLINK) {
      cb({ rel, kind: 'link', size: lastUnique.size, target: lastUnique.rel });
      continue;
    }
    const size = sizeFrom(rnd(seed, 7, i, u), rnd(seed, 7, u, i));
    const mtime = rnd(seed, 8, i, u) < 0.5 ? T0 - 1000 : T0 - 200_000_000 + (hash(seed, 9, i, u) % 100_000_000);
    const f = { rel, kind: 'unique', size, mode: 0o644, mtime, lo: u, hi: i + 1 };
    cb(f);
    if (size > 0) lastUnique = f;
  }
}

/** What vunify --dry-run --no-default-excludes must report for the whole tree. */
function expected(spec) {
  const copies = new Uint32Array(spec.pool);
  const sizes = new Float64Array(spec.pool);
  let files = 0;
  let paths = 0;
  let bytes = 0;
  for (let i = 0; i < spec.guests; i++) {
    enumerateGuest(spec, i, (f) => {
      paths++;
      if (f.size === 0) return;
      files++;
      bytes += f.size;
      if (f.kind === 'pool') {
        copies[f.k]++;
        sizes[f.k] = f.size;
      }
    });
  }
  let sets = 0;
  let links = 0;
  let freeable = 0;
  for (let k = 0; k < spec.pool; k++) {
    if (copies[k] < 2) continue;
    sets++;
    links += copies[k] - 1;
    freeable += (copies[k] - 1) * sizes[k];
  }
  return { paths, filesScanned: files, bytesScanned: bytes, duplicateSets: sets, linksPlanned: links, freeableBytes: freeable };
}

// ---------------------------------------------------------------- the generator (worker side)
function noise(seed) {
  const buf = Buffer.allocUnsafe(1 << 20);
  let x = seed * 2654435761 + 1;
  for (let o = 0; o < buf.length; o += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    buf.writeUInt32LE(x >>> 0, o);
  }
  return buf;
}

function generateGuests(tree, spec, guests, progress) {
  const R = noise(spec.seed);
  const scratch = Buffer.allocUnsafe(65536 + 16);
  for (const i of guests) {
    const root = path.join(tree, 'guests', gname(i));
    fs.rmSync(root, { recursive: true, force: true });
    const dirs = new Set();
    let count = 0;
    enumerateGuest(spec, i, (f) => {
      const p = path.join(root, f.rel);
      const d = path.dirname(p);
      if (!dirs.has(d)) {
        fs.mkdirSync(d, { recursive: true });
        dirs.add(d);
      }
      if (f.kind === 'link') {
        fs.linkSync(path.join(root, f.target), p);
      } else {
        const n = f.size;
        const body = scratch.subarray(0, n);
        if (n > 0) {
          R.copy(body, 0, hash(spec.seed, 10, f.lo, f.hi) % (R.length - n));
          body.writeUInt32LE(f.lo, 0); // the content's identity: distinct (lo, hi), distinct bytes
          body.writeUInt32LE(f.hi, 4);
          if (f.kind === 'partial') {
            body.writeUInt32LE((i ^ 0xa5a5a5a5) >>> 0, n - 5); // past the first 4 KiB
            body[n - 1] ^= 0xff;
          }
        }
        const fd = fs.openSync(p, 'w', f.mode);
        try {
          if (n > 0) fs.writeSync(fd, body, 0, n, 0);
          fs.futimesSync(fd, f.mtime, f.mtime);
        } finally {
          fs.closeSync(fd);
        }
      }
      if (++count % 2000 === 0) progress(2000);
    });
    progress(count % 2000);
    fs.writeFileSync(path.join(tree, 'done', gname(i)), '');
  }
}

if (!isMainThread) {
  const { tree, spec, guests } = workerData;
  generateGuests(tree, spec, guests, (n) => parentPort.postMessage(n));
} else {
  await main();
}

// ---------------------------------------------------------------- main
async function main() {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const { flag, opt } = args('usage: node bench/scale.mjs [--files N | --sizes N,N,...] [--guests G] [--seed S] [--dir D] [--keep] [--runs R] [--workers W]');
  const num = (s) => {
    const n = Number(String(s).replace(/_/g, '').replace(/[kK]$/, '000').replace(/M$/, '000000'));
    if (!Number.isInteger(n) || n < 1) throw new Error(`not a positive integer: ${s}`);
    return n;
  };
  const sizes = (opt('--sizes') ?? opt('--files', '200000')).split(',').map(num);
  const guests = num(opt('--guests', '100'));
  if (guests < 2 || guests > 1000) throw new Error('--guests must be 2 .. 1000');
  const seed = num(opt('--seed', '1'));
  const runs = num(opt('--runs', '1'));
  const workers = num(opt('--workers', String(os.availableParallelism())));
  const base = path.resolve(opt('--dir', '/var/tmp/vunify-scale'));
  const keep = flag('--keep');
  const log = (s) => process.stderr.write(`${s}\n`);
  process.umask(0o022); // workers share it; they cannot set it themselves
  const fmtInt = (n) => Math.round(n).toLocaleString('en-US');

  // one build for the whole run, even if dist/ is rebuilt meanwhile
  const snap = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-bench-snap-'));
  process.on('exit', () => fs.rmSync(snap, { recursive: true, force: true }));
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));
  const dist = spawnSync('bash', [path.join(here, 'ensure-dist.sh'), '--snapshot', snap], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (dist.status !== 0) process.exit(2);
  const bin = path.join(snap, 'dist/bin.js');
  console.log(`# vunify scale benchmark, ${new Date().toISOString().slice(0, 16).replace('T', ' ')}`);
  console.log('');
  console.log(
    `${dist.stdout.trim()}; node ${process.version}; ${os.availableParallelism()} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Linux ${os.release()}`,
  );
  console.log('');

  const sh = (cmd, argv = []) => {
    const t0 = performance.now();
    const r = spawnSync('bash', ['-c', cmd, 'bash', ...argv], { stdio: ['ignore', 'ignore', 'inherit'] });
    if (r.status !== 0) throw new Error(`${cmd}: exit ${r.status}`);
    return (performance.now() - t0) / 1000;
  };
  const median = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  };

  const rows = [];
  let failed = false;
  for (const files of sizes) {
    const spec = makeSpec(files, guests, seed);
    const tree = path.join(base, `n${files}-g${guests}-s${seed}`);
    fs.mkdirSync(path.join(tree, 'done'), { recursive: true });
    fs.mkdirSync(path.join(tree, 'guests'), { recursive: true });
    const specFile = path.join(tree, 'spec.json');
    if (fs.existsSync(specFile) && fs.readFileSync(specFile, 'utf8') !== JSON.stringify(spec)) {
      log(`${tree} holds another spec (older generator): regenerating`);
      fs.rmSync(path.join(tree, 'done'), { recursive: true, force: true });
      fs.mkdirSync(path.join(tree, 'done'));
    }
    fs.writeFileSync(specFile, JSON.stringify(spec));

    log(`computing the expected report for ${fmtInt(files)} files in ${guests} guests ...`);
    const want = expected(spec);
    const todo = [];
    for (let i = 0; i < guests; i++) if (!fs.existsSync(path.join(tree, 'done', gname(i)))) todo.push(i);
    let genSecs = NaN;
    if (todo.length) {
      const need = (want.bytesScanned + want.paths * 4096) * (todo.length / guests) + 2 ** 31;
      const free = fs.statfsSync(base);
      if (free.bavail * free.bsize < need) throw new Error(`need ~${(need / 2 ** 30).toFixed(1)} GiB free in ${base}`);
      const todoFiles = todo.reduce((s, i) => s + perGuest(spec, i), 0);
      log(`generating ${fmtInt(todoFiles)} files (${todo.length} guests${todo.length < guests ? ', resuming' : ''}) in ${tree} with ${workers} workers`);
      const t0 = performance.now();
      let done = 0;
      let last = 0;
      await Promise.all(
        Array.from({ length: Math.min(workers, todo.length) }, (_, w) => {
          const mine = todo.filter((_, j) => j % workers === w);
          return new Promise((resolve, reject) => {
            const wk = new Worker(fileURLToPath(import.meta.url), { workerData: { tree, spec, guests: mine } });
            wk.on('message', (n) => {
              done += n;
              const now = performance.now();
              if (now - last > 5000) {
                last = now;
                const s = (now - t0) / 1000;
                log(`  ${fmtInt(done)} / ${fmtInt(todoFiles)} files, ${s.toFixed(0)} s, ${((s * 1e6) / done).toFixed(1)} µs/file`);
              }
            });
            wk.on('error', reject);
            wk.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`generator worker exited ${code}`))));
          });
        }),
      );
      genSecs = (performance.now() - t0) / 1000;
      log(`  generated in ${genSecs.toFixed(1)} s (${((genSecs * 1e6) / todoFiles).toFixed(1)} µs/file)`);
    } else log(`reusing ${tree}`);

    const roots = Array.from({ length: guests }, (_, i) => path.join(tree, 'guests', gname(i)));
    sh('sync');
    const warm = sh(`find "$@" -type f -print0 | xargs -0 -P2 cat >/dev/null`, roots);
    const floor = sh(`find "$@" -type f -print0 | xargs -0 -P2 xxh64sum >/dev/null 2>&1`, roots);
    log(`warm-up read ${warm.toFixed(1)} s; read floor (xargs -P2 xxh64sum) ${floor.toFixed(1)} s`);

    const samples = [];
    let report;
    for (let r = 0; r < runs; r++) {
      const timeFile = path.join(os.tmpdir(), `vunify-scale-time-${process.pid}`);
      const res = spawnSync(
        '/usr/bin/time',
        ['-f', '%e %M %U %S', '-o', timeFile, 'node', bin, '--dry-run', '--no-cache', '--state-dir', path.join(tree, 'state'), '--json', '--no-default-excludes', ...roots],
        { encoding: 'utf8', maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      const [wall, rss, user, sys] = fs.readFileSync(timeFile, 'utf8').trim().split('\n').pop().split(' ').map(Number);
      fs.rmSync(timeFile, { force: true });
      if (res.status !== 0) {
        log(`vunify exited ${res.status} after ${wall} s (peak RSS ${(rss / 1024).toFixed(0)} MiB): ${res.stderr.slice(-2000)}`);
        failed = true;
        break;
      }
      report = JSON.parse(res.stdout);
      samples.push({ wall, rss, cpu: user + sys });
      log(`  vunify --dry-run: ${wall.toFixed(2)} s, peak RSS ${(rss / 1024).toFixed(0)} MiB, CPU ${(user + sys).toFixed(1)} s; durations ${JSON.stringify(report.durations)}`);
    }
    if (report) {
      const s = report.summary;
      const mismatches = ['filesScanned', 'bytesScanned', 'duplicateSets', 'linksPlanned', 'freeableBytes'].filter((k) => s[k] !== want[k]);
      for (const k of mismatches) log(`  MISMATCH ${k}: vunify reports ${s[k]}, the generator made ${want[k]}`);
      if (mismatches.length || s.errors) failed = true;
      const wall = median(samples.map((x) => x.wall));
      const rss = median(samples.map((x) => x.rss)) * 1024;
      rows.push({
        files: s.filesScanned,
        paths: want.paths,
        gen: genSecs,
        floor,
        wall,
        rss,
        cpu: median(samples.map((x) => x.cpu)),
        perFile: rss / s.filesScanned,
        us: (wall * 1e6) / s.filesScanned,
        durations: report.durations,
        check: mismatches.length ? `**${mismatches.join(', ')} differ**` : s.errors ? `**${s.errors} errors**` : `ok (${fmtInt(s.linksPlanned)} links, ${fmtInt(s.duplicateSets)} sets)`,
      });
    }
    if (!keep) {
      log(`removing ${tree} (--keep to reuse it) ...`);
      const t0 = performance.now();
      spawnSync('rm', ['-rf', '--', tree], { stdio: 'inherit' });
      log(`  removed in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
      try {
        fs.rmdirSync(base);
      } catch {}
    }
  }

  console.log(`${guests} guests, seed ${seed}, vunify --dry-run --no-cache --json --no-default-excludes, warm page cache, median of ${runs} run(s)`);
  console.log('');
  console.log('| files scanned (paths) | generate s | read floor s | vunify wall s | µs/file | peak RSS MiB | RSS bytes/file | CPU s | stages s | report vs generator |');
  console.log('|---:|---:|---:|---:|---:|---:|---:|---:|---|---|');
  for (const r of rows) {
    const st = Object.entries(r.durations ?? {})
      .filter(([k]) => k !== 'total')
      .map(([k, v]) => `${k} ${(v / 1000).toFixed(1)}`)
      .join(', ');
    console.log(
      `| ${fmtInt(r.files)} (${fmtInt(r.paths)}) | ${Number.isFinite(r.gen) ? r.gen.toFixed(0) : 'reused'} | ${r.floor.toFixed(1)} | ${r.wall.toFixed(2)} | ${r.us.toFixed(1)} | ${(r.rss / 2 ** 20).toFixed(0)} | ${r.perFile.toFixed(0)} | ${r.cpu.toFixed(1)} | ${st} | ${r.check} |`,
    );
  }
  console.log('');
  let missed = false;
  // The tree of 2M files: the paths it scans are fewer (empty files fall below --min-size).
  for (const r of rows.filter((x) => x.paths >= 2_000_000)) {
    const ok = r.perFile <= 200;
    console.log(`target peak RSS <= 200 bytes per scanned file at ${fmtInt(r.files)} files: ${r.perFile.toFixed(0)} B/file, ${ok ? 'met' : '**missed**'}`);
    missed ||= !ok;
  }
  if (rows.length >= 2) {
    const a = rows.reduce((m, r) => (r.files < m.files ? r : m));
    const b = rows.reduce((m, r) => (r.files > m.files ? r : m));
    const g = b.us / a.us;
    const ok = g <= 1.5;
    console.log(
      `time per file from ${fmtInt(a.files)} to ${fmtInt(b.files)} files: ${a.us.toFixed(1)} -> ${b.us.toFixed(1)} µs (${g.toFixed(2)}x; linear means ~1x): ${ok ? 'linear enough' : '**superlinear**'}`,
    );
    missed ||= !ok;
  }
  process.exitCode = failed ? 2 : missed ? 1 : 0;
}
