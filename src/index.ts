/*
 * vunify, top to bottom: the whole program on one screen.
 *
 *   roots -> state -> walk -> group -> cache -> hash (+ xattrs, flags, project)
 *     -> directory projects -> plan -> link -> report
 *
 * Which files may share an inode is decided in one place
 * (pipeline/policy.ts): grouping, the content split, the plan, the linker
 * and the reports all ask it, so the dry run counts what the linker does.
 * The hash cache (state/cache.ts) fills in hashes of inodes unchanged since an
 * earlier run, so only new or changed candidates are read; it is refreshed
 * with what was hashed and with the canonicals' new ctimes after linking.
 *
 * After the walk, a file is a row of the record tables (pipeline/table.ts):
 * grouping, hashing, the content split, the plan, the kept-apart reasons
 * and the report work on row numbers and columns; the linker, and the plan
 * for the few sets its rows cannot decide alone (pipeline/plan-rows.ts),
 * get the objects (Inode, FileRec, DirNode) of one identical set at a time,
 * so no object per file is held.
 *
 * Each stage is its own module: pipeline/ reads, change/ is the only code
 * that changes guest files, and commands/session.ts opens and closes what
 * every command shares (roots, rules, run log, progress, locks, cache).
 * Everything up to and including the plan only reads; with dryRun the
 * linker is never called. Per-file errors from every stage are collected
 * into the report and the run goes on.
 */
import type { FileRec } from './core/types.js';
import { displayPath } from './core/paths.js';
import { probeIunlink } from './change/iunlink.js';
import { hashRowGroups, isAssumed, saveSessionCache, withSession, type HashingOptions, type SessionOptions } from './commands/session.js';
import { groupRows, inodeRows, type GroupOptions, type GroupRows, type InodeRows } from './pipeline/group.js';
import { splitRowsByContent, type SetRows } from './pipeline/hash.js';
import { keptApartRows, planRows, setDirs } from './pipeline/plan-rows.js';
import { readConstraints } from './pipeline/canonical.js';
import { readDirProjectRows } from './pipeline/projects.js';
import { expandRoots } from './pipeline/roots.js';
import type { Scan } from './pipeline/rows.js';
import { scanRoots } from './pipeline/walk.js';
import { buildReport, scanTotals, type Report } from './report/report.js';
import { collectGarbage } from './os/memory-limit.js';

export interface UnifyOptions extends HashingOptions {
  dryRun: boolean;
  onLink?(file: FileRec, canonical: FileRec): void;
  /** Mark unified inodes immutable + immutable-unlink (Linux-VServer kernels only). */
  iunlink?: boolean;
}

/** Paths of the largest identical set: its objects are built at once when it is planned and linked. */
function largestSet(inodes: InodeRows, groups: GroupRows, sets: SetRows): number {
  let most = 0;
  for (let k = 0; k < sets.count; k++) {
    let n = 0;
    for (let m = sets.start[k]!; m < sets.end[k]!; m++) n += inodes.pathCount(m);
    most = Math.max(most, n);
  }
  return most;
}

/**
 * Inodes and candidate groups. The sort keys both use (8 bytes per file)
 * live in this frame only: a reference left in the (async) caller's frame
 * kept them to the end of the run.
 */
function groupAll(scan: Scan, policy: GroupOptions): { inodes: InodeRows; groups: GroupRows } {
  const keys = new Float64Array(scan.tables.files.count);
  const inodes = inodeRows(scan, keys);
  return { inodes, groups: groupRows(scan, inodes, policy, keys) };
}


export async function unify(opts: UnifyOptions): Promise<Report> {
  const session: SessionOptions = {
    ...opts,
    paths: expandRoots(opts.roots),
    changes: !opts.dryRun,
    hashes: true,
    prepare: (roots) => opts.iunlink && probeIunlink(roots, { dryRun: opts.dryRun }),
  };
  return withSession(session, async (s) => {
    const { log, progress } = s;
    const walked = await scanRoots(s.roots, s.rules, opts, log.onError, progress, s.budget);
    const scan: Scan = { tables: walked.tables, roots: s.roots };
    log.timed('walk');
    const policy = { ignoreMtime: opts.ignoreMtime, iunlink: opts.iunlink };
    const { inodes, groups } = groupAll(scan, policy);
    // Grouping's sort keys and scratch are spent: gone before the hash columns are made.
    collectGarbage(scan.tables.files.count);
    log.timed('group');
    const { read, hashed, assumed } = await hashRowGroups(s, session, scan, inodes, groups);
    collectGarbage(scan.tables.files.count); // the hash stage's batches, before the sets are made
    const sets = splitRowsByContent(groups, read, policy, inodes);
    collectGarbage(scan.tables.files.count); // the hash stage's batches and lists, before planning adds its own
    log.timed('hash');
    // Before the plan and the first link: a run that could not finish stops here, nothing changed.
    s.budget.beforePlan(groups.candidates, () => largestSet(inodes, groups, sets), !!s.state);
    const projects = readDirProjectRows(scan, setDirs({ scan, inodes, groups }, sets), walked.dirAttrs);
    const candidates = { scan, inodes, groups, read, projects };
    // A dry run needs the plan's totals, not its rows (only the linker iterates them).
    const thePlan = planRows(candidates, sets, readConstraints({ iunlink: opts.iunlink, onError: log.onError }), { totalsOnly: !s.state });
    const apart = keptApartRows(candidates, sets, policy);
    log.timed('plan');
    const earlySkips = log.errors.length;
    let linked;
    if (s.state) {
      progress.stage('linking', thePlan.linksPlanned);
      // Loaded only by a run that links: a dry run never needs the linker's modules.
      const { link } = await import('./change/link.js');
      linked = await link(thePlan, {
        ignoreMtime: opts.ignoreMtime,
        onError: log.onError,
        onCanonical: s.cache && ((canonical) => s.cache!.refresh(canonical)),
        onReplaced: s.cache && ((dev, ino, nlink) => s.cache!.replaced({ dev, ino, nlink })),
        onLink: opts.onLink,
        onContentSplit: (file, canonical, guessed) =>
          opts.onNote?.(
            guessed
              ? `${displayPath(file)}: other content than ${displayPath(canonical)} (its set was taken from the hash cache, not hashed); kept apart`
              : `${displayPath(file)}: same hash as ${displayPath(canonical)} but other content; unified with its own copies instead`,
          ),
        assumed: (inode) => isAssumed(assumed, inode),
        onDiffer: (a, b) => {
          s.cache?.forget(a);
          s.cache?.forget(b);
        },
        onDoubt: (c) => s.cache?.forget(c),
        onProgress: (n) => progress.tick(n),
        journal: s.state.journal,
        iunlink: opts.iunlink,
      });
      log.timed('link');
    }
    progress.stop();
    await saveSessionCache(s, session);
    // Its own figure: beside a large cache, a run over new roots pays for their shards here.
    if (s.cache) log.timed('save');
    log.finish();
    return buildReport({ roots: s.roots, inodes: scanTotals(scan, inodes), plan: thePlan, linked, errors: log.errors, earlySkips, durations: log.durations, hashed, keptApart: apart.total });
  });
}
