// inodeRows (pipeline/group.ts) on random tables: rows naming one (device,
// inode number) are one inode and no two inodes share one, whether the
// inode number alone decides (one device, numbers below 2^32: no
// comparison) or it does not (two devices; numbers of 2^32 and more, from
// a directory's high bits or the wide table); each inode's first path is
// under its earliest root (the shard the hash cache files it under).
import { describe, expect, it } from 'vitest';
import { rng } from '../helpers/hostile.js';
import type { Root } from '../../src/core/types.js';
import { inodeRows } from '../../src/pipeline/group.js';
import { rootIndexOf } from '../../src/pipeline/rows.js';
import { TableBuilder } from '../../src/pipeline/table-builder.js';
import { inoOf } from '../../src/pipeline/table.js';


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

describe('InodeRows.permute', () => {
  // The content split renumbers each group's candidates (its sets first):
  // every inode's paths must move with it, whatever the range and order, and
  // whatever mix of one-path and many-path inodes is in it.
  it('moves each inode with all its paths and its head, for random ranges and orders, again and again', () => {
    for (let seed = 1; seed <= 10; seed++) {
      const rand = rng(seed * 7919);
      const scan = world(seed, { devs: 1, wide: false });
      const inodes = inodeRows(scan);
      const n = inodes.count;
      const pathsOf = (k: number) => Array.from(inodes.paths.subarray(inodes.from(k), inodes.to(k)));
      // The model: inode k's head and its set of paths, as plain arrays.
      let model = Array.from({ length: n }, (_, k) => ({ head: inodes.head(k), rows: pathsOf(k).sort((a, b) => a - b) }));
      expect(model.some((m) => m.rows.length > 2)).toBe(true);
      for (let round = 0; round < 200; round++) {
        const from = Math.floor(rand() * n);
        const len = 1 + Math.floor(rand() * Math.min(n - from, 30));
        const order = Uint32Array.from({ length: len }, (_, k) => from + k);
        for (let k = len - 1; k > 0; k--) {
          const j = Math.floor(rand() * (k + 1));
          [order[k], order[j]] = [order[j]!, order[k]!];
        }
        inodes.permute(from, order, len);
        const next = model.slice();
        for (let k = 0; k < len; k++) next[from + k] = model[order[k]!]!;
        model = next;
        // Looked up in a random order (the last lookup is cached inside).
        const ks = Array.from({ length: n }, (_, k) => k).sort(() => rand() - 0.5);
        for (const k of ks) {
          expect(inodes.head(k)).toBe(model[k]!.head);
          const rows = pathsOf(k);
          expect(rows[0]).toBe(model[k]!.head);
          expect(inodes.pathCount(k)).toBe(model[k]!.rows.length);
          expect(rows.sort((a, b) => a - b)).toEqual(model[k]!.rows);
        }
        // forEachSeveral: exactly the inodes of more than one path, ascending, with their counts.
        const several: [number, number][] = [];
        inodes.forEachSeveral((k, paths) => several.push([k, paths]));
        expect(several).toEqual(model.flatMap((m, k) => (m.rows.length > 1 ? [[k, m.rows.length]] : [])));
      }
    }
  });
});
