// Root arguments: expansion and every way a root can be unusable.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { closeRoots, expandRoots, openRoots } from '../../src/pipeline/roots.js';
import { rmTree, sh, tempDir } from '../helpers/tree.js';

let dir: string;
beforeEach(() => {
  dir = tempDir();
  for (const g of ['web1', 'web2', 'db1']) fs.mkdirSync(path.join(dir, 'vservers', g), { recursive: true });
});
afterEach(() => rmTree(dir));

const V = (...p: string[]) => path.join(dir, 'vservers', ...p);

describe('roots', () => {
  it('expands globs itself, sorted, and passes plain paths through', () => {
    expect(expandRoots([V('web*'), V('db1')])).toEqual([V('web1'), V('web2'), V('db1')]);
    expect(expandRoots([V('*')])).toEqual([V('db1'), V('web1'), V('web2')]);
  });

  it('refuses a glob that matches nothing', () => {
    expect(() => expandRoots([V('nothing*')])).toThrow(/no root matches/);
  });

  it.each([
    ['a missing root', () => V('missing'), /no such file or directory/],
    ['a file', () => (fs.writeFileSync(V('file'), ''), V('file')), /not a directory/],
    ['a symlink to a directory', () => (fs.symlinkSync(V('web1'), V('link')), V('link')), /is a symlink/],
    ['a FIFO', () => (sh('mkfifo', V('fifo')), V('fifo')), /not a directory/],
  ])('refuses %s, naming it', (_what, make, message) => {
    const p = make();
    expect(() => openRoots([V('web1'), p])).toThrow(message);
    expect(() => openRoots([V('web1'), p])).toThrow(p);
  });

  it('refuses the same root twice and one root inside another, naming both', () => {
    expect(() => openRoots([V('web1'), V('web2'), V('web1') + '/'])).toThrow(`${V('web1')} and ${V('web1')} are the same directory`);
    fs.mkdirSync(V('web1', 'srv'));
    expect(() => openRoots([V('web1', 'srv'), V('web1')])).toThrow(`${V('web1', 'srv')} is inside ${V('web1')}`);
    expect(() => openRoots([V('web1'), V('web1', 'srv')])).toThrow(`${V('web1', 'srv')} is inside ${V('web1')}`);
  });

  it('opens valid roots in command-line order', () => {
    const roots = openRoots([V('web2'), V('db1')]);
    try {
      expect(roots.map((r) => [r.index, r.path])).toEqual([[0, V('web2')], [1, V('db1')]]);
      expect(roots[0]!.ino).toBe(fs.statSync(V('web2')).ino);
    } finally {
      closeRoots(roots);
    }
  });
});
