/*
 * A small three-guest tree whose capacity numbers are known from the sizes
 * written here, independently of vunify's code: each file's role in the
 * report (freeable, kept apart by one attribute, private, shared, linked
 * outside) is stated next to it, and EXPECT holds the sums.
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeFile } from './tree.js';

export const ELF = (n: number) => Buffer.concat([Buffer.from('\x7fELF', 'latin1'), Buffer.alloc(n - 4, 7)]);
const fill = (n: number, c: string) => Buffer.alloc(n, c);

export const SIZES = { lib: 1000, doc: 300, tool: 500, mode: 200, xattr: 150, u1: 77, u2: 88, u3: 1000, linked: 400, out: 60 };

export function buildCapacityTree(dir: string): void {
  const G = (g: string, f: string) => path.join(dir, g, f);
  const S = SIZES;
  // Identical in all three: g1 keeps the canonical, g2 and g3 free one copy each.
  for (const g of ['g1', 'g2', 'g3']) writeFile(G(g, 'usr/lib/x86_64-linux-gnu/libx.so.1'), { content: ELF(S.lib) });
  // Same content, kept apart by exactly one attribute each.
  writeFile(G('g1', 'usr/share/doc/a'), { content: fill(S.doc, 'd') });
  writeFile(G('g2', 'usr/share/doc/a'), { content: fill(S.doc, 'd'), mtime: '1600000000.5' });
  writeFile(G('g1', 'usr/bin/tool'), { content: fill(S.tool, 't') });
  writeFile(G('g3', 'usr/bin/tool'), { content: fill(S.tool, 't'), uid: 1000 });
  writeFile(G('g1', 'usr/share/m'), { content: fill(S.mode, 'm') });
  writeFile(G('g2', 'usr/share/m'), { content: fill(S.mode, 'm'), mode: 0o600 });
  writeFile(G('g1', 'usr/share/x'), { content: fill(S.xattr, 'x') });
  writeFile(G('g3', 'usr/share/x'), { content: fill(S.xattr, 'x'), xattrs: { 'user.tag': 'v' } });
  // Content found in one guest only (u3 shares lib's size, so it is hashed).
  writeFile(G('g1', 'opt/u1'), { content: fill(S.u1, '1') });
  writeFile(G('g2', 'opt/u2'), { content: fill(S.u2, '2') });
  writeFile(G('g3', 'opt/u3'), { content: fill(S.u3, '3') });
  // Already one inode in g2 and g3.
  writeFile(G('g2', 'usr/shared'), { content: fill(S.linked, 's') });
  fs.mkdirSync(G('g3', 'usr'), { recursive: true });
  fs.linkSync(G('g2', 'usr/shared'), G('g3', 'usr/shared'));
  // A link outside the roots keeps this inode alive.
  writeFile(G('g1', 'usr/out'), { content: fill(S.out, 'o') });
  fs.mkdirSync(path.join(dir, 'outside'));
  fs.linkSync(G('g1', 'usr/out'), path.join(dir, 'outside', 'out'));
}

const S = SIZES;
export const EXPECT = {
  freeable: { g1: 0, g2: S.lib, g3: S.lib },
  keptApart: {
    g1: { filesystem: 0, mount: 0, project: 0, flags: 0, owner: 0, mode: 0, mtime: 0, xattrs: 0 },
    g2: { filesystem: 0, mount: 0, project: 0, flags: 0, owner: 0, mode: S.mode, mtime: S.doc, xattrs: 0 },
    g3: { filesystem: 0, mount: 0, project: 0, flags: 0, owner: S.tool, mode: 0, mtime: 0, xattrs: S.xattr },
  },
  private: { g1: S.u1 + S.out, g2: S.u2, g3: S.u3 },
  shared: { g1: 0, g2: S.linked, g3: S.linked },
  bytes: {
    g1: S.lib + S.doc + S.tool + S.mode + S.xattr + S.u1 + S.out,
    g2: S.lib + S.doc + S.mode + S.u2 + S.linked,
    g3: S.lib + S.tool + S.xattr + S.u3 + S.linked,
  },
  // pairs: lib everywhere, plus the linked file in g2/g3
  common: { g1g2: S.lib, g1g3: S.lib, g2g3: S.lib + S.linked },
};
