/*
 * Split: give the named guests private copies again of every file whose
 * inode is shared with anything outside them (`vunify split ROOT...`),
 * before a guest moves to another host or may rewrite files in place.
 *
 *   roots -> state -> walk -> shared inodes -> free space -> copy + swap
 *
 * An inode is shared outside when its link count exceeds the number of its
 * paths the walk found under the named roots (excluded paths count as
 * outside: the same excludes as unification apply). Each (inode, root) gets
 * one copy, and every path of that inode in that root is moved to it, so a
 * guest's own hardlinks stay hardlinks; two named roots that share an inode
 * only with each other keep sharing it (split them one at a time to part them).
 *
 * Before anything is copied, the bytes (allocated blocks) and inodes needed
 * are summed per filesystem and compared with what statvfs says is free
 * (f_bavail: root's reserve is left alone); if any falls short the run
 * refuses with exit 2. A dry run reports the same numbers and copies nothing.
 *
 * Each copy is made and swapped in by change/copy.ts, journalled like the
 * linker's links, so a run killed mid-way is put right by the next one the
 * same way. And each move onto a copy is first noted in the root's split
 * record (state/split-record.ts): a rerun after a kill moves the paths still
 * on the shared inode onto the copy already made, rather than making a
 * second one, so the guest's own hardlinks stay one inode.
 */
import { UsageError } from '../core/errors.js';
import type { FileRec, Inode, Root } from '../core/types.js';
import { copyJob, type CopyJob } from '../change/copy.js';
import { sys } from '../os/sys.js';
import { groupFiles } from '../pipeline/group.js';
import { expandRoots } from '../pipeline/roots.js';
import { fileRecs, scanRoots } from '../pipeline/walk.js';
import type { FilesystemNeed, SplitReport } from '../report/report.js';
import { formatBytes } from '../report/render/text.js';
import { SplitRecord } from '../state/split-record.js';
import { withSession, type CommandOptions } from './session.js';

export interface SplitOptions extends CommandOptions {
  dryRun: boolean;
  /** Called after each path moved to a private copy (for -v). */
  onSplit?(file: FileRec): void;
}

export async function split(opts: SplitOptions): Promise<SplitReport> {
  // The dry run reads the split records too (a rerun's copies to make), so it checks the state directory.
  return withSession({ ...opts, paths: expandRoots(opts.roots), changes: !opts.dryRun, cache: false, needStateDir: true }, async (s) => {
    const { log } = s;
    const walked = await scanRoots(s.roots, s.rules, { minSize: 0, maxSize: Number.MAX_SAFE_INTEGER }, log.onError, s.progress, s.budget);
    log.timed('walk');
    const earlySkips = log.errors.length;
    const files = fileRecs(s.roots, walked.tables);
    const { inodes } = groupFiles(files, { ignoreMtime: false });
    const jobs = sharedJobs(inodes);
    const records = new Map(s.roots.map((r) => [r, new SplitRecord(s.stateDir!, r, (m) => opts.onWarning?.(m))]));
    const byId = new Map(inodes.map((i) => [`${i.stat.dev}:${i.stat.ino}`, i]));
    for (const job of jobs) job.existing = records.get(job.paths[0]!.dir.root)!.earlierCopy(job.inode.stat, byId);
    const filesystems = spaceNeeded(s.roots, jobs);
    log.timed('plan');
    const short = filesystems.find((f) => !f.enough);
    if (short && !opts.dryRun) {
      throw new UsageError(
        `${short.root}: not enough free space to split: needs ${formatBytes(short.bytesNeeded)} and ${short.inodesNeeded} inodes, ` +
          `has ${formatBytes(short.bytesAvailable)} and ${short.inodesAvailable}; nothing was copied`,
      );
    }
    let copiesMade = 0, pathsSplit = 0, skipped = earlySkips;
    if (s.state) {
      s.progress.stage('copying', jobs.length);
      const pending = new Map<Root, Inode['stat'][]>();
      for (const job of jobs) {
        const root = job.paths[0]!.dir.root;
        const record = records.get(root)!;
        const r = copyJob(job, s.state.journal, log.onError, opts.onSplit, (shared, copy, at) => record.note(shared, copy, at));
        if (r.copied) copiesMade++;
        pathsSplit += r.split;
        skipped += job.paths.length - r.split;
        if (r.split < job.paths.length) pending.set(root, [...(pending.get(root) ?? []), job.inode.stat]);
        s.progress.tick(1);
      }
      for (const [root, record] of records) record.finish(pending.get(root) ?? []);
      log.timed('copy');
    }
    s.progress.stop();
    log.finish();
    return {
      version: 1,
      dryRun: opts.dryRun,
      summary: {
        filesScanned: files.length,
        pathsShared: jobs.reduce((n, j) => n + j.paths.length, 0),
        copiesPlanned: jobs.filter((j) => !j.existing).length,
        bytesNeeded: filesystems.reduce((n, f) => n + f.bytesNeeded, 0),
        copiesMade,
        pathsSplit,
        skipped,
        errors: log.errors.length,
      },
      filesystems,
      errors: log.errors,
      durations: log.durations,
    };
  });
}

/** Inodes with links outside the walked paths, one job per root that names them. */
function sharedJobs(inodes: readonly Inode[]): CopyJob[] {
  const jobs: CopyJob[] = [];
  for (const inode of inodes) {
    if (inode.stat.nlink <= inode.paths.length) continue;
    const byRoot = new Map<Root, FileRec[]>();
    for (const p of inode.paths) {
      const list = byRoot.get(p.dir.root);
      if (list) list.push(p);
      else byRoot.set(p.dir.root, [p]);
    }
    for (const paths of byRoot.values()) jobs.push({ inode, paths });
  }
  return jobs;
}

function spaceNeeded(roots: readonly Root[], jobs: readonly CopyJob[]): FilesystemNeed[] {
  const byDev = new Map<number, FilesystemNeed>();
  for (const root of roots) {
    if (byDev.has(root.dev)) continue;
    const free = sys.statvfs(root.fd);
    byDev.set(root.dev, { root: root.path, bytesNeeded: 0, bytesAvailable: free.bytes, inodesNeeded: 0, inodesAvailable: free.inodes, enough: true });
  }
  for (const job of jobs) {
    if (job.existing) continue; // made by a killed run already
    const fs = byDev.get(job.paths[0]!.dir.root.dev)!;
    fs.bytesNeeded += job.inode.stat.blocks * 512;
    fs.inodesNeeded++;
  }
  for (const fs of byDev.values()) fs.enough = fs.bytesNeeded <= fs.bytesAvailable && fs.inodesNeeded <= fs.inodesAvailable;
  return [...byDev.values()];
}
