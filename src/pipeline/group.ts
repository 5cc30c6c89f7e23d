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
import { compareMetadataRows, metadataHashRow, metadataKey, type PolicyOptions } from './policy.js';
import { classesOf, HASH, ITEM, rootIndexOf, sortByHash, type Scan } from './rows.js';
import { inoOf, inosFit32 } from './table.js';

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
 * inode. Inode k's paths are rows paths[start[k] .. start[k+1]), the first
 * being the one it is opened by; 4 bytes per file and per inode, no object.
 */
export interface InodeRows {
  count: number;
  start: Uint32Array;
  paths: Uint32Array;
}

/** Candidate groups of inodes (InodeRows indices): group g is members[start[g] .. start[g+1]). */
export interface GroupRows {
  count: number;
  start: Uint32Array;
  members: Uint32Array;
}

/**
 * The rows' inodes, found by sorting (dev, ino), not by a Map entry per file.
 * Inodes come by inode number (its low 32 bits, then device, then the rest):
 * a root's rows taken in inode order are sorted by inode number as the
 * hash cache's merge join wants them (session.ts fromCacheRows), unless an
 * inode number of 2^32 or more is among them.
 * `keys`: scratch for the sort (classesOf), at least one number per file;
 * groupRows can be given the same one, so grouping makes one such array,
 * not two (8 bytes per file each, garbage until the collector runs).
 */
export function inodeRows(scan: Scan, keys?: Float64Array): InodeRows {
  const t = scan.tables, f = t.files, n = f.count;
  const devs = scan.roots.map((r) => r.dev);
  // One device and every inode number below 2^32 (ext4 always): the number
  // is the whole key, so rows of one bucket are one inode, no comparison.
  const exact = devs.every((d) => d === devs[0]) && inosFit32(t);
  const devOf = (row: number) => devs[rootIndexOf(t, row)]!;
  const paths = new Uint32Array(n);
  const start = new Uint32Array(n + 1);
  let count = 0, at = 0;
  if (exact) {
    // classesOf's sort, its buckets taken as they come, on the columns themselves:
    // no call per row (a rerun's stages run mostly before the JIT has compiled them).
    const fIno = f.ino, fDir = f.dir, dRoot = t.dirs.root;
    const words = sortByHash(n, fIno.subarray(0, n), keys);
    for (let i = 0; i < n; ) {
      const h = words[2 * i + HASH]!;
      let j = i + 1;
      while (j < n && words[2 * j + HASH] === h) j++;
      start[count++] = at;
      // The first path is one under the inode's earliest root (as below).
      let first = i, firstRoot = dRoot[fDir[words[2 * i + ITEM]!]!]!;
      for (let k = i + 1; k < j; k++) {
        const r = dRoot[fDir[words[2 * k + ITEM]!]!]!;
        if (r < firstRoot) (first = k), (firstRoot = r);
      }
      paths[at++] = words[2 * first + ITEM]!;
      for (let k = i; k < j; k++) if (k !== first) paths[at++] = words[2 * k + ITEM]!;
      i = j;
    }
    start[count] = at;
    return { count, start: start.subarray(0, count + 1), paths };
  }
  classesOf(
    n,
    (row) => inoOf(t, row), // classesOf keeps its low 32 bits: buckets in inode-number order
    (a, b) => devOf(a) - devOf(b) || inoOf(t, a) - inoOf(t, b),
    1,
    (items, from, to) => {
      start[count++] = at;
      // The first path is one under the inode's earliest root, whatever order the walk's
      // threads wrote the rows in: the hash cache files the inode under that root's shard.
      let first = from;
      for (let k = from + 1; k < to; k++) if (rootIndexOf(t, items[k]!) < rootIndexOf(t, items[first]!)) first = k;
      paths[at++] = items[first]!;
      for (let k = from; k < to; k++) if (k !== first) paths[at++] = items[k]!;
    },
    keys,
  );
  start[count] = at;
  return { count, start: start.subarray(0, count + 1), paths };
}

/** Candidate groups on rows: inodes agreeing on policy.ts's metadata key (compareMetadataRows), two or more. */
export function groupRows(scan: Scan, inodes: InodeRows, opts: GroupOptions, keys?: Float64Array): GroupRows {
  const t = scan.tables;
  const head = (k: number) => inodes.paths[inodes.start[k]!]!;
  const starts: number[] = [];
  const members = new Uint32Array(inodes.count);
  let at = 0;
  classesOf(
    inodes.count,
    (k) => metadataHashRow(t, scan.roots, head(k), opts),
    (a, b) => compareMetadataRows(t, scan.roots, head(a), head(b), opts),
    2,
    (items, from, to) => {
      starts.push(at);
      for (let k = from; k < to; k++) members[at++] = items[k]!;
    },
    keys,
  );
  starts.push(at);
  // A copy of the members' part: the array was sized for every inode, and held for the rest of the run.
  return { count: starts.length - 1, start: Uint32Array.from(starts), members: members.slice(0, at) };
}
