// The native linker's calls on more than one thread, through sys.linkBatch
// and sys.linkBatchStart directly (no hook: a hook runs a call on one
// thread), on real files: segments of very different costs, of equal
// costs and of no pairs, with and without a pair handed back mid-call (the
// journal's filesystem fills up: a tmpfs of one page, so a journal line
// fails and every thread stops after the pair it is on). Whatever order
// the threads take the segments in, each segment's `done` must count
// exactly the pairs the addon went through (their results written, the
// rest untouched), every pair before a segment's last is LINKED, every
// LINKED path holds the canonical's inode and every other path its own
// inode and bytes, no temporary name is left, and a call where nothing was
// handed back goes through every pair of every segment.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LINK, LINK_ARRAY, LINK_TMP, O, statDoubles, sys } from '../../src/os/sys.js';
import { FS_FILE_FLAGS } from '../../src/core/stat.js';
import { writePair } from '../helpers/link-pairs.js';
import { rmTree, sha256File, tempDir } from '../helpers/tree.js';

const { stat: ST, pair: PR, out: OUT, seg: SG } = LINK_ARRAY;
let top: string, jdir: string;

beforeAll(() => {
  top = tempDir('vunify-link-segments-');
  jdir = path.join(top, 'journal-fs');
  fs.mkdirSync(jdir);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4k', 'tmpfs', jdir]);
});
afterAll(() => {
  execFileSync('umount', [jdir]);
  rmTree(top);
});


interface Pair {
  path: string;
  ino: number;
  sum: string;
}
interface SetSpec {
  size: number;
  dups: number;
  /** Where duplicate i goes: spread over three shared directories (default); `guests`: directory g<i> for every set (as one package file in every guest: every set in one lane); `own`: a directory of its own. */
  dirs?: 'guests' | 'own';
}

/** One call's sets as real files under `root`: set k's canonical and duplicates, the duplicates spread over shared directories. */
function build(root: string, sets: SetSpec[]) {
  const rootFd = sys.open(root, O.RDONLY | O.DIRECTORY | O.CLOEXEC);
  const n = sets.reduce((s, x) => s + x.dups, 0);
  const pairs = new Float64Array(Math.max(1, n) * PR.length);
  const segs = new Float64Array(sets.length * SG.length);
  const canonExpect = new Float64Array(sets.length * ST.length);
  const names: Buffer[] = [];
  const list: Pair[][] = [];
  const canons: { fd: number; ino: number }[] = [];
  let offset = 0;
  let at = 0;
  sets.forEach((s, k) => {
    const content = Buffer.alloc(s.size, `set ${k} `);
    const cpath = path.join(root, `c${k}`);
    fs.writeFileSync(cpath, content);
    fs.utimesSync(cpath, 1_700_000_000, 1_700_000_000);
    const cfd = sys.open(cpath, O.RDONLY | O.CLOEXEC);
    canons.push({ fd: cfd, ino: fs.statSync(cpath).ino });
    statDoubles(sys.fstat(cfd), canonExpect, k * ST.length);
    segs[k * SG.length + SG.canon] = cfd;
    segs[k * SG.length + SG.start] = at;
    segs[k * SG.length + SG.count] = s.dups;
    const mine: Pair[] = [];
    for (let i = 0; i < s.dups; i++) {
      const rel = s.dirs === 'guests' ? `g${i}` : s.dirs === 'own' ? `o${k}-${i}` : `d${(k + i) % 3}`;
      const name = `s${k}-${i}`;
      const p = path.join(root, rel, name);
      fs.mkdirSync(path.dirname(p), { recursive: true });
      fs.writeFileSync(p, content);
      fs.utimesSync(p, 1_700_000_000, 1_700_000_000);
      const st = writePair(pairs, at, rootFd, path.dirname(p), p, offset);
      const b = Buffer.from(`${rel}\0${name}\0`);
      names.push(b);
      offset += b.length;
      mine.push({ path: p, ino: st.ino, sum: sha256File(p) });
      at++;
    }
    list.push(mine);
  });
  const out = new Float64Array(Math.max(1, n) * OUT.length).fill(-7); // -7: no result written
  const tmps = Buffer.alloc(Math.max(1, n) * LINK_TMP);
  return { rootFd, pairs, segs, canonExpect, names: Buffer.concat(names), out, tmps, list, canons };
}

/** What the call left, checked pair by pair; whether any pair was handed back. */
function check(root: string, b: ReturnType<typeof build>, sets: SetSpec[]): { handed: number; linked: number; unstarted: number } {
  let handed = 0, linked = 0, settledJ = 0, unstarted = 0;
  sets.forEach((s, k) => {
    const done = b.segs[k * SG.length + SG.done]!;
    const start = b.segs[k * SG.length + SG.start]!;
    expect(Number.isInteger(done) && done >= 0 && done <= s.dups).toBe(true);
    if (s.dups > 0 && done === 0) unstarted++;
    for (let i = 0; i < s.dups; i++) {
      const o = (start + i) * OUT.length;
      const code = b.out[o + OUT.code]!;
      const p = b.list[k]![i]!;
      const ino = fs.statSync(p.path).ino;
      if (i >= done) {
        expect({ set: k, pair: i, code }).toEqual({ set: k, pair: i, code: -7 }); // never reached: untouched
        expect(ino).toBe(p.ino);
        continue;
      }
      if (i < done - 1) expect({ set: k, pair: i, code }).toEqual({ set: k, pair: i, code: LINK.LINKED });
      if (code === LINK.LINKED) {
        linked++;
        expect(ino).toBe(b.canons[k]!.ino);
      } else {
        expect(i).toBe(done - 1);
        if (code !== LINK.FALLBACK) handed++;
        // JOURNAL: nothing changed; SETTLED_JOURNAL: linked, the old inode left at its temporary name for swap.ts
        expect([LINK.FALLBACK, LINK.JOURNAL, LINK.SETTLED_JOURNAL]).toContain(code);
        if (code === LINK.SETTLED_JOURNAL) settledJ++;
        expect(ino).toBe(code === LINK.SETTLED_JOURNAL ? b.canons[k]!.ino : p.ino);
        for (const f of [OUT.dirFd, OUT.dupFd]) if (b.out[o + f]! >= 0 && code !== LINK.FALLBACK) sys.close(b.out[o + f]!);
      }
      expect(sha256File(p.path)).toBe(p.sum);
    }
  });
  // Temporary names: only those of pairs handed back after their exchange, each holding that pair's old inode.
  const temps = execFileSync('find', [root, '-name', '.vunify.*']).toString().split('\n').filter(Boolean);
  expect(temps.length).toBe(settledJ);
  const olds = new Set(b.list.flat().map((p) => p.ino));
  for (const t of temps) (expect(olds.has(fs.statSync(t).ino)).toBe(true), fs.unlinkSync(t));
  for (const c of b.canons) sys.close(c.fd);
  sys.close(b.rootFd);
  return { handed, linked, unstarted };
}

// Costs: one large set, equal ones, sets of one pair, a set of none.
const SHAPES: SetSpec[][] = [
  [{ size: 100, dups: 3 }, { size: 300_000, dups: 4 }, { size: 100, dups: 3 }, { size: 100, dups: 3 }, { size: 0 + 1, dups: 0 }, { size: 5000, dups: 1 }, { size: 100, dups: 3 }],
  Array.from({ length: 12 }, () => ({ size: 2000, dups: 2 })),
  [{ size: 10, dups: 0 }, { size: 10, dups: 0 }, { size: 50_000, dups: 6 }, { size: 10, dups: 1 }],
  // Lanes (native/link.c take()): every set in the same directories, so in
  // one thread's lane and the other thread's only work is what it takes
  // from there; and every pair in a directory of its own.
  Array.from({ length: 16 }, (_, k) => ({ size: 1000 + 3000 * (k % 5), dups: 5, dirs: 'guests' as const })),
  Array.from({ length: 16 }, (_, k) => ({ size: 1000 + 3000 * (k % 5), dups: 3, dirs: 'own' as const })),
];

describe.each([
  ['linkBatch', false],
  ['linkBatchStart', true],
])('%s on 2 threads', (_name, async) => {
  const call = async (b: ReturnType<typeof build>, journalFd: number) => {
    const args = [b.segs, b.canonExpect, journalFd, 0, FS_FILE_FLAGS, b.pairs, b.names, b.out, b.tmps, 2] as const;
    return async ? await sys.linkBatchStart(...args) : sys.linkBatch(...args);
  };

  it('without a journal failure: every pair of every segment is linked, in any order of segments', async () => {
    for (const [s, sets] of SHAPES.entries()) {
      const root = path.join(top, `${async}-ok-${s}`);
      fs.mkdirSync(root);
      const b = build(root, sets);
      expect(await call(b, -1)).toBe(sets.length);
      const r = check(root, b, sets);
      expect(r).toEqual({ handed: 0, linked: sets.reduce((n, x) => n + x.dups, 0), unstarted: 0 });
    }
  });

  it('a pair handed back (the journal full): the call stops, and each segment says how far it got', async () => {
    let handedCalls = 0, someLinked = 0, leftUnstarted = 0;
    for (let round = 0; round < 8; round++) {
      for (const [s, sets] of SHAPES.entries()) {
        const root = path.join(top, `${async}-full-${round}-${s}`);
        fs.mkdirSync(root);
        const b = build(root, sets);
        // Room for a few journal lines only: the page is mostly taken.
        const jfile = path.join(jdir, 'j');
        fs.rmSync(jfile, { force: true });
        fs.writeFileSync(jfile, Buffer.alloc(4096 - 700 - 300 * round, 'x'));
        const jfd = sys.open(jfile, O.WRONLY | fs.constants.O_APPEND | O.CLOEXEC);
        try {
          await call(b, jfd);
        } finally {
          sys.close(jfd);
        }
        const r = check(root, b, sets);
        if (r.handed > 0) handedCalls++;
        if (r.linked > 0 && r.handed > 0) someLinked++;
        if (r.handed > 0 && r.unstarted > 0) leftUnstarted++;
      }
    }
    // Not vacuous: calls did stop on a handed pair, some after linking others.
    expect(handedCalls).toBeGreaterThan(10);
    expect(someLinked).toBeGreaterThan(0);
    expect(leftUnstarted).toBeGreaterThan(0); // segments the stop kept from starting
  });
});

// Review 13: each segment is in one thread's lane (native/link.c take());
// a thread whose lane is empty takes what is left in the others. When
// pthread_create fails for a thread (here: the process in a pids cgroup at
// its limit, so the kernel refuses the clone), no thread takes that lane's
// segments as its own: the threads that did start must run them all the
// same. With 2 threads that both start (the tests above), each lane is run
// by its own thread and the taking from others' lanes is never needed.

const M64 = (1n << 64n) - 1n;
/** native/link.c order_segments(): each segment's lane on `nt` threads (the smallest hash of its pairs' directories). */
function lanesOf(b: ReturnType<typeof build>, sets: SetSpec[], nt: number): number[] {
  return sets.map((s, k) => {
    const start = b.segs[k * SG.length + SG.start]!;
    let least = M64;
    for (let i = start; i < start + s.dups; i++) {
      const dev = BigInt(b.pairs[i * PR.length + PR.dirDev]!), ino = BigInt(b.pairs[i * PR.length + PR.dirIno]!);
      let h = ((dev * 0x9e3779b97f4a7c15n) & M64) ^ ((ino * 0xc2b2ae3d27d4eb4fn) & M64);
      h ^= h >> 29n;
      if (h < least) least = h;
    }
    return Number((least >> 7n) % BigInt(nt));
  });
}

/** This process's pids cgroup (v1 or v2) in the hierarchy's mount, or undefined when there is none to make one under. */
function pidsParent(): string | undefined {
  const self = fs.readFileSync('/proc/self/cgroup', 'utf8').split('\n');
  const v1 = self.map((l) => /^\d+:([^:]*):(\/.*)$/.exec(l)).find((m) => m && m[1]!.split(',').includes('pids'));
  if (v1 && fs.existsSync('/sys/fs/cgroup/pids/cgroup.procs')) return path.join('/sys/fs/cgroup/pids', v1[2]!);
  const v2 = self.find((l) => l.startsWith('0::'))?.slice(3);
  for (const mnt of ['/sys/fs/cgroup', '/sys/fs/cgroup/unified']) {
    const dir = v2 !== undefined ? path.join(mnt, v2) : undefined;
    if (dir && fs.existsSync(path.join(dir, 'cgroup.subtree_control')) && fs.readFileSync(path.join(dir, 'cgroup.subtree_control'), 'utf8').includes('pids')) return dir;
  }
  return undefined;
}
const PIDS = pidsParent();

/**
 * `f` run with this process in a pids cgroup of its own that lets it start
 * `extra` more threads; how many clones the cgroup refused meanwhile.
 */
async function withThreadLimit<T>(extra: number, f: () => T | Promise<T>): Promise<{ value: T; refused: number }> {
  const dir = path.join(PIDS!, `vunify-lanes-${process.pid}`);
  fs.mkdirSync(dir);
  const refusals = () => Number(/^max (\d+)/m.exec(fs.readFileSync(path.join(dir, 'pids.events'), 'utf8'))?.[1] ?? NaN);
  try {
    fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(process.pid));
    try {
      const now = Number(fs.readFileSync(path.join(dir, 'pids.current'), 'utf8'));
      fs.writeFileSync(path.join(dir, 'pids.max'), String(now + extra));
      const value = await f();
      return { value, refused: refusals() };
    } finally {
      fs.writeFileSync(path.join(PIDS!, 'cgroup.procs'), String(process.pid));
    }
  } finally {
    fs.rmdirSync(dir);
  }
}

describe.skipIf(!PIDS).each([
  ['linkBatch', false],
  ['linkBatchStart', true],
])('%s on 4 threads, some never started (a pids cgroup at its limit)', (_name, async) => {
  it.each([0, 1])('%i of the 3 threads to start did: every segment of every lane is run', async (extra) => {
    // 24 sets, each pair in a directory of its own: segments in all 4 lanes.
    const sets: SetSpec[] = Array.from({ length: 24 }, (_, k) => ({ size: 1000 + 700 * k, dups: 3, dirs: 'own' }));
    const root = path.join(top, `lanes-${async}-${extra}`);
    fs.mkdirSync(root);
    const b = build(root, sets);
    const lanes = lanesOf(b, sets, 4);
    // not vacuous: segments in the lanes of threads that never start (2 and 3; 1 too when none starts)
    expect(lanes.filter((l) => l > extra).length).toBeGreaterThan(2);
    const args = [b.segs, b.canonExpect, -1, 0, FS_FILE_FLAGS, b.pairs, b.names, b.out, b.tmps, 4] as const;
    const { value, refused } = await withThreadLimit(extra, () => (async ? sys.linkBatchStart(...args) : sys.linkBatch(...args)));
    expect(value).toBe(sets.length);
    expect(refused).toBeGreaterThan(0); // a thread was refused indeed
    expect(check(root, b, sets)).toEqual({ handed: 0, linked: sets.length * 3, unstarted: 0 });
  });
});

// Review 13: no two threads in one directory at a time, whatever lane a
// segment is in. A fanotify listener (helpers/dir-overlap.py) holds every
// open on a tmpfs for 20 ms, with the opening thread's id: each pair opens
// its duplicate for reading under its directory's lock, so two threads'
// opens held at once in one directory would be two threads in it at a
// time. Sets all in the same directories (one lane: the other thread takes
// from its cheap end) and sets over three shared directories.
describe('the directory locks, on 2 threads (a fanotify listener holding each open)', () => {
  it.each([
    ['linkBatch', false],
    ['linkBatchStart', true],
  ])('%s: never two threads with an open in one directory at once', async (_name, async) => {
    const mnt = path.join(top, `fan-${async}`);
    fs.mkdirSync(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', mnt]);
    try {
      for (const [s, sets] of [SHAPES[1]!, SHAPES[3]!].entries()) {
        const root = path.join(mnt, `r${s}`);
        fs.mkdirSync(root);
        const b = build(root, sets);
        const stop = path.join(top, `fan-stop-${async}-${s}`);
        const listener = spawn('python3', [path.join(import.meta.dirname, '../helpers/dir-overlap.py'), mnt, stop, '0.02'], { stdio: ['ignore', 'pipe', 'inherit'] });
        const lines = readline.createInterface({ input: listener.stdout! })[Symbol.asyncIterator]();
        let seen: { events: number; threads: number; overlaps: unknown[] };
        try {
          expect((await lines.next()).value).toBe('ready');
          const args = [b.segs, b.canonExpect, -1, 0, FS_FILE_FLAGS, b.pairs, b.names, b.out, b.tmps, 2] as const;
          expect(async ? await sys.linkBatchStart(...args) : sys.linkBatch(...args)).toBe(sets.length);
          fs.writeFileSync(stop, '');
          seen = JSON.parse((await lines.next()).value as string) as typeof seen;
        } finally {
          fs.writeFileSync(stop, '');
          if (listener.exitCode === null) listener.kill();
        }
        const linked = check(root, b, sets); // closes the call's descriptors
        // not vacuous: both threads opened (each pair its duplicate at least)
        expect(seen.events).toBeGreaterThanOrEqual(sets.reduce((n, x) => n + x.dups, 0));
        expect(seen.threads).toBe(2);
        expect(seen.overlaps).toEqual([]);
        expect(linked).toEqual({ handed: 0, linked: sets.reduce((n, x) => n + x.dups, 0), unstarted: 0 });
      }
    } finally {
      if (spawnSync('umount', [mnt]).status !== 0) spawnSync('umount', ['-l', mnt]);
    }
  }, 120_000);
});
