/*
 * Capacity model: from hashed inodes to the capacity report value. Pure: it
 * never touches the disk, so every number can be checked on hand-built trees.
 *
 * Two partitions of the scanned inodes drive everything:
 *   content class = same size and XXH64 (identical bytes, as far as the hash
 *     can tell);
 *   policy class  = a content class split by what a hardlink would force the
 *     copies to share: filesystem, owner and group, permission bits, mtime
 *     (unless --ignore-mtime) and xattrs. This is exactly the dry run's
 *     partition (group.ts metadataKey, then hash and xattrs), so the
 *     freeable numbers come from the dry run's own plan() and buildReport()
 *     and agree with it by construction.
 * A content class that splits into several policy classes is content kept
 * apart by policy; each extra class is charged to the first attribute (in
 * the order filesystem, owner, mode, mtime, xattrs) in which it differs from
 * the class that holds the most inodes, so "mtime" means owner and mode
 * agree and only the timestamps differ.
 *
 * Per guest, its path bytes split into four disjoint parts: shared (the
 * inode already has a path in another guest and stays), freeable (charged
 * as the dry run does: each freed inode to the root of its first path),
 * private (content found nowhere else) and other (the copies that stay:
 * canonicals, content kept apart by policy, inodes with links outside).
 */
import type { FileError } from '../core/errors.js';
import { metadataKey } from '../pipeline/group.js';
import { compareCanonical, comparePaths, plan, seenAll, type Plan, type PlanSet } from '../pipeline/plan.js';
import { buildReport } from './report.js';
import type { DirNode, FileRec, Inode, Root } from '../core/types.js';
import { dirRel, printable, relPath } from '../core/paths.js';

export const REASONS = ['filesystem', 'owner', 'mode', 'mtime', 'xattrs'] as const;
export type Reason = (typeof REASONS)[number];
export type ByReason = Record<Reason, number>;

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

const noReasons = (): ByReason => ({ filesystem: 0, owner: 0, mode: 0, mtime: 0, xattrs: 0 });

export const contentKey = (i: Inode): string => `${i.stat.size}:${i.hash!.toString(16)}`;

/** The dry run's partition: metadata key, content hash and xattrs. */
export function policyKey(i: Inode, ignoreMtime: boolean): string {
  return `${metadataKey(i, { ignoreMtime })}\0${i.hash!.toString(16)}\0${i.xattrs}`;
}

/** The first policy attribute in which two inodes of identical content differ. */
export function firstDifference(a: Inode, b: Inode, ignoreMtime: boolean): Reason | undefined {
  const s = a.stat, t = b.stat;
  if (s.dev !== t.dev || s.mntId !== t.mntId) return 'filesystem';
  if (s.uid !== t.uid || s.gid !== t.gid) return 'owner';
  if ((s.mode & 0o7777) !== (t.mode & 0o7777)) return 'mode';
  if (!ignoreMtime && (s.mtimeSec !== t.mtimeSec || s.mtimeNsec !== t.mtimeNsec)) return 'mtime';
  if (a.xattrs !== b.xattrs) return 'xattrs';
  return undefined;
}

function groupBy<T>(items: Iterable<T>, key: (t: T) => string): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const t of items) {
    const k = key(t);
    const g = out.get(k);
    if (g) g.push(t);
    else out.set(k, [t]);
  }
  return out;
}

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
  const hashed = inodes.filter((i) => i.hash !== undefined);
  // Keys are built once per inode: on 90k inodes, building them per use cost seconds.
  const pkey = new Map(hashed.map((i) => [i, policyKey(i, ignoreMtime)]));
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
  const freed = new Set<Inode>(thePlan.sets.flatMap((s) => s.duplicates.filter(seenAll)));
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

  const keptApart = noReasons();
  for (const content of contentClasses.values()) {
    if (content.length < 2) continue;
    const parts = [...groupBy(content, (i) => pkey.get(i)!).values()].map((c) => c.sort(compareCanonical));
    if (parts.length < 2) continue;
    parts.sort((a, b) => b.length - a.length || compareCanonical(a[0]!, b[0]!));
    const main = parts[0]![0]!;
    for (const part of parts.slice(1)) {
      const kept = part[0]!;
      if (!seenAll(kept)) continue; // links outside keep it anyway
      const reason = firstDifference(kept, main, ignoreMtime)!;
      guestOf(firstPath(kept)).keptApart[reason] += kept.stat.size;
      keptApart[reason] += kept.stat.size;
    }
  }

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
    topSets: topSets(thePlan, input.top),
    topDirectories: topDirectories(freed, input.top),
    candidates: input.candidates.map((c) => estimateCandidate(c, input.candidateInodes, hashed, ignoreMtime)),
    errors: [...input.errors],
    durations: input.durations ?? {},
  };
}

function topSets(thePlan: Plan, top: number): TopSet[] {
  const freeable = (set: PlanSet) => set.duplicates.reduce((t, i) => t + (seenAll(i) ? i.stat.size : 0), 0);
  const ranked = thePlan.sets.map((set) => ({ set, bytes: freeable(set) }));
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
    return `${contentKey(i)}:${s.uid}:${s.gid}:${(s.mode & 0o7777).toString(8)}:${ignoreMtime ? '' : `${s.mtimeSec}.${s.mtimeNsec}`}\0${i.xattrs}`;
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
