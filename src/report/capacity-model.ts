/*
 * Capacity model: from hashed inodes to the capacity report value. Pure: it
 * never touches the disk, so every number can be checked on hand-built trees.
 *
 * Two partitions of the scanned inodes drive everything:
 *   content class = same size and keyed XXH3-64 (identical bytes, as far as the hash
 *     can tell);
 *   policy class  = a content class split by the sharing policy's key
 *     (pipeline/policy.ts shareKey: filesystem and mount, owner and group,
 *     permission bits, mtime unless --ignore-mtime, project ID, inode flags,
 *     xattrs). This is exactly the dry run's partition, so the freeable
 *     numbers come from the dry run's own plan() and buildReport() and agree
 *     with it by construction.
 * A content class that splits into several policy classes is content kept
 * apart by policy; report/kept-apart.ts names the first reason for each
 * extra class (in policy.ts REASONS order), per guest and per pair.
 *
 * Per guest, its path bytes split into four disjoint parts: shared (the
 * inode already has a path in another guest and stays), freeable (charged
 * as the dry run does: each freed inode to the root of its first path),
 * private (content found nowhere else) and other (the copies that stay:
 * canonicals, content kept apart by policy, inodes with links outside).
 */
import type { FileError } from '../core/errors.js';
import { comparePaths, freeable, plan, seenAll, type Plan, type PlanSet } from '../pipeline/plan.js';
import { contentKey, fileFlags, noReasons, REASONS, shareKey, type ByReason, type PolicyOptions, type Reason } from '../pipeline/policy.js';
import { groupBy, keptApart as keptApartOf } from './kept-apart.js';
import { buildReport } from './report.js';
import type { DirNode, FileRec, Inode, Root } from '../core/types.js';
import { dirRel, printable, relPath } from '../core/paths.js';

export { REASONS, type ByReason, type Reason };

export interface GuestCapacity {
  path: string;
  files: number;
  bytes: number;
  sharedBytes: number;
  freeableBytes: number;
  privateBytes: number;
  otherBytes: number;
  keptApart: ByReason;
  outsideLinks: { inodes: number; bytes: number };
  memory: { sharedBytes: number; sharedElfBytes: number };
}

export interface TopSet {
  path: string;
  size: number;
  hash: string;
  inodes: number;
  paths: number;
  guests: number;
  freeableBytes: number;
  elf: boolean;
}

export interface TopDirectory {
  directory: string;
  inodes: number;
  freeableBytes: number;
}

export interface CandidateEstimate {
  path: string;
  files: number;
  bytes: number;
  sharableFiles: number;
  sharableBytes: number;
  sharablePercent: number;
  freeableBytes: number;
  keptApartBytes: number;
}

export interface CapacityReport {
  kind: 'vunify-capacity';
  version: 1;
  options: { ignoreMtime: boolean; top: number };
  totals: {
    guests: number;
    files: number;
    bytes: number;
    inodes: number;
    alreadySharedBytes: number;
    duplicateSets: number;
    freeableInodes: number;
    freeableBytes: number;
    freeableDiskBytes: number;
    sharedBytes: number;
    privateBytes: number;
    keptApart: ByReason;
    outsideLinks: { inodes: number; bytes: number; notFreeableBytes: number };
    memory: { sharedBytes: number; sharedElfBytes: number; elfFreeableBytes: number };
    hashedInodes: number;
    hashedBytes: number;
  };
  guests: GuestCapacity[];
  matrix: { guests: string[]; bytes: number[][] };
  /** Identical content kept apart by policy, per pair of guests (a guest paired with itself: inside it); nonzero pairs only. */
  keptApartPairs: { guests: [string, string]; bytes: ByReason }[];
  topSets: TopSet[];
  topDirectories: TopDirectory[];
  candidates: CandidateEstimate[];
  errors: FileError[];
  durations: Record<string, number>;
}

export interface ModelInput {
  /** The existing guests, indexed by Root.index from 0. */
  roots: readonly Root[];
  /** Their inodes (paths only under those roots), hashed where a copy could exist. */
  inodes: readonly Inode[];
  candidates: readonly Root[];
  /** The candidates' inodes (paths only under candidate roots). */
  candidateInodes: readonly Inode[];
  ignoreMtime: boolean;
  top: number;
  errors: readonly FileError[];
  durations?: Record<string, number>;
}

export { contentKey };

const firstPath = (i: Inode): FileRec => i.paths.reduce((a, b) => (comparePaths(b, a) < 0 ? b : a));
const rootsOf = (inodes: readonly Inode[]): Set<number> => new Set(inodes.flatMap((i) => i.paths.map((p) => p.dir.root.index)));

/** A guest-independent directory: the first three components of the path's directory ("/usr/share/doc"). */
export function topDirectory(f: FileRec, depth = 3): string {
  let d = f.dir;
  while (d.depth > depth) d = d.parent!; // a deep directory's path is never built here
  return '/' + printable(dirRel(d));
}

export function buildCapacity(input: ModelInput): CapacityReport {
  const { roots, inodes, ignoreMtime } = input;
  const policy: PolicyOptions = { ignoreMtime };
  const hashed = inodes.filter((i) => i.hash !== undefined);
  // Keys are built once per inode: on 90k inodes, building them per use cost
  // seconds. A locked (immutable, append-only) inode is a class of its own.
  const pkey = new Map(hashed.map((i) => [i, shareKey(i, policy) ?? `locked\0${i.dev}:${i.ino}`]));
  const policyClasses = [...groupBy(hashed, (i) => pkey.get(i)!).values()];
  const thePlan = plan(policyClasses.filter((c) => c.length > 1));
  const base = buildReport({ roots, inodes, plan: thePlan, errors: input.errors, earlySkips: input.errors.length });

  const guests: GuestCapacity[] = base.roots.map((r) => ({
    path: r.path,
    files: r.files,
    bytes: r.bytes,
    sharedBytes: 0,
    freeableBytes: r.freeableBytes,
    privateBytes: 0,
    otherBytes: 0,
    keptApart: noReasons(),
    outsideLinks: { inodes: 0, bytes: 0 },
    memory: { sharedBytes: 0, sharedElfBytes: 0 },
  }));
  const guestOf = (f: FileRec) => guests[f.dir.root.index]!;
  const freed = new Set<Inode>(thePlan.sets.flatMap((s) => s.duplicates.filter(freeable)));
  const ckey = new Map(hashed.map((i) => [i, contentKey(i)]));
  const contentClasses = groupBy(hashed, (i) => ckey.get(i)!);
  const sizeCount = new Map<number, number>();
  for (const i of inodes) sizeCount.set(i.stat.size, (sizeCount.get(i.stat.size) ?? 0) + 1);

  for (const inode of inodes) {
    const size = inode.stat.size;
    const spans = inode.paths.some((p) => p.dir.root !== inode.paths[0]!.dir.root);
    // Unhashed: no other inode of its size (or its read failed: not private then).
    const unique = inode.hash === undefined ? sizeCount.get(size) === 1 : contentClasses.get(ckey.get(inode)!)!.length === 1;
    for (const p of inode.paths) {
      const g = guestOf(p);
      if (spans && !freed.has(inode)) g.sharedBytes += size;
      else if (unique && !spans) g.privateBytes += size;
    }
    if (!seenAll(inode)) {
      const g = guestOf(firstPath(inode));
      g.outsideLinks.inodes++;
      g.outsideLinks.bytes += size;
    }
  }

  const apart = keptApartOf(hashed, roots.length, policy);
  const keptApart = apart.total;
  guests.forEach((g, k) => (g.keptApart = apart.byGuest[k]!));

  // After unification each policy class is one inode: the guests it touches
  // share it on disk and in the page cache.
  const n = roots.length;
  const matrix = Array.from({ length: n }, () => new Array<number>(n).fill(0));
  const unhashed = inodes.filter((i) => i.hash === undefined).map((i) => [i]);
  let memShared = 0, memElf = 0;
  for (const cls of [...policyClasses, ...unhashed]) {
    const size = cls[0]!.stat.size;
    const touched = [...rootsOf(cls)].sort((a, b) => a - b);
    const elf = cls[0]!.elf === true;
    for (const a of touched) {
      matrix[a]![a]! += size;
      for (const b of touched) if (b > a) {
        matrix[a]![b]! += size;
        matrix[b]![a]! += size;
      }
      if (touched.length > 1) {
        guests[a]!.memory.sharedBytes += size;
        if (elf) guests[a]!.memory.sharedElfBytes += size;
      }
    }
    if (touched.length > 1) {
      memShared += size;
      if (elf) memElf += size;
    }
  }

  for (const g of guests) g.otherBytes = g.bytes - g.sharedBytes - g.freeableBytes - g.privateBytes;
  const sum = (f: (g: GuestCapacity) => number) => guests.reduce((s, g) => s + f(g), 0);
  const s = base.summary;
  return {
    kind: 'vunify-capacity',
    version: 1,
    options: { ignoreMtime, top: input.top },
    totals: {
      guests: n,
      files: s.filesScanned,
      bytes: s.bytesScanned,
      inodes: s.inodes,
      alreadySharedBytes: s.alreadySharedBytes,
      duplicateSets: s.duplicateSets,
      freeableInodes: s.freeableInodes,
      freeableBytes: s.freeableBytes,
      freeableDiskBytes: s.freeableDiskBytes,
      sharedBytes: sum((g) => g.sharedBytes),
      privateBytes: sum((g) => g.privateBytes),
      keptApart,
      outsideLinks: {
        inodes: sum((g) => g.outsideLinks.inodes),
        bytes: sum((g) => g.outsideLinks.bytes),
        notFreeableBytes: thePlan.sets.reduce((t, set) => t + set.duplicates.filter((i) => !seenAll(i)).reduce((u, i) => u + i.stat.size, 0), 0),
      },
      memory: { sharedBytes: memShared, sharedElfBytes: memElf, elfFreeableBytes: [...freed].filter((i) => i.elf).reduce((t, i) => t + i.stat.size, 0) },
      hashedInodes: hashed.length,
      hashedBytes: hashed.reduce((t, i) => t + i.stat.size, 0),
    },
    guests,
    matrix: { guests: roots.map((r) => r.path), bytes: matrix },
    keptApartPairs: apart.pairs.map((p) => ({ guests: [roots[p.guests[0]]!.path, roots[p.guests[1]]!.path], bytes: p.bytes })),
    topSets: topSets(thePlan, input.top),
    topDirectories: topDirectories(freed, input.top),
    candidates: input.candidates.map((c) => estimateCandidate(c, input.candidateInodes, hashed, ignoreMtime)),
    errors: [...input.errors],
    durations: input.durations ?? {},
  };
}

function topSets(thePlan: Plan, top: number): TopSet[] {
  const setFreeable = (set: PlanSet) => set.duplicates.reduce((t, i) => t + (freeable(i) ? i.stat.size : 0), 0);
  const ranked = thePlan.sets.map((set) => ({ set, bytes: setFreeable(set) }));
  ranked.sort((a, b) => b.bytes - a.bytes || comparePaths(a.set.source, b.set.source));
  return ranked.slice(0, top).map(({ set, bytes }): TopSet => {
    const all = [set.canonical, ...set.duplicates];
    return {
      path: '/' + printable(relPath(set.source)),
      size: set.canonical.stat.size,
      hash: set.canonical.hash!.toString(16).padStart(16, '0'),
      inodes: all.length,
      paths: all.reduce((t, i) => t + i.paths.length, 0),
      guests: rootsOf(all).size,
      freeableBytes: bytes,
      elf: set.canonical.elf === true,
    };
  });
}

function topDirectories(freed: Set<Inode>, top: number): TopDirectory[] {
  const dirs = new Map<string, TopDirectory>();
  const names = new Map<DirNode, string>(); // printable() once per directory, not per file
  for (const inode of freed) {
    const f = firstPath(inode);
    let directory = names.get(f.dir);
    if (directory === undefined) names.set(f.dir, (directory = topDirectory(f)));
    const d = dirs.get(directory) ?? { directory, inodes: 0, freeableBytes: 0 };
    d.inodes++;
    d.freeableBytes += inode.stat.size;
    dirs.set(directory, d);
  }
  return [...dirs.values()].sort((a, b) => b.freeableBytes - a.freeableBytes || (a.directory < b.directory ? -1 : 1)).slice(0, top);
}

/**
 * What a new guest would share with the existing ones if it joined them on
 * their filesystem: its files whose content and policy (filesystem aside:
 * it is assumed to move there) match a file of an existing guest.
 */
function estimateCandidate(root: Root, candidateInodes: readonly Inode[], existing: readonly Inode[], ignoreMtime: boolean): CandidateEstimate {
  const portable = (i: Inode) => {
    const s = i.stat;
    return `${contentKey(i)}:${s.uid}:${s.gid}:${(s.mode & 0o7777).toString(8)}:${ignoreMtime ? '' : `${s.mtimeSec}.${s.mtimeNsec}`}:${fileFlags(i.flags).toString(16)}\0${i.xattrs}`;
  };
  const policies = new Set(existing.map(portable));
  const contents = new Set(existing.map(contentKey));
  const e: CandidateEstimate = { path: root.path, files: 0, bytes: 0, sharableFiles: 0, sharableBytes: 0, sharablePercent: 0, freeableBytes: 0, keptApartBytes: 0 };
  for (const inode of candidateInodes) {
    const paths = inode.paths.filter((p) => p.dir.root === root).length;
    if (!paths) continue;
    const size = inode.stat.size;
    e.files += paths;
    e.bytes += size * paths;
    if (inode.hash === undefined) continue;
    if (policies.has(portable(inode))) {
      e.sharableFiles += paths;
      e.sharableBytes += size * paths;
      if (seenAll(inode)) e.freeableBytes += size;
    } else if (contents.has(contentKey(inode))) {
      e.keptApartBytes += size * paths;
    }
  }
  e.sharablePercent = e.bytes ? Math.round((1000 * e.sharableBytes) / e.bytes) / 10 : 0;
  return e;
}
