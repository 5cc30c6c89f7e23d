/*
 * Group: which files could possibly be unified.
 *
 * Paths naming the same inode become one member (an Inode with several
 * paths). Inodes are then grouped by everything a hardlink would force them
 * to share besides content and xattrs: filesystem (dev and mount id, since
 * link(2) cannot cross either), size, owner, group, permission bits
 * including setuid/setgid/sticky, and mtime unless the caller ignores it.
 * Groups with a single inode cannot save anything and are dropped here, so
 * later stages only open files that have a chance.
 *
 * The main path does the same on table rows (inodeRows, groupRows): row
 * numbers sorted by the columns policy.ts compares (compareMetadataRows),
 * no key string and no object per file; groupFiles stays for the commands
 * that still work on objects (split, report).
 */
import type { FileRec, Inode } from '../core/types.js';
import { compareMetadataRows, metadataHashRow, metadataKey, mix, type PolicyOptions } from './policy.js';
import { classesIn, classList, HI, isIdentity, LO, rootIndexOf, sortKeys, type Scan } from './rows.js';
import { inoOf, type Tables } from './table.js';

export { metadataKey };
export type GroupOptions = PolicyOptions;

export interface Grouping {
  /** Every distinct inode among the scanned files, in scan order. */
  inodes: Inode[];
  /** Candidate groups: two or more inodes that agree on the metadata key. */
  groups: Inode[][];
}

export function groupFiles(files: readonly FileRec[], opts: GroupOptions): Grouping {
  const inodes = collectInodes(files);
  const byKey = new Map<string, Inode[]>();
  for (const inode of inodes) {
    const key = metadataKey(inode, opts);
    const group = byKey.get(key);
    if (group) group.push(inode);
    else byKey.set(key, [inode]);
  }
  const groups = [...byKey.values()].filter((g) => g.length > 1);
  return { inodes, groups };
}

/** Paths naming the same inode become one Inode, in scan order. */
export function collectInodes(files: readonly FileRec[]): Inode[] {
  // Numeric keys, one map per device: a "dev:ino" string per file cost
  // more than the rest of this stage.
  const byDev = new Map<number, Map<number, Inode>>();
  const inodes: Inode[] = [];
  for (const f of files) {
    let byIno = byDev.get(f.stat.dev);
    if (!byIno) byDev.set(f.stat.dev, (byIno = new Map()));
    let inode = byIno.get(f.stat.ino);
    if (!inode) {
      inode = { dev: f.stat.dev, ino: f.stat.ino, stat: f.stat, paths: [] };
      byIno.set(f.stat.ino, inode);
      inodes.push(inode);
    }
    inode.paths.push(f);
  }
  return inodes;
}

/** Split every group by a per-inode key, keeping parts with two or more inodes. */
export function splitGroups(groups: readonly Inode[][], key: (inode: Inode) => string | bigint | undefined): Inode[][] {
  const out: Inode[][] = [];
  for (const group of groups) {
    const parts = new Map<string | bigint, Inode[]>();
    for (const inode of group) {
      const k = key(inode);
      if (k === undefined) continue; // could not be read: already reported
      const part = parts.get(k);
      if (part) part.push(inode);
      else parts.set(k, [inode]);
    }
    for (const part of parts.values()) if (part.length > 1) out.push(part);
  }
  return out;
}

/**
 * Inodes of table rows: rows naming the same (root's st_dev, ino) are one
 * inode, numbered 0..count-1. Inode k's paths are rows paths[from(k) ..
 * to(k)), the first being the one it is opened by; paths[k] is that first
 * one too (head(k)). Nearly every inode has one path: its range is then
 * [k, k+1), and it costs 4 bytes and no start entry (a start per inode was
 * 4 more bytes per file, 7.4 MiB at 2,000,000). The paths of an inode with
 * more than one are a block at the array's end (its first path again, then
 * the others), found through a bit per inode and a short sorted list.
 */
export class InodeRows {
  private lastK = -1;
  private lastFrom = 0;
  private lastTo = 0;
  constructor(
    readonly count: number,
    readonly paths: Uint32Array,
    /** Bit k: inode k has more than one path. */
    private many: Uint8Array,
    /** The inodes with more than one path, ascending, and the range of each one's block. */
    private manyId: Uint32Array,
    private manyFrom: Uint32Array,
    private manyTo: Uint32Array,
  ) {}

  /** The row inode k is opened by (and its Stat is read from). */
  head(k: number): number {
    return this.paths[k]!;
  }

  from(k: number): number {
    if ((this.many[k >>> 3]! & (1 << (k & 7))) === 0) return k;
    this.find(k);
    return this.lastFrom;
  }

  to(k: number): number {
    if ((this.many[k >>> 3]! & (1 << (k & 7))) === 0) return k + 1;
    this.find(k);
    return this.lastTo;
  }

  pathCount(k: number): number {
    return this.to(k) - this.from(k);
  }

  /** Every inode with more than one path, ascending, with its number of paths (the others have one): no search per inode. */
  forEachSeveral(visit: (k: number, paths: number) => void): void {
    const ids = this.manyId, from = this.manyFrom, to = this.manyTo;
    for (let j = 0; j < ids.length; j++) visit(ids[j]!, to[j]! - from[j]!);
  }

  /**
   * Number the inodes anew: inode order[c] becomes c, for c < order.length
   * (distinct inodes), and the others follow in their order. `scratch`:
   * room for `count` numbers that no one reads meanwhile.
   */
  renumber(order: Uint32Array, scratch: Uint32Array): void {
    const n = this.count, c = order.length;
    const listed = listedBits(order, n);
    const to: Renumbered = {
      heads: scratch.subarray(0, n),
      many: new Uint8Array(this.many.length),
      ids: new Uint32Array(this.manyId.length),
      from: new Uint32Array(this.manyId.length),
      to: new Uint32Array(this.manyId.length),
      j: 0,
    };
    // Each loop a method of its own (see inodeRows): optimized in the middle of one,
    // the code after it no longer deoptimizes when it first runs.
    this.placeListed(to, order);
    const next = this.placeOthers(to, listed, c);
    if (next !== n) throw new Error('inodes: renumbered with an order that repeats an inode');
    this.paths.set(to.heads);
    // The blocks stay where they are; placed in ascending new numbers, their list is sorted.
    this.manyId = to.ids;
    this.manyFrom = to.from;
    this.manyTo = to.to;
    this.many = to.many;
    this.lastK = -1;
  }

  /** Inode order[k] becomes k. */
  private placeListed(to: Renumbered, order: Uint32Array): void {
    for (let k = 0; k < order.length; k++) this.place(to, order[k]!, k);
  }

  /** The inodes not in the order, in theirs, from `next` on; returns the number after the last. */
  private placeOthers(to: Renumbered, listed: Uint8Array, next: number): number {
    for (let old = 0; old < this.count; old++) if ((listed[old >>> 3]! & (1 << (old & 7))) === 0) this.place(to, old, next++);
    return next;
  }

  /** Inode `old` becomes k in `to`. */
  private place(to: Renumbered, old: number, k: number): void {
    to.heads[k] = this.paths[old]!;
    if ((this.many[old >>> 3]! & (1 << (old & 7))) === 0) return;
    this.find(old);
    to.many[k >>> 3]! |= 1 << (k & 7);
    const j = to.j++;
    (to.ids[j] = k), (to.from[j] = this.lastFrom), (to.to[j] = this.lastTo);
  }

  /**
   * Renumber inodes [from, from+n): inode from+k becomes what order[k] was
   * (order: a permutation of that range), as rows.ts permuteRead renumbers
   * the candidates' columns.
   */
  permute(from: number, order: Uint32Array, n: number): void {
    if (isIdentity(from, order, n)) return;
    const heads = this.paths.slice(from, from + n);
    for (let k = 0; k < n; k++) this.paths[from + k] = heads[order[k]! - from]!;
    // The inodes of several paths in the range are a run of the sorted list: renumbered, and that run sorted again.
    const ids = this.manyId;
    const lo = lowerBound(ids, from), hi = lowerBound(ids, from + n);
    if (lo === hi) return;
    // Typed copies, not a map: a guest can make every inode of a group one of several paths.
    const oldIds = ids.slice(lo, hi), oldFrom = this.manyFrom.slice(lo, hi), oldTo = this.manyTo.slice(lo, hi);
    const isMany = (k: number) => (this.many[k >>> 3]! & (1 << (k & 7))) !== 0;
    const newIds = new Uint32Array(hi - lo), was = new Uint32Array(hi - lo);
    let j = 0;
    for (let k = 0; k < n; k++) {
      if (!isMany(order[k]!)) continue;
      (newIds[j] = from + k), (was[j++] = lowerBound(oldIds, order[k]!));
    }
    for (const id of oldIds) this.many[id >>> 3]! &= ~(1 << (id & 7));
    for (let x = 0; x < j; x++) {
      const id = newIds[x]!;
      this.many[id >>> 3]! |= 1 << (id & 7);
      (ids[lo + x] = id), (this.manyFrom[lo + x] = oldFrom[was[x]!]!), (this.manyTo[lo + x] = oldTo[was[x]!]!);
    }
    this.lastK = -1;
  }

  private find(k: number): void {
    if (k === this.lastK) return;
    const ids = this.manyId;
    const lo = lowerBound(ids, k);
    if (ids[lo] !== k) throw new Error(`inodes: ${k} is marked as having several paths but has no block`);
    this.lastK = k;
    this.lastFrom = this.manyFrom[lo]!;
    this.lastTo = this.manyTo[lo]!;
  }
}

/** InodeRows.renumber's new arrays as they are filled. */
interface Renumbered {
  heads: Uint32Array;
  many: Uint8Array;
  ids: Uint32Array;
  from: Uint32Array;
  to: Uint32Array;
  /** Blocks placed so far. */
  j: number;
}

/** A bit per inode of n: set for those in `order`. */
function listedBits(order: Uint32Array, n: number): Uint8Array {
  const listed = new Uint8Array((n >>> 3) + 1);
  for (let k = 0; k < order.length; k++) listed[order[k]! >>> 3]! |= 1 << (order[k]! & 7);
  return listed;
}

/** The first index of sorted `a` whose value is `v` or more. */
function lowerBound(a: Uint32Array, v: number): number {
  let lo = 0, hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** A Uint32Array list that doubles (its length is rarely more than a few thousand). */
class Growing {
  data = new Uint32Array(16);
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
 * Candidate groups of inodes. groupRows numbers the inodes so that the
 * candidates come first, group by group: candidate m (the index of the
 * hash stage's columns, rows.ts ReadColumns) is inode m, and group g is
 * inodes start[g] .. start[g+1]. No list of members (4 bytes per candidate).
 */
export interface GroupRows {
  count: number;
  start: Uint32Array;
  /** Candidates in all groups: start[count]. */
  candidates: number;
}

/**
 * The rows' inodes, found by sorting (dev, ino), not by a Map entry per file.
 * `keys`: scratch for the sort (rows.ts sortKeys), at least one number per file;
 * groupRows can be given the same one, so grouping makes one such array,
 * not two (8 bytes per file each, garbage until the collector runs).
 *
 * Each pass over the rows is a function of its own (countLinked,
 * fillInodeKeys, InodeBuilder.scan): every pass runs once, over every row,
 * so V8 optimizes it in the middle of its loop (on-stack replacement), and
 * code after that loop in the same function had run no time yet: reaching
 * it deoptimized the whole function back to the interpreter, once per
 * later pass, each time until another compilation on the (busy) compiler
 * thread was done (three deoptimizations per run on the fleet).
 */
export function inodeRows(scan: Scan, keys?: Float64Array): InodeRows {
  const t = scan.tables, n = t.files.count;
  const devs = scan.roots.map((r) => r.dev);
  // Room for a head per file and the blocks: a block holds its first path twice, and
  // an inode has one only if two of its rows were listed, each with nlink 2 or more
  // (unless its links changed during the walk: then the array grows).
  const b = new InodeBuilder(t, devs, n, countLinked(t.files.nlink, n));
  // Rows bucketed by a hash of (dev, ino) with one sort (rows.ts classesOf), the keys
  // filled and the buckets scanned here rather than through its callbacks: nearly
  // every bucket is one row of one path, taken on the spot; these loops' calls stay
  // monomorphic (classesOf's, shared with the other stages, are not).
  if (n > 0) {
    const sorted = sortKeys(n, keys);
    fillInodeKeys(t, devs, sorted.words, n);
    sorted.keys.sort();
    b.scan(sorted.words, n);
  }
  return b.finish();
}

/** Rows whose nlink is not 1 (each may share its inode with another row). */
function countLinked(nlink: Uint8Array, n: number): number {
  let linked = 0;
  for (let row = 0; row < n; row++) if (nlink[row] !== 1) linked++;
  return linked;
}

/** Sort key of each row: a 32-bit hash of (dev, ino) and the row (rows.ts sortKeys). */
function fillInodeKeys(t: Tables, devs: readonly number[], words: Uint32Array, n: number): void {
  for (let row = 0; row < n; row++) {
    const ino = inoOf(t, row);
    words[2 * row + HI] = (mix(mix(0x2545f491, devs[rootIndexOf(t, row)]! | 0), ino | 0) ^ ((ino / 4294967296) | 0)) >>> 0;
    words[2 * row + LO] = row;
  }
}

/** inodeRows' arrays as the buckets of rows are taken, inode by inode. */
class InodeBuilder {
  paths: Uint32Array;
  readonly many: Uint8Array;
  readonly manyId = new Growing();
  readonly manyFrom = new Growing();
  /** Heads fill [0, count), blocks [end, paths.length). */
  count = 0;
  end: number;
  /** Rows of the classes so far: the heads to come are at most n - listed. */
  listed = 0;
  private scratch = new Uint32Array(64);
  constructor(
    private readonly t: Tables,
    private readonly devs: readonly number[],
    private readonly n: number,
    linked: number,
  ) {
    this.paths = new Uint32Array(n + (linked >>> 1));
    this.many = new Uint8Array((n >>> 3) + 1);
    this.end = this.paths.length;
  }

  private devOf(row: number): number {
    return this.devs[rootIndexOf(this.t, row)]!;
  }

  /** The sorted keys' buckets: one row is an inode of one path; a bucket of several rows, one inode or (rarely) several. */
  scan(words: Uint32Array, n: number): void {
    const t = this.t;
    for (let i = 0; i < n; ) {
      const h = words[2 * i + HI]!;
      let j = i + 1;
      while (j < n && words[2 * j + HI] === h) j++;
      if (j - i === 1) {
        this.paths[this.count++] = words[2 * i + LO]!;
        this.listed++;
      } else {
        const len = j - i;
        if (len > this.scratch.length) this.scratch = new Uint32Array(Math.max(len, this.scratch.length * 2));
        const scratch = this.scratch;
        for (let k = 0; k < len; k++) scratch[k] = words[2 * (i + k) + LO]!;
        // Nearly always the paths of one inode (after unifying, most buckets): checked here, one
        // comparison per row; only a bucket of several inodes goes through classesIn's sort.
        const dev = this.devOf(scratch[0]!), ino = inoOf(t, scratch[0]!);
        let same = 1;
        while (same < len && this.devOf(scratch[same]!) === dev && inoOf(t, scratch[same]!) === ino) same++;
        if (same === len) this.several(scratch, 0, len);
        else
          classesIn(
            scratch,
            len,
            (a, b) => this.devOf(a) - this.devOf(b) || inoOf(t, a) - inoOf(t, b),
            1,
            (items, from, to) => this.several(items, from, to),
          );
      }
      i = j;
    }
  }

  /**
   * An inode of several paths: its first path (one under its earliest root,
   * whatever order the walk's threads wrote the rows in: the hash cache
   * files the inode under that root's shard) as its head, all of them as a block.
   */
  several(items: Uint32Array, from: number, to: number): void {
    const t = this.t, n = this.n;
    let first = from;
    for (let k = from + 1; k < to; k++) if (rootIndexOf(t, items[k]!) < rootIndexOf(t, items[first]!)) first = k;
    const k = this.count++;
    this.listed += to - from;
    if (to - from > 1) {
      if (this.end - (to - from) < this.count + n - this.listed) {
        const paths = this.paths;
        const grown = new Uint32Array(paths.length + Math.max(to - from, paths.length >>> 3));
        const tail = paths.length - this.end, shift = grown.length - paths.length;
        grown.set(paths.subarray(0, k));
        grown.set(paths.subarray(this.end), grown.length - tail);
        for (let j = 0; j < this.manyFrom.length; j++) this.manyFrom.data[j]! += shift;
        this.end += shift;
        this.paths = grown;
      }
      const paths = this.paths;
      this.end -= to - from;
      let at = this.end;
      paths[at++] = items[first]!;
      for (let j = from; j < to; j++) if (j !== first) paths[at++] = items[j]!;
      this.many[k >>> 3]! |= 1 << (k & 7);
      this.manyId.push(k);
      this.manyFrom.push(this.end);
    }
    this.paths[k] = items[first]!;
  }

  finish(): InodeRows {
    let paths = this.paths;
    const { count, end, n, manyFrom, manyId } = this;
    // The room left between heads and blocks (nearly none unless many rows have links the walk did not see) is cut out.
    if (end - count > (n >>> 4)) {
      const tight = new Uint32Array(count + paths.length - end);
      tight.set(paths.subarray(0, count));
      tight.set(paths.subarray(end), count);
      shiftDown(manyFrom, end - count);
      paths = tight;
    }
    return new InodeRows(count, paths, this.many, manyId.data.slice(0, manyId.length), manyFrom.data.slice(0, manyFrom.length), blockEnds(manyFrom, paths.length));
  }
}

function shiftDown(list: Growing, by: number): void {
  for (let j = 0; j < list.length; j++) list.data[j]! -= by;
}

/** Block j ends where block j-1 starts (blocks were placed from the array's end down). */
function blockEnds(starts: Growing, length: number): Uint32Array {
  const ends = new Uint32Array(starts.length);
  for (let j = 0; j < starts.length; j++) ends[j] = j === 0 ? length : starts.data[j - 1]!;
  return ends;
}

/**
 * Candidate groups on rows: inodes agreeing on policy.ts's metadata key
 * (compareMetadataRows), two or more. Renumbers `inodes` (see GroupRows).
 * `keys`: as inodeRows's; the order of the candidates is kept in it meanwhile.
 */
export function groupRows(scan: Scan, inodes: InodeRows, opts: GroupOptions, keys?: Float64Array): GroupRows {
  const t = scan.tables;
  const head = (k: number) => inodes.paths[k]!;
  const scratch = keys && keys.length >= inodes.count ? keys : new Float64Array(inodes.count);
  const { starts, items } = classList(
    inodes.count,
    (k) => metadataHashRow(t, scan.roots, head(k), opts),
    (a, b) => compareMetadataRows(t, scan.roots, head(a), head(b), opts),
    2,
    scratch,
  );
  const candidates = starts[starts.length - 1]!;
  // The candidates' order is the scratch's first words; the new heads go in the words after them.
  const words = new Uint32Array(scratch.buffer, scratch.byteOffset, 2 * inodes.count);
  inodes.renumber(items.subarray(0, candidates), words.subarray(candidates));
  return { count: starts.length - 1, start: Uint32Array.from(starts), candidates };
}
