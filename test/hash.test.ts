// The hash stage, in this thread and in worker threads: same hashes, same errors.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { compileRules } from '../src/excludes.js';
import type { FileError } from '../src/errors.js';
import { groupFiles } from '../src/group.js';
import { getHasher, splitByContent } from '../src/hash.js';
import { closeRoots, openRoots } from '../src/roots.js';
import { walk } from '../src/walk.js';
import { rmTree, tempDir, writeFile } from './helpers/tree.js';

let dir: string;
beforeEach(() => {
  dir = tempDir();
  for (const g of ['a', 'b', 'c']) {
    writeFile(path.join(dir, g, 'small'), { content: 'x'.repeat(200) });
    writeFile(path.join(dir, g, 'big'), { content: Buffer.alloc(3 * 2 ** 20 + 17, g === 'c' ? 2 : 1) });
    writeFile(path.join(dir, g, 'gone'), { content: 'vanishes' });
  }
});
afterEach(() => rmTree(dir));

async function hashAll(workers: number) {
  writeFile(path.join(dir, 'b', 'gone'), { content: 'vanishes' });
  const roots = openRoots(['a', 'b', 'c'].map((g) => path.join(dir, g)));
  const errors: FileError[] = [];
  try {
    const walked = await walk(roots, { matcher: compileRules([]), minSize: 1, maxSize: Infinity, onError: () => {} });
    const { groups } = groupFiles(walked.files, { ignoreMtime: false });
    fs.unlinkSync(path.join(dir, 'b', 'gone')); // after the scan, before hashing
    const sets = await splitByContent(groups, { workers, onError: (e) => errors.push(e) });
    const hashes = Object.fromEntries(groups.flat().map((i) => [`${i.paths[0]!.dir.root.path}/${i.paths[0]!.name}`, i.hash]));
    return { sets: sets.map((s) => s.length).sort(), hashes, errors };
  } finally {
    closeRoots(roots);
  }
}

describe('splitByContent', () => {
  it('gives the same hashes and errors in worker threads as in this thread', async () => {
    const here = await hashAll(0);
    const threads = await hashAll(2);
    expect(threads).toEqual(here);
    // Independent check of one value: XXH64 of 200 'x' bytes, via xxhash-wasm directly.
    const h = await getHasher();
    expect(here.hashes[path.join(dir, 'a') + '/small']).toBe(h.h64Raw(Buffer.alloc(200, 'x')));
    // small: 3 alike; big: a and b alike (c differs); gone: a and c alike, b vanished.
    expect(here.sets).toEqual([2, 2, 3]);
    expect(here.errors.map((e) => [e.path, e.code])).toEqual([[path.join(dir, 'b', 'gone'), 'ENOENT']]);
  });
});
