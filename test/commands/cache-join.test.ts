// The hash cache's merge join on rows (commands/session.ts fromCacheRows):
// each root's rows sorted by inode number, small ones and those of 2^32 and
// more (btrfs, XFS) alike; a root whose shard has no entry is not joined. Synthetic tables and a real
// cache directory: every candidate must be found, no file read, and the
// entries of inodes gone from a joined root dropped at save, the others kept.
import fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { noProgress } from '../../src/core/progress.js';
import type { Root } from '../../src/core/types.js';
import { hashRowGroups, type Session } from '../../src/commands/session.js';
import { MemoryBudget } from '../../src/os/memory-limit.js';
import { O, sys } from '../../src/os/sys.js';
import { groupRows, inodeRows } from '../../src/pipeline/group.js';
import { hashOf } from '../../src/pipeline/rows.js';
import { TableBuilder } from '../../src/pipeline/table-builder.js';
import { inoOf } from '../../src/pipeline/table.js';
import { ELF_NO, HashCache } from '../../src/state/cache.js';
import { deriveKey } from '../../src/state/hash-key.js';
import { rmTree, tempDir } from '../helpers/tree.js';

const key = deriveKey(Buffer.alloc(32, 7));
const roots: Root[] = [0, 1, 2].map((index) => ({ index, path: `/g${index}`, fd: -1, dev: 5, ino: 2 + index, mntId: 9 }));
const SIZE = 4096;
const stat = (ino: number, size = SIZE) => ({ ino, size, blocks: 8, uid: 0, gid: 0, mode: 0o100644, nlink: 2, mtimeSec: 1000, mtimeNsec: 5, ctimeSec: 1000, ctimeNsec: 7 });
const hashFor = (ino: number) => BigInt(ino) * 0x9e3779b97f4a7c15n & 0xffffffffffffffffn;

let dir: string;
beforeEach(() => {
  dir = tempDir();
});
afterEach(() => rmTree(dir));

function openCache(): HashCache {
  const c = new HashCache(key.fingerprint, roots, { fd: sys.open(dir, O.RDONLY | O.DIRECTORY | O.CLOEXEC), path: dir });
  c.load((m) => {
    throw new Error(m);
  }, () => {});
  return c;
}

/** Entries of `inos` under root 0's shard (none under the others), written by a save as a run would. */
function seed(inos: number[]): void {
  const c = openCache();
  for (const ino of inos) {
    const s = stat(ino, ino === SINGLE ? 100 : SIZE);
    c.put(0, 5, ino, s.size, s.mtimeSec, s.mtimeNsec, s.ctimeSec, s.ctimeNsec, hashFor(ino), '', 0, 0, ELF_NO);
  }
  c.save();
  c.close();
}

const SINGLE = 11; // an inode alone in its size: no candidate, its entry still kept
const GONE = 2 ** 32 + 6; // cached, no longer under the root: dropped at save

/** Root 0 holds every inode (the one the cache files it under); roots 1 and 2 hold second paths of some (after unifying). */
function tables(candidates: number[]) {
  const b = new TableBuilder();
  for (const r of roots) b.addRoot(r.index, r.ino);
  let name = 0;
  for (const ino of [...candidates, SINGLE]) {
    const s = stat(ino, ino === SINGLE ? 100 : SIZE);
    b.addFile(0, Buffer.from(`f${name++}`), s);
    if (ino % 2) b.addFile(1, Buffer.from(`f${name++}`), s);
    b.addFile(2, Buffer.from(`f${name++}`), s);
  }
  return { tables: b.build(), roots };
}

async function join(candidates: number[]) {
  seed([...candidates, SINGLE, GONE]);
  const scan = tables(candidates);
  const inodes = inodeRows(scan);
  const groups = groupRows(scan, inodes, { ignoreMtime: false });
  const errors: unknown[] = [];
  const cache = openCache();
  const s = {
    roots,
    rules: [],
    progress: noProgress,
    log: { errors, durations: {}, onError: (e: unknown) => errors.push(e), timed() {}, finish() {} },
    budget: new MemoryBudget(undefined),
    key,
    cache,
  } as unknown as Session;
  const r = await hashRowGroups(s, { paths: roots.map((x) => x.path), rules: [], noDefaultExcludes: true }, scan, inodes, groups);
  const found = Array.from({ length: groups.candidates }, (_, m) => {
    const row = inodes.head(m);
    return { ino: inoOf(scan.tables, row), hash: hashOf(r.read, m) };
  });
  cache.save();
  cache.close();
  const after = openCache();
  const kept = (ino: number) => after.lookup({ ...stat(ino, ino === SINGLE ? 100 : SIZE), dev: 5 }, 0) !== undefined;
  const out = { hashed: r.hashed, found, errors, kept: { single: kept(SINGLE), gone: kept(GONE), all: candidates.every(kept) } };
  after.close();
  expect(fs.readdirSync(dir).filter((f) => f.endsWith('.shard')).length).toBeGreaterThan(0);
  return out;
}

describe('the hash cache joined with the rows', () => {
  it.each([
    ['inode numbers below 2^32', [7, 9, 12, 13, 4000000000]],
    ['inode numbers of 2^32 and more among them', [7, 2 ** 32 + 5, 9, 2 ** 33 + 1, 12, 2 ** 32 + 13, 13]],
  ])('%s: every candidate from the cache, nothing read, gone entries dropped', async (_, candidates) => {
    const r = await join(candidates);
    expect(r.errors).toEqual([]);
    expect(r.hashed).toEqual({ files: 0, bytes: 0, cacheHits: candidates.length });
    expect(r.found.map((x) => x.ino).sort((a, b) => a - b)).toEqual([...candidates].sort((a, b) => a - b));
    for (const x of r.found) expect(x.hash).toBe(hashFor(x.ino));
    expect(r.kept).toEqual({ single: true, gone: false, all: true });
  });
});
