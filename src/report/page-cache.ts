/*
 * Page cache now: which pages of the duplicate sets the dry run would unify
 * are in memory, and how many of them are there in more than one copy.
 *
 * Residency is taken before the report hashes anything (hashing reads every
 * candidate and would bring them all into the cache), as one byte per page
 * from mincore(2) on a read-only mapping of each candidate, opened through
 * the hash stage's confined, scan-checked open (confine.ts openScanned).
 * Nothing is read or faulted in. Once the plan is known, a page offset of a
 * set counts once for the copy that stays (the canonical, or else the first
 * duplicate in canonical order that has it) and every further resident copy
 * is "duplicate resident": memory that unifying frees from the page cache
 * (at once for copies no process maps; for mapped ones, at their restart).
 */
import { openScanned } from '../os/confine.js';
import { comparePaths, type Plan } from '../pipeline/plan.js';
import { sys } from '../os/sys.js';
import type { Inode } from '../core/types.js';

export interface PageCacheNow {
  /** Duplicate sets, their inodes and the sum of those inodes' sizes. */
  sets: number;
  inodes: number;
  bytes: number;
  /** Bytes of those inodes in the page cache, and the part resident in more than one copy. */
  residentBytes: number;
  duplicateResidentBytes: number;
  /** Inodes whose residency could not be taken (changed since the scan, unreadable). */
  skippedInodes: number;
}

/** Residency per inode, one byte per page (bit 0: in the page cache). */
export type Residency = Map<Inode, Buffer>;

export function takeResidency(inodes: readonly Inode[]): Residency {
  const out: Residency = new Map();
  for (const inode of inodes) {
    if (inode.stat.size === 0) continue;
    try {
      const file = openScanned(inode.paths[0]!);
      try {
        out.set(inode, sys.residentPages(file.fd, file.stat.size));
      } finally {
        sys.close(file.fd);
      }
    } catch {
      // Changed or gone since the scan: counted as skipped when its set is measured.
    }
  }
  return out;
}

const firstRoot = (i: Inode) => i.paths.reduce((a, b) => (comparePaths(b, a) < 0 ? b : a)).dir.root.index;

/**
 * Measure the plan's sets against the residency taken before hashing;
 * `perGuest[root index]` receives each extra copy's bytes, charged to the
 * guest of the duplicate's first path (as freeable bytes are).
 */
export function measurePageCache(plan: Plan, residency: Residency, pageSize: number, perGuest: number[]): PageCacheNow {
  const r: PageCacheNow = { sets: plan.sets.length, inodes: 0, bytes: 0, residentBytes: 0, duplicateResidentBytes: 0, skippedInodes: 0 };
  for (const set of plan.sets) {
    const members = [set.canonical, ...set.duplicates];
    const size = set.canonical.stat.size;
    const maps = members.map((m) => residency.get(m));
    r.inodes += members.length;
    r.bytes += size * members.length;
    r.skippedInodes += maps.filter((m) => m === undefined).length;
    const pages = Math.ceil(size / pageSize);
    for (let p = 0; p < pages; p++) {
      const bytes = Math.min(pageSize, size - p * pageSize);
      let kept = false;
      maps.forEach((m, k) => {
        if (!m || !(m[p]! & 1)) return;
        r.residentBytes += bytes;
        if (!kept) {
          kept = true; // the canonical's copy, or the first duplicate's: one copy stays
          return;
        }
        r.duplicateResidentBytes += bytes;
        const g = firstRoot(members[k]!);
        perGuest[g] = (perGuest[g] ?? 0) + bytes;
      });
    }
  }
  return r;
}
