// The capacity model's pure pieces, on inodes built by hand (the whole
// model on real trees is in capacity.test.ts).
import { describe, expect, it } from 'vitest';
import { topDirectory } from '../../src/report/capacity-model.js';
import type { DirNode, FileRec, Inode, Root } from '../../src/core/types.js';
import { FileType, type Stat } from '../../src/core/stat.js';
import { dirAt } from '../helpers/nodes.js';

const root: Root = { index: 0, path: '/g0', fd: -1, dev: 1, ino: 100, mntId: 1 };

function mk(over: Partial<Stat> = {}, xattrs = ''): Inode {
  const stat: Stat = {
    type: FileType.Regular, mode: 0o100644, uid: 0, gid: 0, nlink: 1, ino: 5, dev: 1,
    size: 100, blocks: 8, mtimeSec: 1, mtimeNsec: 0, ctimeSec: 1, ctimeNsec: 0, mntId: 1, ...over,
  };
  return { dev: stat.dev, ino: stat.ino, stat, paths: [], hash: 7n, xattrs };
}

function file(rel: string): FileRec {
  const parts = rel.split('/');
  const dir: DirNode = dirAt(root, parts.slice(0, -1).join('/'));
  return { dir, name: Buffer.from(parts.at(-1)!), stat: mk().stat };
}

describe('topDirectory', () => {
  it('keeps the first three components of the directory, the same for every guest', () => {
    expect(topDirectory(file('usr/share/doc/bash/README'))).toBe('/usr/share/doc');
    expect(topDirectory(file('usr/lib/x86_64-linux-gnu/libc.so.6'))).toBe('/usr/lib/x86_64-linux-gnu');
    expect(topDirectory(file('usr/bin/ls'))).toBe('/usr/bin');
    expect(topDirectory(file('top-level-file'))).toBe('/');
    expect(topDirectory(file('usr/share/doc/bash/README'), 1)).toBe('/usr');
  });
});
