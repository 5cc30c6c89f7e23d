// The linker on the plan's rows (change/link.ts linkRows): a run without -v
// links each set through the addon with no object per path, and builds the
// set's objects only when a pair does not link, a path's inode repeats, or
// the canonical cannot be opened. Each case runs one tree three ways (the
// JS path, the addon with the objects' path, the addon on rows) and expects
// the same links, messages, counts and files.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { sys, type LinkStep } from '../../src/os/sys.js';
import { snapshot, writeFile } from '../helpers/tree.js';
import { linkerTestDir, threeWays, unifyWay, type Outcome, type Way } from '../helpers/link-ways.js';

const testDir = linkerTestDir();

/** One content in guests g0..g{n-1}, at f: one set of n - 1 ops. */
const oneSet = (n: number) => (top: string) => {
  for (let g = 0; g < n; g++) writeFile(path.join(top, `g${g}`, 'f'), { content: 'one content\n'.repeat(2000), mtime: '1700000000' });
};

describe('linkRows', () => {
  it('links every set on its rows, building objects only for a set where one inode has two paths', async () => {
    const build = (top: string) => {
      for (const g of ['g1', 'g2', 'g3'])
        for (let d = 0; d < 8; d++)
          for (let k = 0; k < 5; k++) {
            const f = path.join(top, g, `d${d}`, `f${k}`);
            writeFile(f, { content: `content ${d}.${k}\n`.repeat(k === 4 ? 3000 : 1), mtime: '1700000000' });
            // d0's f1 has three names in g1 (the canonical: most links) and two in g3 (two ops of one inode: that set goes the objects' way)
            if (d === 0 && k === 1 && g !== 'g2') for (const n of g === 'g1' ? ['also', 'too'] : ['also']) fs.linkSync(f, path.join(top, g, `d${d}`, n));
          }
    };
    const rows = await threeWays(testDir(), build);
    expect(rows.errors).toEqual([]);
    expect(rows.summary.linksMade).toBe(8 * 5 * 2 + 1);
    expect(rows.shared).toHaveLength(40);
    expect(rows.built).toBe(1);
    expect(rows.leftovers).toEqual([]);
  });

  it.each<[LinkStep, number, number, string[]]>([
    // kept apart, the rest linked
    ['exchange', os.constants.errno.ENOSPC, 5, ['ENOSPC TOP/g3/f no space left on device (ENOSPC, renameat2)']],
    ['link', os.constants.errno.EIO, 5, ['EIO TOP/g3/f input/output error (EIO, linkat)']],
    // settle() checks it again and settles it
    ['settle', os.constants.errno.EIO, 6, []],
    // the old inode stays at its temporary name, and the canonical has a link the set did not expect: the rest is skipped
    [
      'unlink',
      os.constants.errno.EIO,
      2,
      [
        'EIO TOP/g3/f linked, but the old file could not be removed from its temporary name .vunify.* (input/output error (EIO, unlinkat)); it is left there, and the next linking run tries again',
        'ECANONICAL TOP/g4/f canonical TOP/g0/f changed since it was scanned; rest of its set skipped',
      ],
    ],
  ])('a pair mid-set handed back at %s: objects from that pair on, with the same outcome', async (step, errno, linked, errors) => {
    const rows = await threeWays(testDir(), oneSet(7), { step, nth: 3, errno });
    expect(rows.built).toBe(1);
    expect(rows.errors).toEqual(errors);
    expect(rows.summary.linksMade).toBe(linked);
    expect(rows.summary.skipped).toBe(6 - linked);
  });

  it('EMLINK at the third link: the duplicate carries the rest of the set, as on the objects', async () => {
    const rows = await threeWays(testDir(), oneSet(7), { step: 'link', nth: 3, errno: os.constants.errno.EMLINK });
    expect(rows.errors).toEqual([]);
    expect(rows.summary.linksMade).toBe(5);
    expect(new Set(rows.shared.map((s) => s.split(' ').length))).toEqual(new Set([3, 4]));
    expect(rows.built).toBe(1);
  });

  it('a pair the addon leaves to the JS path (FALLBACK: nothing of it changed) is redone there, and the rest linked', async () => {
    const rows = await threeWays(testDir(), oneSet(5), { step: 'open', nth: 3, errno: os.constants.errno.EIO });
    expect(rows.errors).toEqual([]);
    expect(rows.summary.linksMade).toBe(4);
    expect(rows.shared).toHaveLength(1);
    expect(rows.built).toBe(1);
  });

  it('a canonical changed after the scan: the set goes to linkSet whole, which opens it again and says why', async () => {
    const realOpen = sys.openChecked;
    let touched: string | undefined;
    // The first confined open of a canonical's path (linkRows' or linkSet's) finds its mode changed.
    const touch = (top: string) => {
      touched = path.join(top, 'g0', 'f');
      vi.spyOn(sys, 'openChecked').mockImplementation((dirFd, name, expect, how, out) => {
        if (touched && name.toString() === 'f') {
          fs.chmodSync(touched, 0o600);
          touched = undefined;
        }
        return realOpen(dirFd, name, expect, how, out);
      });
    };
    const results: Record<string, Outcome> = {};
    for (const way of ['objects', 'rows'] as Way[]) {
      const top = path.join(testDir(), way);
      oneSet(4)(top);
      const before = snapshot(top, { inodes: true, dirTimes: false });
      touch(top);
      results[way] = await unifyWay(top, way);
      vi.restoreAllMocks();
      // nothing linked; only the canonical's mode moved
      const after = snapshot(top, { inodes: true, dirTimes: false });
      expect([...after].filter(([k, v]) => before.get(k) !== v).map(([k]) => k)).toEqual(['g0/f']);
    }
    expect(results.rows!.errors).toEqual(results.objects!.errors);
    expect(results.rows!.errors).toEqual(['ECHANGED TOP/g0/f file changed since it was scanned']);
    expect(results.rows!.summary.skipped).toBe(3);
    expect(results.rows!.summary.linksMade).toBe(0);
    expect(results.rows!.built).toBe(1);
  });
});
