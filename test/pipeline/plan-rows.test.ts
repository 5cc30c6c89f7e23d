// The plan and kept-apart on rows against the same stages on objects: random
// tables (hardlinks, links outside the roots, owners, modes, mtimes, sizes
// that collide across contents, locked inodes, projects, xattrs, directory
// projects, link limits, paths whose order their directories decide)
// planned both ways must give the same sets, links, totals and reasons.
// Some sets are decided on rows (plan-rows.ts FastPlanner), the others on
// objects (planOne); the last test checks the worlds hold both kinds.
import { describe, expect, it } from 'vitest';
import { rng } from '../helpers/hostile.js';
import { displayPath } from '../../src/core/paths.js';
import { FS_IMMUTABLE_FL, FS_NOCOW_FL } from '../../src/core/stat.js';
import type { FileRec, Inode, Root } from '../../src/core/types.js';
import { groupFiles, groupRows, inodeRows, splitGroups } from '../../src/pipeline/group.js';
import { readColumns, setRead, splitRowsByContent } from '../../src/pipeline/hash.js';
import { comparePaths, freeable, plan, type PlanLimits, type PlanSet } from '../../src/pipeline/plan.js';
import { keptApartRows, planRows } from '../../src/pipeline/plan-rows.js';
import { isLocked, readKey } from '../../src/pipeline/policy.js';
import { displayRow, statOfRow, writeStatOfRow, type Scan, type StatLayout } from '../../src/pipeline/rows.js';
import type { RowSet } from '../../src/pipeline/plan-rows.js';
import type { Stat } from '../../src/core/stat.js';
import { fileRecs } from '../../src/pipeline/walk.js';
import { TableBuilder } from '../../src/pipeline/table-builder.js';
import { inoOf } from '../../src/pipeline/table.js';
import { keptApart } from '../../src/report/kept-apart.js';


interface Read { hash: bigint; xattrs: string; flags: number; projid: number }

// Directory names that order differently as paths than as strings: a prefix
// of a sibling ('a' < 'a-' < 'a0' bytewise, but 'a/x' sorts before 'a-/x' by
// directory, then name), and nesting.
const DIRS = ['a', 'b', 'a-', 'a0', 'ab', 'a/b', 'a/b/c', 'ab/a'];

function world(seed: number) {
  const rand = rng(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rand() * xs.length)]!;
  const roots: Root[] = [0, 1, 2].map((index) => ({ index, path: `/g${index}`, fd: -1, dev: 5, ino: 2, mntId: 9 }));
  const b = new TableBuilder();
  for (const r of roots) b.addRoot(r.index, r.ino);
  let dirIno = 10;
  const dirs = roots.flatMap((r) => {
    const rows = new Map<string, number>([['', r.index]]);
    for (const d of DIRS) {
      const cut = d.lastIndexOf('/');
      rows.set(d, b.addDir(rows.get(cut < 0 ? '' : d.slice(0, cut))!, Buffer.from(d.slice(cut + 1)), dirIno++));
    }
    return [...rows.values()];
  });
  const read = new Map<number, Read>();
  let name = 0;
  const files = 30 + Math.floor(rand() * 60);
  // Every fifth world: one content, so sets of dozens, and inodes of dozens of links (sorted, not insertion-sorted).
  const big = seed % 5 === 0;
  for (let ino = 100; ino < 100 + files; ino++) {
    const content = big ? 0 : Math.floor(rand() * 5);
    const paths = big && rand() < 0.1 ? 17 + Math.floor(rand() * 10) : 1 + Math.floor(rand() * (rand() < 0.3 ? 4 : 1.5));
    const stat = {
      ino, size: 10 + (content % 3), blocks: 8, uid: rand() < 0.1 ? 1 : 0, gid: 0, mode: rand() < 0.1 ? 0o100755 : 0o100644,
      nlink: paths + (rand() < 0.15 ? 1 : 0) + (rand() < 0.05 ? 3 : 0), mtimeSec: rand() < (big ? 0.05 : 0.2) ? 2 : 1, mtimeNsec: 0, ctimeSec: 1, ctimeNsec: 0,
    };
    // Unique names, some prefixes of others.
    for (let p = 0; p < paths; p++, name++) b.addFile(pick(dirs), Buffer.from(`f${name % 4}${'x'.repeat(name % 3)}${name}`), stat);
    read.set(ino, {
      hash: BigInt(content) * 0x9e3779b97f4a7c15n & 0xffffffffffffffffn,
      xattrs: rand() < 0.1 ? 'ab' : '',
      flags: rand() < 0.08 ? FS_IMMUTABLE_FL : rand() < 0.08 ? FS_NOCOW_FL : 0,
      projid: rand() < 0.08 ? 3 : 0,
    });
  }
  const tables = b.build();
  // Directory projects as projects.ts reads them: most directories plain, some
  // project-inherit (of project 0 or 3), a few immutable; none read in some worlds.
  const n = tables.dirs.count;
  const projects = { known: new Uint8Array(n), projid: new Uint32Array(n), inherit: new Uint8Array(n), locked: new Uint8Array(n) };
  const density = rand() < 0.3 ? 0 : rand() * 0.3;
  for (let d = 0; d < n; d++) {
    projects.known[d] = rand() < 0.8 ? 1 : 0;
    if (rand() >= density) continue;
    projects.inherit[d] = rand() < 0.7 ? 1 : 0;
    projects.projid[d] = rand() < 0.5 ? 3 : 0;
    projects.locked[d] = rand() < 0.25 ? 1 : 0;
  }
  // The filesystem's link limit (one: the roots share it, and an inode's
  // paths span roots), low enough that some canonicals run out of room.
  const limit = roots.map(() => 3 + Math.floor(rand() * 6)).fill(3 + Math.floor(rand() * 6));
  return { scan: { tables, roots }, read, projects, limit };
}

const linkList = (sets: Iterable<{ source: FileRec; ops: { file: FileRec }[] }>) =>
  [...sets].flatMap((s) => s.ops.map((op) => `${displayPath(op.file)} -> ${displayPath(s.source)}`)).sort();

const seen = { links: 0, apart: 0, locked: 0, rowSets: 0, objectSets: 0, parts: 0, bigSets: 0, bigInodes: 0 };

/** Planning limits as a test can give them: locked from the flags alone (canonical.ts's shape), the link limit by root. */
function limitsOf(limit: number[]) {
  // A NOCOW inode is refused as canonical only: sets of them get cut or dropped.
  const lockedByFlags = (flags: number, role: 'canonical' | 'duplicate') => isLocked(flags) || (role === 'canonical' && (flags & FS_NOCOW_FL) !== 0);
  const objects: PlanLimits = { locked: (i, role) => lockedByFlags(i.flags ?? 0, role), linkLimit: (i) => limit[i.paths[0]!.dir.root.index]! };
  const rows: PlanLimits = { ...objects, lockedByFlags, rootLinkLimit: (r) => limit[r.index]! };
  return { objects, rows };
}

describe('plan and kept-apart on rows', () => {
  it.each(Array.from({ length: 40 }, (_, k) => k + 1))('match plan() and keptApart() on objects (seed %i)', (seed) => {
    const w = world(seed);
    const { scan, read } = w;
    const limits = limitsOf(w.limit);
    for (const opts of [{ ignoreMtime: false }, { ignoreMtime: true }, { ignoreMtime: false, iunlink: true }]) {
      for (const kernel of [false, true]) {
        // Rows.
        const inodes = inodeRows(scan);
        const groups = groupRows(scan, inodes, opts);
        const cols = readColumns(groups.candidates);
        for (let m = 0; m < groups.candidates; m++) {
          const row = inodes.head(m);
          setRead(cols, m, read.get(inoOf(scan.tables, row))!);
        }
        const sets = splitRowsByContent(groups, cols, opts, inodes);
        const c = { scan, inodes, groups, read: cols, projects: kernel ? w.projects : undefined };
        const compact = planRows(c, sets, kernel ? limits.rows : {});
        const stateBefore = cols.state.slice();
        const apart = keptApartRows(c, sets, opts);
        expect(cols.state).toEqual(stateBefore); // its scratch bit cleared
        // Objects, as the stages worked before tables.
        const files = fileRecs(scan.roots, scan.tables);
        if (kernel) {
          // fileRecs sorts by path: a file's row by its path.
          const p = w.projects, f = scan.tables.files;
          const rowOf = new Map(Array.from({ length: f.count }, (_, row) => [displayRow(scan, row), row]));
          for (const file of files) {
            const d = f.dir[rowOf.get(displayPath(file))!]!;
            if (p.known[d]) file.dir.project = { projid: p.projid[d]!, inherit: p.inherit[d] === 1, locked: p.locked[d] === 1 };
          }
        }
        const g = groupFiles(files, opts);
        for (const i of g.groups.flat()) Object.assign(i, read.get(i.ino)!);
        const identical = splitGroups(g.groups, (i: Inode) => readKey(i, opts));
        const objects = plan(identical, kernel ? limits.objects : {});

        expect(inodes.count).toBe(g.inodes.length);
        expect(compact.setCount, JSON.stringify({ opts, kernel })).toBe(objects.sets.length);
        expect({ ...compact, sets: undefined, rowSets: undefined, setCount: undefined, freeableByRoot: undefined, objectSets: undefined }, JSON.stringify({ opts, kernel })).toEqual({ ...objects, sets: undefined });
        expect(compact.freeableByRoot).toEqual(freeableByRoot(objects.sets, scan.roots.length));
        // The same sets (the two groupings order them apart), each with the same canonical, source, duplicates and operations in order.
        expect(shapes(compact.sets)).toEqual(shapes(objects.sets));
        expect(linkList(compact.sets)).toEqual(linkList(objects.sets));
        expect(linkList(compact.sets).length).toBe(compact.linksPlanned);
        // The sets as rows (the linker's linkRows): the same sets, and what each says of its paths is what their objects say.
        const rowSets = [...compact.rowSets!];
        expect(linkList(rowSets.map((r) => r.objects()))).toEqual(linkList(compact.sets));
        for (const r of rowSets) checkRowSet(scan, r);
        // A dry run's plan: the same totals, no rows kept.
        const totalsOnly = planRows(c, sets, kernel ? limits.rows : {}, { totalsOnly: true });
        expect({ ...totalsOnly, sets: undefined }).toEqual({ ...compact, sets: undefined, rowSets: undefined });
        expect(() => [...totalsOnly.sets]).toThrow(/totalsOnly/);
        expect(apart).toEqual(keptApart(g.groups.flat(), scan.roots.length, opts));
        seen.links += compact.linksPlanned;
        seen.apart += Object.values(apart.total).reduce((a, b) => a + b, 0);
        seen.locked += identical.flat().length < g.groups.flat().length ? 1 : 0;
        seen.objectSets += compact.objectSets;
        seen.rowSets += sets.count - compact.objectSets;
        seen.parts += objects.sets.length > identical.filter((s) => s.length > 1).length ? 1 : 0;
        seen.bigSets += objects.sets.some((s) => s.duplicates.length > 16) ? 1 : 0;
        seen.bigInodes += objects.sets.some((s) => s.duplicates.some((d) => d.paths.length > 16)) ? 1 : 0;
      }
    }
  });

  it('(the worlds above plan links, keep content apart, leave inodes out, cut sets, and plan sets both on rows and on objects)', () => {
    expect(seen.links).toBeGreaterThan(0);
    expect(seen.apart).toBeGreaterThan(0);
    expect(seen.locked).toBeGreaterThan(0);
    expect(seen.parts).toBeGreaterThan(0);
    expect(seen.bigSets).toBeGreaterThan(0);
    expect(seen.bigInodes).toBeGreaterThan(0);
    expect(seen.rowSets).toBeGreaterThan(100);
    expect(seen.objectSets).toBeGreaterThan(100);
  });
});

const shown = (f: FileRec) => displayPath(f);
const shapes = (sets: Iterable<PlanSet>) =>
  [...sets].map((s) => JSON.stringify([s.canonical.ino, shown(s.source), s.duplicates.map((d) => d.ino), s.ops.map((op) => `${shown(op.file)} ${op.inode.ino}`)])).sort();

/** report.ts's per-root freeable bytes over a plan of objects. */
function freeableByRoot(sets: PlanSet[], roots: number): number[] {
  const out = new Array<number>(roots).fill(0);
  for (const s of sets)
    for (const d of s.duplicates) {
      if (!freeable(d)) continue;
      const first = d.paths.reduce((a, b) => (comparePaths(b, a) < 0 ? b : a));
      out[first.dir.root.index]! += d.stat.size;
    }
  return out;
}

/** Every field of a Stat at its own place, in an order of no one's choosing. */
const LAYOUT: StatLayout = { blocks: 0, mntId: 1, ctimeNsec: 2, ctimeSec: 3, mtimeNsec: 4, mtimeSec: 5, size: 6, dev: 7, ino: 8, nlink: 9, gid: 10, uid: 11, mode: 12, type: 13 };

/** A RowSet's answers against the objects it builds: the canonical, each op's path row, inode, stat (writeStatOfRow too) and directory node. */
function checkRowSet(scan: Scan, r: RowSet): void {
  const set = r.objects();
  expect(r.count).toBe(set.ops.length);
  expect(statOfRow(scan, r.source)).toEqual(set.source.stat);
  expect(statOfRow(scan, r.inodeRow(r.canonical))).toEqual(set.canonical.stat);
  const into = new Float64Array(14 + 3).fill(-1);
  for (let k = 0; k < r.count; k++) {
    const op = set.ops[k]!, row = r.row(k);
    expect(statOfRow(scan, row)).toEqual(op.file.stat);
    expect(statOfRow(scan, r.inodeRow(r.inode(k)))).toEqual(op.inode.stat);
    expect(r.dir(scan.tables.files.dir[row]!)).toBe(op.file.dir); // the same node: one Materializer
    writeStatOfRow(scan, row, LAYOUT, into, 2);
    const fields = Object.keys(LAYOUT) as (keyof Stat)[];
    expect(Object.fromEntries(fields.map((k) => [k, into[2 + LAYOUT[k]]]))).toEqual(Object.fromEntries(fields.map((k) => [k, op.file.stat[k]])));
    expect([into[0], into[1], into[16]]).toEqual([-1, -1, -1]);
  }
}
