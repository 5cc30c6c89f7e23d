/*
 * Plan: decide, without touching the disk, which paths become links to which
 * inode. The result is a plain value; `--dry-run` reports it and the linker
 * carries it out, re-checking every operation before acting.
 *
 * For every set of identical inodes one is canonical, chosen so that nothing
 * is lost and the result is predictable:
 *   1. an inode that cannot be freed anyway wins: one with links outside
 *      the scanned roots (nlink > links seen), or with a path the kernel
 *      will not let us replace (policy.ts acceptsLink: a project-inherit
 *      directory of another project, an immutable directory);
 *   2. then the inode with the most links (fewest paths to change);
 *   3. then the one seen under the earliest ROOT on the command line;
 *   4. then path order (bytewise).
 * Inodes the kernel will not link (immutable, append-only) are left out, and
 * a canonical takes only as many links as its filesystem has room for; an
 * inode that does not fit carries the rest of the set (see canonical.ts).
 * Every path of every other inode that may be replaced gets one operation.
 * An inode is freed only when all of its links are replaced, i.e. when
 * every link it has was seen and may be replaced.
 */
import { compareRelPaths } from '../core/paths.js';
import type { FileRec, Inode, Root } from '../core/types.js';
import { acceptsLink, isPinned } from './policy.js';

export interface LinkOp {
  /** The path to replace, with its stat from the scan. */
  file: FileRec;
  /** The inode that path names now. */
  inode: Inode;
}

export interface PlanSet {
  canonical: Inode;
  /** The path through which the canonical inode is opened. */
  source: FileRec;
  /** The other inodes of the set, in canonical-preference order. */
  duplicates: Inode[];
  ops: LinkOp[];
}

export interface Plan {
  sets: PlanSet[];
  linksPlanned: number;
  /** Inodes that disappear when every op succeeds, the sum of their sizes, and of their allocated blocks. */
  freeableInodes: number;
  freeableBytes: number;
  freeableDiskBytes: number;
}

export function seenAll(inode: Inode): boolean {
  return inode.stat.nlink <= inode.paths.length;
}

/** Whether the plan frees `inode` when it is a duplicate: every link seen, and every one may be replaced. */
export function freeable(inode: Inode): boolean {
  return seenAll(inode) && !isPinned(inode);
}

export function comparePaths(a: FileRec, b: FileRec): number {
  return a.dir.root.index - b.dir.root.index || compareRelPaths(a, b);
}

function firstPath(inode: Inode): FileRec {
  return inode.paths.reduce((best, p) => (comparePaths(p, best) < 0 ? p : best));
}

/** Canonical preference: negative when `a` should be canonical rather than `b`. */
export function compareCanonical(a: Inode, b: Inode): number {
  const outside = Number(freeable(a)) - Number(freeable(b));
  return outside || b.stat.nlink - a.stat.nlink || comparePaths(firstPath(a), firstPath(b));
}

/**
 * `inodes` sorted by compareCanonical, each inode's keys (freeable, first
 * path) worked out once rather than in every comparison: sets are sorted
 * for every plan and every kept-apart class, and those keys walk the
 * inode's paths. Same order as sort(compareCanonical): the comparison is
 * the same, and both sorts are stable.
 */
export function canonicalOrder(inodes: readonly Inode[]): Inode[] {
  const n = inodes.length;
  if (n < 2) return inodes.slice();
  if (n > SMALL) {
    const keyed = inodes.map((inode) => ({ inode, free: freeable(inode) ? 1 : 0, nlink: inode.stat.nlink, first: firstPath(inode) }));
    keyed.sort((a, b) => a.free - b.free || b.nlink - a.nlink || comparePaths(a.first, b.first));
    return keyed.map((k) => k.inode);
  }
  // Most sets are a few inodes: an insertion sort (stable too) on keys
  // kept in scratch arrays, without an object per inode.
  const out = inodes.slice();
  for (let k = 0; k < n; k++) {
    const inode = out[k]!;
    const free = freeable(inode) ? 1 : 0, nlink = inode.stat.nlink, first = firstPath(inode);
    let j = k;
    for (; j > 0; j--) {
      const c = sFree[j - 1]! - free || nlink - sNlink[j - 1]! || comparePaths(sFirst[j - 1]!, first);
      if (c <= 0) break;
      out[j] = out[j - 1]!;
      sFree[j] = sFree[j - 1]!;
      sNlink[j] = sNlink[j - 1]!;
      sFirst[j] = sFirst[j - 1]!;
    }
    out[j] = inode;
    sFree[j] = free;
    sNlink[j] = nlink;
    sFirst[j] = first;
  }
  sFirst.fill(undefined, 0, n); // hold no FileRec past the call
  return out;
}

const SMALL = 32;
const sFree = new Uint8Array(SMALL), sNlink = new Float64Array(SMALL), sFirst: (FileRec | undefined)[] = new Array(SMALL).fill(undefined);

/** What the kernel will allow (canonical.ts): inodes it will not link, and each inode's link limit. */
export interface PlanLimits {
  locked?(inode: Inode, role: 'canonical' | 'duplicate'): boolean;
  linkLimit?(inode: Inode): number;
  /**
   * What locked() answers for an inode whose raw flags are `flags`, without
   * the inode: undefined when it would have to ask the disk. The row
   * planner (plan-rows.ts) decides a set without its objects only when
   * this (for `locked`) and rootLinkLimit (for `linkLimit`) answer.
   */
  lockedByFlags?(flags: number, role: 'canonical' | 'duplicate'): boolean | undefined;
  /** linkLimit() of an inode whose first path lies under `root`. */
  rootLinkLimit?(root: Root): number;
}

/** A plan's totals, without its sets. */
export type PlanTotals = Omit<Plan, 'sets'>;

export function plan(identicalSets: readonly Inode[][], limits: PlanLimits = {}): Plan {
  const result: Plan = { sets: [], linksPlanned: 0, freeableInodes: 0, freeableBytes: 0, freeableDiskBytes: 0 };
  for (const whole of identicalSets) planOne(whole, limits, result, (set) => result.sets.push(set));
  return result;
}

/**
 * Plan one identical set: its parts are passed to `emit` and counted in
 * `totals`. plan() is this over every set; the main path calls it for one
 * set at a time, with that set's objects only (pipeline/plan-rows.ts).
 */
export function planOne(whole: readonly Inode[], limits: PlanLimits, totals: PlanTotals, emit: (set: PlanSet) => void): void {
  const locked = limits.locked;
  const set = locked && whole.some((i) => locked(i, 'duplicate')) ? whole.filter((i) => !locked(i, 'duplicate')) : whole;
  if (set.length < 2) return;
  for (const part of byRoom(canonicalOrder(set), limits)) planSet(part, totals, emit);
}

/**
 * Cut a set, in canonical-preference order, into parts whose canonical has
 * room for every link of its part: whole inodes only (linking part of an
 * inode frees nothing). An inode that does not fit carries the rest, unless
 * it is locked (then the next one does).
 */
function byRoom(ordered: Inode[], { locked, linkLimit }: PlanLimits): Inode[][] {
  if (!linkLimit && !locked) return [ordered];
  const parts: Inode[][] = [];
  let part: Inode[] = [];
  let room = 0;
  for (const inode of ordered) {
    if (part.length && inode.paths.length <= room) {
      part.push(inode);
      room -= inode.paths.length;
      continue;
    }
    // A canonical the kernel will not link to is left out (nor can it be replaced).
    if (locked?.(inode, 'canonical')) continue;
    if (part.length > 1) parts.push(part);
    part = [inode];
    room = linkLimit ? linkLimit(inode) - inode.stat.nlink : Infinity;
  }
  if (part.length > 1) parts.push(part);
  return parts;
}

function planSet(ordered: Inode[], result: PlanTotals, emit: (set: PlanSet) => void): void {
  {
    const canonical = ordered[0]!;
    const duplicates: Inode[] = [];
    const ops: LinkOp[] = [];
    for (let k = 1; k < ordered.length; k++) {
      const inode = ordered[k]!;
      const files = inode.paths.length === 1 ? inode.paths : inode.paths.filter((f) => acceptsLink(f, inode)).sort(comparePaths);
      if (!files.length || !acceptsLink(files[0]!, inode)) continue; // nothing of it may be replaced
      duplicates.push(inode);
      for (const file of files) ops.push({ file, inode });
      if (freeable(inode)) {
        result.freeableInodes++;
        result.freeableBytes += inode.stat.size;
        result.freeableDiskBytes += inode.stat.blocks * 512;
      }
    }
    if (!ops.length) return;
    emit({ canonical, source: firstPath(canonical), duplicates, ops });
    result.linksPlanned += ops.length;
  }
}
