/*
 * The sharing policy: when two paths may become one inode, and what keeps
 * identical content apart. Grouping, the content split, the plan, the
 * linker's comparison (change/compare.ts), split's private copies, the
 * capacity report and manifests all ask this module, so the dry run cannot
 * count a link the linker would refuse for a reason the plan could know.
 *
 * Two inodes may become one only when they agree on all of:
 *   filesystem   st_dev (each btrfs subvolume has its own) and mount id:
 *                link(2) crosses neither;
 *   size, owner, group, permission bits (setuid, setgid, sticky included),
 *                mtime to the nanosecond unless --ignore-mtime;
 *   project ID   where the filesystem has one (XFS, ext4 -O project): quota
 *                is charged per inode, and a directory with the
 *                project-inherit flag refuses links of another project
 *                (EXDEV);
 *   inode flags  the per-file ones (FS_FILE_FLAGS: nodump, noatime, ...): a
 *                link gives the path the canonical's;
 *   xattrs       names and values, every namespace;
 *   content      the keyed hash nominates, the linker compares every byte.
 * Besides the key, two rules the kernel imposes: an immutable or
 * append-only inode takes no part (it is never replaced, and nothing can be
 * linked to it), and a path in a project-inherit directory of another
 * project than its inode cannot be replaced, so that inode stays (it is
 * preferred as canonical, like an inode with links outside the roots).
 *
 * Pure: loads without the addon.
 */
import { FS_APPEND_FL, FS_FILE_FLAGS, FS_IMMUTABLE_FL, type Stat } from '../core/stat.js';
import type { FileRec, Inode } from '../core/types.js';
import { metaOf, mtimeSecOf, sizeOf, type Tables } from './table.js';

export interface PolicyOptions {
  ignoreMtime: boolean;
  /** --iunlink: immutable inodes may carry vunify's own immutable-unlink marks; the linker decides for them. */
  iunlink?: boolean;
}

/** What keeps identical content apart, in the order a difference is named. */
export const REASONS = ['filesystem', 'mount', 'project', 'flags', 'owner', 'mode', 'mtime', 'xattrs'] as const;
export type Reason = (typeof REASONS)[number];
export type ByReason = Record<Reason, number>;
export const noReasons = (): ByReason => ({ filesystem: 0, mount: 0, project: 0, flags: 0, owner: 0, mode: 0, mtime: 0, xattrs: 0 });

/** Everything the policy compares, whether read from a scan (an Inode) or through descriptors (the linker). */
export interface Attributes {
  stat: Stat;
  /** Raw inode flags (all bits; only FS_FILE_FLAGS and the lock bits matter). */
  flags?: number;
  projid?: number;
  /** Encoded xattrs (pipeline/xattrs.ts). */
  xattrs?: string;
}

/** The per-file inode flags a link would force two paths to share. */
export const fileFlags = (flags: number | undefined): number => (flags ?? 0) & FS_FILE_FLAGS;

/** Immutable or append-only: never replaced, never linked to. */
export const isLocked = (flags: number | undefined): boolean => ((flags ?? 0) & (FS_IMMUTABLE_FL | FS_APPEND_FL)) !== 0;

/** The part of the key statx gives: grouping uses it to choose what to read at all. */
export function metadataKey(i: { stat: Stat }, opts: PolicyOptions): string {
  const s = i.stat;
  const key = `${s.dev}:${s.mntId}:${s.size}:${s.uid}:${s.gid}:${(s.mode & 0o7777).toString(8)}`;
  return opts.ignoreMtime ? key : `${key}:${s.mtimeSec}.${s.mtimeNsec}`;
}

/** A root's filesystem as rows see it: every file row has its root's st_dev and mount id (the walk crosses neither). */
export interface RootFs {
  dev: number;
  mntId: number;
}

/**
 * metadataKey on table rows, as an order: 0 exactly when the two rows'
 * metadataKeys are equal (test/pipeline/policy.test.ts checks that), so
 * grouping sorts rows rather than building a string per file. `roots` is
 * indexed by root index.
 */
export function compareMetadataRows(t: Tables, roots: readonly RootFs[], a: number, b: number, opts: PolicyOptions): number {
  const f = t.files;
  const ra = roots[t.dirs.root[f.dir[a]!]!]!, rb = roots[t.dirs.root[f.dir[b]!]!]!;
  if (ra !== rb) {
    if (ra.dev !== rb.dev) return ra.dev < rb.dev ? -1 : 1;
    if (ra.mntId !== rb.mntId) return ra.mntId < rb.mntId ? -1 : 1;
  }
  const za = sizeOf(t, a), zb = sizeOf(t, b);
  if (za !== zb) return za < zb ? -1 : 1;
  const ma = metaOf(t, a), mb = metaOf(t, b);
  if (ma !== mb) {
    const m = t.metas;
    if (m.uid[ma] !== m.uid[mb]) return m.uid[ma]! < m.uid[mb]! ? -1 : 1;
    if (m.gid[ma] !== m.gid[mb]) return m.gid[ma]! < m.gid[mb]! ? -1 : 1;
    const pa = m.mode[ma]! & 0o7777, pb = m.mode[mb]! & 0o7777;
    if (pa !== pb) return pa < pb ? -1 : 1;
  }
  if (opts.ignoreMtime) return 0;
  const sa = mtimeSecOf(t, a), sb = mtimeSecOf(t, b);
  if (sa !== sb) return sa < sb ? -1 : 1;
  return f.mtimeNsec[a]! - f.mtimeNsec[b]!;
}

/**
 * A 32-bit hash of the same fields: rows that compareMetadataRows calls
 * equal hash alike (grouping buckets by it before comparing). Owner, group
 * and mode enter through the meta table's values, never its row number.
 */
export function metadataHashRow(t: Tables, roots: readonly RootFs[], row: number, opts: PolicyOptions): number {
  const f = t.files, m = t.metas;
  const r = roots[t.dirs.root[f.dir[row]!]!]!;
  const meta = metaOf(t, row);
  const size = sizeOf(t, row);
  let h = mix(0x9e3779b9, r.dev | 0);
  h = mix(h, r.mntId | 0);
  h = mix(h, size | 0);
  h = mix(h, (size / 4294967296) | 0);
  h = mix(h, m.uid[meta]!);
  h = mix(h, m.gid[meta]!);
  h = mix(h, m.mode[meta]! & 0o7777);
  if (!opts.ignoreMtime) {
    const sec = mtimeSecOf(t, row);
    h = mix(h, sec | 0);
    h = mix(h, (sec / 4294967296) | 0);
    h = mix(h, f.mtimeNsec[row]!);
  }
  return h >>> 0;
}

/** One step of a multiplicative hash (murmur3's mixing). */
export function mix(h: number, v: number): number {
  let k = Math.imul(v, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  h ^= Math.imul(k, 0x1b873593);
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/**
 * The part the hash stage reads through its descriptor: content hash, inode
 * flags, project ID and xattrs. Undefined for an inode that was not read, or
 * that is locked (it takes part in nothing).
 */
export function readKey(i: Inode, opts: PolicyOptions): string | undefined {
  if (i.hash === undefined) return undefined;
  if (!opts.iunlink && isLocked(i.flags)) return undefined;
  return `${i.hash.toString(16)}:${fileFlags(i.flags).toString(16)}:${i.projid ?? 0}\0${i.xattrs ?? ''}`;
}

/** The whole key: inodes with equal keys (and equal bytes) may become one. Undefined as for readKey. */
export function shareKey(i: Inode, opts: PolicyOptions): string | undefined {
  const r = readKey(i, opts);
  return r === undefined ? undefined : `${metadataKey(i, opts)}\0${r}`;
}

/** Identical content as far as the hash can tell (what the capacity report calls a content class). */
export const contentKey = (i: Inode): string => `${i.stat.size}:${i.hash!.toString(16)}`;

/**
 * The first reason (in REASONS order) why `a` and `b` may not become one
 * inode, 'size' when even their sizes differ, or undefined when the policy
 * lets them (content aside). Used on inodes of identical content by the
 * reports, and on two open files by the linker.
 */
export function firstDifference(a: Attributes, b: Attributes, opts: PolicyOptions): Reason | 'size' | undefined {
  const s = a.stat, t = b.stat;
  if (s.dev !== t.dev) return 'filesystem';
  if (s.mntId !== t.mntId) return 'mount';
  if (s.size !== t.size) return 'size';
  if ((a.projid ?? 0) !== (b.projid ?? 0)) return 'project';
  if (fileFlags(a.flags) !== fileFlags(b.flags) || (!opts.iunlink && (isLocked(a.flags) || isLocked(b.flags)))) return 'flags';
  if (s.uid !== t.uid || s.gid !== t.gid) return 'owner';
  if ((s.mode & 0o7777) !== (t.mode & 0o7777)) return 'mode';
  if (!opts.ignoreMtime && (s.mtimeSec !== t.mtimeSec || s.mtimeNsec !== t.mtimeNsec)) return 'mtime';
  if ((a.xattrs ?? '') !== (b.xattrs ?? '')) return 'xattrs';
  return undefined;
}

/**
 * Why `file` (a path of `inode`) may not be replaced by a link to another
 * inode of the same key, or undefined when it may: a directory with the
 * project-inherit flag accepts only links to inodes of its own project (XFS
 * and ext4 fail link(2) and rename(2) with EXDEV otherwise), and every
 * inode of the set has this inode's project; an immutable or append-only
 * directory lets no name in it change.
 */
export function refusal(file: FileRec, inode: { projid?: number }): 'project' | 'flags' | undefined {
  const p = file.dir.project;
  return p ? dirRefusal(!!p.locked, !!p.inherit, p.projid, inode.projid) : undefined;
}

/**
 * refusal() from a directory's project as read (locked, inherit, its
 * projid) and the inode's project ID: the rule itself, which the row
 * planner (plan-rows.ts) asks of the directory table's columns.
 */
export function dirRefusal(locked: boolean, inherit: boolean, dirProjid: number, projid: number | undefined): 'project' | 'flags' | undefined {
  if (locked) return 'flags';
  return inherit && dirProjid !== (projid ?? 0) ? 'project' : undefined;
}

export const acceptsLink = (file: FileRec, inode: { projid?: number }): boolean => refusal(file, inode) === undefined;

/**
 * Why an inode some of whose paths cannot be replaced stays, whatever the
 * plan does; undefined when all may be. Of two reasons the first in REASONS
 * order, as firstDifference names them: not whichever path comes first, so
 * the answer does not depend on the order an inode's paths were listed in.
 */
export function pinReason(inode: Inode): 'project' | 'flags' | undefined {
  let why: 'flags' | undefined;
  for (const p of inode.paths) {
    const r = refusal(p, inode);
    if (r === 'project') return r;
    if (r) why = r;
  }
  return why;
}

export const isPinned = (inode: Inode): boolean => pinReason(inode) !== undefined;
