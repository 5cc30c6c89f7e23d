/*
 * vunify, top to bottom: the whole program on one screen.
 *
 *   roots -> state -> walk -> group -> cache -> hash (+ xattrs) -> plan -> link -> report
 *
 * The hash cache (cache.ts) fills in hashes of inodes unchanged since an
 * earlier run, so only new or changed candidates are read; it is refreshed
 * with what was hashed and with the canonicals' new ctimes after linking.
 *
 * Each stage is its own module. Everything up to and including the plan only
 * reads; with dryRun the linker is never called. Per-file errors from every
 * stage are collected into the report and the run goes on.
 */
import path from 'node:path';
import { CACHE_FILE, loadCache, rootKey, saveCache, type HashCache } from './state/cache.js';
import { withDefaults, type Rule } from './pipeline/excludes.js';
import { runLog } from './commands/run-log.js';
import type { FileError } from './core/errors.js';
import { groupFiles } from './pipeline/group.js';
import { probeIunlink } from './change/iunlink.js';
import { splitByContent } from './pipeline/hash.js';
import { link } from './change/link.js';
import { plan } from './pipeline/plan.js';
import { noProgress, type Progress } from './cli/progress.js';
import { buildReport, type Report } from './report/report.js';
import { closeRoots, expandRoots, openRoots } from './pipeline/roots.js';
import { DEFAULT_STATE_DIR, openState, type RunState } from './state/run-state.js';
import type { FileRec, Inode } from './core/types.js';
import { scanRoots } from './pipeline/walk.js';

export interface UnifyOptions {
  roots: readonly string[];
  dryRun: boolean;
  ignoreMtime: boolean;
  minSize: number;
  maxSize: number;
  /** User rules, in order; the default list is appended unless noDefaultExcludes. */
  rules: readonly Rule[];
  noDefaultExcludes: boolean;
  progress?: Progress;
  onError?(e: FileError): void;
  onLink?(file: FileRec, canonical: FileRec): void;
  /** Where locks and the journal of a linking run live (default /var/lib/vunify). */
  stateDir?: string;
  /** Mark unified inodes immutable + immutable-unlink (Linux-VServer kernels only). */
  iunlink?: boolean;
  /** Hash cache file (default STATE_DIR/hashes.cache); false: none. */
  cache?: string | false;
  /** Problems that skip no file (an unusable cache): one line each. */
  onWarning?(message: string): void;
  /** Things worth a line with -v only (no cache yet). */
  onNote?(message: string): void;
}

export async function unify(opts: UnifyOptions): Promise<Report> {
  const progress = opts.progress ?? noProgress;
  const { errors, durations, onError, timed, finish } = runLog(opts.onError);
  const rules = withDefaults(opts.rules, opts.noDefaultExcludes);
  const roots = openRoots(expandRoots(opts.roots));
  const cacheFile = opts.cache === false ? undefined : (opts.cache ?? path.join(opts.stateDir ?? DEFAULT_STATE_DIR, CACHE_FILE));
  const warn = (message: string) => opts.onWarning?.(message);
  let state: RunState | undefined;
  try {
    // A linking run locks its roots and puts right what a killed run left
    // before it looks at anything; a dry run changes nothing, so needs neither.
    if (opts.iunlink) probeIunlink(roots, { dryRun: opts.dryRun });
    if (!opts.dryRun) state = openState(opts.stateDir ?? DEFAULT_STATE_DIR, roots, onError);
    const walked = await scanRoots(roots, rules, opts, onError, progress);
    timed('walk');
    const { inodes, groups } = groupFiles(walked.files, { ignoreMtime: opts.ignoreMtime });
    timed('group');
    const cache = cacheFile ? await loadCache(cacheFile, warn, (m) => opts.onNote?.(m)) : undefined;
    const toHash = groups.flat().filter((i) => !fromCache(cache, i));
    const hashed = { files: toHash.length, bytes: toHash.reduce((sum, i) => sum + i.stat.size, 0), cacheHits: groups.flat().length - toHash.length };
    progress.stage('hashing', hashed.bytes, 'bytes');
    const readAtSec = Date.now() / 1000;
    const identical = await splitByContent(groups, { onError, onProgress: (n) => progress.tick(n) });
    for (const i of toHash) if (i.hash !== undefined) cache?.put(i.stat, i.hash, i.xattrs ?? '', rootKey(i.paths[0]!.dir.root), readAtSec);
    timed('hash');
    const thePlan = plan(identical);
    timed('plan');
    const earlySkips = errors.length;
    let linked;
    if (state) {
      const journal = state;
      progress.stage('linking', thePlan.linksPlanned);
      linked = await link(thePlan, {
        ignoreMtime: opts.ignoreMtime,
        onError,
        onLink: (file, canonical, canonicalStat) => {
          cache?.refresh(canonicalStat);
          opts.onLink?.(file, canonical);
        },
        onDiffer: (a, b) => {
          cache?.forget(a);
          cache?.forget(b);
        },
        onProgress: (n) => progress.tick(n),
        record: (e) => journal.record(e),
        iunlink: opts.iunlink,
      });
      timed('link');
    }
    progress.stop();
    if (cache && cacheFile) {
      cache.prune(roots, inodes);
      try {
        await saveCache(cacheFile, cache, roots);
      } catch (er) {
        warn(`${cacheFile}: hash cache not saved: ${(er as Error).message}`);
      }
    }
    finish();
    return buildReport({ roots, inodes, plan: thePlan, linked, errors, earlySkips, durations, hashed });
  } finally {
    progress.stop();
    state?.close();
    closeRoots(roots);
  }
}

/** Fill in an inode's hash and xattrs from a still-valid cache entry. */
function fromCache(cache: HashCache | undefined, inode: Inode): boolean {
  const e = cache?.lookup(inode.stat);
  if (!e) return false;
  inode.hash = e.hash;
  inode.xattrs = e.xattrs;
  return true;
}
