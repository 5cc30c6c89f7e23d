// A swap that fails while the guest changes the canonical in a way only its
// ctime shows (a rewrite with the mtime put back, a touch to the same
// mtime): the linker may go on linking to it, but only after a full
// comparison, and the hash cache must no longer vouch for it. Real files;
// the failure of the exchange is injected, the guest's change is real, and
// the results are read back with stat and the files' bytes.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, expect, it, vi } from 'vitest';
import { codedError } from '../../src/core/errors.js';
import { RENAME_EXCHANGE, sys } from '../../src/os/sys.js';
import { inode, rmTree, runUnify, sh, tempDir, writeFile } from '../helpers/tree.js';

let dir: string;
beforeEach(() => {
  dir = tempDir();
});
afterEach(() => {
  vi.restoreAllMocks();
  rmTree(dir);
});

const A = Buffer.alloc(64 << 10, 'A');
const G = (...p: string[]) => path.join(dir, ...p);

/**
 * g1/c has four links (the canonical), g2/p1..p3 are three links of one
 * duplicate inode: the linker links p1, then its exchange at p2 fails
 * while `guest` changes the canonical, then it comes to p3.
 */
async function failedSwapWhile(guest: (canonical: string) => void) {
  writeFile(G('g1/c'), { content: A });
  for (const n of ['c2', 'c3', 'c4']) fs.linkSync(G('g1/c'), G('g1', n));
  writeFile(G('g2/p1'), { content: A });
  for (const n of ['p2', 'p3']) fs.linkSync(G('g2/p1'), G('g2', n));
  const canonical = inode(G('g1/c'));
  const dup = inode(G('g2/p1'));
  // Older than the cache's racy window, so the hashes are remembered.
  await new Promise((r) => setTimeout(r, 1500));
  const realRename = sys.renameAt;
  let failed = false;
  vi.spyOn(sys, 'renameAt').mockImplementation((a, b, c, d, flags = 0) => {
    if (flags === RENAME_EXCHANGE && !failed && d.toString() === 'p2') {
      failed = true;
      guest(G('g1/c'));
      throw codedError('EIO', 'injected: exchange failed');
    }
    return realRename(a, b, c, d, flags);
  });
  const cache = G('hashes.cache');
  const run = await runUnify([G('g1'), G('g2')], { cache });
  vi.restoreAllMocks();
  expect(failed).toBe(true);
  return { run, canonical, dup, cache };
}

// The linker takes one duplicate inode's paths in a row and drops its
// shortcut before each swap, so this holds on its own; it guards that the
// ctime absorbed after the failure never stands in for a comparison.
it('a rewrite of the canonical with the mtime put back, during a failed swap: the next path of a duplicate compared before is compared again, and kept', async () => {
  const B = Buffer.alloc(A.length, 'B');
  const { run, canonical, dup, cache } = await failedSwapWhile((c) => {
    const mtime = sh('stat', '-c', '%.9Y', c).trim();
    fs.writeFileSync(c, B); // in place: same inode, same size
    sh('touch', '-m', '-d', `@${mtime}`, c);
  });
  expect(run.errors.map((e) => e.message)).toEqual([expect.stringContaining('injected')]);
  expect(run.report.summary.linksMade).toBe(1); // p1 only, before the guest's change
  expect(inode(G('g2/p1'))).toBe(canonical);
  // p2 (the failed swap) and p3 still hold the duplicate inode, with its bytes.
  for (const p of ['p2', 'p3']) {
    expect(inode(G('g2', p))).toBe(dup);
    expect(fs.readFileSync(G('g2', p)).equals(A)).toBe(true);
  }
  expect(fs.readFileSync(G('g1/c')).equals(B)).toBe(true);
  expect(sh('find', dir, '-name', '.vunify.*')).toBe('');
  // The next runs, with the cache: the dry run plans only what the linker does.
  const dry = await runUnify([G('g1'), G('g2')], { cache, dryRun: true });
  const next = await runUnify([G('g1'), G('g2')], { cache });
  expect(next.errors).toEqual([]);
  expect(next.report.summary.contentSplits?.sets ?? 0).toBe(0);
  expect(next.report.summary.linksMade).toBe(dry.report.summary.linksPlanned);
  expect(inode(G('g2/p3'))).toBe(dup);
});

it('a canonical whose ctime moved during a failed swap is forgotten by the hash cache, not carried over to the new ctime', async () => {
  const { run, canonical } = await failedSwapWhile((c) => {
    // The mtime it has: only the ctime moves, as with an xattr or a rewrite with the mtime put back.
    sh('touch', '-m', '-d', `@${sh('stat', '-c', '%.9Y', c).trim()}`, c);
  });
  expect(run.errors.map((e) => e.message)).toEqual([expect.stringContaining('injected')]);
  // p3 was compared in full (its bytes are the same), and linked.
  expect(inode(G('g2/p1'))).toBe(canonical);
  expect(inode(G('g2/p3'))).toBe(canonical);
  expect(fs.readFileSync(G('g2/p2')).equals(A)).toBe(true);
  // The next dry run reads the canonical again: no entry of the cache vouches for it.
  const dry = await runUnify([G('g1'), G('g2')], { cache: G('hashes.cache'), dryRun: true });
  expect(dry.report.hashed.cacheHits).toBe(0);
  expect(dry.report.summary.linksPlanned).toBe(1); // p2, still the duplicate
});
