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
import { comparePaths, seenAll, type Plan } from '../pipeline/plan.js';
import type { LinkResult } from '../change/link.js';
import type { Inode, Root } from '../core/types.js';

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

export function buildReport(args: {
  roots: readonly Root[];
  inodes: readonly Inode[];
  plan: Plan;
  linked?: LinkResult;
  errors: readonly FileError[];
  /** Errors before linking, each of which dropped a file or directory. */
  earlySkips: number;
  durations?: Record<string, number>;
  hashed?: Hashed;
}): Report {
  const { roots, inodes, plan, linked, errors } = args;
  const perRoot: RootReport[] = roots.map((r) => ({ path: r.path, files: 0, bytes: 0, freeableBytes: 0 }));
  let files = 0, bytes = 0, shared = 0;
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
  for (const set of plan.sets) {
    for (const inode of set.duplicates) {
      if (!seenAll(inode)) continue;
      const first = inode.paths.reduce((a, b) => (comparePaths(b, a) < 0 ? b : a));
      perRoot[first.dir.root.index]!.freeableBytes += inode.stat.size;
    }
  }
  return {
    version: 1,
    dryRun: !linked,
    summary: {
      filesScanned: files,
      bytesScanned: bytes,
      inodes: inodes.length,
      alreadySharedBytes: shared,
      duplicateSets: plan.sets.length,
      freeableInodes: plan.freeableInodes,
      freeableBytes: plan.freeableBytes,
      freeableDiskBytes: plan.freeableDiskBytes,
      linksPlanned: plan.linksPlanned,
      linksMade: linked?.linksMade ?? 0,
      freedBytes: linked?.freedBytes ?? 0,
      freedDiskBytes: linked?.freedDiskBytes ?? 0,
      skipped: args.earlySkips + (linked?.skipped ?? 0),
      errors: errors.length,
    },
    hashed: args.hashed ?? { files: 0, bytes: 0, cacheHits: 0 },
    roots: perRoot,
    errors: [...errors],
    durations: args.durations ?? {},
  };
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** Sizes in IEC units: 1536 -> "1.50 KiB". */
export function formatBytes(n: number): string {
  let i = 0;
  let v = n;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(2)} ${UNITS[i]}`;
}

const num = (n: number) => n.toLocaleString('en-US');

export function formatHuman(report: Report): string {
  const s = report.summary;
  const lines = [
    `${report.dryRun ? 'Dry run (nothing changed): ' : ''}${num(s.filesScanned)} files, ${formatBytes(s.bytesScanned)} in ${report.roots.length} roots; ${num(s.inodes)} inodes`,
    `already shared by hardlinks: ${formatBytes(s.alreadySharedBytes)}`,
    `duplicate sets: ${num(s.duplicateSets)}; links planned: ${num(s.linksPlanned)}`,
    `freeable: ${num(s.freeableInodes)} inodes, ${formatBytes(s.freeableBytes)} (${formatBytes(s.freeableDiskBytes)} on disk)`,
  ];
  if (!report.dryRun) lines.push(`linked: ${num(s.linksMade)} paths; freed: ${formatBytes(s.freedBytes)} (${formatBytes(s.freedDiskBytes)} on disk)`);
  if (s.errors) lines.push(`errors: ${num(s.errors)} (${num(s.skipped)} files or links skipped; see messages above)`);
  const w = Math.max(4, ...report.roots.map((r) => r.path.length));
  lines.push('', `${'root'.padEnd(w)}  ${'files'.padStart(9)}  ${'bytes'.padStart(11)}  ${'freeable'.padStart(11)}`);
  for (const r of report.roots) {
    lines.push(`${r.path.padEnd(w)}  ${num(r.files).padStart(9)}  ${formatBytes(r.bytes).padStart(11)}  ${formatBytes(r.freeableBytes).padStart(11)}`);
  }
  return lines.join('\n') + '\n';
}

/**
 * The whole run on one line, for logs (journalctl) and pipes: files and
 * bytes scanned, bytes read to hash, links made, bytes freed, errors, time.
 */
export function formatLine(report: Report): string {
  const s = report.summary;
  const secs = ((report.durations.total ?? 0) / 1000).toFixed(1);
  const done = report.dryRun
    ? `dry run: ${num(s.linksPlanned)} links planned, ${formatBytes(s.freeableBytes)} freeable`
    : `${num(s.linksMade)} links made, ${formatBytes(s.freedBytes)} freed`;
  return (
    `vunify: ${num(s.filesScanned)} files, ${formatBytes(s.bytesScanned)} scanned in ${report.roots.length} roots, ` +
    `${formatBytes(report.hashed.bytes)} read; ${done}; ${num(s.errors)} errors; ${secs} s\n`
  );
}
