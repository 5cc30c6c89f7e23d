// inodeRows (pipeline/group.ts) on random tables: rows naming one (device,
// inode number) are one inode and no two inodes share one, whether the
// inode number alone decides (one device, numbers below 2^32: no
// comparison) or it does not (two devices; numbers of 2^32 and more, from
// a directory's high bits or the wide table); each inode's first path is
// under its earliest root (the shard the hash cache files it under).
import { describe, expect, it } from 'vitest';
import type { Root } from '../../src/core/types.js';
import { inodeRows } from '../../src/pipeline/group.js';
import { rootIndexOf } from '../../src/pipeline/rows.js';
import { TableBuilder } from '../../src/pipeline/table-builder.js';
import { inoOf } from '../../src/pipeline/table.js';

function rng(seed: number) {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

const TWO32 = 2 ** 32;

function world(seed: number, opts: { devs: number; wide: boolean; wideBelow?: boolean }) {
  const rand = rng(seed);
  const roots: Root[] = [0, 1, 2].map((index) => ({ index, path: `/g${index}`, fd: -1, dev: 5 + (index % opts.devs), ino: 2, mntId: 9 }));
  const b = new TableBuilder();
  for (const r of roots) b.addRoot(r.index, r.ino);
  // A directory per root whose inode number carries high bits: files in it get them too.
  const high = roots.map((r) => b.addDir(r.index, Buffer.from('h'), opts.wide ? 3 * TWO32 + 7 : 7));
  const inos: number[] = [];
  for (let k = 0; k < 40; k++) inos.push(opts.wide && rand() < 0.3 ? (1 + Math.floor(rand() * 3)) * TWO32 + Math.floor(rand() * 50) : Math.floor(rand() * 50));
  // Some numbers of 2^32 and more through the wide table (low bits all ones), and the largest 32-bit one.
  if (opts.wide) inos.push(2 * TWO32 - 1, TWO32 - 1);
  // Rows in the wide table whose inode numbers are below 2^32: 2^32 - 1 (the sentinel's value), and a link count past 8 bits.
  if (opts.wideBelow) inos.push(TWO32 - 1, TWO32 - 1, 77);
  let name = 0;
  for (const r of roots) {
    for (let k = 0; k < 60; k++) {
      const ino = inos[Math.floor(rand() * inos.length)]!;
      const inHigh = ino >= TWO32 && Math.floor(ino / TWO32) === 3 && rand() < 0.5;
      const stat = { ino, size: 10, blocks: 8, uid: 0, gid: 0, mode: 0o100644, nlink: opts.wideBelow && ino === 77 ? 1000 : 1, mtimeSec: 1, mtimeNsec: 0, ctimeSec: 1, ctimeNsec: 0 };
      b.addFile(inHigh ? high[r.index]! : r.index, Buffer.from(`f${name++}`), stat);
    }
  }
  return { tables: b.build(), roots };
}

describe('inodeRows', () => {
  it.each<[string, { devs: number; wide: boolean; wideBelow?: boolean }]>([
    ['one device, numbers below 2^32', { devs: 1, wide: false }],
    ['two devices', { devs: 2, wide: false }],
    ['numbers of 2^32 and more', { devs: 1, wide: true }],
    ['both', { devs: 2, wide: true }],
    ['one device, wide rows below 2^32', { devs: 1, wide: false, wideBelow: true }],
  ])('%s: one inode per (device, number), its first path under its earliest root', (_, opts) => {
    for (let seed = 1; seed <= 20; seed++) {
      const scan = world(seed, opts);
      const t = scan.tables;
      if (opts.wideBelow) expect(t.wide.count).toBeGreaterThan(0);
      const devOf = (row: number) => scan.roots[rootIndexOf(t, row)]!.dev;
      const inodes = inodeRows(scan);
      const seen = new Set<string>();
      let rows = 0;
      for (let k = 0; k < inodes.count; k++) {
        const members = Array.from(inodes.paths.subarray(inodes.from(k), inodes.to(k)));
        expect(members[0]).toBe(inodes.head(k));
        rows += members.length;
        const id = `${devOf(members[0]!)}:${inoOf(t, members[0]!)}`;
        for (const row of members) expect(`${devOf(row)}:${inoOf(t, row)}`).toBe(id);
        expect(seen.has(id)).toBe(false);
        seen.add(id);
        // The first path is under the inode's earliest root.
        expect(rootIndexOf(t, members[0]!)).toBe(Math.min(...members.map((row) => rootIndexOf(t, row))));
      }
      expect(rows).toBe(t.files.count);
    }
  });
});
