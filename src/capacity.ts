/*
 * `vunify report`: the read-only pipeline behind the capacity report.
 *
 *   roots (+ candidates) -> walk -> inodes -> hash by size -> model
 *
 * It never links, so it takes no lock and needs no state directory. Unlike
 * the dry run, which hashes only inodes that agree on every policy
 * attribute, it hashes every inode whose size another inode shares (any
 * owner, mode, mtime or filesystem): that is what lets it say how much
 * identical content the policy keeps apart, and what a candidate guest would
 * share. It reads more bytes than the dry run for that; with a manifest it
 * hashes every inode, since another host may hold any of them. Hashing is
 * hash.ts's (worker threads, confined opens, xattrs and the ELF magic read
 * through the descriptor that is hashed).
 */
import fs from 'node:fs';
import { withDefaults, type Rule } from './excludes.js';
import { runLog } from './run-log.js';
import type { FileError } from './errors.js';
import { collectInodes } from './group.js';
import { splitByContent } from './hash.js';
import { buildCapacity, type CapacityReport } from './capacity-model.js';
import { noProgress, type Progress } from './progress.js';
import { closeRoots, expandRoots, openRoots } from './roots.js';
import type { Inode, Root } from './types.js';
import { scanRoots } from './walk.js';

export interface CapacityOptions {
  roots: readonly string[];
  /** Guests to estimate, never counted in the existing guests' numbers. */
  candidates: readonly string[];
  ignoreMtime: boolean;
  minSize: number;
  maxSize: number;
  rules: readonly Rule[];
  noDefaultExcludes: boolean;
  top: number;
  /** Hash every inode of the existing guests (a manifest needs them all). */
  hashAll?: boolean;
  progress?: Progress;
  onError?(e: FileError): void;
  /** Called with the guests' inodes to be hashed, before any is read (the memory report takes page-cache residency here). */
  beforeHash?(inodes: readonly Inode[]): void;
  /** Called after the model while the roots are still open (the memory report); its time is `durations.memory`. */
  inspect?(roots: readonly Root[], inodes: readonly Inode[]): Promise<void>;
}

export interface CapacityScan {
  report: CapacityReport;
  /** The existing guests and their hashed inodes, for a manifest. */
  roots: Root[];
  inodes: Inode[];
}

export async function scanCapacity(opts: CapacityOptions): Promise<CapacityScan> {
  const progress = opts.progress ?? noProgress;
  const { errors, durations, onError, timed, finish } = runLog(opts.onError);
  const rules = withDefaults(opts.rules, opts.noDefaultExcludes);
  // One expansion for both lists, so a candidate inside a guest (or the
  // same directory twice) is the same usage error as two overlapping roots.
  // A candidate that a guest glob also matched is held out of the guests,
  // so `--candidate /vservers/new '/vservers/*'` does what it says.
  const candidatePaths = opts.candidates.length ? expandRoots(opts.candidates) : [];
  const held = new Set(candidatePaths.map(real));
  const guestPaths = expandRoots(opts.roots).filter((p) => !held.has(real(p)));
  const all = openRoots([...guestPaths, ...candidatePaths]);
  const existing = all.slice(0, guestPaths.length);
  const candidates = all.slice(guestPaths.length);
  try {
    const walked = await scanRoots(all, rules, opts, onError, progress);
    timed('walk');
    const isGuest = (index: number) => index < existing.length;
    // Separate inode lists: a candidate's paths must never make an existing
    // inode look shared, nor the reverse (to each side, they are links outside).
    const inodes = collectInodes(walked.files.filter((f) => isGuest(f.dir.root.index)));
    const candidateInodes = collectInodes(walked.files.filter((f) => !isGuest(f.dir.root.index)));
    const toHash = hashCandidates(inodes, candidateInodes, !!opts.hashAll);
    timed('group');
    if (opts.beforeHash) {
      opts.beforeHash(toHash.filter((i) => isGuest(i.paths[0]!.dir.root.index)));
      timed('residency');
    }
    progress.stage('hashing', toHash.reduce((sum, i) => sum + i.stat.size, 0), 'bytes');
    await splitByContent([toHash], { onError, onProgress: (n) => progress.tick(n) });
    timed('hash');
    const report = buildCapacity({ roots: existing, inodes, candidates, candidateInodes, ignoreMtime: opts.ignoreMtime, top: opts.top, errors, durations });
    timed('model');
    if (opts.inspect) {
      await opts.inspect(existing, inodes);
      timed('memory');
    }
    finish();
    progress.stop();
    return { report, roots: existing, inodes };
  } finally {
    progress.stop();
    closeRoots(all);
  }
}

function real(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return p; // openRoots names the problem
  }
}

/**
 * Inodes worth reading: those whose size another inode shares (guest or
 * candidate), and those already linked across guests (to tell whether they
 * are ELF for the memory view); with `all`, every inode of the guests.
 */
export function hashCandidates(inodes: readonly Inode[], candidateInodes: readonly Inode[], all: boolean): Inode[] {
  const count = new Map<number, number>();
  for (const i of [...inodes, ...candidateInodes]) count.set(i.stat.size, (count.get(i.stat.size) ?? 0) + 1);
  const spansGuests = (i: Inode) => i.paths.some((p) => p.dir.root !== i.paths[0]!.dir.root);
  return [
    ...inodes.filter((i) => all || count.get(i.stat.size)! > 1 || spansGuests(i)),
    ...candidateInodes.filter((i) => count.get(i.stat.size)! > 1),
  ];
}
