// Review of linkRows (session 12): what the linker on the plan's rows must
// keep from the objects' path where link-rows.test.ts does not look: a set
// of more pairs than one call takes (the canonical's expectation carried
// from call to call, Pool.run's copy of canonExpect), a hand-over in a later
// call (handOver's expectation of the canonical), the names buffer (the
// guest's root directory itself, deep directories, NAME_BYTES cutting a
// call short, several directories in one call), sets stopped short by
// another set's hand-back, and descriptors (none left open, none closed
// twice), also when the run ends in an internal error with sets in flight.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { LINK_ARRAY, sys } from '../../src/os/sys.js';
import { runUnify } from '../helpers/tree.js';
import { fds, put, linkerTestDir, threeWays, unifyWay, type Outcome, type Way } from '../helpers/link-ways.js';

const testDir = linkerTestDir();

/** One guest, one content in `n` files (distinct inodes) of directory `sub`: one set of n - 1 ops. */
const manyCopies = (n: number, sub = 'd') => (top: string) => {
  for (let k = 0; k < n; k++) put(path.join(top, 'g0', sub, `f${String(k).padStart(4, '0')}`), 'many copies\n'.repeat(3000));
};

describe('linkRows (review 12)', () => {
  it('a set of more pairs than one call takes: every call on rows, the canonical expected as the last call left it', async () => {
    // 149 ops: calls of 64, 64 and 21 pairs, each after the first checks the
    // canonical against the stat the addon left in canonExpect (Pool.run's
    // copy): a stale one would FALLBACK and build the objects.
    const rows = await threeWays(testDir(), manyCopies(150));
    expect(rows.errors).toEqual([]);
    expect(rows.summary.linksMade).toBe(149);
    expect(rows.summary.skipped).toBe(0);
    expect(rows.summary.freedBytes).toBe(149 * 'many copies\n'.length * 3000);
    expect(rows.shared).toHaveLength(1);
    expect(rows.leftovers).toEqual([]);
    expect(rows.built).toBe(0);
  });

  it.each([
    // the first pair of the second call, and one in its middle
    ['exchange', 65],
    ['exchange', 100],
    ['link', 130],
  ] as const)('a pair handed back at its %s in a later call (the %i-th): linkSet goes on with the canonical as the addon left it', async (step, nth) => {
    const rows = await threeWays(testDir(), manyCopies(150), { step, nth, errno: os.constants.errno.ENOSPC });
    // one pair kept apart, nothing skipped: a stale expectation of the canonical would skip the rest (ECANONICAL)
    expect(rows.errors).toHaveLength(1);
    expect(rows.errors[0]).toMatch(/^ENOSPC TOP\/g0\/d\/f\d{4} no space left on device/);
    expect(rows.summary.linksMade).toBe(148);
    expect(rows.summary.skipped).toBe(1);
    expect(rows.shared).toHaveLength(2);
    expect(rows.leftovers).toEqual([]);
    expect(rows.built).toBe(1);
  });

  it('EMLINK in a later call (the 100th link): the duplicate carries the rest; the handed canonical closed once, the new one too', async () => {
    const rows = await threeWays(testDir(), manyCopies(150), { step: 'link', nth: 100, errno: os.constants.errno.EMLINK });
    expect(rows.errors).toEqual([]);
    expect(rows.summary.linksMade).toBe(148);
    expect(rows.summary.skipped).toBe(0);
    // the first canonical with its 99 links, the one that hit EMLINK with the other 49
    expect(rows.shared.map((s) => s.split(' ').length).sort((a, b) => a - b)).toEqual([50, 100]);
    expect(rows.built).toBe(1);
  });

  it('a pair left to the JS path in a later call (FALLBACK at the 100th open): redone there against the canonical as the addon left it, the rest linked', async () => {
    // linkOne checks the canonical against canon.expect (verify): one older
    // than the addon's last link would skip the rest of the set (ECANONICAL).
    const rows = await threeWays(testDir(), manyCopies(150), { step: 'open', nth: 100, errno: os.constants.errno.EIO });
    expect(rows.errors).toEqual([]);
    expect(rows.summary.linksMade).toBe(149);
    expect(rows.summary.skipped).toBe(0);
    expect(rows.shared).toHaveLength(1);
    expect(rows.built).toBe(1);
  });

  it('names: the root directory itself, deep directories (NAME_BYTES cuts calls short; the canonical too), several directories in one call', async () => {
    // A directory ~3000 bytes deep: about 43 pairs of it fill NAME_BYTES
    // (128 KiB), so its 100 ops take three calls, and the call that holds
    // the last of them holds the root's and the shallow directory's too.
    const deep = Array.from({ length: 12 }, (_, k) => `${'d'.repeat(240)}${k}`).join('/');
    const build = (top: string) => {
      for (let k = 0; k < 20; k++) put(path.join(top, 'g0', `r${k}`), 'names\n'.repeat(3000));
      for (let k = 0; k < 100; k++) put(path.join(top, 'g0', deep, `f${k}`), 'names\n'.repeat(3000));
      for (let k = 0; k < 20; k++) put(path.join(top, 'g1', 's', `t${k}`), 'names\n'.repeat(3000));
      put(path.join(top, 'g1', deep, 'x'), 'names\n'.repeat(3000));
      // the canonical (most links): opened by linkRows through its deep path
      fs.linkSync(path.join(top, 'g1', deep, 'x'), path.join(top, 'g1', deep, 'x2'));
    };
    // the pairs of each segment the addon is given: NAME_BYTES, not BATCH (64), ends the deep directory's
    const real = sys.linkBatchStart;
    const counts: number[] = [];
    vi.spyOn(sys, 'linkBatchStart').mockImplementation((segs, ...rest) => {
      for (let k = 0; k < segs.length / LINK_ARRAY.seg.length; k++) counts.push(segs[k * LINK_ARRAY.seg.length + LINK_ARRAY.seg.count]!);
      return real(segs, ...rest);
    });
    const canonicalOpens: number[] = [];
    const realOpen = sys.openChecked;
    vi.spyOn(sys, 'openChecked').mockImplementation((dirFd, name, ...rest) => {
      if (name.toString().endsWith('/x')) canonicalOpens.push(name.length);
      return realOpen(dirFd, name, ...rest);
    });
    const rows = await threeWays(testDir(), build);
    expect(canonicalOpens.length).toBeGreaterThanOrEqual(1);
    expect(Math.min(...canonicalOpens)).toBeGreaterThan(2900);
    // each way: a call ended by NAME_BYTES before the last (64, 45, 31 here), where BATCH alone would make 64, 64, 12
    expect(counts.reduce((a, b) => a + b)).toBe(2 * 140);
    expect(counts.filter((c) => c < 64).length).toBeGreaterThanOrEqual(2 * 2);
    expect(rows.errors).toEqual([]);
    expect(rows.summary.linksMade).toBe(140);
    expect(rows.shared).toHaveLength(1);
    expect(rows.leftovers).toEqual([]);
    expect(rows.built).toBe(0);
  });

  it('many sets in flight, one pair handed back: the sets it stopped (done < count, or none) go on, and nothing else is lost', async () => {
    // 12 sets of 40 copies (20 in each of two guests, one directory per
    // set): 39 pairs per segment, so the pair faulted stops the call while
    // the other thread is inside another set's segment (done < count), and
    // the segments not started yet did none (done 0).
    const build = (top: string) => {
      for (let g = 0; g < 2; g++) for (let s = 0; s < 12; s++) for (let k = 0; k < 20; k++) put(path.join(top, `g${g}`, `s${s}`, `f${k}`), `set ${s}\n`.repeat(2000));
    };
    for (const nth of [30, 200]) {
      const results: Record<string, Outcome> = {};
      for (const way of ['objects', 'rows'] as Way[]) {
        const top = path.join(testDir(), `${way}-${nth}`);
        build(top);
        results[way] = await unifyWay(top, way, { step: 'exchange', nth, errno: os.constants.errno.ENOSPC });
      }
      // which pair met the fault depends on the threads: the counts do not
      for (const r of Object.values(results)) {
        expect(r.errors).toHaveLength(1);
        expect(r.errors[0]).toMatch(/^ENOSPC TOP\/g\d\/s\d+\/f\d+ no space left on device/);
        expect(r.summary.linksMade).toBe(12 * 39 - 1);
        expect(r.summary.skipped).toBe(1);
        expect(r.shared).toHaveLength(13);
        expect(r.leftovers).toEqual([]);
      }
      // at least the faulted set built its objects; no set stopped short lost a pair
      expect(results.rows!.built).toBeGreaterThanOrEqual(1);
    }
  });

  it('segments the addon stops short (done < count, as a hand-back on another thread does; or none done): each set goes on from its first pair not done', async () => {
    // With the fault hook set the addon runs one thread, so another set's
    // hand-back never stops a segment midway there: each call here tells the
    // addon a shorter count for its segments instead (every third: none, the
    // others: half), and gives the real one back to the JavaScript side.
    const SG = LINK_ARRAY.seg;
    const real = sys.linkBatchStart;
    let cut = 0;
    const build = (top: string) => {
      for (let g = 0; g < 2; g++) for (let s = 0; s < 12; s++) for (let k = 0; k < 20; k++) put(path.join(top, `g${g}`, `s${s}`, `f${k}`), `set ${s}\n`.repeat(2000));
    };
    const results: Record<string, Outcome> = {};
    for (const way of ['objects', 'rows'] as Way[]) {
      const top = path.join(testDir(), way);
      build(top);
      vi.spyOn(sys, 'linkBatchStart').mockImplementation(async (segs, ...rest) => {
        const counts: number[] = [];
        for (let k = 0; k < segs.length / SG.length; k++) {
          const c = segs[k * SG.length + SG.count]!;
          counts.push(c);
          if (c > 1) segs[k * SG.length + SG.count] = ++cut % 3 === 0 ? 0 : c >> 1;
        }
        try {
          return await real(segs, ...rest);
        } finally {
          counts.forEach((c, k) => (segs[k * SG.length + SG.count] = c));
        }
      });
      results[way] = await unifyWay(top, way);
      vi.restoreAllMocks();
    }
    expect(cut).toBeGreaterThan(20);
    expect(results.objects).toMatchObject({ errors: [], leftovers: [], built: 0 });
    expect({ ...results.rows, built: 0 }).toEqual(results.objects);
    expect(results.rows!.summary.linksMade).toBe(12 * 39);
    expect(results.rows!.summary.skipped).toBe(0);
    expect(results.rows!.shared).toHaveLength(12);
  });

  it('an internal error with sets in flight on rows: every canonical descriptor is closed once', async () => {
    const build = (top: string) => {
      for (let g = 0; g < 4; g++) for (let s = 0; s < 150; s++) put(path.join(top, `g${g}`, `s${s}`, 'f'), `set ${s}\n`.repeat(2000));
    };
    const top = path.join(testDir(), 'rows');
    build(top);
    const real = sys.linkBatchStart;
    let calls = 0;
    vi.spyOn(sys, 'linkBatchStart').mockImplementation((...a: Parameters<typeof real>) => {
      if (++calls === 3) return Promise.reject(new Error('internal: the third call'));
      return real(...a);
    });
    const open = fds();
    await expect(runUnify([0, 1, 2, 3].map((g) => path.join(top, `g${g}`)), { cache: false })).rejects.toThrow('internal: the third call');
    expect(calls).toBe(3);
    expect(fds()).toBe(open);
  });
});
