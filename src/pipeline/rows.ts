/*
 * Working on table rows (table.ts): a file's path and stat from its row,
 * classes of rows found by sorting (no string key, no Map entry per file),
 * and the objects (DirNode, FileRec, Inode) of ONE set at a time, built when
 * a set is planned, linked or explained and dropped after: the per-set code
 * (plan.ts, policy.ts, change/link.ts, report/kept-apart.ts) keeps working
 * on objects while nothing holds one per file.
 *
 * Pure: loads without the addon.
 */
import { FileType, type Stat } from '../core/stat.js';
import type { DirNode, DirProject, FileRec, Inode, Root } from '../core/types.js';
import { childNode, printable, rootNode } from '../core/paths.js';
import { blocksOf, ctimeSecOf, dirName, inoOf, metaOf, mtimeSecOf, nlinkOf, sizeOf, type Tables } from './table.js';

/** The tables and the roots they were walked under (row k of the directory table is root k). */
export interface Scan {
  tables: Tables;
  roots: readonly Root[];
}

export const rootIndexOf = (t: Tables, row: number): number => t.dirs.root[t.files.dir[row]!]!;

/** Bytes of a directory's path relative to its root (names and slashes between them). */
export function dirRelLength(t: Tables, dir: number): number {
  const d = t.dirs;
  let n = -1;
  for (let x = dir; d.parent[x]! >= 0; x = d.parent[x]!) n += d.nameLen[x]! + 1;
  return n < 0 ? 0 : n;
}

/** Bytes of a file's path relative to its root. */
export function relPathLengthRow(t: Tables, row: number): number {
  const n = dirRelLength(t, t.files.dir[row]!);
  return (n ? n + 1 : 0) + t.files.nameLen[row]!;
}

const SLASH = 0x2f;

/** Names are short: a byte loop beats a subarray view and set() per name. */
function copyName(names: Uint8Array, off: number, len: number, buf: Uint8Array, at: number): void {
  for (let i = 0; i < len; i++) buf[at + i] = names[off + i]!;
}

/** Write a file's path relative to its root at buf[at]; returns the bytes written (relPathLengthRow). */
export function writeRelPathRow(t: Tables, row: number, buf: Uint8Array, at: number): number {
  const f = t.files, d = t.dirs, names = t.names;
  const len = relPathLengthRow(t, row);
  let end = at + len;
  const nl = f.nameLen[row]!;
  end -= nl;
  copyName(names, f.nameOff[row]!, nl, buf, end);
  for (let x = f.dir[row]!; d.parent[x]! >= 0; x = d.parent[x]!) {
    buf[--end] = SLASH;
    const l = d.nameLen[x]!;
    end -= l;
    copyName(names, d.nameOff[x]!, l, buf, end);
  }
  return len;
}

/** Write a directory's path relative to its root at buf[at] (dirRelLength bytes). */
export function writeDirRelRow(t: Tables, dir: number, buf: Uint8Array, at: number): void {
  const d = t.dirs, names = t.names;
  let end = at + dirRelLength(t, dir);
  for (let x = dir; d.parent[x]! >= 0; x = d.parent[x]!) {
    const l = d.nameLen[x]!;
    end -= l;
    copyName(names, d.nameOff[x]!, l, buf, end);
    if (d.parent[d.parent[x]!]! >= 0) buf[--end] = SLASH;
  }
}

export function relPathRow(t: Tables, row: number): Buffer {
  const buf = Buffer.allocUnsafe(relPathLengthRow(t, row));
  writeRelPathRow(t, row, buf, 0);
  return buf;
}

/** Printable absolute path of a file row, for messages (as displayPath). */
export function displayRow(scan: Scan, row: number): string {
  return scan.roots[rootIndexOf(scan.tables, row)]!.path.replace(/\/$/, '') + '/' + printable(relPathRow(scan.tables, row));
}

/** Where each Stat field goes in an array of numbers (os/sys.ts LINK_ARRAY.stat, passed in: this module loads without the addon). */
export type StatLayout = { readonly [K in keyof Stat]-?: number };

/** statOfRow(scan, row)'s fields written into `into` at `at` (the linker's pairs: no object per path). */
export function writeStatOfRow(scan: Scan, row: number, layout: StatLayout, into: Float64Array, at: number): void {
  const t = scan.tables, f = t.files, m = t.metas;
  const root = scan.roots[rootIndexOf(t, row)]!;
  const meta = metaOf(t, row);
  into[at + layout.type] = FileType.Regular;
  into[at + layout.mode] = m.mode[meta]!;
  into[at + layout.uid] = m.uid[meta]!;
  into[at + layout.gid] = m.gid[meta]!;
  into[at + layout.nlink] = nlinkOf(t, row);
  into[at + layout.ino] = inoOf(t, row);
  into[at + layout.dev] = root.dev;
  into[at + layout.size] = sizeOf(t, row);
  into[at + layout.blocks] = blocksOf(t, row);
  into[at + layout.mtimeSec] = mtimeSecOf(t, row);
  into[at + layout.mtimeNsec] = f.mtimeNsec[row]!;
  into[at + layout.ctimeSec] = ctimeSecOf(t, row);
  into[at + layout.ctimeNsec] = f.ctimeNsec[row]!;
  into[at + layout.mntId] = root.mntId;
}

/** The Stat the walk saw for a file row (writeStatOfRow writes the same fields). */
export function statOfRow(scan: Scan, row: number): Stat {
  const t = scan.tables, f = t.files, m = t.metas;
  const root = scan.roots[rootIndexOf(t, row)]!;
  const meta = metaOf(t, row);
  return {
    type: FileType.Regular,
    mode: m.mode[meta]!,
    uid: m.uid[meta]!,
    gid: m.gid[meta]!,
    nlink: nlinkOf(t, row),
    ino: inoOf(t, row),
    dev: root.dev,
    size: sizeOf(t, row),
    blocks: blocksOf(t, row),
    mtimeSec: mtimeSecOf(t, row),
    mtimeNsec: f.mtimeNsec[row]!,
    ctimeSec: ctimeSecOf(t, row),
    ctimeNsec: f.ctimeNsec[row]!,
    mntId: root.mntId,
  };
}

/** Which 32-bit half of a 64-bit word is the low one (classesOf's keys), on this machine. */
export const LO = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1 ? 0 : 1;
export const HI = 1 - LO;

/**
 * Room for the sort keys of n items: unsigned 64-bit words (keys, for the
 * sort) and the same memory as 32-bit halves (words: word 2i + HI is key
 * i's hash, 2i + LO its item). `keyScratch`, when it holds n or more
 * numbers, is used (and overwritten) instead of a new array: stages run one
 * after another can share one. A caller fills the words and sorts the keys
 * (no BigInt is made: a BigUint64Array sorts in ~60% of the time a
 * Float64Array of hash * 2^bits + item took, ~0.4 s less per call at 2M
 * files).
 */
export function sortKeys(n: number, keyScratch?: Float64Array): { keys: BigUint64Array; words: Uint32Array } {
  const keys = keyScratch && keyScratch.length >= n ? new BigUint64Array(keyScratch.buffer, keyScratch.byteOffset, n) : new BigUint64Array(n);
  return { keys, words: new Uint32Array(keys.buffer, keys.byteOffset, 2 * n) };
}

/**
 * Classes of the items 0..n-1: items whose `cmp` is 0. Items are bucketed
 * by `hash` (32 bits; equal items must hash alike) with one native sort of
 * unsigned 64-bit (hash, item) keys (sortKeys), and only items sharing a
 * bucket are compared: no comparator call for the items alone in theirs
 * (most). `each` gets every class of `min` or more items, in a scratch
 * array whose [from, to) it may read (and reorder) during the call only;
 * items of a class are in ascending order (`cmp` ties broken by item).
 * `keyScratch`: see sortKeys.
 */
export function classesOf(
  n: number,
  hash: (item: number) => number,
  cmp: (a: number, b: number) => number,
  min: number,
  each: (items: Uint32Array, from: number, to: number) => void,
  keyScratch?: Float64Array,
): void {
  if (n === 0) return;
  const { keys, words } = sortKeys(n, keyScratch);
  // Each loop in a function of its own (see classList).
  bucketKeys(words, n, hash);
  keys.sort();
  eachBucket(words, n, cmp, min, each);
}

/** classesOf's keys: item i's hash, then i. */
function bucketKeys(words: Uint32Array, n: number, hash: (item: number) => number): void {
  for (let i = 0; i < n; i++) {
    words[2 * i + HI] = hash(i) >>> 0;
    words[2 * i + LO] = i;
  }
}

/** classesOf's scan of the sorted keys. */
function eachBucket(words: Uint32Array, n: number, cmp: (a: number, b: number) => number, min: number, each: (items: Uint32Array, from: number, to: number) => void): void {
  let scratch = new Uint32Array(64);
  for (let i = 0; i < n; ) {
    const h = words[2 * i + HI]!;
    let j = i + 1;
    while (j < n && words[2 * j + HI] === h) j++;
    const len = j - i;
    if (len >= min) {
      if (len > scratch.length) scratch = new Uint32Array(Math.max(len, scratch.length * 2));
      for (let k = 0; k < len; k++) scratch[k] = words[2 * (i + k) + LO]!;
      classesIn(scratch, len, cmp, min, each);
    }
    i = j;
  }
}

/**
 * The classes among the items of one bucket, items[0, len) in ascending
 * order (the sort keys' low halves), as classesOf passes them to `each`.
 * For callers that scan their own sorted keys (group.ts inodeRows).
 */
export function classesIn(
  items: Uint32Array,
  len: number,
  cmp: (a: number, b: number) => number,
  min: number,
  each: (items: Uint32Array, from: number, to: number) => void,
): void {
  // Nearly every bucket is one class (a 32-bit hash of the very fields cmp compares):
  // one comparison per item tells, where sorting and then scanning took two or more.
  let same = 1;
  while (same < len && cmp(items[0]!, items[same]!) === 0) same++;
  if (same === len) {
    if (len >= min) each(items, 0, len);
    return;
  }
  // A stable sort by cmp keeps ties in ascending order.
  sortRun(items, len, cmp);
  for (let a = 0; a < len; ) {
    let b = a + 1;
    while (b < len && cmp(items[a]!, items[b]!) === 0) b++;
    if (b - a >= min) each(items, a, b);
    a = b;
  }
}

/**
 * classesOf's classes as one list: class k is items[starts[k] .. starts[k+1]),
 * each in ascending order. The list is written into `keyScratch` (as
 * Uint32 words from its start) over the sorted keys: a class is added only
 * after every key up to its bucket's end has been read, and the list never
 * holds more items than keys read, so each word written belongs to a key
 * already read. `items` is a view over keyScratch: valid until the scratch
 * is used again. No array per item besides the keys.
 *
 * Its own loop, not classesOf's: grouping is its one caller, so `hash` and
 * `cmp` are called from sites that only ever see grouping's functions
 * (TurboFan inlines them; classesOf's sites, shared, deoptimized each time
 * another stage's functions came through them).
 */
export function classList(
  n: number,
  hash: (item: number) => number,
  cmp: (a: number, b: number) => number,
  min: number,
  keyScratch: Float64Array,
): { starts: number[]; items: Uint32Array } {
  if (keyScratch.length < n) throw new Error('classList: the scratch holds fewer than n keys');
  const items = new Uint32Array(keyScratch.buffer, keyScratch.byteOffset, 2 * n);
  const { keys, words } = sortKeys(n, keyScratch);
  // Each pass in a function of its own: optimized in the middle of its one loop, a
  // pass no longer deoptimizes when the code after it runs for the first time.
  hashKeys(words, n, hash);
  keys.sort();
  const starts: number[] = [];
  const at = listClasses(words, n, cmp, min, items, starts);
  starts.push(at);
  return { starts, items: items.subarray(0, at) };
}

/** Key i: item i's hash, then i (sortKeys' words). */
function hashKeys(words: Uint32Array, n: number, hash: (item: number) => number): void {
  for (let i = 0; i < n; i++) {
    words[2 * i + HI] = hash(i) >>> 0;
    words[2 * i + LO] = i;
  }
}

/**
 * classList's scan of the sorted keys: each bucket's classes of `min` or
 * more items, appended to `items` (over the keys already read), each
 * one's start to `starts`; returns the items listed. Nothing after the
 * loop but the return: optimized in its middle, code after it that had not
 * run yet deoptimized it on its way out.
 */
function listClasses(words: Uint32Array, n: number, cmp: (a: number, b: number) => number, min: number, items: Uint32Array, starts: number[]): number {
  let at = 0;
  const add = (part: Uint32Array, from: number, to: number) => {
    starts.push(at);
    for (let k = from; k < to; k++) items[at++] = part[k]!;
  };
  let scratch = new Uint32Array(64);
  for (let i = 0; i < n; ) {
    const h = words[2 * i + HI]!;
    let j = i + 1;
    while (j < n && words[2 * j + HI] === h) j++;
    const len = j - i;
    if (len >= min) {
      if (len > scratch.length) scratch = new Uint32Array(Math.max(len, scratch.length * 2));
      for (let k = 0; k < len; k++) scratch[k] = words[2 * (i + k) + LO]!;
      // classesIn's first step, here: nearly every bucket is one class.
      let same = 1;
      while (same < len && cmp(scratch[0]!, scratch[same]!) === 0) same++;
      if (same === len) add(scratch, 0, len);
      else classesIn(scratch, len, cmp, min, add);
    }
    i = j;
  }
  return at;
}

/** Sort items[0, len) by cmp, stably: insertion sort for the short runs most buckets are, else the built-in sort with ties by item. */
function sortRun(items: Uint32Array, len: number, cmp: (a: number, b: number) => number): void {
  if (len > 16) {
    items.subarray(0, len).sort((a, b) => cmp(a, b) || a - b);
    return;
  }
  for (let k = 1; k < len; k++) {
    const x = items[k]!;
    let j = k;
    for (; j > 0 && cmp(items[j - 1]!, x) > 0; j--) items[j] = items[j - 1]!;
    items[j] = x;
  }
}

/**
 * What the hash stage read, as columns indexed by candidate (a position in
 * the candidate groups, group.ts GroupRows: candidate m is inode m; filled by hash.ts): no object per file.
 * Xattrs are rare: a sparse map.
 */
export interface ReadColumns {
  hashHi: Uint32Array;
  hashLo: Uint32Array;
  /** Inode flags and project ID: read them with flagsOf/projidOf, write with setAttrs. */
  attrs: AttrColumn;
  /** READ once read (or taken from the cache), | ELF_BIT when it starts with the ELF magic. */
  state: Uint8Array;
  xattrs: Map<number, string>;
}
export const READ = 1;
export const ELF_BIT = 2;

/**
 * Columns for `n` candidates. `reuse`: an array whose contents are no longer
 * needed (grouping's sort keys, 8 bytes per file, so room for both hash
 * halves of every candidate): the hash columns are laid over it, zeroed,
 * rather than allocated while it still waits for the collector.
 */
export function readColumns(n: number, reuse?: Float64Array): ReadColumns {
  let hashHi: Uint32Array, hashLo: Uint32Array;
  if (reuse && reuse.length >= n) {
    hashHi = new Uint32Array(reuse.buffer, reuse.byteOffset, n).fill(0);
    hashLo = new Uint32Array(reuse.buffer, reuse.byteOffset + 4 * n, n).fill(0);
  } else {
    hashHi = new Uint32Array(n);
    hashLo = new Uint32Array(n);
  }
  return { hashHi, hashLo, attrs: new AttrColumn(n), state: new Uint8Array(n), xattrs: new Map() };
}

/**
 * Inode flags and project ID per candidate. A host has a handful of
 * distinct pairs (ext4's extents flag on every file, one project per guest
 * where projects are used), so a candidate holds the number of its pair in
 * a short list: 1 byte while there are at most 256 pairs, 2 up to 65,536,
 * instead of two 4-byte columns (8 bytes per candidate, 12 MB at 1.5
 * million). Past that (a guest that sets a project per file) the pairs'
 * lookup would cost more than it saves: the exact values move to two full
 * columns. Candidates not yet set read as 0, 0.
 */
export class AttrColumn {
  private code: Uint8Array | Uint16Array | undefined;
  private flagsCol: Uint32Array | undefined;
  private projidCol: Uint32Array | undefined;
  private readonly pairFlags: number[] = [0];
  private readonly pairProjid: number[] = [0];
  private readonly pairOf = new Map<number, Map<number, number>>([[0, new Map([[0, 0]])]]);
  constructor(readonly length: number) {
    this.code = new Uint8Array(length);
  }

  flags(m: number): number {
    return this.code ? this.pairFlags[this.code[m]!]! : this.flagsCol![m]!;
  }

  projid(m: number): number {
    return this.code ? this.pairProjid[this.code[m]!]! : this.projidCol![m]!;
  }

  set(m: number, flags: number, projid: number): void {
    flags >>>= 0;
    projid >>>= 0;
    if (!this.code) {
      this.flagsCol![m] = flags;
      this.projidCol![m] = projid;
      return;
    }
    let byProjid = this.pairOf.get(flags);
    if (!byProjid) this.pairOf.set(flags, (byProjid = new Map()));
    let pair = byProjid.get(projid);
    if (pair === undefined) {
      pair = this.pairFlags.length;
      if (pair === 65536) {
        this.widen();
        return this.set(m, flags, projid);
      }
      if (pair === 256) this.code = Uint16Array.from(this.code);
      byProjid.set(projid, pair);
      this.pairFlags.push(flags);
      this.pairProjid.push(projid);
    }
    this.code[m] = pair;
  }

  /** Values of [from, from+n) reordered: position from+k takes what order[k] held (order: a permutation of that range). */
  permute(from: number, order: Uint32Array, n: number): void {
    const cols = this.code ? [this.code] : [this.flagsCol!, this.projidCol!];
    for (const col of cols) permuteRange(col, from, order, n);
  }

  private widen(): void {
    const code = this.code!;
    this.flagsCol = new Uint32Array(this.length);
    this.projidCol = new Uint32Array(this.length);
    for (let m = 0; m < this.length; m++) {
      this.flagsCol[m] = this.pairFlags[code[m]!]!;
      this.projidCol[m] = this.pairProjid[code[m]!]!;
    }
    this.code = undefined;
    this.pairOf.clear();
  }
}

/** Whether order[0, n) is from, from+1, ...: a renumbering that moves nothing. */
export function isIdentity(from: number, order: Uint32Array, n: number): boolean {
  for (let k = 0; k < n; k++) if (order[k] !== from + k) return false;
  return true;
}

/** Values of [from, from+n) of `col` reordered: position from+k takes what order[k] held. */
function permuteRange(col: Uint8Array | Uint16Array | Uint32Array, from: number, order: Uint32Array, n: number): void {
  const old = col.slice(from, from + n);
  for (let k = 0; k < n; k++) col[from + k] = old[order[k]! - from]!;
}

/**
 * Renumber candidates [from, from+n) in every column: candidate from+k
 * becomes what order[k] was (order: a permutation of that range). What
 * holds candidate numbers must be renumbered alike (group.ts InodeRows.permute).
 */
export function permuteRead(c: ReadColumns, from: number, order: Uint32Array, n: number): void {
  if (isIdentity(from, order, n)) return; // most groups: one set of all their members, already in order
  permuteRange(c.hashHi, from, order, n);
  permuteRange(c.hashLo, from, order, n);
  permuteRange(c.state, from, order, n);
  c.attrs.permute(from, order, n);
  if (c.xattrs.size === 0) return;
  const moved: [number, string][] = [];
  for (let k = 0; k < n; k++) {
    const x = c.xattrs.get(order[k]!);
    if (x !== undefined) moved.push([from + k, x]);
  }
  for (let k = 0; k < n; k++) c.xattrs.delete(from + k);
  for (const [m, x] of moved) c.xattrs.set(m, x);
}

/** Candidate `m`'s inode flags as read. */
export const flagsOf = (c: ReadColumns, m: number): number => c.attrs.flags(m);
/** Candidate `m`'s project ID as read. */
export const projidOf = (c: ReadColumns, m: number): number => c.attrs.projid(m);
/** Record candidate `m`'s inode flags and project ID. */
export const setAttrs = (c: ReadColumns, m: number, flags: number, projid: number): void => c.attrs.set(m, flags, projid);

/** Candidate `m`'s hash as a BigInt (for the cache and messages). */
export const hashOf = (c: ReadColumns, m: number): bigint => (BigInt(c.hashHi[m]!) << 32n) | BigInt(c.hashLo[m]!);

/** Record what was read of candidate `m`. */
export function setRead(c: ReadColumns, m: number, r: { hash: bigint; xattrs: string; elf?: boolean; flags: number; projid: number }): void {
  c.hashHi[m] = Number(r.hash >> 32n);
  c.hashLo[m] = Number(r.hash & 0xffffffffn);
  setAttrs(c, m, r.flags, r.projid);
  c.state[m] = READ | (r.elf ? ELF_BIT : 0);
  if (r.xattrs) c.xattrs.set(m, r.xattrs);
  else c.xattrs.delete(m);
}

/** What projects.ts read of each directory row a candidate path lies in. */
export interface DirProjects {
  /** 0: not read (unknown); 1: read (projid, flags below). */
  known: Uint8Array;
  projid: Uint32Array;
  inherit: Uint8Array;
  locked: Uint8Array;
}

/**
 * Objects for one set at a time, from rows: DirNodes are built once per
 * directory row for the life of this value (one set, or one plan's worth
 * when the caller keeps it), each with its project as read.
 */
export class Materializer {
  // By directory row, for the life of this value: a plan's sets share
  // their directories (the same usr/share/... in every guest).
  // Made on the first set that needs objects: most plans need none.
  private dirs: (DirNode | undefined)[] | undefined;
  constructor(
    readonly scan: Scan,
    private readonly projects?: DirProjects,
  ) {}

  dir(row: number): DirNode {
    this.dirs ??= new Array(this.scan.tables.dirs.count);
    let node = this.dirs[row];
    if (node) return node;
    const t = this.scan.tables, d = t.dirs;
    const parentRow = d.parent[row]!;
    const root = this.scan.roots[d.root[row]!]!;
    const p = this.projects;
    const project: DirProject | undefined = p && p.known[row] ? { projid: p.projid[row]!, inherit: p.inherit[row] === 1, locked: p.locked[row] === 1 } : undefined;
    // The name is a view: the heap outlives the set.
    node = parentRow < 0 ? rootNode(root) : childNode(this.dir(parentRow), dirName(t, row), root.dev, d.ino[row]!);
    node.project = project;
    this.dirs[row] = node;
    return node;
  }

  file(row: number): FileRec {
    const t = this.scan.tables, f = t.files;
    return { dir: this.dir(f.dir[row]!), name: t.names.subarray(f.nameOff[row]!, f.nameOff[row]! + f.nameLen[row]!), stat: statOfRow(this.scan, row) };
  }

  /** An Inode from the rows of its paths (paths[from, to) of `rows`; the first is its stat's). */
  inode(rows: Uint32Array, from: number, to: number): Inode {
    // Nearly every inode has one path: an array of one, not an empty one grown by push (room for 17).
    const paths: FileRec[] = [this.file(rows[from]!)];
    for (let k = from + 1; k < to; k++) paths.push(this.file(rows[k]!));
    const stat = paths[0]!.stat;
    // Every field from the start: one object shape for the plan's reads.
    return { dev: stat.dev, ino: stat.ino, stat, paths, hash: undefined, xattrs: undefined, flags: undefined, projid: undefined, elf: undefined };
  }
}

