// The settled mark cannot be written (the state directory's filesystem is
// full): the exchange has happened, so the old inode sits at its temporary
// name. The error must name that name and say what it holds, and nothing
// more may be deleted. The failure is injected through the journal object;
// the guest files are real, checked with stat and their bytes.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { link } from '../../src/change/link.js';
import type { JournalLine } from '../../src/change/journal.js';
import { codedError, type FileError } from '../../src/core/errors.js';
import { printable } from '../../src/core/paths.js';
import { compileRules } from '../../src/pipeline/excludes.js';
import { groupFiles } from '../../src/pipeline/group.js';
import { splitByContent } from '../../src/pipeline/hash.js';
import { plan } from '../../src/pipeline/plan.js';
import { closeRoots, openRoots } from '../../src/pipeline/roots.js';
import { walk } from '../../src/pipeline/walk.js';
import { inode, rmTree, sh, tempDir, writeFile } from '../helpers/tree.js';

let dir: string;
beforeEach(() => {
  dir = tempDir();
});
afterEach(() => {
  rmTree(dir);
});

it('a settled mark the journal cannot take: the error names the temporary name and what it holds; nothing else is deleted', async () => {
  const content = Buffer.from('the same bytes\n');
  writeFile(path.join(dir, 'g1/f'), { content });
  fs.linkSync(path.join(dir, 'g1/f'), path.join(dir, 'g1/f2')); // the canonical: more links
  // A name no terminal should get raw: a newline in it (the temporary name is beside it).
  const name = 'dup\nname';
  writeFile(path.join(dir, 'g2', name), { content });
  const canonical = inode(path.join(dir, 'g1/f'));
  const dup = inode(path.join(dir, 'g2', name));

  const roots = openRoots(['g1', 'g2'].map((g) => path.join(dir, g)));
  const errors: FileError[] = [];
  const onError = (e: FileError) => errors.push(e);
  const walked = await walk(roots, { matcher: compileRules([]), minSize: 1, maxSize: Infinity, onError });
  const { groups } = groupFiles(walked.files, { ignoreMtime: false });
  const thePlan = plan(await splitByContent(groups, { seed: 0n, policy: { ignoreMtime: false }, onError }));
  expect(thePlan.linksPlanned).toBe(1);

  const lines: JournalLine[] = [];
  const journal = {
    record(line: JournalLine) {
      if ('settled' in line) throw codedError('ENOSPC', 'injected: no space left on device');
      lines.push(line);
    },
  };
  const r = await link(thePlan, { ignoreMtime: false, onError, journal });
  closeRoots(roots);

  // The entry was journalled before the link; its temporary name is still there.
  expect(lines).toHaveLength(1);
  const tmp = Buffer.from((lines[0] as { tmp: string }).tmp, 'hex');
  const left = sh('find', path.join(dir, 'g2'), '-name', '.vunify.*').split('\n').filter(Boolean);
  expect(left).toEqual([path.join(dir, 'g2', tmp.toString())]);
  // It holds the old inode, bytes intact; the name holds the canonical.
  expect(inode(left[0]!)).toBe(dup);
  expect(fs.readFileSync(left[0]!).equals(content)).toBe(true);
  expect(inode(path.join(dir, 'g2', name))).toBe(canonical);
  expect(fs.statSync(path.join(dir, 'g1/f')).nlink).toBe(3);
  // The one error names the temporary name (printable) and what it holds.
  expect(r.skipped).toBe(1);
  expect(errors).toHaveLength(1);
  expect(errors[0]!.code).toBe('ENOSPC');
  expect(errors[0]!.message).toContain(printable(tmp));
  expect(errors[0]!.message).toMatch(/journal could not record it/);
  expect(errors[0]!.message).toMatch(/file that was at this name/);
});
