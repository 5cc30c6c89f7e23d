// Recovery of a run killed after the exchange, when the guest has renamed
// the directory holding the temporary name since: the leftover cannot be
// reached by its journalled path, and must be reported, never taken for
// "nothing left" and forgotten with the journal. Real files and journal.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, expect, it, vi } from 'vitest';
import { killAtFirstUnlink } from '../helpers/killed-run.js';
import { rmTree, runUnify, sh, tempDir, testStateDir, writeFile } from '../helpers/tree.js';

let dir: string;
beforeEach(() => {
  dir = tempDir();
});
afterEach(() => {
  vi.restoreAllMocks();
  rmTree(dir);
});

it('a leftover temporary name whose directory the guest renamed is reported', async () => {
  const roots = ['g1', 'g2'].map((g) => path.join(dir, g));
  for (const r of roots) writeFile(path.join(r, 'd', 'f'), { content: 'the same bytes\n' });
  const restore = killAtFirstUnlink(testStateDir());
  await runUnify(roots, { cache: false });
  expect(restore()).toBe(true);
  const left = sh('find', dir, '-name', '.vunify.*').split('\n').filter(Boolean);
  expect(left).toHaveLength(1);
  // The guest renames the directory that holds it.
  const d = path.dirname(left[0]!);
  fs.renameSync(d, d + '-renamed');
  const { errors } = await runUnify(roots, { cache: false });
  const now = sh('find', dir, '-name', '.vunify.*').split('\n').filter(Boolean);
  // Either put right, or said.
  expect(now).toHaveLength(1); // the walk never enters .vunify names' directory by the old path
  if (now.length) expect(errors.map((e) => e.message).join('\n')).toMatch(/temporary name/);
});
