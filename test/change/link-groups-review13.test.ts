// Review 13: linkBatched with both groups in use (more sets than one call
// takes, 2 x 64). Pool.load() writes a group's next call (its pairs' names
// into the group's own names buffer, its segments, its canonicals' stats)
// while the other group's call still runs on the addon's threads, and
// run() starts it once that call is taken in. Nothing load() writes may
// reach the running call: a name or a segment changed under it sends its
// pairs to the JS path (FALLBACK: on rows, the set builds its objects) or
// worse. And nothing done between load() and run() may change what the
// loaded group holds: a pair handed back in the other group's call is
// finished (swap.ts, journal lines) between the two, on one thread (the
// fault hook), and then the loaded call runs as loaded.
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { LINK_ARRAY, sys } from '../../src/os/sys.js';
import { RowSet } from '../../src/pipeline/plan-rows.js';
import { linkerTestDir, put, threeWays } from '../helpers/link-ways.js';
import { runUnify } from '../helpers/tree.js';

const testDir = linkerTestDir();
const SG = LINK_ARRAY.seg;

/** `sets` sets of `per` copies in each of two guests, each set in a directory of its own: sets x (2 per - 1) links. */
const manySets = (sets: number, per: number, bytes: number) => (top: string) => {
  for (let g = 0; g < 2; g++)
    for (let s = 0; s < sets; s++) {
      const text = `set ${s} `.padEnd(64, '.') + '\n';
      for (let k = 0; k < per; k++) put(path.join(top, `g${g}`, `s${String(s).padStart(3, '0')}`, `f${k}`), text.repeat(bytes / 64));
    }
};

describe('linkBatched, both groups in flight (review 13)', () => {
  it('a call loaded while the other runs: every pair of every call linked by the addon, none left to the JS path', async () => {
    // 300 sets of 23 pairs: five calls of ~1,500 pairs each on the addon's
    // threads; while one runs, this thread takes in the last one and loads
    // the next (that a names buffer shared by the two groups fails here
    // shows the overlap: review 13).
    const real = sys.linkBatchStart;
    let calls = 0;
    const counts = new Set<number>();
    vi.spyOn(sys, 'linkBatchStart').mockImplementation((segs, ...rest) => {
      calls++;
      // what load() wrote for this call, as it starts: segments of sets of 23 pairs
      for (let k = 0; k < segs.length / SG.length; k++) counts.add(segs[k * SG.length + SG.count]!);
      return real(segs, ...rest);
    });
    const rows = await threeWays(testDir(), manySets(300, 12, 2048));
    expect(calls).toBe(2 * 5); // objects and rows: 64, 64, 64, 64, 44 sets
    expect([...counts]).toEqual([23]);
    expect(rows.errors).toEqual([]);
    expect(rows.summary.linksMade).toBe(300 * 23);
    expect(rows.summary.skipped).toBe(0);
    expect(rows.shared).toHaveLength(300);
    expect(rows.leftovers).toEqual([]);
    // no pair of any call went back to the JS path (a FALLBACK builds the set's objects)
    expect(rows.built).toBe(0);
  }, 180_000);

  it.each([
    // in the first call (group 0), its second call, and in a call of group 1
    ['exchange', 40],
    ['exchange', 1500],
    ['link', 2200],
  ] as const)('a pair handed back at its %s (the %i-th) while the other group is loaded: finished, and the loaded call runs as loaded', async (step, nth) => {
    const rows = await threeWays(testDir(), manySets(150, 12, 2048), { step, nth, errno: os.constants.errno.ENOSPC });
    expect(rows.errors).toHaveLength(1);
    expect(rows.errors[0]).toMatch(/^ENOSPC TOP\/g\d\/s\d{3}\/f\d+ no space left on device/);
    expect(rows.summary.linksMade).toBe(150 * 23 - 1);
    expect(rows.summary.skipped).toBe(1);
    expect(rows.shared).toHaveLength(151);
    expect(rows.leftovers).toEqual([]);
    // the set of the pair handed back built its objects (and so did the sets its call stopped before they started)
    expect(rows.built).toBeGreaterThanOrEqual(1);
  }, 180_000);

  it('the names buffers of the two groups hold no more than memory-limit.ts charges for paths (LINK_FIXED: "up to 16 MiB")', async () => {
    // 140 sets of 34 copies, all in one directory ~3,000 bytes deep (43 of
    // its pairs fill NAME_BYTES, 128 KiB): each set's call takes its 33
    // ops, ~100 KiB of names, and a group of 64 sets ~6.3 MiB. A names
    // buffer grows to 1.5 times what a call needs: one buffer for both
    // groups (before review 13) ~9.5 MiB, one per group twice that.
    const deep = Array.from({ length: 12 }, (_, k) => `${'d'.repeat(240)}${k}`).join('/');
    const top = path.join(testDir(), 'rows');
    for (let s = 0; s < 140; s++) for (let k = 0; k < 34; k++) put(path.join(top, 'g0', deep, `s${s}-${k}`), `deep set ${s}\n`.repeat(8));
    const real = Buffer.allocUnsafe;
    const sizes: number[] = [];
    vi.spyOn(Buffer, 'allocUnsafe').mockImplementation((n: number) => {
      if (n >= 1 << 20 && new Error().stack!.includes('writeNames')) sizes.push(n);
      return real(n);
    });
    const objects = vi.spyOn(RowSet.prototype, 'objects');
    const { report, errors } = await runUnify([path.join(top, 'g0')], { cache: false });
    const built = objects.mock.calls.length;
    vi.restoreAllMocks();
    expect(errors).toEqual([]);
    expect(report.summary.linksMade).toBe(140 * 33);
    expect(built).toBe(0);
    // the buffers kept (the pool's, for the next run too): at most the two largest made
    const [a = 0, b = 0] = sizes.sort((x, y) => y - x);
    expect(a).toBeGreaterThan(6 << 20); // not vacuous: a group's call took that much
    expect(a + b).toBeLessThanOrEqual(16 << 20);
  }, 180_000);
});
