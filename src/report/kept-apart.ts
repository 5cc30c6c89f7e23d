/*
 * Why identical content stays apart: the sharing policy's reasons
 * (pipeline/policy.ts), added up in bytes in total, per guest and per pair
 * of guests. The dry run (over the candidates it hashed) and `vunify
 * report` (over every file whose size another shares) both call this, on
 * the same classes their plans are built from. Pure.
 *
 * A content class (same size and hash) splits into policy classes (same
 * share key). The class holding the most inodes is the main one; the copy
 * each other class keeps is charged, by its size, to the first reason it
 * differs from the main class's canonical (in REASONS order), to the guest
 * of its first path, and to the pair (that guest, the main canonical's
 * guest). Inodes with links outside the roots are left out: they stay
 * anyway. Inside one policy class, a member the plan cannot free because a
 * path of it lies in a project-inherit directory of another project is
 * charged to "project", one in an immutable or append-only directory to
 * "flags" (one with paths in both: "project", the first in REASONS order).
 * The dry run charges most classes on their rows (pipeline/plan-rows.ts
 * KeptApartRows) with chargeKept and policy.ts firstDifference, as here.
 */
import { canonicalOrder, comparePaths, compareCanonical, freeable, seenAll } from '../pipeline/plan.js';
import { firstDifference, isLocked, isPinned, noReasons, pinReason, type ByReason, type PolicyOptions, type Reason } from '../pipeline/policy.js';
import type { FileRec, Inode } from '../core/types.js';

export interface KeptApart {
  total: ByReason;
  /** Indexed by root index. */
  byGuest: ByReason[];
  /** Unordered guest pairs [a, b] with a <= b (a == b: within one guest), nonzero only. */
  pairs: { guests: [number, number]; bytes: ByReason }[];
}

const firstPath = (i: Inode): FileRec => i.paths.reduce((a, b) => (comparePaths(b, a) < 0 ? b : a));

/** Items by key, each list in the items' order (the capacity model's classes too). */
export function groupBy<T>(items: Iterable<T>, key: (t: T) => string): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const t of items) {
    const k = key(t);
    const g = out.get(k);
    if (g) g.push(t);
    else out.set(k, [t]);
  }
  return out;
}

/**
 * Split one content class (same hash and size) into its policy classes:
 * what grouping by shareKey gives, without building a key string per
 * inode. Within one content class two inodes have equal share keys exactly
 * when firstDifference finds none (it compares every other part of the
 * key); an inode shareKey leaves out (locked) differs from every other one
 * ('flags'), so it is a class of its own, as under its own key. A class
 * has few policy classes, so each inode is compared with their first
 * members only.
 */
function policyClasses(content: readonly Inode[], opts: PolicyOptions): Inode[][] {
  const classes: Inode[][] = [];
  for (const i of content) {
    const c = classes.find((c) => firstDifference(i, c[0]!, opts) === undefined);
    if (c) c.push(i);
    else classes.push([i]);
  }
  return classes;
}

/** Kept-apart bytes being added up, one content class at a time. */
export interface KeptApartSum {
  total: ByReason;
  byGuest: ByReason[];
  pairs: Map<number, { guests: [number, number]; bytes: ByReason }>;
}

export const keptApartSum = (guests: number): KeptApartSum => ({ total: noReasons(), byGuest: Array.from({ length: guests }, noReasons), pairs: new Map() });

export const keptApartOf = (sum: KeptApartSum): KeptApart => ({
  total: sum.total,
  byGuest: sum.byGuest,
  pairs: [...sum.pairs.values()].sort((x, y) => x.guests[0] - y.guests[0] || x.guests[1] - y.guests[1]),
});

/** The reasons for `hashed` inodes (those without a hash are ignored), over `guests` roots. */
export function keptApart(hashed: readonly Inode[], guests: number, opts: PolicyOptions): KeptApart {
  const sum = keptApartSum(guests);
  // Content classes by hash, then size: no string per inode (90k inodes
  // cost a third of a second that way), and no array for a hash only one
  // inode has (most of them).
  const byHash = new Map<bigint, Inode | Inode[]>();
  for (const i of hashed) {
    if (i.hash === undefined) continue;
    const c = byHash.get(i.hash);
    if (c === undefined) byHash.set(i.hash, i);
    else if (Array.isArray(c)) c.push(i);
    else byHash.set(i.hash, [c, i]);
  }
  for (const sameHash of byHash.values()) {
    if (!Array.isArray(sameHash)) continue;
    const bySize = sameHash.every((i) => i.stat.size === sameHash[0]!.stat.size) ? [sameHash] : [...groupBy(sameHash, (i) => String(i.stat.size)).values()];
    for (const content of bySize) addContentClass(sum, content, opts);
  }
  return keptApartOf(sum);
}

/** Charge `size` bytes kept apart for `reason` to the guest (root index) of the kept copy, `a`, and to the pair (a, b: the main canonical's guest). */
export function chargeKept(sum: KeptApartSum, reason: Reason, size: number, a: number, b: number): void {
  const { total, byGuest, pairs } = sum;
  const [lo, hi] = a <= b ? [a, b] : [b, a];
  total[reason] += size;
  if (byGuest[a]) byGuest[a][reason] += size;
  const k = lo * 65536 + hi;
  let p = pairs.get(k);
  if (!p) pairs.set(k, (p = { guests: [lo, hi], bytes: noReasons() }));
  p.bytes[reason] += size;
}

/** A locked inode is a policy class of its own (shareKey leaves it out), and no part's canonical. */
export const keptLocked = (flags: number | undefined, opts: PolicyOptions): boolean => !opts.iunlink && isLocked(flags);

/** Charge what keeps the inodes of one content class (same hash and size, all hashed) apart. */
export function addContentClass(sum: KeptApartSum, content: readonly Inode[], opts: PolicyOptions): void {
  if (content.length < 2) return;
  const charge = (reason: Reason, kept: Inode, main: Inode) => chargeKept(sum, reason, kept.stat.size, firstPath(kept).dir.root.index, firstPath(main).dir.root.index);
  const locked = (i: Inode) => keptLocked(i.flags, opts);
  const first = content[0]!;
  const uniform = !locked(first) && content.every((i) => i === first || firstDifference(i, first, opts) === undefined);
  // One policy class with nothing pinned: nothing kept apart, no sorting needed.
  if (uniform && !content.some(isPinned)) return;
  const parts = (uniform ? [content] : policyClasses(content, opts)).map(canonicalOrder);
  parts.sort((a, b) => b.length - a.length || compareCanonical(a[0]!, b[0]!));
  const main = parts[0]![0]!;
  for (let k = 1; k < parts.length; k++) {
    const kept = parts[k]![0]!;
    if (!seenAll(kept)) continue; // links outside keep it anyway
    const reason = firstDifference(kept, main, opts);
    if (reason && reason !== 'size') charge(reason, kept, main);
  }
  for (const part of parts) {
    if (part.length < 2 || locked(part[0]!)) continue;
    for (let k = 1; k < part.length; k++) {
      const i = part[k]!;
      if (seenAll(i) && !freeable(i)) charge(pinReason(i)!, i, part[0]!);
    }
  }
}
