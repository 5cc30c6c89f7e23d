// compareRelPaths orders files by their directory's path as written out
// (bytewise), then by name, without writing paths out. Checked here against
// the written-out paths (dirRel), over a random tree whose names hold bytes
// on both sides of '/' (0x2f) and prefixes of one another, where comparing
// names one at a time would go wrong.
import { describe, expect, it } from 'vitest';
import { childNode, compareRelPaths, dirRel, rootNode } from '../../src/core/paths.js';
import type { DirNode, FileRec, Root } from '../../src/core/types.js';

describe('compareRelPaths', () => {
  it('agrees with comparing the written-out directory paths, then the names', () => {
    const root = { fd: -1, dev: 1, ino: 2, index: 0, path: '/r' } as unknown as Root;
    const bytes = [0x01, 0x2b, 0x2d, 0x2e, 0x30, 0x41, 0x61, 0xff];
    let seed = 12345;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff), seed % n);
    const name = () => Buffer.from(Array.from({ length: 1 + rnd(3) }, () => bytes[rnd(bytes.length)]!));
    const dirs: DirNode[] = [rootNode(root)];
    for (let i = 0; dirs.length < 300; i++) {
      const parent = dirs[rnd(dirs.length)]!;
      const n = name();
      if (!dirs.some((d) => d.parent === parent && d.name.equals(n))) dirs.push(childNode(parent, n, 1, 100 + i));
    }
    const files = Array.from({ length: 400 }, () => ({ dir: dirs[rnd(dirs.length)]!, name: name() }) as FileRec);
    let wrong = 0;
    for (const a of files) {
      for (const b of files) {
        const want = Math.sign(Buffer.compare(dirRel(a.dir), dirRel(b.dir)) || Buffer.compare(a.name, b.name));
        if (Math.sign(compareRelPaths(a, b)) !== want) wrong++;
      }
    }
    expect(wrong).toBe(0);
  });

  it('orders "a/b" after "a-b" and "a.b" but before "a0": the slash is 0x2f', () => {
    const root = { fd: -1, dev: 1, ino: 2, index: 0, path: '/r' } as unknown as Root;
    const top = rootNode(root);
    const a = childNode(top, Buffer.from('a'), 1, 3);
    const dir = (d: DirNode, n: string) => childNode(d, Buffer.from(n), 1, 4);
    const f = (d: DirNode): FileRec => ({ dir: d, name: Buffer.from('f') }) as FileRec;
    const ab = f(dir(a, 'b'));
    for (const other of ['a-b', 'a.b']) expect(compareRelPaths(ab, f(dir(top, other)))).toBeGreaterThan(0);
    expect(compareRelPaths(ab, f(dir(top, 'a0')))).toBeLessThan(0);
    expect(compareRelPaths(f(a), ab)).toBeLessThan(0);
  });
});
