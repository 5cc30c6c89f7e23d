/*
 * The plan and what keeps content apart, on table rows: each identical set
 * (hash.ts SetRows) gets its objects (rows.ts Materializer) while it is
 * planned, plan.ts planOne decides it exactly as plan() does, and the
 * result is kept as rows (a few numbers per set and per link); the linker
 * gets each set's objects built again, one set at a time, when it links it.
 * So the per-set rules stay in one place (plan.ts, policy.ts, canonical.ts,
 * report/kept-apart.ts) and nothing holds an object per file.
 *
 * Pure: loads without the addon (the limits passed in may read the disk).
 */
import type { FileRec, Inode } from '../core/types.js';
import { addContentClass, keptApartOf, keptApartSum, type KeptApart } from '../report/kept-apart.js';
import { classesOf, ELF_BIT, hashOf, Materializer, READ, type DirProjects, type ReadColumns, type Scan } from './rows.js';
import type { GroupRows, InodeRows } from './group.js';
import type { SetRows } from './hash.js';
import { comparePaths, freeable, planOne, type PlanLimits, type PlanSet, type PlanTotals } from './plan.js';
import { mix, type PolicyOptions } from './policy.js';
import { sizeOf as sizeOfRow } from './table.js';

/** Everything the stages after the hash know, by row. */
export interface Candidates {
  scan: Scan;
  inodes: InodeRows;
  groups: GroupRows;
  read: ReadColumns;
  projects?: DirProjects;
}

/** A plan kept as rows; `sets` builds each set's objects as it is iterated (what link() takes). */
export interface CompactPlan extends PlanTotals {
  /** Sets planned (the report's duplicateSets). */
  setCount: number;
  /** freeableBytes charged to the root of each freed inode's first path (the report's per-root figure). */
  freeableByRoot: number[];
  sets: Iterable<PlanSet>;
}

/** Candidate `m`'s object, with what the hash stage read of it. */
function inodeOf(c: Candidates, mat: Materializer, m: number): Inode {
  const id = c.groups.members[m]!;
  const inode = mat.inode(c.inodes.paths, c.inodes.start[id]!, c.inodes.start[id + 1]!);
  const r = c.read;
  if (r.state[m]! & READ) {
    inode.hash = hashOf(r, m);
    inode.xattrs = r.xattrs.get(m) ?? '';
    inode.flags = r.flags[m]!;
    inode.projid = r.projid[m]!;
    inode.elf = (r.state[m]! & ELF_BIT) !== 0;
  }
  return inode;
}

/** Grows by doubling: the plan's rows. */
class U32List {
  data = new Uint32Array(1024);
  length = 0;
  push(v: number): void {
    if (this.length === this.data.length) {
      const next = new Uint32Array(this.data.length * 2);
      next.set(this.data);
      this.data = next;
    }
    this.data[this.length++] = v;
  }
}

/**
 * Plan every identical set, one at a time. Kept per planned set: canonical
 * candidate, source row, the duplicates' candidates, and each link's (row,
 * candidate); 4 bytes each.
 */
export function planRows(c: Candidates, sets: SetRows, limits: PlanLimits): CompactPlan {
  const totals: PlanTotals = { linksPlanned: 0, freeableInodes: 0, freeableBytes: 0, freeableDiskBytes: 0 };
  const freeableByRoot = new Array<number>(c.scan.roots.length).fill(0);
  const items = new U32List();
  const heads = new U32List();
  const mat = new Materializer(c.scan, c.projects);
  const candidate = new Map<Inode, number>();
  const rowOf = new Map<FileRec, number>();
  for (let s = 0; s < sets.count; s++) {
    candidate.clear();
    rowOf.clear();
    const whole: Inode[] = [];
    for (let k = sets.start[s]!; k < sets.start[s + 1]!; k++) {
      const m = sets.members[k]!;
      const inode = inodeOf(c, mat, m);
      const id = c.groups.members[m]!;
      inode.paths.forEach((p, j) => rowOf.set(p, c.inodes.paths[c.inodes.start[id]! + j]!));
      candidate.set(inode, m);
      whole.push(inode);
    }
    planOne(whole, limits, totals, (set) => {
      heads.push(items.length);
      items.push(candidate.get(set.canonical)!);
      items.push(rowOf.get(set.source)!);
      items.push(set.duplicates.length);
      for (const d of set.duplicates) {
        items.push(candidate.get(d)!);
        if (freeable(d)) {
          const first = d.paths.reduce((a, b) => (comparePaths(b, a) < 0 ? b : a));
          freeableByRoot[first.dir.root.index]! += d.stat.size;
        }
      }
      items.push(set.ops.length);
      for (const op of set.ops) {
        items.push(rowOf.get(op.file)!);
        items.push(candidate.get(op.inode)!);
      }
    });
  }
  const data = items.data.slice(0, items.length);
  const starts = heads.data.slice(0, heads.length);
  return { ...totals, setCount: starts.length, freeableByRoot, sets: { [Symbol.iterator]: () => planSets(c, data, starts) } };
}

/** The planned sets' objects, built one set at a time from the plan's rows. */
function* planSets(c: Candidates, data: Uint32Array, starts: Uint32Array): Generator<PlanSet> {
  const mat = new Materializer(c.scan, c.projects);
  for (const head of starts) {
    const byCandidate = new Map<number, Inode>();
    const get = (m: number) => {
      let inode = byCandidate.get(m);
      if (!inode) byCandidate.set(m, (inode = inodeOf(c, mat, m)));
      return inode;
    };
    const fileOf = (inode: Inode, m: number, row: number): FileRec => {
      const id = c.groups.members[m]!;
      const from = c.inodes.start[id]!;
      for (let j = 0; j < inode.paths.length; j++) if (c.inodes.paths[from + j] === row) return inode.paths[j]!;
      throw new Error(`plan: row ${row} is no path of its inode`);
    };
    let at = head;
    const canonM = data[at++]!;
    const canonical = get(canonM);
    const source = fileOf(canonical, canonM, data[at++]!);
    const duplicates: Inode[] = [];
    for (let n = data[at++]!; n > 0; n--) duplicates.push(get(data[at++]!));
    const ops: PlanSet['ops'] = [];
    for (let n = data[at++]!; n > 0; n--) {
      const row = data[at++]!, m = data[at++]!;
      const inode = get(m);
      ops.push({ file: fileOf(inode, m, row), inode });
    }
    yield { canonical, source, duplicates, ops };
  }
}

/**
 * What keeps identical content apart (report/kept-apart.ts) over every
 * hashed candidate, by content class (same hash and size): a class that is
 * all one identical set (`setOf`) with no path in a directory that refuses
 * links keeps nothing apart and is passed over on its rows; the others get
 * their objects and are charged as keptApart() charges them.
 */
export function keptApartRows(c: Candidates, setOf: Int32Array, opts: PolicyOptions): KeptApart {
  const sum = keptApartSum(c.scan.roots.length);
  const r = c.read, t = c.scan.tables;
  let count = 0;
  for (let m = 0; m < r.state.length; m++) if (r.state[m]! & READ) count++;
  const hashed = new Uint32Array(count);
  for (let m = 0, k = 0; m < r.state.length; m++) if (r.state[m]! & READ) hashed[k++] = m;
  const head = (m: number) => c.inodes.paths[c.inodes.start[c.groups.members[m]!]!]!;
  const sizeOf = (m: number) => sizeOfRow(t, head(m));
  const mat = new Materializer(c.scan, c.projects);
  classesOf(
    hashed.length,
    (i) => mix(r.hashLo[hashed[i]!]!, r.hashHi[hashed[i]!]!),
    (i, j) => {
      const a = hashed[i]!, b = hashed[j]!;
      if (r.hashHi[a] !== r.hashHi[b]) return r.hashHi[a]! < r.hashHi[b]! ? -1 : 1;
      if (r.hashLo[a] !== r.hashLo[b]) return r.hashLo[a]! < r.hashLo[b]! ? -1 : 1;
      return sizeOf(a) - sizeOf(b);
    },
    2,
    (items, from, to) => {
      const first = setOf[hashed[items[from]!]!]!;
      let uniform = first >= 0;
      for (let k = from + 1; uniform && k < to; k++) uniform = setOf[hashed[items[k]!]!] === first;
      if (uniform && !anyPinned(c, items, from, to, hashed)) return;
      const content: Inode[] = [];
      for (let k = from; k < to; k++) content.push(inodeOf(c, mat, hashed[items[k]!]!));
      addContentClass(sum, content, opts);
    },
  );
  return keptApartOf(sum);
}

/** policy.ts isPinned on rows: a path of one of the candidates lies in a directory that refuses links to it. */
function anyPinned(c: Candidates, items: Uint32Array, from: number, to: number, hashed: Uint32Array): boolean {
  const p = c.projects;
  if (!p) return false;
  const f = c.scan.tables.files;
  for (let k = from; k < to; k++) {
    const m = hashed[items[k]!]!;
    const id = c.groups.members[m]!;
    for (let j = c.inodes.start[id]!; j < c.inodes.start[id + 1]!; j++) {
      const dir = f.dir[c.inodes.paths[j]!]!;
      if (!p.known[dir]) continue;
      if (p.locked[dir] || (p.inherit[dir] && p.projid[dir] !== c.read.projid[m])) return true;
    }
  }
  return false;
}

/** Each identical set's candidates' set number (-1: in none). */
export function setNumbers(candidates: number, sets: SetRows): Int32Array {
  const setOf = new Int32Array(candidates).fill(-1);
  for (let s = 0; s < sets.count; s++) for (let k = sets.start[s]!; k < sets.start[s + 1]!; k++) setOf[sets.members[k]!] = s;
  return setOf;
}

/** The directory rows of every path of the sets' candidates (for projects.ts readDirProjectRows). */
export function setDirs(c: Omit<Candidates, 'read' | 'projects'>, sets: SetRows): (visit: (dir: number) => void) => void {
  const f = c.scan.tables.files;
  return (visit) => {
    for (let k = 0; k < sets.members.length; k++) {
      const id = c.groups.members[sets.members[k]!]!;
      for (let j = c.inodes.start[id]!; j < c.inodes.start[id + 1]!; j++) visit(f.dir[c.inodes.paths[j]!]!);
    }
  };
}
