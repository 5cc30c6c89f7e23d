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
 * So an immutable or append-only inode is neither canonical nor duplicate
 * (the linker would refuse it either way; with --iunlink, vunify's own
 * immutable-unlink inodes are fine), and a canonical takes only as many
 * links as it has room for (link limit − nlink); the rest of its set is
 * unified around another one (plan.ts). The linker still checks both, and
 * still hands the set on at EMLINK, for what changes after this read.
 *
 * The flags are read here, one open per candidate inode, through a confined
 * descriptor checked against the scan: the hash stage does not return them
 * yet (when it does, Inode.flags can come from there).
 */
import fs from 'node:fs';
import { fileError, type FileError } from '../core/errors.js';
import { displayPath } from '../core/paths.js';
import { FS_APPEND_FL, FS_IMMUTABLE_FL } from '../core/stat.js';
import type { Inode, Root } from '../core/types.js';
import { inodeFlags } from '../change/compare.js';
import { isIunlinked } from '../change/iunlink.js';
import { openScanned } from '../os/confine.js';
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

export interface Constraints {
  /** Inodes the kernel will neither link to nor replace (immutable, append-only). */
  locked: Set<Inode>;
  /** The link limit of an inode's filesystem. */
  linkLimit(inode: Inode): number;
}

/**
 * Read the inode flags of every inode of the identical sets (Inode.flags)
 * and the link limits of the roots' filesystems. An inode that can no
 * longer be opened as scanned is reported and left out (locked), as the
 * linker would skip it.
 */
export function readConstraints(sets: readonly Inode[][], opts: { iunlink?: boolean; onError(e: FileError): void }): Constraints {
  const locked = new Set<Inode>();
  for (const set of sets) {
    for (const inode of set) {
      try {
        const f = openScanned(inode.paths[0]!);
        try {
          inode.flags = inodeFlags(f.fd);
          if (inode.flags & (FS_IMMUTABLE_FL | FS_APPEND_FL) && !(opts.iunlink && isIunlinked(f.fd))) locked.add(inode);
        } finally {
          sys.close(f.fd);
        }
      } catch (er) {
        opts.onError(fileError(displayPath(inode.paths[0]!), er));
        locked.add(inode);
      }
    }
  }
  const limits = new Map<Root, number>();
  return {
    locked,
    linkLimit(inode) {
      const root = inode.paths[0]!.dir.root;
      let limit = limits.get(root);
      if (limit === undefined) limits.set(root, (limit = linkLimit(root)));
      return limit;
    },
  };
}
