// A guest process that holds its file open and writes to it while the
// linker compares it after the exchange (settle): the write must not be
// deleted with the old inode. Real files; the write lands through the
// guest's own descriptor, checked by reading every file left in the tree.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, expect, it, vi } from 'vitest';
import { RENAME_EXCHANGE, sys } from '../../src/os/sys.js';
import { rmTree, runUnify, tempDir, writeFile } from '../helpers/tree.js';

let dir: string;
beforeEach(() => {
  dir = tempDir();
});
afterEach(() => {
  vi.restoreAllMocks();
  rmTree(dir);
});

/** Every regular file under `d`, with its bytes. */
function files(d: string): Buffer[] {
  const out: Buffer[] = [];
  for (const e of fs.readdirSync(d, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(fs.readFileSync(path.join(e.parentPath, e.name)));
  }
  return out;
}

it('a write through a held descriptor during the comparison after the exchange is kept', async () => {
  const content = randomBytes(4 << 20); // several comparison chunks
  for (const g of ['g1', 'g2']) writeFile(path.join(dir, g, 'f'), { content });
  // The guests' processes hold their files open for writing, from before the run.
  const held = ['g1', 'g2'].map((g) => fs.openSync(path.join(dir, g, 'f'), 'r+'));
  const mark = Buffer.from('WRITTEN BY THE GUEST AFTER THE EXCHANGE');
  let exchanged = false;
  let reads = 0;
  let wrote = false;
  const realRename = sys.renameAt;
  vi.spyOn(sys, 'renameAt').mockImplementation((a, b, c, d, flags = 0) => {
    realRename(a, b, c, d, flags);
    if (flags === RENAME_EXCHANGE) exchanged = true;
  });
  const realRead = sys.readSync;
  vi.spyOn(sys, 'readSync').mockImplementation((fd, buf, len, pos) => {
    const n = realRead(fd, buf, len, pos);
    // Once the first chunk of both was compared after the exchange: the
    // guest writes at offset 0 of its old file (the one only the
    // temporary name holds now).
    if (exchanged && !wrote && ++reads === 3) {
      for (const h of held) {
        if (fs.fstatSync(h).nlink === 1) {
          fs.writeSync(h, mark, 0, mark.length, 0);
          wrote = true;
        }
      }
    }
    return n;
  });
  try {
    await runUnify([path.join(dir, 'g1'), path.join(dir, 'g2')], { cache: false });
  } finally {
    vi.restoreAllMocks();
    for (const h of held) fs.closeSync(h);
  }
  expect(wrote).toBe(true);
  // The guest's bytes are somewhere in the tree (at its name, or kept beside it).
  expect(files(dir).some((b) => b.subarray(0, mark.length).equals(mark))).toBe(true);
});
