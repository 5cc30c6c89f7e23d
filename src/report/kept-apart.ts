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
 * "flags".
 */
import { comparePaths, compareCanonical, freeable, seenAll } from '../pipeline/plan.js';
import { contentKey, firstDifference, noReasons, pinReason, shareKey, type ByReason, type PolicyOptions, type Reason } from '../pipeline/policy.js';
import type { FileRec, Inode } from '../core/types.js';

export interface KeptApart {
  total: ByReason;
  /** Indexed by root index. */
  byGuest: ByReason[];
  /** Unordered guest pairs [a, b] with a <= b (a == b: within one guest), nonzero only. */
  pairs: { guests: [number, number]; bytes: ByReason }[];
}

const firstPath = (i: Inode): FileRec => i.paths.reduce((a, b) => (comparePaths(b, a) < 0 ? b : a));

function groupBy<T>(items: Iterable<T>, key: (t: T) => string): T[][] {
  const out = new Map<string, T[]>();
  for (const t of items) {
    const k = key(t);
    const g = out.get(k);
    if (g) g.push(t);
    else out.set(k, [t]);
  }
  return [...out.values()];
}

/** The reasons for `hashed` inodes (those without a hash are ignored), over `guests` roots. */
export function keptApart(hashed: readonly Inode[], guests: number, opts: PolicyOptions): KeptApart {
  const total = noReasons();
  const byGuest = Array.from({ length: guests }, noReasons);
  const pairs = new Map<number, { guests: [number, number]; bytes: ByReason }>();
  const charge = (reason: Reason, kept: Inode, main: Inode) => {
    const size = kept.stat.size;
    const a = firstPath(kept).dir.root.index;
    const b = firstPath(main).dir.root.index;
    const [lo, hi] = a <= b ? [a, b] : [b, a];
    total[reason] += size;
    if (byGuest[a]) byGuest[a][reason] += size;
    const k = lo * 65536 + hi;
    let p = pairs.get(k);
    if (!p) pairs.set(k, (p = { guests: [lo, hi], bytes: noReasons() }));
    p.bytes[reason] += size;
  };
  const read = hashed.filter((i) => i.hash !== undefined);
  // Locked inodes have no share key: each is a class of its own.
  const skey = new Map(read.map((i) => [i, shareKey(i, opts) ?? `locked\0${i.dev}:${i.ino}`]));
  for (const content of groupBy(read, contentKey)) {
    if (content.length < 2) continue;
    const parts = groupBy(content, (i) => skey.get(i)!).map((c) => c.sort(compareCanonical));
    parts.sort((a, b) => b.length - a.length || compareCanonical(a[0]!, b[0]!));
    const main = parts[0]![0]!;
    for (const part of parts.slice(1)) {
      const kept = part[0]!;
      if (!seenAll(kept)) continue; // links outside keep it anyway
      const reason = firstDifference(kept, main, opts);
      if (reason && reason !== 'size') charge(reason, kept, main);
    }
    for (const part of parts) {
      if (part.length < 2 || skey.get(part[0]!)!.startsWith('locked\0')) continue;
      for (const i of part.slice(1)) if (seenAll(i) && !freeable(i)) charge(pinReason(i)!, i, part[0]!);
    }
  }
  return { total, byGuest, pairs: [...pairs.values()].sort((x, y) => x.guests[0] - y.guests[0] || x.guests[1] - y.guests[1]) };
}
