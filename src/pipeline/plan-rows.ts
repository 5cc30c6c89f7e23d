/*
 * The plan and what keeps content apart, on table rows. Most identical sets
 * are decided on their rows alone (FastPlanner): every candidate read, none
 * locked by its known flags, no path in a directory that refuses links
 * (policy.ts dirRefusal), the canonical with room for every link. For such
 * a set plan.ts planOne's steps reduce to a sort by its own keys (freeable,
 * nlink, first path) and one operation per path, which FastPlanner does on
 * columns, asking the same limits (PlanLimits.lockedByFlags, rootLinkLimit)
 * and the same policy rule. Any other set gets its objects (rows.ts
 * Materializer) and planOne decides it. Either way the result is kept as
 * rows (a few numbers per set and per link); the linker gets each set's
 * objects built, one set at a time, when it links it. What keeps content
 * apart is charged the same way: KeptApartRows on columns, unless a path
 * of the class is refused (then report/kept-apart.ts on its objects).
 * test/pipeline/plan-rows.test.ts plans random worlds both ways.
 *
 * Pure: loads without the addon (the limits passed in may read the disk).
 */
import type { DirNode, FileRec, Inode } from '../core/types.js';
import { addContentClass, chargeKept, keptApartOf, keptApartSum, type KeptApart, type KeptApartSum } from '../report/kept-apart.js';
import { classesOf, ELF_BIT, flagsOf, hashOf, Materializer, projidOf, READ, dirRelLength, rootIndexOf, statOfRow, writeDirRelRow, type DirProjects, type ReadColumns, type Scan } from './rows.js';
import { blocksOf, nlinkOf, sizeOf as sizeOfRow, type Tables } from './table.js';
import type { GroupRows, InodeRows } from './group.js';
import type { SetRows } from './hash.js';
import { comparePaths, freeable, planOne, type PlanLimits, type PlanSet, type PlanTotals } from './plan.js';
import { dirRefusal, firstDifference, mix, type Attributes, type PolicyOptions } from './policy.js';

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
  /** The same sets as rows, each able to build its objects (absent with totalsOnly). */
  rowSets?: Iterable<RowSet>;
  /** Sets that needed their objects to be planned (the rest were decided on rows). */
  objectSets: number;
}

/** Candidate `m`'s object, with what the hash stage read of it. */
function inodeOf(c: Candidates, mat: Materializer, m: number): Inode {
  // Candidate m is inode m (group.ts GroupRows).
  const inode = mat.inode(c.inodes.paths, c.inodes.from(m), c.inodes.to(m));
  const r = c.read;
  if (r.state[m]! & READ) {
    inode.hash = hashOf(r, m);
    inode.xattrs = r.xattrs.get(m) ?? '';
    inode.flags = flagsOf(r, m);
    inode.projid = projidOf(r, m);
    inode.elf = (r.state[m]! & ELF_BIT) !== 0;
  }
  return inode;
}

/**
 * The plan's rows, in an array sized up front from the sets (an upper bound
 * for the sets planned on rows), grown by half if planOne's parts need more;
 * `counting`: only the length is kept (a dry run, whose plan is never
 * iterated, needs its totals and not its rows).
 */
class U32List {
  data: Uint32Array;
  length = 0;
  constructor(
    capacity: number,
    readonly counting = false,
  ) {
    this.data = new Uint32Array(counting ? 0 : Math.max(16, capacity));
  }
  push(v: number): void {
    if (this.counting) {
      this.length++;
      return;
    }
    if (this.length === this.data.length) {
      const next = new Uint32Array(Math.ceil(this.data.length * 1.5));
      next.set(this.data);
      this.data = next;
    }
    this.data[this.length++] = v;
  }
  /** The rows pushed: the array itself when it is nearly full, else a copy of that part (the spare room goes back to the collector). */
  take(): Uint32Array {
    return this.length >= this.data.length * 0.9 ? this.data.subarray(0, this.length) : this.data.slice(0, this.length);
  }
}

/** Words a set of candidates [from, to) takes in planRows's items when it is planned on rows, and at most when planOne plans it in one part: a header of 4, the duplicates, two per path. */
function itemsBound(c: Candidates, from: number, to: number): number {
  let words = 4 + (to - from);
  for (let m = from; m < to; m++) words += 2 * c.inodes.pathCount(m);
  return words;
}

/**
 * Plan every identical set, one at a time. Kept per planned set: canonical
 * candidate, source row, the duplicates' candidates, and each link's (row,
 * candidate); 4 bytes each. `totalsOnly` (a dry run): the same decisions and
 * totals, but the rows are not kept and `sets` cannot be iterated.
 */
export function planRows(c: Candidates, sets: SetRows, limits: PlanLimits, opts: { totalsOnly?: boolean } = {}): CompactPlan {
  const totals: PlanTotals = { linksPlanned: 0, freeableInodes: 0, freeableBytes: 0, freeableDiskBytes: 0 };
  const freeableByRoot = new Array<number>(c.scan.roots.length).fill(0);
  const only = !!opts.totalsOnly;
  let bound = 0;
  if (!only) for (let s = 0; s < sets.count; s++) bound += itemsBound(c, sets.start[s]!, sets.end[s]!);
  const items = new U32List(bound, only);
  const heads = new U32List(sets.count, only);
  const mat = new Materializer(c.scan, c.projects);
  const candidate = new Map<Inode, number>();
  const rowOf = new Map<FileRec, number>();
  const fast = new FastPlanner(c, limits, totals, freeableByRoot, items, heads);
  let objectSets = 0;
  for (let s = 0; s < sets.count; s++) {
    if (fast.plan(sets.start[s]!, sets.end[s]!)) continue;
    objectSets++;
    candidate.clear();
    rowOf.clear();
    const whole: Inode[] = [];
    for (let m = sets.start[s]!; m < sets.end[s]!; m++) {
      const inode = inodeOf(c, mat, m);
      const from = c.inodes.from(m);
      inode.paths.forEach((p, j) => rowOf.set(p, c.inodes.paths[from + j]!));
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
  const setCount = heads.length;
  if (only) {
    const sets: Iterable<PlanSet> = {
      [Symbol.iterator]: () => {
        throw new Error('plan: made with totalsOnly, its sets were not kept');
      },
    };
    return { ...totals, setCount, freeableByRoot, objectSets, sets };
  }
  const data = items.take();
  const starts = heads.take();
  return {
    ...totals,
    setCount,
    freeableByRoot,
    objectSets,
    sets: { [Symbol.iterator]: () => planSets(c, data, starts) },
    rowSets: { [Symbol.iterator]: () => rowSets(c, data, starts) },
  };
}

/**
 * planOne on rows, for the sets where it reduces to a sort (see the header):
 * plan() returns false, having written nothing, for any other set. Each
 * step names the planOne step it stands for; the scratch columns are
 * indexed by a candidate's position k in the set.
 */
class FastPlanner {
  private cap = 0;
  private head = new Uint32Array(0); // the inode's first row: its Stat's (Materializer.inode)
  private first = new Uint32Array(0); // its first path (plan.ts firstPath)
  private nlink = new Float64Array(0);
  private free = new Uint8Array(0); // plan.ts freeable(): seenAll, and no path refused
  private order = new Uint32Array(0);
  private rows = new Uint32Array(64);
  private readonly mayRefuse: boolean;
  constructor(
    private readonly c: Candidates,
    private readonly limits: PlanLimits,
    private readonly totals: PlanTotals,
    private readonly freeableByRoot: number[],
    private readonly items: U32List,
    private readonly heads: U32List,
  ) {
    this.mayRefuse = mayRefuse(c.projects);
  }

  /** canonicalOrder's comparison of positions x, y. */
  private readonly canonicalFirst = (x: number, y: number): number =>
    this.free[x]! - this.free[y]! || this.nlink[y]! - this.nlink[x]! || comparePathRows(this.c.scan, this.first[x]!, this.first[y]!) || x - y;
  private readonly pathOrder = (x: number, y: number): number => comparePathRows(this.c.scan, x, y);

  plan(from: number, to: number): boolean {
    const { c, limits } = this;
    const n = to - from;
    if (n < 2) return true; // planOne: fewer than two, nothing (locked or not)
    if ((limits.locked && !limits.lockedByFlags) || (limits.linkLimit && !limits.rootLinkLimit)) return false;
    this.reserve(n);
    const t = c.scan.tables, r = c.read, ins = c.inodes;
    for (let k = 0; k < n; k++) {
      const m = from + k;
      // Read: its flags and project are known (an unread inode's canonical role asks the disk).
      if (!(r.state[m]! & READ)) return false;
      // planOne's filter: no candidate locked as a duplicate.
      if (limits.lockedByFlags && limits.lockedByFlags(flagsOf(r, m), 'duplicate') !== false) return false;
      const a = ins.from(m), b = ins.to(m);
      // No path refused (policy.ts refusal): every path accepts a link, none pins its inode.
      if (this.mayRefuse) for (let j = a; j < b; j++) if (this.refused(ins.paths[j]!, projidOf(r, m))) return false;
      let first = ins.paths[a]!;
      for (let j = a + 1; j < b; j++) if (comparePathRows(c.scan, ins.paths[j]!, first) < 0) first = ins.paths[j]!;
      const head = ins.paths[a]!;
      this.head[k] = head;
      this.first[k] = first;
      this.nlink[k] = nlinkOf(t, head);
      this.free[k] = this.nlink[k]! <= b - a ? 1 : 0; // seenAll
    }
    // canonicalOrder: non-freeable first, then most links, then first path
    // (stable: ties, which distinct paths never are, by position).
    const order = this.order;
    const cmp = this.canonicalFirst;
    const rowsKept = !this.items.counting;
    if (!rowsKept) {
      // A dry run keeps no rows: only the canonical (the first in that order,
      // the least under cmp, a strict order) tells in its totals, so it is
      // found in one pass; the others' order would show only in the rows.
      let least = 0;
      for (let k = 1; k < n; k++) if (cmp(k, least) < 0) least = k;
      order[0] = least;
      for (let k = 0, j = 1; k < n; k++) if (k !== least) order[j++] = k;
    } else {
      for (let k = 0; k < n; k++) order[k] = k;
      if (n > 16) order.subarray(0, n).sort(cmp); // a guest's set of thousands: not quadratic
      else
        for (let k = 1; k < n; k++) {
          let j = k;
          for (; j > 0 && cmp(order[j - 1]!, k) > 0; j--) order[j] = order[j - 1]!;
          order[j] = k;
        }
    }
    // byRoom: the canonical is not locked and has room for every other link (one part).
    const canon = order[0]!;
    const cm = from + canon;
    if (limits.lockedByFlags && limits.lockedByFlags(flagsOf(r, cm), 'canonical') !== false) return false;
    if (limits.rootLinkLimit) {
      let others = 0;
      for (let k = 1; k < n; k++) others += this.pathCount(from + order[k]!);
      const root = c.scan.roots[rootIndexOf(t, this.head[canon]!)]!;
      if (others > limits.rootLinkLimit(root) - this.nlink[canon]!) return false;
    }
    // planSet: every other inode is a duplicate, each path (in path order) an operation.
    const { items, totals } = this;
    this.heads.push(items.length);
    items.push(cm);
    items.push(this.first[canon]!);
    items.push(n - 1);
    for (let k = 1; k < n; k++) items.push(from + order[k]!);
    let ops = 0;
    for (let k = 1; k < n; k++) ops += this.pathCount(from + order[k]!);
    items.push(ops);
    for (let k = 1; k < n; k++) {
      const d = order[k]!, m = from + d;
      const a = ins.from(m), b = ins.to(m);
      if (rowsKept) {
        const rows = this.sortedPaths(ins.paths, a, b);
        for (let j = 0; j < b - a; j++) {
          items.push(rows[j]!);
          items.push(m);
        }
      }
      if (this.free[d]) {
        const size = sizeOfRow(t, this.head[d]!);
        totals.freeableInodes++;
        totals.freeableBytes += size;
        totals.freeableDiskBytes += blocksOf(t, this.head[d]!) * 512;
        this.freeableByRoot[c.scan.roots[rootIndexOf(t, this.first[d]!)]!.index]! += size;
      }
    }
    totals.linksPlanned += ops;
    return true;
  }

  private pathCount(m: number): number {
    return this.c.inodes.pathCount(m);
  }

  private refused(row: number, projid: number): boolean {
    const p = this.c.projects;
    if (!p) return false;
    const dir = this.c.scan.tables.files.dir[row]!;
    return p.known[dir] === 1 && dirRefusal(p.locked[dir] === 1, p.inherit[dir] === 1, p.projid[dir]!, projid) !== undefined;
  }

  /** paths[a, b) sorted by comparePaths, in scratch. */
  private sortedPaths(paths: Uint32Array, a: number, b: number): Uint32Array {
    if (b - a > this.rows.length) this.rows = new Uint32Array(Math.max(b - a, this.rows.length * 2));
    const rows = this.rows;
    if (b - a > 16) {
      // An inode with thousands of links (a guest can make 65,000): not quadratic.
      rows.set(paths.subarray(a, b));
      rows.subarray(0, b - a).sort(this.pathOrder);
      return rows;
    }
    for (let k = 0; k < b - a; k++) {
      const x = paths[a + k]!;
      let j = k;
      for (; j > 0 && comparePathRows(this.c.scan, rows[j - 1]!, x) > 0; j--) rows[j] = rows[j - 1]!;
      rows[j] = x;
    }
    return rows;
  }

  private reserve(n: number): void {
    if (n <= this.cap) return;
    this.cap = Math.max(n, this.cap * 2, 64);
    this.head = new Uint32Array(this.cap);
    this.first = new Uint32Array(this.cap);
    this.nlink = new Float64Array(this.cap);
    this.free = new Uint8Array(this.cap);
    this.order = new Uint32Array(this.cap);
  }
}

/** plan.ts comparePaths on file rows: root index, then core/paths.ts compareRelPaths (directory path, then name, bytewise). */
export function comparePathRows(scan: Scan, a: number, b: number): number {
  const t = scan.tables, f = t.files;
  const ra = scan.roots[rootIndexOf(t, a)]!.index, rb = scan.roots[rootIndexOf(t, b)]!.index;
  if (ra !== rb) return ra - rb;
  const da = f.dir[a]!, db = f.dir[b]!;
  if (da !== db) {
    const by = compareDirRows(t, da, db);
    if (by) return by;
  }
  return compareBytes(t.names, f.nameOff[a]!, f.nameLen[a]!, t.names, f.nameOff[b]!, f.nameLen[b]!);
}

/** Buffer.compare of two byte ranges. */
function compareBytes(x: Uint8Array, xo: number, xl: number, y: Uint8Array, yo: number, yl: number): number {
  const n = Math.min(xl, yl);
  for (let i = 0; i < n; i++) if (x[xo + i] !== y[yo + i]) return x[xo + i]! < y[yo + i]! ? -1 : 1;
  return xl - yl < 0 ? -1 : xl > yl ? 1 : 0;
}

const depthOf = (t: Tables, dir: number): number => {
  let depth = 0;
  for (let x = dir; t.dirs.parent[x]! >= 0; x = t.dirs.parent[x]!) depth++;
  return depth;
};

/**
 * Two different directory rows' paths compared bytewise, as
 * core/paths.ts compareBelow does on DirNodes: below their deepest common
 * directory the paths part in their first names, or one name is a prefix
 * of the other and the byte after it (a slash, or the end) decides.
 */
function compareDirRows(t: Tables, a: number, b: number): number {
  const parent = t.dirs.parent;
  let x = a, y = b, xa = -1, yb = -1; // xa, yb: the children of the common directory on each side
  let dx = depthOf(t, a), dy = depthOf(t, b);
  for (; dx > dy; dx--) (xa = x), (x = parent[x]!);
  for (; dy > dx; dy--) (yb = y), (y = parent[y]!);
  while (x !== y && x >= 0 && y >= 0) {
    xa = x;
    yb = y;
    x = parent[x]!;
    y = parent[y]!;
  }
  if (x !== y) return writtenOut(t, a, b); // no common directory (not one root's)
  if (xa < 0) return -1; // a is the common directory: "" sorts first
  if (yb < 0) return 1;
  const d = t.dirs, names = t.names;
  const oa = d.nameOff[xa]!, la = d.nameLen[xa]!, ob = d.nameOff[yb]!, lb = d.nameLen[yb]!;
  const n = Math.min(la, lb);
  for (let i = 0; i < n; i++) if (names[oa + i] !== names[ob + i]) return names[oa + i]! < names[ob + i]! ? -1 : 1;
  if (la < lb) return xa === a || SLASH < names[ob + n]! ? -1 : 1;
  if (lb < la) return yb === b || SLASH < names[oa + n]! ? 1 : -1;
  return writtenOut(t, a, b); // siblings of one name (never from one walk)
}

const SLASH = 0x2f;

function writtenOut(t: Tables, a: number, b: number): number {
  const pa = Buffer.allocUnsafe(dirRelLength(t, a)), pb = Buffer.allocUnsafe(dirRelLength(t, b));
  writeDirRelRow(t, a, pa, 0);
  writeDirRelRow(t, b, pb, 0);
  return Buffer.compare(pa, pb);
}

/** The planned sets' objects, built one set at a time from the plan's rows. */
function* planSets(c: Candidates, data: Uint32Array, starts: Uint32Array): Generator<PlanSet> {
  const mat = new Materializer(c.scan, c.projects);
  for (const head of starts) yield setObjects(c, mat, data, head);
}

/** The objects of the set whose rows start at data[head]. */
function setObjects(c: Candidates, mat: Materializer, data: Uint32Array, head: number): PlanSet {
  const byCandidate = new Map<number, Inode>();
  const get = (m: number) => {
    let inode = byCandidate.get(m);
    if (!inode) byCandidate.set(m, (inode = inodeOf(c, mat, m)));
    return inode;
  };
  const fileOf = (inode: Inode, m: number, row: number): FileRec => {
    // A search, not a loop whose step most sets never take (it deoptimized planSets at the first that did).
    const from = c.inodes.from(m);
    const j = c.inodes.paths.indexOf(row, from) - from;
    if (j >= 0 && j < inode.paths.length) return inode.paths[j]!;
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
  return { canonical, source, duplicates, ops };
}

/**
 * One planned set as the plan's rows, for the linker's path that needs no
 * objects while every pair links (change/link.ts linkRows): its canonical
 * and each op's path row and candidate (candidate m is inode m, group.ts),
 * and objects(), the set as `sets` yields it, for anything else.
 */
export class RowSet {
  /** The canonical's candidate and the path row it is opened through (PlanSet.source). */
  readonly canonical: number;
  readonly source: number;
  /** Ops: op k is path row(k) of candidate inode(k). */
  readonly count: number;
  private readonly at: number;
  constructor(
    private readonly c: Candidates,
    private readonly mat: Materializer,
    private readonly data: Uint32Array,
    private readonly head: number,
  ) {
    let at = head;
    this.canonical = data[at++]!;
    this.source = data[at++]!;
    at += 1 + data[at]!; // the duplicates
    this.count = data[at++]!;
    this.at = at;
  }
  get scan(): Candidates['scan'] {
    return this.c.scan;
  }
  /** Candidates of the plan (an upper bound of inode()). */
  get candidates(): number {
    return this.c.inodes.count;
  }
  row(k: number): number {
    return this.data[this.at + 2 * k]!;
  }
  inode(k: number): number {
    return this.data[this.at + 2 * k + 1]!;
  }
  /** The row whose stat is candidate m's inode's (its head, which is also the first path Materializer.inode takes). */
  inodeRow(m: number): number {
    return this.c.inodes.head(m);
  }
  /** Directory row `d`'s node: the one objects() gives its files (one Materializer for the whole plan). */
  dir(d: number): DirNode {
    return this.mat.dir(d);
  }
  objects(): PlanSet {
    return setObjects(this.c, this.mat, this.data, this.head);
  }
}

function* rowSets(c: Candidates, data: Uint32Array, starts: Uint32Array): Generator<RowSet> {
  const mat = new Materializer(c.scan, c.projects);
  for (const head of starts) yield new RowSet(c, mat, data, head);
}

/**
 * What keeps identical content apart (report/kept-apart.ts) over every
 * hashed candidate, by content class (same hash and size). The classes are
 * found among one item per identical set (its members share hash and size)
 * and one per hashed candidate in no set whose hash may be another item's,
 * so the sort holds a few items per set rather than one per candidate. A class that is one identical set keeps
 * nothing apart, unless a path of it lies in a directory that refuses links;
 * the others are charged on their rows (KeptApartRows), or, with a refused
 * path, on their objects as keptApart() charges them.
 */
export function keptApartRows(c: Candidates, sets: SetRows, opts: PolicyOptions): KeptApart {
  const sum = keptApartSum(c.scan.roots.length);
  const r = c.read, t = c.scan.tables;
  const { reps, count } = classItems(r, sets);
  const sizeOf = (m: number) => sizeOfRow(t, c.inodes.head(m));
  const mat = new Materializer(c.scan, c.projects);
  const onRows = new KeptApartRows(c, sets.count, sum, opts);
  const pinnable = mayRefuse(c.projects);
  // Item i < sets.count is set i (reps[i] its first member); the others are candidates alone.
  const setOfItem = (i: number) => (i < sets.count ? i : -1);
  let content: Uint32Array = new Uint32Array(64);
  let contentSet: Int32Array = new Int32Array(64);
  classesOf(
    count,
    (i) => mix(r.hashLo[reps[i]!]!, r.hashHi[reps[i]!]!),
    (i, j) => {
      const a = reps[i]!, b = reps[j]!;
      if (r.hashHi[a] !== r.hashHi[b]) return r.hashHi[a]! < r.hashHi[b]! ? -1 : 1;
      if (r.hashLo[a] !== r.hashLo[b]) return r.hashLo[a]! < r.hashLo[b]! ? -1 : 1;
      return sizeOf(a) - sizeOf(b);
    },
    1,
    (items, from, to) => {
      const one = to - from === 1;
      if (one && (setOfItem(items[from]!) < 0 || !pinnable)) return; // one candidate, or one set with nothing pinned
      // The class's candidates: each set's members, and the others.
      let n = 0;
      for (let k = from; k < to; k++) {
        const m = reps[items[k]!]!, s = setOfItem(items[k]!);
        const a = s < 0 ? m : sets.start[s]!, b = s < 0 ? m + 1 : sets.end[s]!;
        if (n + b - a > content.length) (content = grow(content, n + b - a)), (contentSet = growInt(contentSet, content.length));
        for (let j = a; j < b; j++) (contentSet[n] = s), (content[n++] = j);
      }
      const pinned = pinnable && anyPinned(c, content, n);
      if (one && !pinned) return;
      if (!pinned) return onRows.add(content, contentSet, n);
      const inodes: Inode[] = [];
      for (let k = 0; k < n; k++) inodes.push(inodeOf(c, mat, content[k]!));
      addContentClass(sum, inodes, opts);
    },
  );
  return keptApartOf(sum);
}

/**
 * keptApartRows' items: one per identical set (its first member), then
 * the hashed candidates in no set whose hash may be another item's (reps;
 * count of them). Each pass over the candidates is a function of its own:
 * every one runs once, so V8 optimizes it in the middle of its loop, and
 * code after the loop in the same function, not run yet, deoptimized it
 * (three times per fleet run, back to the interpreter each time).
 */
function classItems(r: ReadColumns, sets: SetRows): { reps: Uint32Array; count: number } {
  // The candidates in no identical set: those left unmarked by a bit the state column has spare
  // (no array per candidate; a set's number is its item's, reps below).
  markSets(r.state, sets);
  // A candidate alone keeps nothing apart unless another item has its hash: most have
  // none (410,000 of them at 2,000,000 files, 12 bytes each in the sort, held at the
  // run's peak). Two bitmaps of the hashes' low bits, seen and seen again, find the
  // ones that may share theirs; a false match only costs it its place in the sort.
  const items = sets.count + countAlone(r.state);
  // 4 bits or more per item: a fifth of those alone pass (and cost 12 bytes each) while the bitmaps cost 0.25 bytes.
  let bits = 1 << 16;
  while (bits < 4 * items && bits < 1 << 30) bits *= 2;
  const seen = new Uint8Array(bits >>> 3), again = new Uint8Array(bits >>> 3);
  noteHashes(r, sets, bits - 1, seen, again);
  const count = sets.count + countMayShare(r, bits - 1, again);
  const reps = new Uint32Array(count);
  for (let s = 0; s < sets.count; s++) reps[s] = sets.start[s]!;
  listMayShare(r, bits - 1, again, reps, sets.count);
  unmarkSets(r.state, sets);
  return { reps, count };
}

/** Set IN_SET on every member of an identical set. */
function markSets(state: Uint8Array, sets: SetRows): void {
  for (let s = 0; s < sets.count; s++) for (let m = sets.start[s]!; m < sets.end[s]!; m++) state[m] = state[m]! | IN_SET;
}

/** Clear it again (a function apart from markSets: one optimized for setting deoptimized at its first clearing). */
function unmarkSets(state: Uint8Array, sets: SetRows): void {
  for (let s = 0; s < sets.count; s++) for (let m = sets.start[s]!; m < sets.end[s]!; m++) state[m] = state[m]! & ~IN_SET;
}

/** Hashed and in no set (markSets has run). */
const isAlone = (state: Uint8Array, m: number): boolean => (state[m]! & (READ | IN_SET)) === READ;

function countAlone(state: Uint8Array): number {
  let n = 0;
  for (let m = 0; m < state.length; m++) if (isAlone(state, m)) n++;
  return n;
}

/** Each item's hash (low bits, `mask`) in `seen`, and in `again` when seen before. */
function noteHashes(r: ReadColumns, sets: SetRows, mask: number, seen: Uint8Array, again: Uint8Array): void {
  noteSets(r, sets, mask, seen, again);
  noteAlone(r, mask, seen, again);
}

function note(r: ReadColumns, m: number, mask: number, seen: Uint8Array, again: Uint8Array): void {
  const b = r.hashLo[m]! & mask, byte = b >>> 3, bit = 1 << (b & 7);
  if (seen[byte]! & bit) again[byte]! |= bit;
  else seen[byte]! |= bit;
}

function noteSets(r: ReadColumns, sets: SetRows, mask: number, seen: Uint8Array, again: Uint8Array): void {
  for (let s = 0; s < sets.count; s++) note(r, sets.start[s]!, mask, seen, again);
}

function noteAlone(r: ReadColumns, mask: number, seen: Uint8Array, again: Uint8Array): void {
  for (let m = 0; m < r.state.length; m++) if (isAlone(r.state, m)) note(r, m, mask, seen, again);
}

const mayShare = (r: ReadColumns, mask: number, again: Uint8Array, m: number): boolean => {
  const b = r.hashLo[m]! & mask;
  return (again[b >>> 3]! & (1 << (b & 7))) !== 0;
};

function countMayShare(r: ReadColumns, mask: number, again: Uint8Array): number {
  let n = 0;
  for (let m = 0; m < r.state.length; m++) if (isAlone(r.state, m) && mayShare(r, mask, again, m)) n++;
  return n;
}

function listMayShare(r: ReadColumns, mask: number, again: Uint8Array, reps: Uint32Array, at: number): void {
  for (let m = 0; m < r.state.length; m++) if (isAlone(r.state, m) && mayShare(r, mask, again, m)) reps[at++] = m;
}

/** A bit of ReadColumns.state (rows.ts READ, ELF_BIT) that keptApartRows sets on the members of identical sets while it picks the others, and clears. */
const IN_SET = 0x80;

function grow(a: Uint32Array, n: number): Uint32Array {
  const next = new Uint32Array(Math.max(n, a.length * 2));
  next.set(a);
  return next;
}

function growInt(a: Int32Array, n: number): Int32Array {
  const next = new Int32Array(n);
  next.set(a);
  return next;
}

/**
 * report/kept-apart.ts addContentClass on rows, for a content class none of
 * whose paths is refused (anyPinned false; the others get their objects).
 * Its policy classes are its identical sets (members of one share every
 * part of the share key) and each member in none alone (a locked one, or
 * one whose key no other member has); each part's canonical is the least
 * in canonicalOrder's keys (freeable = seenAll here: nothing is pinned), the
 * main part the one addContentClass sorts first (most members, then
 * compareCanonical). Every other part's canonical that has all its links
 * seen is charged to firstDifference from the main one, the very function
 * the objects path asks, given the two inodes' attributes; nothing inside a
 * part is pinned, so that is all. The charges are integer sums, so their
 * order does not matter.
 */
class KeptApartRows {
  private cap = 0;
  private head = new Uint32Array(0); // per part: its canonical's candidate
  private len = new Uint32Array(0);
  private free = new Uint8Array(0);
  private nlink = new Float64Array(0);
  private first = new Uint32Array(0);
  private readonly slotOfSet: Int32Array;
  constructor(
    private readonly c: Candidates,
    sets: number,
    private readonly sum: KeptApartSum,
    private readonly opts: PolicyOptions,
  ) {
    this.slotOfSet = new Int32Array(sets).fill(-1);
  }

  /** Charge the class of candidates content[0, n), the k-th of identical set setOf[k] (-1: of none). */
  add(content: Uint32Array, setOf: Int32Array, n: number): void {
    const { c } = this;
    const t = c.scan.tables, ins = c.inodes;
    this.reserve(n);
    let parts = 0;
    for (let k = 0; k < n; k++) {
      const m = content[k]!;
      const set = setOf[k]!;
      let p = set >= 0 ? this.slotOfSet[set]! : -1;
      const a = ins.from(m), b = ins.to(m);
      const head = ins.paths[a]!;
      const nlink = nlinkOf(t, head);
      const free = nlink <= b - a ? 1 : 0;
      let first = head;
      for (let j = a + 1; j < b; j++) if (comparePathRows(c.scan, ins.paths[j]!, first) < 0) first = ins.paths[j]!;
      if (p < 0) {
        p = parts++;
        if (set >= 0) this.slotOfSet[set] = p;
        this.len[p] = 0;
      } else if ((this.free[p]! - free || nlink - this.nlink[p]! || comparePathRows(c.scan, this.first[p]!, first)) <= 0) {
        this.len[p] = this.len[p]! + 1;
        continue; // the part's canonical so far stays
      }
      this.len[p] = this.len[p]! + 1;
      this.head[p] = m;
      this.free[p] = free;
      this.nlink[p] = nlink;
      this.first[p] = first;
    }
    for (let k = 0; k < n; k++) {
      const set = setOf[k]!;
      if (set >= 0) this.slotOfSet[set] = -1;
    }
    let main = 0;
    for (let p = 1; p < parts; p++) {
      // addContentClass's sort, (main, p): most members first, then compareCanonical.
      const by =
        this.len[p]! - this.len[main]! ||
        this.free[main]! - this.free[p]! ||
        this.nlink[p]! - this.nlink[main]! ||
        comparePathRows(c.scan, this.first[main]!, this.first[p]!);
      if (by > 0) main = p;
    }
    if (parts < 2) return;
    const mainAttrs = this.attributes(this.head[main]!);
    const roots = c.scan.roots;
    for (let p = 0; p < parts; p++) {
      if (p === main || !this.free[p]) continue; // free = seenAll: links outside keep it anyway
      const kept = this.head[p]!;
      const reason = firstDifference(this.attributes(kept), mainAttrs, this.opts);
      if (!reason || reason === 'size') continue;
      const size = sizeOfRow(t, ins.head(kept));
      chargeKept(this.sum, reason, size, roots[rootIndexOf(t, this.first[p]!)]!.index, roots[rootIndexOf(t, this.first[main]!)]!.index);
    }
  }

  /** What firstDifference compares of candidate `m`: its Stat (its first row's, as Materializer.inode) and what the hash stage read. */
  private attributes(m: number): Attributes {
    const c = this.c, r = c.read;
    return { stat: statOfRow(c.scan, c.inodes.head(m)), flags: flagsOf(r, m), projid: projidOf(r, m), xattrs: r.xattrs.get(m) ?? '' };
  }

  private reserve(n: number): void {
    if (n <= this.cap) return;
    this.cap = Math.max(n, this.cap * 2, 64);
    this.head = new Uint32Array(this.cap);
    this.len = new Uint32Array(this.cap);
    this.free = new Uint8Array(this.cap);
    this.nlink = new Float64Array(this.cap);
    this.first = new Uint32Array(this.cap);
  }
}

/**
 * Whether any directory read refuses a link to some inode (policy.ts
 * dirRefusal): when none does (a filesystem without projects, no immutable
 * directory: most hosts), no path of any set needs asking. The rule looks at
 * an inode's project only as equal to the directory's or not, so asking it
 * with the directory's own project and with another one covers every inode.
 */
function mayRefuse(p: DirProjects | undefined): boolean {
  if (!p) return false;
  for (let d = 0; d < p.known.length; d++) {
    if (!p.known[d]) continue;
    const locked = p.locked[d] === 1, inherit = p.inherit[d] === 1, own = p.projid[d]!;
    if (dirRefusal(locked, inherit, own, own) !== undefined || dirRefusal(locked, inherit, own, own + 1) !== undefined) return true;
  }
  return false;
}

/** policy.ts isPinned on rows: a path of one of the candidates lies in a directory that refuses links to it. */
function anyPinned(c: Candidates, content: Uint32Array, n: number): boolean {
  const p = c.projects;
  if (!p) return false;
  const f = c.scan.tables.files;
  for (let k = 0; k < n; k++) {
    const m = content[k]!;
    for (let j = c.inodes.from(m), b = c.inodes.to(m); j < b; j++) {
      const dir = f.dir[c.inodes.paths[j]!]!;
      if (p.known[dir] && dirRefusal(p.locked[dir] === 1, p.inherit[dir] === 1, p.projid[dir]!, projidOf(c.read, m)) !== undefined) return true;
    }
  }
  return false;
}


/** The directory rows of every path of the sets' candidates (for projects.ts readDirProjectRows). */
export function setDirs(c: Omit<Candidates, 'read' | 'projects'>, sets: SetRows): (visit: (dir: number) => void) => void {
  const f = c.scan.tables.files;
  return (visit) => {
    for (let s = 0; s < sets.count; s++)
      for (let m = sets.start[s]!; m < sets.end[s]!; m++) for (let j = c.inodes.from(m), b = c.inodes.to(m); j < b; j++) visit(f.dir[c.inodes.paths[j]!]!);
  };
}
