// The hash cache's prune at save (commands/session.ts saveSessionCache): a
// rerun whose lookups found every entry of its shards skips it (nothing
// could be dropped), and any run that did not still drops the entries of
// inodes it no longer saw. Entries are counted through the cache itself,
// reopened after each run; which files exist comes from the test's own rm.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { HashCache } from '../../src/state/cache.js';
import { O, sys } from '../../src/os/sys.js';
import { loadHashKey, KEY_FILE } from '../../src/state/hash-key.js';
import { rmTree, runUnify, tempDir, testStateDir, writeFile } from '../helpers/tree.js';

let dir: string;
let cacheDir: string;
const guests = () => ['g1', 'g2', 'g3'].map((g) => path.join(dir, g));
/** Files changed within a second of a run are not cached (state/cache.ts RACY_SECONDS). */
const settle = () => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1100);

beforeEach(() => {
  dir = tempDir();
  cacheDir = path.join(dir, 'cache');
  for (const g of guests()) {
    writeFile(path.join(g, 'lib/a.so'), { content: Buffer.alloc(20_000, 1) });
    writeFile(path.join(g, 'bin/b'), { content: Buffer.alloc(30_000, 2) });
    writeFile(path.join(g, 'doc/c'), { content: Buffer.alloc(40_000, 3) });
  }
  settle();
});
afterEach(() => {
  vi.restoreAllMocks();
  rmTree(dir);
});

/** Live entries in the shards of all three guests. */
function entries(): number {
  const fp = loadHashKey(path.join(testStateDir(), KEY_FILE), { create: true }).fingerprint;
  const roots = guests().map((g, index) => {
    const st = fs.statSync(g);
    return { index, path: fs.realpathSync(g), fd: -1, dev: st.dev, ino: st.ino, mntId: 0 };
  });
  const c = new HashCache(fp, roots, { fd: sys.open(cacheDir, O.RDONLY | O.DIRECTORY | O.CLOEXEC), path: cacheDir });
  try {
    c.load(() => {});
    return c.size;
  } finally {
    c.close();
  }
}

describe('the hash cache prune at save', () => {
  it('is skipped by a rerun that found every entry, and still drops the entries of removed files otherwise', async () => {
    const prunes = vi.spyOn(HashCache.prototype, 'pruneTo');
    const run = async () => (await runUnify(guests(), { dryRun: true, cache: cacheDir })).report;
    expect((await run()).hashed.files).toBe(9);
    expect(prunes).not.toHaveBeenCalled(); // no shards yet: every entry (none) found
    expect(entries()).toBe(9);

    const again = await run();
    expect(again.hashed).toMatchObject({ files: 0, cacheHits: 9 });
    expect(prunes).not.toHaveBeenCalled(); // every entry found
    expect(entries()).toBe(9);

    // doc/c of g1 stays (seen, but no longer a candidate: no other copy), g2's and g3's are gone.
    fs.rmSync(path.join(dir, 'g2/doc/c'));
    fs.rmSync(path.join(dir, 'g3/doc/c'));
    expect((await run()).hashed).toMatchObject({ files: 0, cacheHits: 6 });
    expect(prunes).toHaveBeenCalledTimes(1);
    expect(entries()).toBe(7);
  });
});
