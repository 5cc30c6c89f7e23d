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
 * pipeline/hash.ts's (native batches on libuv's thread pool: confined opens,
 * xattrs and the ELF magic read through the descriptor that is hashed),
 * through the same hash cache as the dry run, so a nightly run's cache
 * spares the report most of its reading.
 */
import fs from 'node:fs';
import type { Inode, Root } from '../core/types.js';
import { collectInodes } from '../pipeline/group.js';
import { contentKey } from '../pipeline/policy.js';
import type { HashKey } from '../state/hash-key.js';
import { readDirProjects } from '../pipeline/projects.js';
import { expandRoots } from '../pipeline/roots.js';
import { fileRecs, scanRoots } from '../pipeline/walk.js';
import { buildCapacity, type CapacityReport } from '../report/capacity-model.js';
import { hashGroups, saveSessionCache, withSession, type HashingOptions, type SessionOptions } from './session.js';

export interface CapacityOptions extends HashingOptions {
  /** Guests to estimate, never counted in the existing guests' numbers. */
  candidates: readonly string[];
  top: number;
  /** Hash every inode of the existing guests (a manifest needs them all). */
  hashAll?: boolean;
  /** Called with the guests' inodes to be hashed, before any is read (the memory report takes page-cache residency here). */
  beforeHash?(inodes: readonly Inode[]): void;
  /** Called after the model while the roots are still open (the memory report); its time is `durations.memory`. */
  inspect?(roots: readonly Root[], inodes: readonly Inode[], key: HashKey): Promise<void>;
}

export interface CapacityScan {
  report: CapacityReport;
  /** The existing guests and their hashed inodes, for a manifest. */
  roots: Root[];
  inodes: Inode[];
  /** The hash key the inodes were hashed under (a manifest records its fingerprint). */
  key: HashKey;
}

export async function scanCapacity(opts: CapacityOptions): Promise<CapacityScan> {
  // One expansion for both lists, so a candidate inside a guest (or the
  // same directory twice) is the same usage error as two overlapping roots.
  // A candidate that a guest glob also matched is held out of the guests,
  // so `--candidate /vservers/new '/vservers/*'` does what it says.
  const candidatePaths = opts.candidates.length ? expandRoots(opts.candidates) : [];
  const held = new Set(candidatePaths.map(real));
  const guestPaths = expandRoots(opts.roots).filter((p) => !held.has(real(p)));
  const session: SessionOptions = { ...opts, paths: [...guestPaths, ...candidatePaths], changes: false, hashes: true };
  return withSession(session, async (s) => {
    const { log } = s;
    const existing = s.roots.slice(0, guestPaths.length);
    const candidates = s.roots.slice(guestPaths.length);
    const walked = await scanRoots(s.roots, s.rules, opts, log.onError, s.progress, s.budget);
    log.timed('walk');
    const isGuest = (index: number) => index < existing.length;
    // Separate inode lists: a candidate's paths must never make an existing
    // inode look shared, nor the reverse (to each side, they are links outside).
    const files = fileRecs(s.roots, walked.tables);
    const inodes = collectInodes(files.filter((f) => isGuest(f.dir.root.index)));
    const candidateInodes = collectInodes(files.filter((f) => !isGuest(f.dir.root.index)));
    const toHash = hashCandidates(inodes, candidateInodes, !!opts.hashAll);
    log.timed('group');
    if (opts.beforeHash) {
      opts.beforeHash(toHash.filter((i) => isGuest(i.paths[0]!.dir.root.index)));
      log.timed('residency');
    }
    await hashGroups(s, session, [toHash], { elf: true });
    log.timed('hash');
    readDirProjects(sharedContent(inodes));
    const report = buildCapacity({ roots: existing, inodes, candidates, candidateInodes, ignoreMtime: opts.ignoreMtime, top: opts.top, errors: log.errors, durations: log.durations });
    log.timed('model');
    if (opts.inspect) {
      await opts.inspect(existing, inodes, s.key!);
      log.timed('memory');
    }
    s.progress.stop();
    await saveSessionCache(s, session, [...inodes, ...candidateInodes]);
    log.finish();
    return { report, roots: existing, inodes, key: s.key! };
  });
}

/** Hashed inodes whose content another inode has: those whose paths the plan may replace. */
function sharedContent(inodes: readonly Inode[]): Inode[] {
  const hashed = inodes.filter((i) => i.hash !== undefined);
  const count = new Map<string, number>();
  for (const i of hashed) count.set(contentKey(i), (count.get(contentKey(i)) ?? 0) + 1);
  return hashed.filter((i) => count.get(contentKey(i))! > 1);
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
