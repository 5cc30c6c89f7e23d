// Recovery of one journal entry (src/change/recover.ts), on real files and
// real journals left as a kill leaves them.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { sys } from '../../src/os/sys.js';
import { killAtFirstUnlink } from '../helpers/killed-run.js';
import { rmTree, runUnify, tempDir, testStateDir, writeFile, sh, fileContents } from '../helpers/tree.js';

let dir: string;
beforeEach(() => {
  dir = tempDir();
});
// The linker's addon batches back on, the fault hook cleared, after tests that turned to the JS path.
afterEach(() => {
  sys.nativeLinker = true;
  sys.setLinkFault();
});

afterEach(() => {
  vi.restoreAllMocks();
  rmTree(dir);
});

describe('recovery: a guest writing while the old inode is compared', () => {
  // Recovery of a run killed after the exchange, before its settled mark: the
  // old inode at the temporary name is compared with the one at the name and
  // removed if identical. A guest process that holds the old inode open and
  // writes to it during that comparison must not lose the write. Real files,
  // a real journal left as a kill leaves it.


  it('a write through a held descriptor while recovery compares the old inode is kept', async () => {
    sys.nativeLinker = false; // the JS path: killed at its seam
    const content = randomBytes(4 << 20);
    const roots = ['g1', 'g2'].map((g) => path.join(dir, g));
    for (const r of roots) writeFile(path.join(r, 'f'), { content });
    const held = roots.map((r) => fs.openSync(path.join(r, 'f'), 'r+'));
    const state = testStateDir();
    try {
      const restore = killAtFirstUnlink(state);
      await runUnify(roots, { cache: false });
      expect(restore()).toBe(true);
      // Killed after the exchange but before the settled mark was written.
      let journals = 0;
      for (const n of fs.readdirSync(state)) {
        if (!n.startsWith('journal.1.')) continue;
        const p = path.join(state, n);
        fs.writeFileSync(p, fs.readFileSync(p, 'utf8').split('\n').filter((l) => !l.includes('"settled"')).join('\n'));
        journals++;
      }
      expect(journals).toBe(1);
      const mark = Buffer.from('WRITTEN BY THE GUEST DURING RECOVERY');
      let reads = 0;
      let wrote = false;
      const realRead = sys.readSync;
      vi.spyOn(sys, 'readSync').mockImplementation((fd, buf, len, pos) => {
        const n = realRead(fd, buf, len, pos);
        if (!wrote && ++reads === 3) {
          for (const h of held) {
            if (fs.fstatSync(h).nlink === 1) {
              fs.writeSync(h, mark, 0, mark.length, 0);
              wrote = true;
            }
          }
        }
        return n;
      });
      await runUnify(roots, { cache: false });
      vi.restoreAllMocks();
      expect(wrote).toBe(true);
      expect(fileContents(dir).some((b) => b.subarray(0, mark.length).equals(mark))).toBe(true);
    } finally {
      for (const h of held) fs.closeSync(h);
    }
  });
});

describe('recovery: the directory of a leftover name was moved', () => {
  // Recovery of a run killed after the exchange, when the guest has renamed
  // the directory holding the temporary name since: the leftover cannot be
  // reached by its journalled path, and must be reported, never taken for
  // "nothing left" and forgotten with the journal. Real files and journal.

  it('a leftover temporary name whose directory the guest renamed is reported', async () => {
    sys.nativeLinker = false; // the JS path: killed at its seam
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
});
