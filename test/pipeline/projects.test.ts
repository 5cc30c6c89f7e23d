// readDirProjects on real directories: each directory of a candidate path
// is read once, through a confined open checked against the scan; an
// immutable or append-only directory comes back locked (as lsattr shows),
// a directory removed or replaced since the scan stays unknown.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { childNode, rootNode } from '../../src/core/paths.js';
import type { DirNode, FileRec, Inode, Root } from '../../src/core/types.js';
import { O, sys } from '../../src/os/sys.js';
import { readDirProjects } from '../../src/pipeline/projects.js';
import { rmTree, sh, tempDir } from '../helpers/tree.js';

let top = '';
let rootFd = -1;
afterEach(() => {
  if (top) sh('chattr', '-R', '-i', '-a', top);
  if (rootFd >= 0) sys.close(rootFd);
  if (top) rmTree(top);
  top = '';
  rootFd = -1;
});

describe('readDirProjects', () => {
  it('reads each directory once: locked ones as lsattr says, removed or replaced ones left unknown', () => {
    top = tempDir();
    for (const d of ['plain', 'plain/deep', 'immutable', 'append', 'gone', 'swapped', 'other']) fs.mkdirSync(path.join(top, d));
    const st = fs.statSync(top);
    rootFd = sys.open(top, O.PATH | O.DIRECTORY);
    const root: Root = { index: 0, path: top, fd: rootFd, dev: Number(st.dev), ino: Number(st.ino), mntId: 0 } as Root;
    const rn = rootNode(root);
    const nodes = new Map<string, DirNode>([['', rn]]);
    for (const d of ['plain', 'plain/deep', 'immutable', 'append', 'gone', 'swapped']) {
      const s = fs.statSync(path.join(top, d));
      nodes.set(d, childNode(nodes.get(path.dirname(d) === '.' ? '' : path.dirname(d))!, Buffer.from(path.basename(d)), Number(s.dev), Number(s.ino)));
    }
    sh('chattr', '+i', path.join(top, 'immutable'));
    sh('chattr', '+a', path.join(top, 'append'));
    fs.rmdirSync(path.join(top, 'gone'));
    fs.rmdirSync(path.join(top, 'swapped'));
    fs.renameSync(path.join(top, 'other'), path.join(top, 'swapped'));
    // Two inodes with paths in every directory, some shared: each directory is asked once.
    const inodeIn = (...dirs: string[]): Inode =>
      ({ paths: dirs.map((d, k) => ({ dir: nodes.get(d)!, name: Buffer.from(`f${k}`) }) as FileRec) }) as Inode;
    const opened: Buffer[] = [];
    const real = sys.dirXattrs;
    sys.dirXattrs = (fd, paths, expect, out) => {
      opened.push(...paths.toString('latin1').split('\0').slice(0, -1).map((p) => Buffer.from(p, 'latin1')));
      real(fd, paths, expect, out);
    };
    try {
      readDirProjects([inodeIn('', 'plain', 'immutable'), inodeIn('plain', 'plain/deep', 'append', 'gone', 'swapped', 'immutable')]);
    } finally {
      sys.dirXattrs = real;
    }
    expect(opened.map(String).sort()).toEqual(['', 'append', 'gone', 'immutable', 'plain', 'plain/deep', 'swapped']);
    for (const d of ['', 'plain', 'plain/deep', 'immutable', 'append']) {
      const [projid, attrs] = sh('lsattr', '-p', '-d', path.join(top, d)).trim().split(/\s+/);
      expect(nodes.get(d)!.project, d).toEqual({ projid: Number(projid), inherit: attrs!.includes('P'), locked: attrs!.includes('i') || attrs!.includes('a') });
    }
    expect(nodes.get('immutable')!.project!.locked).toBe(true);
    expect(nodes.get('append')!.project!.locked).toBe(true);
    expect(nodes.get('plain')!.project!.locked).toBe(false);
    expect(nodes.get('gone')!.project).toBeUndefined();
    expect(nodes.get('swapped')!.project).toBeUndefined();
  });
});
