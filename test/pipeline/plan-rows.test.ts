// The plan and kept-apart on rows against the same stages on objects: random
// tables (hardlinks, links outside the roots, owners, modes, mtimes, sizes
// that collide across contents, locked inodes, projects, xattrs) planned both
// ways must give the same links, the same totals and the same reasons.
import { describe, expect, it } from 'vitest';
import { displayPath } from '../../src/core/paths.js';
import { FS_IMMUTABLE_FL, FS_NOCOW_FL } from '../../src/core/stat.js';
import type { FileRec, Inode, Root } from '../../src/core/types.js';
import { groupFiles, groupRows, inodeRows, splitGroups } from '../../src/pipeline/group.js';
import { readColumns, setRead, splitRowsByContent } from '../../src/pipeline/hash.js';
import { plan } from '../../src/pipeline/plan.js';
import { keptApartRows, planRows, setNumbers } from '../../src/pipeline/plan-rows.js';
import { readKey } from '../../src/pipeline/policy.js';
import { fileRecs } from '../../src/pipeline/walk.js';
import { TableBuilder } from '../../src/pipeline/table-builder.js';
import { keptApart } from '../../src/report/kept-apart.js';

function rng(seed: number) {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

interface Read { hash: bigint; xattrs: string; flags: number; projid: number }

function world(seed: number) {
  const rand = rng(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rand() * xs.length)]!;
  const roots: Root[] = [0, 1, 2].map((index) => ({ index, path: `/g${index}`, fd: -1, dev: 5, ino: 2, mntId: 9 }));
  const b = new TableBuilder();
  for (const r of roots) b.addRoot(r.index, r.ino);
  const dirs = roots.flatMap((r) => ['a', 'b', 'c'].map((n, k) => b.addDir(r.index, Buffer.from(n), 10 + r.index * 3 + k)));
  const read = new Map<number, Read>();
  let name = 0;
  for (let ino = 100; ino < 160; ino++) {
    const content = Math.floor(rand() * 5);
    const paths = 1 + Math.floor(rand() * 3);
    const stat = {
      ino, size: 10 + (content % 3), blocks: 8, uid: rand() < 0.1 ? 1 : 0, gid: 0, mode: rand() < 0.1 ? 0o100755 : 0o100644,
      nlink: paths + (rand() < 0.15 ? 1 : 0), mtimeSec: rand() < 0.2 ? 2 : 1, mtimeNsec: 0, ctimeSec: 1, ctimeNsec: 0,
    };
    for (let p = 0; p < paths; p++) b.addFile(pick(dirs), Buffer.from(`f${name++}`), stat);
    read.set(ino, {
      hash: BigInt(content) * 0x9e3779b97f4a7c15n & 0xffffffffffffffffn,
      xattrs: rand() < 0.1 ? 'ab' : '',
      flags: rand() < 0.08 ? FS_IMMUTABLE_FL : rand() < 0.08 ? FS_NOCOW_FL : 0,
      projid: rand() < 0.08 ? 3 : 0,
    });
  }
  return { scan: { tables: b.build(), roots }, read };
}

const linkList = (sets: Iterable<{ source: FileRec; ops: { file: FileRec }[] }>) =>
  [...sets].flatMap((s) => s.ops.map((op) => `${displayPath(op.file)} -> ${displayPath(s.source)}`)).sort();

const seen = { links: 0, apart: 0, locked: 0 };

describe('plan and kept-apart on rows', () => {
  it.each([1, 2, 3, 4, 5, 6, 7, 8])('match plan() and keptApart() on objects (seed %i)', (seed) => {
    const { scan, read } = world(seed);
    for (const opts of [{ ignoreMtime: false }, { ignoreMtime: true }, { ignoreMtime: false, iunlink: true }]) {
      // Rows.
      const inodes = inodeRows(scan);
      const groups = groupRows(scan, inodes, opts);
      const cols = readColumns(groups.members.length);
      for (let m = 0; m < groups.members.length; m++) {
        const row = inodes.paths[inodes.start[groups.members[m]!]!]!;
        setRead(cols, m, read.get(scan.tables.files.ino[row]!)!);
      }
      const sets = splitRowsByContent(groups, cols, opts);
      const c = { scan, inodes, groups, read: cols };
      const compact = planRows(c, sets, {});
      const apart = keptApartRows(c, setNumbers(groups.members.length, sets), opts);
      // Objects, as the stages worked before tables.
      const files = fileRecs(scan.roots, scan.tables);
      const g = groupFiles(files, opts);
      for (const i of g.groups.flat()) Object.assign(i, read.get(i.ino)!);
      const identical = splitGroups(g.groups, (i: Inode) => readKey(i, opts));
      const objects = plan(identical);

      expect(inodes.count).toBe(g.inodes.length);
      expect(compact.setCount).toBe(objects.sets.length);
      expect({ ...compact, sets: undefined, setCount: undefined, freeableByRoot: undefined }).toEqual({ ...objects, sets: undefined });
      expect(linkList(compact.sets)).toEqual(linkList(objects.sets));
      expect(linkList(compact.sets).length).toBe(compact.linksPlanned);
      expect(apart).toEqual(keptApart(g.groups.flat(), scan.roots.length, opts));
      seen.links += compact.linksPlanned;
      seen.apart += Object.values(apart.total).reduce((a, b) => a + b, 0);
      seen.locked += identical.flat().length < g.groups.flat().length ? 1 : 0;
    }
  });

  it('(the worlds above plan links, keep content apart, and leave inodes out)', () => {
    expect(seen.links).toBeGreaterThan(0);
    expect(seen.apart).toBeGreaterThan(0);
    expect(seen.locked).toBeGreaterThan(0);
  });
});
