#!/usr/bin/env node
/*
 * Scale (issue 13): what vunify costs per file on synthetic guest trees of
 * millions of files, against rdfind in the same run, and what a large hash
 * cache of other roots costs a small run.
 *
 *   npm run bench:scale                           (200,000 files, 100 guests)
 *   node bench/scale.mjs --sizes 1000000,2000000 --guests 200 --keep --runs 3 --isolation
 *   node bench/scale.mjs --files 20000 --guests 10 --dir /var/tmp/x --runs 2 --isolation   (a quick try)
 *
 * For each size it builds (or reuses) a tree D/n<files>-g<guests>-s<seed>/guests/g000..,
 * drops the host's dentry and inode caches and the other sizes' file pages
 * (so each size runs with only its own tree cached; BENCH_NO_DROP=1 keeps the
 * host's caches), reads every file once to warm the page cache, times the read floor
 * (find -print0 | xargs -0 -P2 xxh64sum), fills a fresh state dir's hash cache
 * with one run over the tree, then --runs N rounds, the order rotating each round, of
 *   - node dist/bin.js --dry-run --no-cache --json --no-default-excludes --state-dir T GUESTS...
 *     (a cold run, as rdfind's; T a scratch dir that only gets the hash key)
 *   - the same with --state-dir C instead of --no-cache: C's cache holds this tree (warm cache)
 *   - rdfind -dryrun true GUESTS...  (in a scratch cwd: it writes results.txt)
 * each under /usr/bin/time (wall, peak RSS, CPU); medians. Every vunify report
 * is checked against the counts the generator knows (files scanned, bytes,
 * duplicate sets, links planned, freeable bytes); a run whose cache served
 * nothing does not count as a cached run.
 *
 * --isolation, after all sizes: a fresh state dir S gets one run over the
 * largest tree (its cache now holds that tree), then --isolation-runs rounds
 * (default max(--runs, 5)), alternating, of a dry run over two guests of
 * another tree (the smallest size; with one size, g000 and g001 of the same
 * tree, left out of the fill) with --state-dir S, and the same with
 * --no-cache. Each run gets a fresh `cp -a` of S, so the cache never holds
 * the two guests' entries from an earlier round. Medians of time and peak RSS.
 *
 * Targets (issue 13; ratios from this run's medians), each printed with what
 * was measured; "per file" is per file vunify scanned (regular, non-empty:
 * ~3 % fewer than the tree's paths, the stricter count):
 *   - at >= 2,000,000 files: peak RSS <= 100 B/file with --no-cache, <= 150 B/file
 *     with the warm cache; --no-cache wall <= 0.5x rdfind -dryrun true's;
 *   - with two or more sizes of >= 1,000,000 files: µs per file at the largest
 *     <= 1.2x that at the smallest of them (the issue: 2M vs 1M);
 *   - --isolation: the 2-guest run beside the cache <= 1.2x the --no-cache run,
 *     in wall time and in peak RSS.
 * A target whose trees are not in the run is printed as not measured.
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
 * so an interrupted or --keep'ed tree of the same spec is reused. A tree this
 * run generated whole is removed after measuring unless --keep (removal is
 * slow on a discard mount); a tree that existed before is never removed.
 * Scratch state dirs and rdfind's cwd live in D/.bench-XXXXXX, removed at exit.
 * Budget: ~25-40 µs per file to generate, ~4 KiB of disk per file.
 *
 * Exit status: 0 every target measured was met; 1 a target missed (each is
 * named on stderr); 2 the bench failed: a run exited non-zero, a report
 * disagrees with the generator's counts, or the cache was not used.
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

/** What vunify --dry-run --no-default-excludes must report for the whole tree (or for the guests `only`). */
function expected(spec, only) {
  const copies = new Uint32Array(spec.pool);
  const sizes = new Float64Array(spec.pool);
  let files = 0;
  let paths = 0;
  let bytes = 0;
  for (const i of only ?? Array.from({ length: spec.guests }, (_, j) => j)) {
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
  const { flag, opt } = args(
    'usage: node bench/scale.mjs [--files N | --sizes N,N,...] [--guests G] [--seed S] [--dir D] [--keep] [--runs R] [--isolation] [--isolation-runs R] [--workers W]',
  );
  const num = (s) => {
    const n = Number(String(s).replace(/_/g, '').replace(/[kK]$/, '000').replace(/M$/, '000000'));
    if (!Number.isInteger(n) || n < 1) throw new Error(`not a positive integer: ${s}`);
    return n;
  };
  const sizes = [...new Set((opt('--sizes') ?? opt('--files', '200000')).split(',').map(num))].sort((a, b) => a - b);
  const guests = num(opt('--guests', '100'));
  if (guests < 2 || guests > 1000) throw new Error('--guests must be 2 .. 1000');
  const seed = num(opt('--seed', '1'));
  const runs = num(opt('--runs', '1'));
  const isolation = flag('--isolation');
  const isoRuns = num(opt('--isolation-runs', String(Math.max(runs, 5))));
  const workers = num(opt('--workers', String(os.availableParallelism())));
  const base = path.resolve(opt('--dir', '/var/tmp/vunify-scale'));
  const keep = flag('--keep');
  for (const t of ['rdfind', 'xxh64sum']) if (spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0) throw new Error(`${t} not installed`);
  if (!fs.existsSync('/usr/bin/time')) throw new Error('/usr/bin/time not installed (apt-get install time)');
  const log = (s) => process.stderr.write(`${s}\n`);
  // As bench/peers.sh: Node loads the CA bundle this names at every start; a
  // systemd unit or cron job does not set it, and vunify makes no TLS connection.
  delete process.env.NODE_EXTRA_CA_CERTS;
  process.umask(0o022); // workers share it; they cannot set it themselves
  const fmtInt = (n) => Math.round(n).toLocaleString('en-US');
  const MiB = (b) => (b / 2 ** 20).toFixed(0);

  // one build for the whole run, even if dist/ is rebuilt meanwhile; scratch
  // state dirs (caches of up to ~150 MB) and rdfind's cwd (its results.txt)
  // live under D, never in the host's /var/lib/vunify
  fs.mkdirSync(base, { recursive: true });
  const snap = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-bench-snap-'));
  const scratch = fs.mkdtempSync(path.join(base, '.bench-'));
  process.on('exit', () => {
    fs.rmSync(snap, { recursive: true, force: true });
    fs.rmSync(scratch, { recursive: true, force: true });
  });
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
    `${dist.stdout.trim()}; node ${process.version}; ${os.availableParallelism()} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Linux ${os.release()}; load ${os.loadavg().map((x) => x.toFixed(1)).join(' ')} at the start`,
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
  /** rotate(xs, r): xs starting at index r (mod length): the order of round r. */
  const rotate = (xs, r) => xs.map((_, i) => xs[(i + r) % xs.length]);
  const newDir = (name) => fs.mkdtempSync(path.join(scratch, `${name}-`));

  /** One run under /usr/bin/time: { status, stdout, stderr, wall, rss (bytes), cpu }. */
  const timeFile = path.join(scratch, 'time');
  function timed(argv, { cwd = scratch, stdout = 'pipe' } = {}) {
    const res = spawnSync('/usr/bin/time', ['-f', '%e %M %U %S', '-o', timeFile, ...argv], {
      cwd,
      encoding: 'utf8',
      maxBuffer: 1 << 30,
      stdio: ['ignore', stdout, 'pipe'],
    });
    const [wall, rss, user, sys] = fs.readFileSync(timeFile, 'utf8').trim().split('\n').pop().split(' ').map(Number);
    fs.rmSync(timeFile, { force: true });
    return { status: res.status, stdout: res.stdout, stderr: res.stderr, wall, rss: rss * 1024, cpu: user + sys };
  }

  let failed = false;
  const fail = (why) => {
    log(`  FAILED: ${why}`);
    failed = true;
  };
  /**
   * vunify --dry-run --json --no-default-excludes over roots, its report checked
   * against the generator's counts `want`; null when it failed.
   */
  function vunify(label, roots, extra, want) {
    const r = timed(['node', bin, '--dry-run', '--json', '--no-default-excludes', ...extra, ...roots]);
    if (r.status !== 0) {
      fail(`${label}: vunify exited ${r.status} after ${r.wall} s (peak RSS ${MiB(r.rss)} MiB): ${r.stderr.slice(-2000)}`);
      return null;
    }
    let report;
    try {
      report = JSON.parse(r.stdout);
    } catch (e) {
      fail(`${label}: vunify's report is not JSON: ${e.message}`);
      return null;
    }
    const s = report.summary;
    const mismatches = ['filesScanned', 'bytesScanned', 'duplicateSets', 'linksPlanned', 'freeableBytes'].filter((k) => s[k] !== want[k]);
    for (const k of mismatches) fail(`${label}: ${k}: vunify reports ${s[k]}, the generator made ${want[k]}`);
    if (s.errors) fail(`${label}: vunify reports ${s.errors} errors`);
    const h = report.hashed ? `; hashed ${fmtInt(report.hashed.files)} files, cache hits ${fmtInt(report.hashed.cacheHits ?? 0)}` : '';
    log(
      `  ${label}: ${r.wall.toFixed(2)} s, peak RSS ${MiB(r.rss)} MiB (${(r.rss / s.filesScanned).toFixed(0)} B/file), CPU ${r.cpu.toFixed(1)} s${h}; durations ${JSON.stringify(report.durations)}`,
    );
    return { ...r, report, ok: !mismatches.length && !s.errors };
  }
  function rdfind(roots) {
    const cwd = newDir('rdfind'); // it writes results.txt there
    const r = timed(['rdfind', '-dryrun', 'true', ...roots], { cwd, stdout: 'ignore' });
    fs.rmSync(cwd, { recursive: true, force: true });
    if (r.status !== 0) {
      fail(`rdfind exited ${r.status}: ${r.stderr.slice(-1000)}`);
      return null;
    }
    log(`  rdfind -dryrun true: ${r.wall.toFixed(2)} s, peak RSS ${MiB(r.rss)} MiB, CPU ${r.cpu.toFixed(1)} s`);
    return r;
  }
  const cacheBytes = (dir) => Number(spawnSync('du', ['-sb', dir], { encoding: 'utf8' }).stdout.split('\t')[0]);

  /** Build or reuse the tree of `files` files; its roots, spec and expected report. */
  async function tree(files) {
    const spec = makeSpec(files, guests, seed);
    const dir = path.join(base, `n${files}-g${guests}-s${seed}`);
    fs.mkdirSync(path.join(dir, 'done'), { recursive: true });
    fs.mkdirSync(path.join(dir, 'guests'), { recursive: true });
    const specFile = path.join(dir, 'spec.json');
    if (fs.existsSync(specFile) && fs.readFileSync(specFile, 'utf8') !== JSON.stringify(spec)) {
      log(`${dir} holds another spec (older generator): regenerating`);
      fs.rmSync(path.join(dir, 'done'), { recursive: true, force: true });
      fs.mkdirSync(path.join(dir, 'done'));
    }
    fs.writeFileSync(specFile, JSON.stringify(spec));

    log(`computing the expected report for ${fmtInt(files)} files in ${guests} guests ...`);
    const want = expected(spec);
    const todo = [];
    for (let i = 0; i < guests; i++) if (!fs.existsSync(path.join(dir, 'done', gname(i)))) todo.push(i);
    let genSecs = NaN;
    if (todo.length) {
      const need = (want.bytesScanned + want.paths * 4096) * (todo.length / guests) + 2 ** 31;
      const free = fs.statfsSync(base);
      if (free.bavail * free.bsize < need) throw new Error(`need ~${(need / 2 ** 30).toFixed(1)} GiB free in ${base}`);
      const todoFiles = todo.reduce((s, i) => s + perGuest(spec, i), 0);
      log(`generating ${fmtInt(todoFiles)} files (${todo.length} guests${todo.length < guests ? ', resuming' : ''}) in ${dir} with ${workers} workers`);
      const t0 = performance.now();
      let done = 0;
      let last = 0;
      await Promise.all(
        Array.from({ length: Math.min(workers, todo.length) }, (_, w) => {
          const mine = todo.filter((_, j) => j % workers === w);
          return new Promise((resolve, reject) => {
            const wk = new Worker(fileURLToPath(import.meta.url), { workerData: { tree: dir, spec, guests: mine } });
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
    } else log(`reusing ${dir}`);
    // never remove a tree that was there (the lead's, or an earlier --keep)
    const ours = todo.length === guests;
    const roots = Array.from({ length: guests }, (_, i) => path.join(dir, 'guests', gname(i)));
    return { files, spec, dir, roots, want, genSecs, ours };
  }
  const warm = (roots) => sh(`find "$@" -type f -print0 | xargs -0 -P2 cat >/dev/null`, roots);
  // The trees of two sizes do not both fit in this machine's page cache (1M:
  // ~6 GB, 2M: ~12 GB of 24 GiB). Without this, the larger size's runs read
  // part of their tree from disk while the smaller's cached pages linger, and
  // "time per file" measures the disk. So before a size is warmed, the other
  // sizes' file pages are dropped (POSIX_FADV_DONTNEED on this bench's own
  // trees only; nothing else on the host is evicted).
  const evict = (roots) =>
    sh(
      `find "$@" -type f -print0 | python3 -c 'import os, sys
for p in sys.stdin.buffer.read().split(b"\\0"):
    if p:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)'`,
      roots,
    );
  // The same for names: this VM boots with a small dentry hash table
  // (dhash_entries=131072 on its kernel command line), so every name lookup
  // costs in proportion to the dentries cached. With the other size's
  // dentries still cached, the 2M runs looked names up among ~3M dentries
  // and the 1M runs among ~1M (__d_lookup_rcu: 17 % of a 1M dry run's
  // samples with only its tree's 1.0M dentries cached, 29 % of a 2M run's
  // with its 2.0M, up to 34 % with both trees'). So before a size is warmed
  // the dentry and inode caches are dropped (echo 2 > drop_caches: host-wide,
  // as peers.sh drops every cache; BENCH_NO_DROP=1 leaves them).
  const dropNames = () => {
    if (process.env.BENCH_NO_DROP === '1') return 'left (BENCH_NO_DROP=1)';
    try {
      sh('sync');
      fs.writeFileSync('/proc/sys/vm/drop_caches', '2');
      return `dropped (${fs.readFileSync('/proc/sys/fs/dentry-state', 'utf8').split('\t')[0]} dentries left)`;
    } catch (er) {
      return `left (${er.code ?? er.message})`;
    }
  };
  /** Share of a sample of the tree's files' pages that are in the page cache (fincore), in %. */
  const resident = (roots) => {
    const r = spawnSync(
      'bash',
      ['-c', `find "$@" -type f -size +0 -print0 | awk 'BEGIN{RS="\\0"; ORS="\\0"} NR % 97 == 0' | xargs -0 fincore -b -n -r -o RES,SIZE`, 'bash', ...roots],
      { encoding: 'utf8', maxBuffer: 1 << 28 },
    );
    let res = 0, size = 0;
    for (const line of r.stdout.split('\n')) {
      const [a, b] = line.trim().split(/\s+/).map(Number);
      if (Number.isFinite(a) && Number.isFinite(b)) { res += a; size += Math.ceil(b / 4096) * 4096; }
    }
    return size ? (100 * res) / size : NaN;
  };
  const removeTree = (t) => {
    if (!t.ours) return;
    log(`removing ${t.dir} (--keep to reuse it) ...`);
    const t0 = performance.now();
    spawnSync('rm', ['-rf', '--', t.dir], { stdio: 'inherit' });
    log(`  removed in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  };

  // ------------------------------------------------ each size: vunify (no cache, warm cache) and rdfind, alternating
  const rows = [];
  const trees = [];
  for (const files of sizes) {
    const t = await tree(files);
    trees.push(t);
    const { roots, want } = t;
    sh('sync');
    for (const other of trees) if (other !== t) log(`dropped ${other.dir}'s pages from the page cache in ${evict(other.roots).toFixed(1)} s`);
    log(`dentry and inode caches: ${dropNames()}`);
    const warmSecs = warm(roots);
    const floor = sh(`find "$@" -type f -print0 | xargs -0 -P2 xxh64sum >/dev/null 2>&1`, roots);
    log(`warm-up read ${warmSecs.toFixed(1)} s; read floor (xargs -P2 xxh64sum) ${floor.toFixed(1)} s; page cache holds ${resident(roots).toFixed(1)} % of a 1-in-97 sample of the tree's pages`);

    // --no-cache: a cold run, as rdfind makes; its state dir only gets the hash key.
    const plainState = newDir('state-nocache');
    // The cached runs' state dir: filled by one run first, so each measured run finds every entry.
    const cacheState = newDir('state-cache');
    log(`filling a hash cache of this tree in ${cacheState} (one untimed-for-targets run):`);
    const fill = vunify('fill the cache', roots, ['--state-dir', cacheState], want);
    log(`  cache: ${fmtInt(cacheBytes(cacheState))} bytes in ${cacheState}`);

    const samples = { nocache: [], cache: [], rdfind: [] };
    let report;
    let cacheMissed = false;
    for (let r = 0; r < runs && fill; r++) {
      log(`round ${r + 1}/${runs}:`);
      for (const what of rotate(['nocache', 'cache', 'rdfind'], r)) {
        if (what === 'rdfind') {
          const x = rdfind(roots);
          if (x) samples.rdfind.push(x);
        } else {
          const x = vunify(
            what === 'cache' ? 'vunify --dry-run (warm cache)' : 'vunify --dry-run --no-cache',
            roots,
            what === 'cache' ? ['--state-dir', cacheState] : ['--no-cache', '--state-dir', plainState],
            want,
          );
          if (!x) continue;
          samples[what].push(x);
          if (what === 'nocache') report = x.report;
          // a "cached" run that hashed what the cache should have held measures nothing
          if (what === 'cache' && x.report.hashed && x.report.hashed.files > 0 && !(x.report.hashed.cacheHits > 0)) cacheMissed = true;
        }
      }
    }
    log(`after the rounds the page cache holds ${resident(roots).toFixed(1)} % of the same sample`);
    if (cacheMissed) fail('the warm-cache runs found nothing in the cache (report.hashed.cacheHits 0): the cached target is not measured');
    fs.rmSync(plainState, { recursive: true, force: true });
    fs.rmSync(cacheState, { recursive: true, force: true });
    if (report && samples.rdfind.length && samples.cache.length) {
      const s = report.summary;
      const m = (xs, k) => median(xs.map((x) => x[k]));
      const row = {
        files: s.filesScanned,
        paths: want.paths,
        gen: t.genSecs,
        floor,
        wall: m(samples.nocache, 'wall'),
        rss: m(samples.nocache, 'rss'),
        cpu: m(samples.nocache, 'cpu'),
        cacheWall: m(samples.cache, 'wall'),
        cacheRss: m(samples.cache, 'rss'),
        rdWall: m(samples.rdfind, 'wall'),
        rdRss: m(samples.rdfind, 'rss'),
        durations: report.durations,
        each: `vunify ${samples.nocache.map((x) => x.wall.toFixed(1)).join('/')}; cached ${samples.cache.map((x) => x.wall.toFixed(1)).join('/')}; rdfind ${samples.rdfind.map((x) => x.wall.toFixed(1)).join('/')}`,
        check: `${samples.nocache.every((x) => x.ok) && samples.cache.every((x) => x.ok) ? 'ok' : '**differs**'} (${fmtInt(s.linksPlanned)} links, ${fmtInt(s.duplicateSets)} sets)`,
      };
      row.perFile = row.rss / row.files;
      row.cachePerFile = row.cacheRss / row.files;
      row.us = (row.wall * 1e6) / row.files;
      rows.push(row);
    } else fail(`${fmtInt(files)} files: not every run went through; no row for this size`);
    if (!keep && !isolation) removeTree(t);
  }

  // ------------------------------------------------ cache isolation: a 2-guest run beside a cache of the largest tree
  let iso;
  if (isolation) {
    const big = trees[trees.length - 1];
    // two guests of another tree (the smallest); with one size, two guests of the
    // same tree held out of the cache (the cache holds the other roots only)
    const other = trees.length > 1 ? trees[0] : big;
    const held = other === big ? 2 : 0;
    const two = other.roots.slice(0, 2);
    const want2 = expected(other.spec, [0, 1]);
    const S = newDir('state-isolation');
    const fillRoots = big.roots.slice(held);
    log(`cache isolation: filling ${S} with ${fillRoots.length} guests of ${big.dir}${held ? ' (all but g000, g001)' : ''}`);
    warm(fillRoots);
    const fillWant = held ? expected(big.spec, Array.from({ length: guests - held }, (_, i) => i + held)) : big.want;
    const fill = vunify('fill the cache', fillRoots, ['--state-dir', S], fillWant);
    const bytes = cacheBytes(S);
    log(`  state dir with the cache: ${fmtInt(bytes)} bytes`);
    if (fill && bytes < fill.report.summary.filesScanned) fail(`${S} holds ${bytes} bytes after a run over ${fill.report.summary.filesScanned} files: no cache was written`);
    warm(two);
    const samples = { cache: [], nocache: [] };
    for (let r = 0; r < isoRuns && fill; r++) {
      log(`isolation round ${r + 1}/${isoRuns}: ${two.join(' ')}`);
      for (const what of rotate(['cache', 'nocache'], r)) {
        // each run gets a fresh copy of the filled state dir: the cache then
        // holds only the other roots' entries, never the 2 guests' from the last round
        const Sr = `${S}.${what}.${r}`;
        spawnSync('cp', ['-a', '--', S, Sr], { stdio: 'inherit' });
        // written out now, not by the measured run's first fsync (the cached run saves shards)
        spawnSync('sync');
        const x = vunify(
          what === 'cache' ? `2 guests, --state-dir with the cache` : '2 guests, --no-cache',
          two,
          what === 'cache' ? ['--state-dir', Sr] : ['--no-cache', '--state-dir', Sr],
          want2,
        );
        fs.rmSync(Sr, { recursive: true, force: true });
        if (x) samples[what].push(x);
      }
    }
    fs.rmSync(S, { recursive: true, force: true });
    if (samples.cache.length && samples.nocache.length) {
      const m = (xs, k) => median(xs.map((x) => x[k]));
      iso = {
        big: fill.report.summary.filesScanned,
        two: two.map((g) => path.relative(base, g)).join(', '),
        files: samples.nocache[0].report.summary.filesScanned,
        cacheBytes: bytes,
        wall: m(samples.cache, 'wall'),
        rss: m(samples.cache, 'rss'),
        ncWall: m(samples.nocache, 'wall'),
        ncRss: m(samples.nocache, 'rss'),
        each: `cache ${samples.cache.map((x) => x.wall.toFixed(2)).join('/')}; --no-cache ${samples.nocache.map((x) => x.wall.toFixed(2)).join('/')}`,
      };
    } else fail('cache isolation: not every run went through');
    if (!keep) for (const t of trees) removeTree(t);
  }
  if (!keep) {
    try {
      fs.rmSync(scratch, { recursive: true, force: true });
      fs.rmdirSync(base);
    } catch {}
  }

  // ------------------------------------------------ what was measured
  console.log(
    `${guests} guests, seed ${seed}; vunify --dry-run --json --no-default-excludes, with --no-cache and with a warm --state-dir cache of the same tree; rdfind -dryrun true; alternating, median of ${runs} round(s); warm page cache; load ${os.loadavg().map((x) => x.toFixed(1)).join(' ')} at the end`,
  );
  console.log('');
  console.log(
    '| files scanned (paths) | generate s | read floor s | vunify --no-cache s | µs/file | peak RSS MiB | B/file | CPU s | warm cache s | peak RSS MiB | B/file | rdfind s | rdfind MiB | rdfind B/file | vunify ÷ rdfind | stages s (--no-cache) | each run s | report vs generator |',
  );
  console.log('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|');
  for (const r of rows) {
    const st = Object.entries(r.durations ?? {})
      .filter(([k]) => k !== 'total')
      .map(([k, v]) => `${k} ${(v / 1000).toFixed(1)}`)
      .join(', ');
    console.log(
      `| ${fmtInt(r.files)} (${fmtInt(r.paths)}) | ${Number.isFinite(r.gen) ? r.gen.toFixed(0) : 'reused'} | ${r.floor.toFixed(1)} | ${r.wall.toFixed(2)} | ${r.us.toFixed(1)} | ${MiB(r.rss)} | ${r.perFile.toFixed(0)} | ${r.cpu.toFixed(1)} | ${r.cacheWall.toFixed(2)} | ${MiB(r.cacheRss)} | ${r.cachePerFile.toFixed(0)} | ${r.rdWall.toFixed(2)} | ${MiB(r.rdRss)} | ${(r.rdRss / r.files).toFixed(0)} | ${(r.wall / r.rdWall).toFixed(2)}× | ${st} | ${r.each} | ${r.check} |`,
    );
  }
  console.log('');
  if (iso) {
    console.log(
      `Cache isolation (median of ${isoRuns} alternating rounds): vunify --dry-run over ${iso.two} (${fmtInt(iso.files)} files) with a --state-dir whose cache holds the ${fmtInt(iso.big)} files of a run over other roots (state dir ${fmtInt(iso.cacheBytes)} bytes): ${iso.wall.toFixed(2)} s, ${MiB(iso.rss)} MiB; with --no-cache: ${iso.ncWall.toFixed(2)} s, ${MiB(iso.ncRss)} MiB (each run: ${iso.each})`,
    );
    console.log('');
  }

  // ------------------------------------------------ the targets (issue 13), from this run's medians
  // "per file": per file vunify scanned (regular, non-empty), fewer than the tree's paths: the stricter count.
  console.log('| target (issue 13) | measured | limit | |');
  console.log('|---|---:|---:|---|');
  let missed = false;
  const target = (what, value, limit, unit) => {
    const ok = value <= limit;
    console.log(`| ${what} | ${unit(value)} | ≤ ${unit(limit)} | ${ok ? 'met' : '**missed**'} |`);
    if (!ok) log(`bench:scale: target missed: ${what}: ${unit(value)} > ${unit(limit)}`);
    missed ||= !ok;
  };
  const notMeasured = (what, why) => console.log(`| ${what} | not measured: ${why} | | |`);
  const B = (v) => `${v.toFixed(0)} B/file`;
  const X = (v) => `${v.toFixed(3)}×`;
  const big = rows.filter((r) => r.paths >= 2_000_000);
  if (!big.length) {
    for (const w of ['peak RSS per file, --no-cache, >= 2M files', 'peak RSS per file, warm cache, >= 2M files', 'dry run vs rdfind -dryrun true, >= 2M files'])
      notMeasured(w, 'no tree of >= 2,000,000 files in this run');
  }
  for (const r of big) {
    target(`peak RSS per file, --no-cache, ${fmtInt(r.paths)} files`, r.perFile, 100, B);
    target(`peak RSS per file, warm cache, ${fmtInt(r.paths)} files`, r.cachePerFile, 150, B);
    target(`dry run (--no-cache) vs rdfind -dryrun true, ${fmtInt(r.paths)} files`, r.wall / r.rdWall, 0.5, X);
  }
  const large = rows.filter((r) => r.paths >= 1_000_000);
  if (large.length >= 2) {
    const a = large[0];
    const b = large[large.length - 1];
    target(`time per file at ${fmtInt(b.paths)} (${b.us.toFixed(2)} µs) vs ${fmtInt(a.paths)} files (${a.us.toFixed(2)} µs)`, b.us / a.us, 1.2, X);
  } else notMeasured('time per file at 2M vs 1M', 'needs two sizes of >= 1,000,000 files');
  if (iso) {
    target('2-guest dry run beside a cache of other roots vs --no-cache: time', iso.wall / iso.ncWall, 1.2, X);
    target('2-guest dry run beside a cache of other roots vs --no-cache: peak RSS', iso.rss / iso.ncRss, 1.2, X);
    if (iso.big < 2_000_000) console.log(`\n(the cache was filled by a run over ${fmtInt(iso.big)} files; the issue's case is 2M)`);
  } else notMeasured('2-guest dry run beside a cache of other roots', isolation ? 'its runs failed' : 'run with --isolation');
  process.exitCode = failed ? 2 : missed ? 1 : 0;
}
