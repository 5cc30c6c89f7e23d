/*
 * What statx says about an inode, and the comparisons every stage makes on
 * it. Pure values: this module loads without the native addon, so planning,
 * the capacity model and rendering can be tested (and run) without it.
 */

export enum FileType {
  Other = 0,
  Regular = 1,
  Directory = 2,
  Symlink = 3,
  Fifo = 4,
  Socket = 5,
  CharDevice = 6,
  BlockDevice = 7,
  Error = 255,
}

/** What statx said about one inode; times split into seconds and nanoseconds. */
export interface Stat {
  type: FileType;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  ino: number;
  dev: number;
  size: number;
  blocks: number;
  mtimeSec: number;
  mtimeNsec: number;
  ctimeSec: number;
  ctimeNsec: number;
  mntId: number;
}

/** A file's identity: the device and inode number. */
export type InodeId = { dev: number; ino: number };

/** Whether `a` and `b` are the same inode (one may be a stat, the other a record of one). */
export const sameInode = (a: InodeId, b: InodeId): boolean => a.dev === b.dev && a.ino === b.ino;

/** The metadata that must not change between scan and use (ctime and nlink as asked). */
export function sameFile(a: Stat, b: Stat, opts: { ctime: boolean; nlink: boolean }): boolean {
  return (
    a.type === b.type &&
    a.dev === b.dev &&
    a.ino === b.ino &&
    a.size === b.size &&
    a.mode === b.mode &&
    a.uid === b.uid &&
    a.gid === b.gid &&
    a.mtimeSec === b.mtimeSec &&
    a.mtimeNsec === b.mtimeNsec &&
    (!opts.ctime || (a.ctimeSec === b.ctimeSec && a.ctimeNsec === b.ctimeNsec)) &&
    (!opts.nlink || a.nlink === b.nlink)
  );
}

/** Inode flags from linux/fs.h (what chattr sets). */
export const FS_IMMUTABLE_FL = 0x10;
export const FS_APPEND_FL = 0x20;
/**
 * The per-file inode flags (chattr letters s u c S d A m j t C x) that are a
 * file's own attributes: a path must not change them by being linked to
 * another inode, and a private copy carries them. Immutable and append-only
 * are handled apart (such files are never replaced); flags the filesystem
 * sets itself (extents, inline data, verity, encryption) and directory-only
 * ones are not compared.
 */
export const FS_NOCOW_FL = 0x800000;
export const FS_FILE_FLAGS = 0x1 | 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x400 | 0x4000 | 0x8000 | 0x800000 | 0x2000000;
/** Directory flag: new entries take the directory's project ID, and links of inodes of another project into it fail EXDEV. */
export const FS_PROJINHERIT_FL = 0x20000000;
/** The same, as FS_IOC_FSGETXATTR's fsx_xflags say it. */
export const FS_XFLAG_PROJINHERIT = 0x200;
/** fsx_xflags: immutable, append-only. */
export const FS_XFLAG_IMMUTABLE = 0x8;
export const FS_XFLAG_APPEND = 0x10;
