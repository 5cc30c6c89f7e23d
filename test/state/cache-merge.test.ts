// The bytes of the hash cache's shards, against a model written from the
// README (test/helpers/cache-model.ts), not from cache.ts: seeded scripts of
// runs (puts, refreshes, forgets, replaced links, pruned inodes) over roots
// on one device and a device of none of them, with inode numbers across
// 2^32 and past 2^53, racy and unstorable times, classes that change from
// row to row, empty deltas, and a class table filled past 65,536. A root's
// first save (writeDelta) and every later save (merge) must write exactly
// the model's bytes.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HashCache } from '../../src/state/cache.js';
import { sys } from '../../src/os/sys.js';
import type { Root } from '../../src/core/types.js';
import { drive, model, READ_AT, rootOf, script, shardPathIn, type CacheClass, type Entry, type Op } from '../helpers/cache-model.js';
import { rmTree, tempDir } from '../helpers/tree.js';

let dir: string;
let roots: Root[];
const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const xxh64 = (b: Buffer) => sys.xxh64(b) as bigint;

beforeEach(() => {
  dir = tempDir('vunify-cache-merge-');
  roots = ['g1', 'g2', 'g3'].map((g, i) => {
    fs.mkdirSync(path.join(dir, g));
    return rootOf(path.join(dir, g), i);
  });
});
afterEach(() => rmTree(dir));

function check(runs: Op[][]) {
  const cacheDir = path.join(dir, 'cache');
  const got = drive(HashCache as unknown as CacheClass, cacheDir, roots, runs, shardPathIn(cacheDir, sha));
  const want = model(roots, runs, xxh64);
  for (let run = 0; run < runs.length; run++)
    for (let r = 0; r < roots.length; r++) {
      const g = got[run]![r]!, w = want[run]![r]!;
      // The first differing byte, for a readable failure.
      let at = 0;
      while (at < Math.min(g.length, w.length) && g[at] === w[at]) at++;
      expect({ run, root: r, length: g.length, firstDiff: at === g.length && g.length === w.length ? -1 : at }).toEqual({ run, root: r, length: w.length, firstDiff: -1 });
    }
  return got;
}

describe('shard bytes, first save and merges, against the model', () => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    it(`script ${seed}`, () => {
      const got = check(script(seed, roots, 5, 400));
      // Not vacuous: the shards hold entries, and merges changed them.
      const counts = got.map((run) => run.map((b) => b.readUInt32LE(24)));
      expect(Math.min(...counts.flat().slice(0, 3))).toBeGreaterThan(10);
      expect(new Set(counts.map((c) => c.join())).size).toBeGreaterThan(2);
    });
  }

  it('runs that put nothing: an empty first shard, then merges of refreshes and forgets alone', () => {
    const e = (ino: number, cs: number): Entry => ({ ino, size: 10, ms: 1_700_000_000, mns: 5, cs, cns: 7, hi: 1, lo: 2, flags: 0, projid: 0, elf: 2, x: '' });
    const dev = roots[0]!.dev;
    check([
      [],
      [{ k: 'put', root: 0, e: e(5, 1_700_000_000) }, { k: 'put', root: 1, e: e(5, 1_700_000_001) }],
      [{ k: 'refresh', dev, ino: 5, size: 10, ms: 1_700_000_000, mns: 5, cs: READ_AT + 100, cns: 1 }],
      [],
      [{ k: 'refresh', dev, ino: 5, size: 11, ms: 1_700_000_000, mns: 5, cs: 1_750_000_000, cns: 1 }],
    ]);
  });

  it('a class table filled past 65,536: the entries of further classes are left out, in a first save and in a merge', () => {
    const e = (ino: number, x: string): Entry => ({ ino, size: 1, ms: 1, mns: 0, cs: 1_700_000_000, cns: 0, hi: ino, lo: 3, flags: 0, projid: 0, elf: 1, x });
    const first: Op[] = [];
    for (let i = 0; i < 65_540; i++) first.push({ k: 'put', root: 0, e: e(10 + 2 * i, `c${i}`) });
    const second: Op[] = [];
    // Between the file's entries: classes already there, and new ones that no longer fit.
    for (let i = 0; i < 300; i++) second.push({ k: 'put', root: 0, e: e(11 + 2 * i, i % 2 ? `c${i}` : `new${i}`) });
    const got = check([first, second]);
    expect(got[0]![0]!.readUInt32LE(28)).toBe(65_536);
  });
});
