// SIGKILL while the native linker's calls run on the thread pool
// (linkBatchStart). The crash tests kill through the addon's fault hook,
// which makes every call run synchronously on the JavaScript thread; this
// one kills a run from outside at random moments of its link stage, with no
// hook set, so the calls are in flight on the pool (two groups of sets, more
// sets than two calls hold). After each kill the next run recovers from the
// journal; then every guest path must have its own bytes and metadata
// (sha256sum, stat), no temporary name and no journal may be left, and a
// last run must leave each name one inode across the guests.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { budget, cliArgs, exited, findTemps, journals, killChildren, rng, runVunify } from '../helpers/hostile.js';
import { rmTree, snapshot, tempDir, writeGrid } from '../helpers/tree.js';

const GUESTS = ['g1', 'g2', 'g3'];
const DIRS = Array.from({ length: 50 }, (_, i) => `d${String(i).padStart(2, '0')}`);
const FILES = Array.from({ length: 6 }, (_, i) => `f${i}`);
const KILLS = budget(12, 100);

let top: string, guests: string, state: string;
const roots = () => GUESTS.map((g) => path.join(guests, g));
const content = (d: number, f: number) => Buffer.from(`${DIRS[d]}/${FILES[f]}: the same in every guest\n`.repeat(20 + ((d * 7 + f * 3) % 20) * 40));

/** Break every link between the guests: each path gets an inode of its own again (same bytes, mode and times). */
function unlinkAll(): void {
  for (const g of GUESTS) for (const dn of DIRS) for (const fn of FILES) {
    const file = path.join(guests, g, dn, fn);
    const st = fs.statSync(file);
    if (st.nlink === 1) continue;
    const data = fs.readFileSync(file);
    fs.unlinkSync(file);
    fs.writeFileSync(file, data, { mode: st.mode & 0o7777 });
    fs.utimesSync(file, st.atime, st.mtime);
  }
}

beforeAll(() => {
  top = tempDir('vunify-link-kill-');
  guests = path.join(top, 'guests');
  state = path.join(top, 'state');
  fs.mkdirSync(state, { mode: 0o700 });
  writeGrid(roots(), DIRS, FILES, content);
});
afterAll(async () => {
  await killChildren();
  rmTree(top);
});

describe('SIGKILL during linker calls on the thread pool', () => {
  it('leaves nothing the next run does not put right', async () => {
    const before = new Map(GUESTS.map((g) => [g, snapshot(path.join(guests, g), { dirTimes: false })]));
    // How long a whole linking run takes here, to kill within it.
    const t0 = Date.now();
    const probe = await runVunify(state, ['--json', '--no-cache', '--no-default-excludes', ...roots()], 60_000);
    expect(probe.code, probe.stderr).toBe(0);
    const whole = Date.now() - t0;
    const rand = rng(20261130);
    let killed = 0, midLink = 0;
    for (let k = 0; k < KILLS; k++) {
      unlinkAll();
      const cli = cliArgs(['--state-dir', state, '--no-cache', '--no-default-excludes', ...roots()]);
      const child = spawn(process.execPath, cli.argv, { env: cli.env, stdio: 'ignore' });
      // The link stage is the run's second half or so: kill anywhere in 30..110 % of a whole run.
      const delay = Math.floor(whole * (0.3 + 0.8 * rand()));
      const timer = setTimeout(() => child.kill('SIGKILL'), delay);
      const { signal } = await exited(child);
      clearTimeout(timer);
      if (signal === 'SIGKILL') killed++;
      // A journal left behind: the kill came while the run was linking.
      if (journals(state).length) midLink++;
      const rec = await runVunify(state, ['--json', '--no-default-excludes', ...roots()], 60_000);
      expect(rec.code, `after a kill at ${delay} ms: ${rec.stderr}`).toBe(0);
      expect(journals(state)).toEqual([]);
      for (const g of GUESTS) {
        expect(findTemps(path.join(guests, g))).toEqual([]);
        expect(snapshot(path.join(guests, g), { dirTimes: false })).toEqual(before.get(g));
      }
      for (const dn of DIRS) for (const fn of FILES) expect(new Set(GUESTS.map((g) => fs.statSync(path.join(guests, g, dn, fn)).ino)).size).toBe(1);
    }
    // Most kills must have landed in a run, some while it linked, or this tested little.
    expect(killed).toBeGreaterThan(KILLS / 2);
    expect(midLink).toBeGreaterThan(0);
    if (process.env.VUNIFY_VERBOSE_TEST) console.log(`kills ${killed}, while linking ${midLink}, of ${KILLS}; a whole run ${whole} ms`);
  }, 300_000);
});
