/*
 * Report: what was scanned, what the plan frees, what the linker did, and
 * every error, as one value; rendered for people (stdout) or as JSON.
 *
 * Definitions (also in the README):
 *   filesScanned / bytesScanned: regular-file paths kept by the walk and the
 *     sum of their st_size (a file with two scanned links counts twice);
 *   inodes: distinct inodes among them;
 *   alreadySharedBytes: what existing hardlinks already save, Σ (paths−1)×size;
 *   freeableInodes / freeableBytes: inodes the plan frees (all their links
 *     replaced) and the sum of their st_size; freeableDiskBytes: the sum of
 *     their allocated blocks (st_blocks × 512), which is what df will gain;
 *   per root, freeableBytes is charged to the root of each freed inode's
 *     first path, so the roots add up to the total.
 */
import type { FileError } from '../core/errors.js';
import { comparePaths, freeable, type Plan } from '../pipeline/plan.js';
import type { ByReason } from '../pipeline/policy.js';
import type { LinkResult } from '../change/link.js';
import type { Inode, Root } from '../core/types.js';
import type { InodeRows } from '../pipeline/group.js';
import type { CompactPlan } from '../pipeline/plan-rows.js';
import { rootIndexOf, type Scan } from '../pipeline/rows.js';
import { sizeOf } from '../pipeline/table.js';

export interface Summary {
  filesScanned: number;
  bytesScanned: number;
  inodes: number;
  alreadySharedBytes: number;
  duplicateSets: number;
  freeableInodes: number;
  freeableBytes: number;
  /** Allocated size (st_blocks × 512) of the freeable inodes: what df will show; less than freeableBytes for sparse files. */
  freeableDiskBytes: number;
  linksPlanned: number;
  linksMade: number;
  freedBytes: number;
  freedDiskBytes: number;
  skipped: number;
  errors: number;
  /**
   * Identical content among the inodes hashed that the policy keeps apart,
   * in bytes by first reason (report/kept-apart.ts). The dry run hashes only
   * inodes that agree on filesystem, owner, mode and mtime, so mostly
   * project, flags and xattrs show here; `vunify report` sees every reason.
   */
  keptApart?: ByReason;
  /** Extra contents the linker found inside sets the hash held identical (collisions), and the bytes the plan counted that it did not free for that reason. */
  contentSplits?: { sets: number; parts: number; bytes: number };
}

export interface RootReport {
  path: string;
  files: number;
  bytes: number;
  freeableBytes: number;
}

/** What the hash stage read: files and bytes hashed, and candidates whose hash came from the cache. */
export interface Hashed {
  files: number;
  bytes: number;
  cacheHits: number;
}

export interface Report {
  version: 1;
  dryRun: boolean;
  summary: Summary;
  hashed: Hashed;
  roots: RootReport[];
  errors: FileError[];
  /** Milliseconds spent in each stage, and in all. */
  durations: Record<string, number>;
}

/** What the walk found, added up from the tables (the report's scan figures). */
export interface ScanTotals {
  files: number;
  bytes: number;
  inodes: number;
  shared: number;
  /** Files and bytes per root index. */
  rootFiles: number[];
  rootBytes: number[];
}

export function scanTotals(scan: Scan, inodes: InodeRows): ScanTotals {
  const t = scan.tables, f = t.files;
  // Typed sums: an array of small integers that grows past them changes its kind mid-loop, and the loop is deoptimized.
  const rootFiles = new Float64Array(scan.roots.length);
  const rootBytes = new Float64Array(scan.roots.length);
  // Each pass a function of its own: the first, optimized in the middle of its loop, deoptimized
  // when the code after it first ran (and a small-integer sum past 2^31 deoptimized it too).
  sumRows(scan, rootFiles, rootBytes);
  // Integer sums (below 2^53): exact in any order.
  let bytes = 0;
  for (const b of rootBytes) bytes += b;
  return { files: f.count, bytes, inodes: inodes.count, shared: sharedBytes(scan, inodes), rootFiles: Array.from(rootFiles), rootBytes: Array.from(rootBytes) };
}

/** Files and bytes of each root. */
function sumRows(scan: Scan, rootFiles: Float64Array, rootBytes: Float64Array): void {
  const t = scan.tables, n = t.files.count;
  for (let row = 0; row < n; row++) {
    const r = rootIndexOf(t, row);
    rootFiles[r]!++;
    rootBytes[r]! += sizeOf(t, row);
  }
}

/** Bytes of the paths past the first of each inode of several (already shared). */
function sharedBytes(scan: Scan, inodes: InodeRows): number {
  const t = scan.tables;
  const sum = new Float64Array(1);
  inodes.forEachSeveral((k, paths) => {
    sum[0]! += sizeOf(t, inodes.head(k)) * (paths - 1);
  });
  return sum[0]!;
}

export function buildReport(args: {
  roots: readonly Root[];
  /** The scanned inodes, or (the main path) their totals from the tables. */
  inodes: readonly Inode[] | ScanTotals;
  plan: Plan | CompactPlan;
  linked?: LinkResult;
  errors: readonly FileError[];
  /** Errors before linking, each of which dropped a file or directory. */
  earlySkips: number;
  durations?: Record<string, number>;
  hashed?: Hashed;
  keptApart?: ByReason;
}): Report {
  const { roots, plan, linked, errors } = args;
  const perRoot: RootReport[] = roots.map((r) => ({ path: r.path, files: 0, bytes: 0, freeableBytes: 0 }));
  let files = 0, bytes = 0, shared = 0, inodeCount = 0;
  if (Array.isArray(args.inodes)) {
    const inodes = args.inodes as readonly Inode[];
    inodeCount = inodes.length;
    for (const inode of inodes) {
      const size = inode.stat.size;
      for (const p of inode.paths) {
        const r = perRoot[p.dir.root.index]!;
        r.files++;
        r.bytes += size;
      }
      files += inode.paths.length;
      bytes += size * inode.paths.length;
      shared += size * (inode.paths.length - 1);
    }
  } else {
    const totals = args.inodes as ScanTotals;
    ({ files, bytes, shared, inodes: inodeCount } = totals);
    perRoot.forEach((r, k) => {
      r.files = totals.rootFiles[k]!;
      r.bytes = totals.rootBytes[k]!;
    });
  }
  if ('setCount' in plan) {
    perRoot.forEach((r, k) => (r.freeableBytes = plan.freeableByRoot[k]!));
  } else {
    for (const set of plan.sets) {
      for (const inode of set.duplicates) {
        if (!freeable(inode)) continue;
        const first = inode.paths.reduce((a, b) => (comparePaths(b, a) < 0 ? b : a));
        perRoot[first.dir.root.index]!.freeableBytes += inode.stat.size;
      }
    }
  }
  return {
    version: 1,
    dryRun: !linked,
    summary: {
      filesScanned: files,
      bytesScanned: bytes,
      inodes: inodeCount,
      alreadySharedBytes: shared,
      duplicateSets: 'setCount' in plan ? plan.setCount : plan.sets.length,
      freeableInodes: plan.freeableInodes,
      freeableBytes: plan.freeableBytes,
      freeableDiskBytes: plan.freeableDiskBytes,
      linksPlanned: plan.linksPlanned,
      linksMade: linked?.linksMade ?? 0,
      freedBytes: linked?.freedBytes ?? 0,
      freedDiskBytes: linked?.freedDiskBytes ?? 0,
      skipped: args.earlySkips + (linked?.skipped ?? 0),
      errors: errors.length,
      ...(args.keptApart && { keptApart: args.keptApart }),
      ...(linked?.contentSplits && { contentSplits: linked.contentSplits }),
    },
    hashed: args.hashed ?? { files: 0, bytes: 0, cacheHits: 0 },
    roots: perRoot,
    errors: [...errors],
    durations: args.durations ?? {},
  };
}

/** What `vunify split` found and did (commands/split.ts). */
export interface FilesystemNeed {
  /** The first named root on this filesystem, to name it in messages. */
  root: string;
  bytesNeeded: number;
  bytesAvailable: number;
  inodesNeeded: number;
  inodesAvailable: number;
  enough: boolean;
}

export interface SplitReport {
  version: 1;
  dryRun: boolean;
  summary: {
    filesScanned: number;
    /** Paths under the named roots whose inode is shared outside them. */
    pathsShared: number;
    /** Copies to make (one per shared inode and root), and their allocated bytes. */
    copiesPlanned: number;
    bytesNeeded: number;
    copiesMade: number;
    pathsSplit: number;
    skipped: number;
    errors: number;
  };
  filesystems: FilesystemNeed[];
  errors: FileError[];
  /** Milliseconds spent in each stage, and in all. */
  durations: Record<string, number>;
}
