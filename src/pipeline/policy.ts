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
  if (!p) return undefined;
  if (p.locked) return 'flags';
  return p.inherit && p.projid !== (inode.projid ?? 0) ? 'project' : undefined;
}

export const acceptsLink = (file: FileRec, inode: { projid?: number }): boolean => refusal(file, inode) === undefined;

/** Why an inode some of whose paths cannot be replaced stays, whatever the plan does; undefined when all may be. */
export function pinReason(inode: Inode): 'project' | 'flags' | undefined {
  for (const p of inode.paths) {
    const why = refusal(p, inode);
    if (why) return why;
  }
  return undefined;
}

export const isPinned = (inode: Inode): boolean => pinReason(inode) !== undefined;
