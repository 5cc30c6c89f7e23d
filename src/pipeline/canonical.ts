/*
 * What the kernel will allow a set, read before planning, so that the dry
 * run promises what a linking run can do (issue 18, item 6).
 *
 * A guest chooses which of its copies is canonical: a link to it in its own
 * excluded /var makes it "linked outside the roots", which wins the choice.
 * It could then spoil the set for everyone, night after night:
 *   - `chattr +i` (or +a) on it: the kernel refuses links to it, so the
 *     linker left the whole set alone while the dry run promised it;
 *   - more links to it, up to the filesystem's limit (ext4: 65,000): no room
 *     for the others' links.
 * So an immutable or append-only inode is never canonical, nor a duplicate
 * when its flags are known (the linker would refuse it either way; with --iunlink, vunify's own
 * immutable-unlink inodes are fine), and a canonical takes only as many
 * links as it has room for (link limit − nlink); the rest of its set is
 * unified around another one (plan.ts). The linker still checks both, and
 * still hands the set on at EMLINK, for what changes after this read.
 *
 * The flags are read here, through a confined descriptor checked against
 * the scan: the hash stage does not return them yet (when it does,
 * Inode.flags comes from there and duplicates are checked too, at no cost).
 */
import fs from 'node:fs';
import { fileError, type FileError } from '../core/errors.js';
import { displayPath } from '../core/paths.js';
import type { Inode, Root } from '../core/types.js';
import { inodeFlags } from '../change/compare.js';
import { isIunlinked } from '../change/iunlink.js';
import { openScanned } from '../os/confine.js';
import type { PlanLimits } from './plan.js';
import { isLocked } from './policy.js';
import { sys } from '../os/sys.js';

/** statfs f_type -> most links a regular file may have (linux/magic.h; the limits from each filesystem's source). */
export const LINK_LIMITS: ReadonlyMap<number, number> = new Map([
  [0xef53, 65_000], // ext4 (EXT4_LINK_MAX); ext2/ext3 share the magic, and the ext4 driver mounts them
  [0x58465342, 2 ** 31 - 1], // XFS (XFS_MAXLINK)
  [0x9123683e, 65_535], // btrfs (BTRFS_LINK_MAX)
  [0x01021994, 2 ** 32 - 1], // tmpfs: nlink is an unsigned int
]);

/** The link limit of the filesystem a root is on; Infinity when unknown (the linker then learns it from EMLINK). */
export function linkLimit(root: Root): number {
  // statfs of the root's own descriptor, through /proc: no guest path is looked up.
  const type = fs.statfsSync(`/proc/self/fd/${root.fd}`).type;
  return LINK_LIMITS.get(type) ?? Infinity;
}

export interface Constraints extends Required<PlanLimits> {
  /**
   * Whether the kernel will neither link to nor replace `inode` (immutable,
   * append-only). For a canonical candidate its flags are read if not known;
   * for a duplicate only known flags count (see readConstraints).
   */
  locked(inode: Inode, role: 'canonical' | 'duplicate'): boolean;
  /** The link limit of an inode's filesystem. */
  linkLimit(inode: Inode): number;
}

/**
 * What the plan asks: each canonical candidate's flags, read on demand in
 * plan order (one confined, checked open: about one per set), and the link
 * limits of the roots' filesystems. Reading every duplicate's flags too cost
 * 1.8 s on the 81,000-file fleet (the hash stage took 2.4 s), so a duplicate
 * counts as locked only when its flags are already known (Inode.flags, which
 * the hash stage is to fill from the descriptor it holds); until then an
 * immutable duplicate is refused by the linker (EFLAGS), as before. An inode
 * that can no longer be opened as scanned is reported and left out, as the
 * linker would skip it.
 */
export function readConstraints(opts: { iunlink?: boolean; onError(e: FileError): void }): Constraints {
  // Only what was read here is remembered: known flags (every hashed inode
  // has them) answer without a Map entry per inode.
  // Weak: the main path builds an inode's object for its set only, and drops it after.
  const locked = new WeakMap<Inode, boolean>();
  const limits = new Map<Root, number>();
  const read = (inode: Inode): boolean => {
    try {
      const f = openScanned(inode.paths[0]!);
      try {
        inode.flags = inodeFlags(f.fd);
        return isLocked(inode.flags) && !(opts.iunlink && isIunlinked(f.fd));
      } finally {
        sys.close(f.fd);
      }
    } catch (er) {
      opts.onError(fileError(displayPath(inode.paths[0]!), er));
      return true;
    }
  };
  // Known flags answer (with --iunlink only the disk does: vunify's own
  // marks are fine); unknown ones a duplicate is not read for.
  const byFlags = (flags: number | undefined, role: 'canonical' | 'duplicate'): boolean | undefined =>
    flags !== undefined && !opts.iunlink ? isLocked(flags) : role === 'canonical' ? undefined : false;
  const rootLinkLimit = (root: Root): number => {
    let limit = limits.get(root);
    if (limit === undefined) limits.set(root, (limit = linkLimit(root)));
    return limit;
  };
  return {
    locked(inode, role) {
      let known = locked.get(inode);
      if (known !== undefined) return known;
      known = byFlags(inode.flags, role);
      if (known !== undefined) return known;
      locked.set(inode, (known = read(inode)));
      return known;
    },
    lockedByFlags: byFlags,
    linkLimit: (inode) => rootLinkLimit(inode.paths[0]!.dir.root),
    rootLinkLimit,
  };
}
