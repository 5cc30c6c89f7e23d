// Confinement against a hostile guest, black box: the built CLI runs again
// and again over three guests while a separate process keeps swapping guest
// directories and files for symlinks into a decoy "host" tree (absolute and
// relative), for FIFOs and devices, and for each other, and breaks links by
// copying files. The decoy holds the same relative names with the same
// content and metadata as the guests, so a vunify that followed any of those
// symlinks would find perfect duplicates there and link or replace them.
//
// The random guest decides nothing about whether vunify met a trick: in
// every linking run, one more hostile step is made by the run itself at the
// worst moment, just before its first exchange in a directory the random
// guest leaves alone (test/helpers/cli-hook.mjs): the duplicate's name
// becomes a symlink into the decoy, after every check the linker makes
// before the exchange.
//
// Afterwards: the decoy is bit-for-bit and inode-for-inode what it was (link
// counts included), no guest path names a decoy inode, no run hung or
// crashed, and a final quiet run leaves no temporary name and every guest
// path with its original content and metadata.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { budget, exited, findTemps, journals, killChildren, runVunify, SEED, startChild, startScript, type HookConfig, type VunifyRun, SCRIPT_PRELUDE } from '../helpers/hostile.js';
import { rmTree, sh, snapshot, tempDir } from '../helpers/tree.js';

const GUESTS = ['g1', 'g2', 'g3'];
const DIRS = Array.from({ length: 30 }, (_, i) => `d${String(i).padStart(2, '0')}`);
/** The directory the random guest leaves alone, for the step each linking run makes itself (cli-hook.mjs). */
const HOOK_DIR = 'h0';
const ALL_DIRS = [...DIRS, HOOK_DIR];
const FILES = [...Array.from({ length: 10 }, (_, i) => `f${i}`), 's/f0', 's/f1', 's/f2'];
/** How many vunify runs while the guest fights (half of them linking). */
const RUNS = budget(16, 200);
/** A run that takes longer than this is taken to hang (a normal run here takes well under a second). */
const RUN_TIMEOUT_MS = 20_000;

let top: string;
let guestsDir: string;
let decoy: string;
let stateDir: string;
const roots = () => GUESTS.map((g) => path.join(guestsDir, g));

/** Content of a file: shared by all guests except f9, which is each guest's own. */
function content(guest: string, d: number, f: number, rel: string): Buffer {
  const unique = rel === 'f9' ? ` only in ${guest}` : '';
  const line = `${ALL_DIRS[d]}/${rel}${unique}: the same bytes in every guest\n`;
  return Buffer.from(line.repeat(1 + ((d * 13 + f * 7) % 40) * 5));
}

beforeAll(() => {
  top = tempDir('vunify-race-');
  guestsDir = path.join(top, 'guests');
  decoy = path.join(top, 'host');
  stateDir = path.join(top, 'state');
  for (const g of GUESTS) {
    for (const [d, dn] of ALL_DIRS.entries()) {
      for (const [f, rel] of FILES.entries()) {
        const file = path.join(guestsDir, g, dn, rel);
        fs.mkdirSync(path.dirname(file), { recursive: true });
        fs.writeFileSync(file, content(g, d, f, rel));
        fs.chownSync(file, d % 3 === 0 ? 1000 : 0, d % 3 === 0 ? 1000 : 0);
        fs.chmodSync(file, f % 4 === 0 ? 0o755 : 0o644);
        // Whole seconds: the hostile copier restores them exactly with utimes.
        fs.utimesSync(file, 1700000000, 1700000000 + d * 100 + f);
      }
    }
  }
  // The decoy: what a confused vunify would find by following a guest's
  // symlink. Same names, bytes, owners, modes and mtimes as g1 (and so as the
  // shared files of every guest), on the same filesystem, so links would work.
  sh('cp', '-a', path.join(guestsDir, 'g1'), decoy);
  // Special files the hostile guest swaps in by hardlinking them over names.
  for (const g of GUESTS) {
    fs.mkdirSync(path.join(guestsDir, g, '.pool'));
    sh('mkfifo', path.join(guestsDir, g, '.pool', 'fifo'));
    sh('mknod', path.join(guestsDir, g, '.pool', 'zero'), 'c', '1', '5');
  }
}, 60_000);

afterAll(async () => {
  await killChildren();
  if (top) rmTree(top);
});

/**
 * The hostile guest (runs as its own process, synchronous calls only, so
 * every swap is a few microseconds). Keeps up to `maxActive` mutations in
 * place at once, each for a random few milliseconds, then restores it; at
 * the end (stop file or deadline) it restores everything and prints its
 * counts as one JSON line. Mutations never overlap within a top directory.
 */
const HOSTILE = String.raw`
${SCRIPT_PRELUDE}const stats = { started: 0, restored: 0, failures: [] };
const count = (k) => (stats[k] = (stats[k] ?? 0) + 1);
const busy = new Set();
const active = [];

function symlinkTarget(g, rel, linkPath) {
  // Absolute or relative (from the link's own directory), at random.
  const target = path.join(g.decoy, rel);
  return rand() < 0.5 ? target : path.relative(path.dirname(linkPath), target);
}

const dirActions = {
  dirSymlink(g, rel) {
    const p = path.join(g.root, rel), away = p + '~away';
    fs.renameSync(p, away);
    fs.symlinkSync(symlinkTarget(g, rel, p), p);
    return () => { fs.unlinkSync(p); fs.renameSync(away, p); };
  },
  dirFifo(g, rel) {
    const p = path.join(g.root, rel), away = p + '~away';
    fs.renameSync(p, away);
    fs.linkSync(g.fifo, p);
    return () => { fs.unlinkSync(p); fs.renameSync(away, p); };
  },
};
const fileActions = {
  fileSymlink(g, rel) {
    const p = path.join(g.root, rel), away = p + '~away', tmp = p + '~tmp';
    fs.symlinkSync(symlinkTarget(g, rel, p), tmp);
    fs.renameSync(p, away);
    fs.renameSync(tmp, p);
    return () => fs.renameSync(away, p);
  },
  fileFifo(g, rel) { return special(g, rel, g.fifo); },
  fileDevice(g, rel) { return special(g, rel, g.zero); },
  breakLink(g, rel) {
    // A guest copying a file over itself (new inode, same bytes and metadata).
    const p = path.join(g.root, rel), tmp = p + '~copy';
    const st = fs.lstatSync(p, { bigint: true });
    if (!st.isFile() || st.mtimeNs % 1000000000n !== 0n) return null;
    fs.copyFileSync(p, tmp);
    fs.chownSync(tmp, Number(st.uid), Number(st.gid));
    fs.chmodSync(tmp, Number(st.mode) & 0o7777);
    fs.utimesSync(tmp, 1700000000, Number(st.mtimeNs / 1000000000n));
    fs.renameSync(tmp, p);
    return null;
  },
};
function special(g, rel, src) {
  // Keep the file under a second name, then swap the special file in atomically.
  const p = path.join(g.root, rel), keep = p + '~keep', tmp = p + '~tmp';
  fs.linkSync(p, keep);
  fs.linkSync(src, tmp);
  fs.renameSync(tmp, p);
  return () => fs.renameSync(keep, p);
}

function startOne() {
  const g = pick(cfg.guests);
  const top = pick(cfg.dirs);
  if (busy.has(g.root + '/' + top)) return;
  const r = rand();
  let kind, restore = null;
  const keys = [g.root + '/' + top];
  try {
    if (r < 0.3) {
      kind = pick(Object.keys(dirActions));
      restore = dirActions[kind](g, rand() < 0.7 ? top : top + '/s');
    } else if (r < 0.4) {
      kind = 'dirSwap';
      const other = pick(cfg.dirs);
      if (other === top || busy.has(g.root + '/' + other)) return;
      keys.push(g.root + '/' + other);
      const a = path.join(g.root, top), b = path.join(g.root, other), t = a + '~swap';
      const swap = () => { fs.renameSync(a, t); fs.renameSync(b, a); fs.renameSync(t, b); };
      swap();
      restore = swap;
    } else {
      kind = pick(Object.keys(fileActions));
      restore = fileActions[kind](g, top + '/' + pick(cfg.files));
    }
  } catch (er) {
    stats.failures.push(kind + ': ' + er.message);
    return;
  }
  count(kind);
  stats.started++;
  if (!restore) return;
  for (const k of keys) busy.add(k);
  active.push({ kind, restore, keys, until: performance.now() + rand() * cfg.holdMs });
}

function finish(m) {
  try { m.restore(); stats.restored++; } catch (er) { stats.failures.push('restore ' + m.kind + ': ' + er.message); }
  for (const k of m.keys) busy.delete(k);
}

for (let n = 0; Date.now() < cfg.deadline; n++) {
  if ((n & 31) === 0 && fs.existsSync(cfg.stopFile)) break;
  const now = performance.now();
  for (let i = active.length - 1; i >= 0; i--) if (active[i].until <= now) finish(active.splice(i, 1)[0]);
  if (active.length < cfg.maxActive) startOne();
  if (rand() < 0.3) sleep(rand() * cfg.pauseMs);
}
for (const m of active.splice(0)) finish(m);
console.log(JSON.stringify(stats));
`;

/** Everything about a run that must hold whatever the guest did: it ended, on its own, with 0 or 1, with a report. */
function checkRun(r: VunifyRun, what: string): { linksMade: number; errors: { code: string; path: string }[] } {
  expect(r.hung, `${what} hung (killed after ${RUN_TIMEOUT_MS} ms)`).toBe(false);
  expect(r.signal, `${what} died of a signal\n${r.stderr}`).toBeNull();
  expect([0, 1], `${what} exited ${r.code}\n${r.stderr}`).toContain(r.code);
  expect(r.stderr).not.toMatch(/internal error/);
  const report = JSON.parse(r.stdout) as { summary: { linksMade: number }; errors: { code: string; path: string }[] };
  expect(report.errors.length > 0, `${what}: exit code and errors disagree`).toBe(r.code === 1);
  return { linksMade: report.summary.linksMade, errors: report.errors };
}

function inodesBelow(dir: string): Set<number> {
  const out = sh('find', dir, '-printf', '%i\\n');
  return new Set(out.split('\n').filter(Boolean).map(Number));
}

describe('a hostile guest racing vunify', () => {
  it('never steers a run outside the guests, never hangs or crashes it, and loses nothing', async () => {
    const decoyBefore = snapshot(decoy, { inodes: true });
    const guestsBefore = snapshot(guestsDir, { dirTimes: false });
    const decoyInodes = inodesBelow(decoy);
    const stopFile = path.join(top, 'stop');
    const started = Date.now();
    const hostile = startScript(HOSTILE, {
      seed: SEED,
      guests: GUESTS.map((g) => ({
        root: path.join(guestsDir, g),
        decoy,
        fifo: path.join(guestsDir, g, '.pool', 'fifo'),
        zero: path.join(guestsDir, g, '.pool', 'zero'),
      })),
      dirs: DIRS,
      files: FILES,
      stopFile,
      // Only a guard against a test that dies without writing the stop file.
      deadline: started + 3_600_000,
      maxActive: 12,
      holdMs: 6,
      pauseMs: 0.3,
    });

    const doneFile = path.join(top, 'hook-done');
    let hookErrors = 0;
    let linksMade = 0;
    let runs = 0;
    const codes = new Map<string, number>();
    try {
      for (; runs < RUNS; runs++) {
        const dry = runs % 2 === 1;
        const what = `run ${runs} (${dry ? 'dry' : 'linking'}, seed ${SEED})`;
        const hook: HookConfig | undefined = dry ? undefined : {
          exchange: { under: guestsDir, match: `^[^/]+/${HOOK_DIR}/`, action: 'symlink', decoy, strip: 1 },
          done: doneFile,
        };
        const r = await runVunify(stateDir, ['--json', '--no-default-excludes', ...(dry ? ['--dry-run'] : []), ...roots()], RUN_TIMEOUT_MS, hook);
        const res = checkRun(r, what);
        linksMade += res.linksMade;
        for (const e of res.errors) codes.set(e.code, (codes.get(e.code) ?? 0) + 1);
        if (dry) expect(res.linksMade).toBe(0);
        else {
          // The step at the exchange was made (a file of HOOK_DIR is left
          // unlinked by each run, so the next one has one to link), and
          // vunify noticed it, linking nothing there.
          expect(fs.existsSync(doneFile), `${what}: the step before the exchange was not made`).toBe(true);
          fs.rmSync(doneFile);
          const hooked = res.errors.filter((e) => e.path.split('/').includes(HOOK_DIR));
          expect(hooked.map((e) => e.code), `${what}: ${JSON.stringify(res.errors)}`).toEqual(['ECHANGED']);
          hookErrors++;
        }
      }
    } finally {
      fs.writeFileSync(stopFile, '');
      const done = await Promise.race([exited(hostile.child), new Promise((r) => setTimeout(r, 15_000, 'timeout'))]);
      expect(done, 'the hostile process did not stop').not.toBe('timeout');
    }
    const stats = JSON.parse(hostile.out().trim().split('\n').pop()!) as Record<string, number> & { failures: string[] };
    console.log(`race: seed ${SEED}, ${runs} runs in ${Date.now() - started} ms, ${linksMade} links made under fire;`,
      `hostile ${JSON.stringify(stats)}; errors vunify reported: ${JSON.stringify(Object.fromEntries(codes))} (${hookErrors} from the step at the exchange)`);
    // Every hostile step worked (a vanished path would mean vunify lost a name), all were put back.
    expect(stats.failures).toEqual([]);
    expect(stats.restored).toBeGreaterThan(0);
    // The scenario did what it is for: vunify linked while the guest fought, and met its tricks.
    expect(runs).toBeGreaterThanOrEqual(4);
    expect(linksMade).toBeGreaterThan(0);
    expect(codes.size).toBeGreaterThan(0);

    // A final run with the guest quiet: clean, and everything identical ends as one inode.
    const last = await runVunify(stateDir, ['--json', '--no-default-excludes', ...roots()], RUN_TIMEOUT_MS);
    const res = checkRun(last, 'final run');
    expect(res.errors).toEqual([]);
    expect(last.code).toBe(0);
    expect(journals(stateDir)).toEqual([]);

    // The decoy: same inodes, link counts, bytes, metadata, directory times; no temporary names.
    expect(snapshot(decoy, { inodes: true })).toEqual(decoyBefore);
    // No guest path names a decoy inode (same filesystem, so this is the only way a link could leak).
    const guestInodes = inodesBelow(guestsDir);
    expect([...decoyInodes].filter((i) => guestInodes.has(i))).toEqual([]);
    expect(findTemps(top)).toEqual([]);
    // Every guest path still has its content and metadata.
    expect(snapshot(guestsDir, { dirTimes: false })).toEqual(guestsBefore);
    // And the final run finished the job: each shared file is one inode across the guests.
    for (const d of ALL_DIRS) {
      for (const f of FILES) {
        const inos = new Set(GUESTS.map((g) => fs.lstatSync(path.join(guestsDir, g, d, f)).ino));
        expect(inos.size, `${d}/${f}`).toBe(f === 'f9' ? GUESTS.length : 1);
      }
    }
  }, budget(600_000, 3_600_000)); // only a hang guard: the test ends after its runs
});

/**
 * Holds a write lease (fcntl F_SETLEASE, F_WRLCK) on each file named in
 * argv: any other open of such a file, even read-only, breaks the lease and
 * blocks for /proc/sys/fs/lease-break-time (45 s) unless it is O_NONBLOCK.
 */
const LEASER = `
import fcntl, os, signal, sys, time
signal.signal(signal.SIGIO, lambda *a: None)  # told of each break; never gives the lease up
fds = []
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    fds.append(fd)
print('leased', flush=True)
time.sleep(300)
`;

describe('a guest holding leases on its files', () => {
  it('cannot make a run wait: the leased files are skipped, and linked once the leases are gone', async () => {
    const base = path.join(top, 'lease');
    const names = Array.from({ length: 8 }, (_, i) => `usr/lib/lib${i}.so`);
    for (const g of ['g1', 'g2']) {
      for (const [i, n] of names.entries()) {
        const file = path.join(base, g, n);
        fs.mkdirSync(path.dirname(file), { recursive: true });
        fs.writeFileSync(file, `library ${i}\n`.repeat(100 + i));
        fs.utimesSync(file, 1700000000, 1700000000);
      }
    }
    const leased = names.map((n) => path.join(base, 'g2', n));
    const leaser = startChild('python3', ['-c', LEASER, ...leased]);
    await new Promise<void>((resolve, reject) => {
      leaser.child.stdout!.on('data', () => leaser.out().includes('leased') && resolve());
      leaser.child.once('exit', (code) => reject(new Error(`lease holder exited ${code}: ${leaser.err()}`)));
    });
    const gs = ['g1', 'g2'].map((g) => path.join(base, g));
    const held = await runVunify(stateDir, ['--json', '--no-default-excludes', ...gs], RUN_TIMEOUT_MS);
    const res = checkRun(held, 'run against leased files');
    expect(held.code).toBe(1);
    expect(new Set(res.errors.map((e) => e.code))).toEqual(new Set(['EAGAIN']));
    expect(new Set(res.errors.map((e) => e.path))).toEqual(new Set(leased));
    expect(res.linksMade).toBe(0);

    leaser.child.kill('SIGKILL');
    await exited(leaser.child);
    const free = await runVunify(stateDir, ['--json', '--no-default-excludes', ...gs], RUN_TIMEOUT_MS);
    const done = checkRun(free, 'run after the leases are gone');
    expect(free.code).toBe(0);
    expect(done.linksMade).toBe(names.length);
  }, 60_000);
});
