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
 */
import type { FileRec, Inode } from '../core/types.js';
import { metadataKey, type PolicyOptions } from './policy.js';

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
