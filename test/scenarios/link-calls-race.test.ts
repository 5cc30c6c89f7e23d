// The native linker's calls overlap JavaScript (linkBatchStart: while one
// group of sets is linked on the thread pool, this thread takes in the other
// group's results and prepares its next batches). A hostile guest races the
// whole time: directories and files of its root are swapped for symlinks
// into a decoy "host" tree that holds the same names, bytes and metadata,
// and swapped back. With more sets than two calls hold (> 2 x 64), both
// groups are in use in every run. The built CLI (VUNIFY_BIN, default
// dist/bin.js) links again and again; afterwards the decoy is byte for byte
// and inode for inode what it was, no journal or temporary name is left, and
// every guest path has its own bytes (sha256sum) and metadata (stat).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exited, findTemps, journals, killChildren, runVunify, SCRIPT_PRELUDE, startScript } from '../helpers/hostile.js';
import { rmTree, snapshot, tempDir, writeGrid } from '../helpers/tree.js';

const GUESTS = ['g1', 'g2', 'g3'];
const DIRS = Array.from({ length: 48 }, (_, i) => `d${String(i).padStart(2, '0')}`);
const FILES = Array.from({ length: 6 }, (_, i) => `f${i}`);
const RUNS = 6;

let top: string, guests: string, decoy: string, state: string;
const roots = () => GUESTS.map((g) => path.join(guests, g));
const content = (d: number, f: number) => Buffer.from(`${DIRS[d]}/${FILES[f]}: the same in every guest\n`.repeat(1 + ((d * 7 + f * 3) % 20) * 9));

beforeAll(() => {
  top = tempDir('vunify-link-calls-');
  guests = path.join(top, 'guests');
  decoy = path.join(top, 'host');
  state = path.join(top, 'state');
  fs.mkdirSync(state, { mode: 0o700 });
  writeGrid([...roots(), decoy], DIRS, FILES, content);
});
afterAll(async () => {
  await killChildren();
  rmTree(top);
});

const HOSTILE = SCRIPT_PRELUDE + String.raw`
const { root, decoy, dirs, files, stop } = cfg;
while (!fs.existsSync(stop)) {
  const d = pick(dirs);
  const at = path.join(root, d), away = at + '.away';
  try {
    if (rand() < 0.5) {
      fs.renameSync(at, away);
      fs.symlinkSync(path.join(decoy, d), at);
      sleep(Math.floor(rand() * 3));
      fs.unlinkSync(at);
      fs.renameSync(away, at);
    } else {
      const f = path.join(at, pick(files)), aside = f + '.away';
      fs.renameSync(f, aside);
      fs.symlinkSync(path.join(decoy, d, path.basename(f)), f);
      sleep(Math.floor(rand() * 3));
      fs.unlinkSync(f);
      fs.renameSync(aside, f);
    }
  } catch (er) {
    if (er.code !== 'ENOENT') throw er;
  }
}
`;

describe('linker calls overlapping JavaScript, against a racing guest', () => {
  it('touch nothing outside the roots and leave every guest path its own bytes', async () => {
    const guestBefore = new Map(GUESTS.map((g) => [g, snapshot(path.join(guests, g), { dirTimes: false })]));
    const decoyBefore = snapshot(decoy, { inodes: true });
    const stop = path.join(top, 'stop');
    const hostile = startScript(HOSTILE, { seed: 8, root: path.join(guests, 'g3'), decoy, dirs: DIRS, files: FILES, stop });
    const codes: (number | null)[] = [];
    try {
      for (let r = 0; r < RUNS; r++) {
        // g1 and g2 are relinked each time: their links are broken by copying between runs.
        if (r > 0) for (const g of ['g1', 'g2']) for (const dn of DIRS.slice(0, 24)) for (const fn of FILES) {
          const file = path.join(guests, g, dn, fn);
          const data = fs.readFileSync(file);
          const st = fs.statSync(file);
          fs.unlinkSync(file);
          fs.writeFileSync(file, data, { mode: st.mode & 0o7777 });
          fs.utimesSync(file, st.atime, st.mtime);
        }
        const run = await runVunify(state, ['--json', '--no-default-excludes', ...roots()], 60_000);
        expect(run.hung).toBe(false);
        expect(run.signal).toBeNull();
        expect(run.stderr).not.toMatch(/internal error|at .*\.c?js:/);
        codes.push(run.code);
        const rep = JSON.parse(run.stdout);
        expect(rep.summary.linksMade).toBeGreaterThan(0);
      }
    } finally {
      fs.writeFileSync(stop, '');
      const { code } = await exited(hostile.child);
      expect(code, hostile.err()).toBe(0);
    }
    // 0, or 1 where the guest's swaps made files skipped: never a crash or a usage error.
    for (const c of codes) expect([0, 1]).toContain(c);
    const last = await runVunify(state, ['--json', '--no-default-excludes', ...roots()], 60_000);
    expect(last.code, last.stderr).toBe(0);
    expect(snapshot(decoy, { inodes: true })).toEqual(decoyBefore);
    for (const g of GUESTS) {
      expect(findTemps(path.join(guests, g))).toEqual([]);
      const now = snapshot(path.join(guests, g), { dirTimes: false });
      // Same names, bytes and metadata: only link counts and inodes moved.
      expect(now).toEqual(guestBefore.get(g));
    }
    expect(journals(state)).toEqual([]);
    // Unified: every guest path of one name is one inode after the quiet run.
    for (const dn of DIRS) for (const fn of FILES) {
      const inos = new Set(GUESTS.map((g) => fs.statSync(path.join(guests, g, dn, fn)).ino));
      expect(inos.size).toBe(1);
    }
    // No guest path names a decoy inode.
    const decoyInos = new Set([...snapshot(decoy, { inodes: true }).values()].map((v) => v.split('|')[1]));
    for (const g of GUESTS) for (const dn of DIRS) for (const fn of FILES) expect(decoyInos.has(String(fs.statSync(path.join(guests, g, dn, fn)).ino))).toBe(false);
  });
});
