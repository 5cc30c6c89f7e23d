/*
 * The one seam between vunify and the operating system.
 *
 * Every system call vunify makes goes through the `sys` object below: the
 * native addon (native/vunify.c) for what Node lacks (lookups confined
 * beneath a directory descriptor, fd-relative directory scans with statx,
 * xattrs by descriptor, linkat/renameat2/unlinkat, inode flags, flock) and
 * the handful of Node fs calls used on descriptors. Tests replace single
 * members (vi.spyOn(sys, 'linkAt')) to inject faults a real filesystem
 * cannot produce on demand, such as EMLINK after a few links.
 *
 * Packed stat records from the addon are decoded here into plain objects.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';

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

/** One directory entry from scanDir. `errno` is set (and type is Error) when statx failed. */
export interface Entry extends Stat {
  name: Buffer;
  errno: number;
}

interface Native {
  openBeneath(dirFd: number, path: Buffer, flags: number, mode?: number): number;
  forceLegacyLookup(legacy?: boolean): void;
  scanDirSync(rootFd: number, path: Buffer, dev?: number, ino?: number): Buffer;
  fstatx(fd: number): Buffer;
  statAt(dirFd: number, name: Buffer): Buffer;
  getXattrs(fd: number): [Buffer, Buffer][];
  linkAt(fd: number, dirFd: number, name: Buffer): void;
  renameAt(oldDirFd: number, oldName: Buffer, newDirFd: number, newName: Buffer, flags: number): void;
  unlinkAt(dirFd: number, name: Buffer, flags?: number): void;
  getFlags(fd: number): number;
  setFlags(fd: number, flags: number): void;
  flock(fd: number, op: number): boolean;
  vserver(cmd: number, id: number, data: Buffer | null): number;
  openPath(path: Buffer, flags: number, mode?: number): number;
  closeFd(fd: number): void;
  closeLater(fd: number): void;
  closeLaterDrain(): Promise<void>;
  setXattr(fd: number, name: Buffer, value: Buffer): void;
  removeXattr(fd: number, name: Buffer): void;
  copyData(srcFd: number, dstFd: number, size: number): void;
  futimens(fd: number, mtimeSec: number, mtimeNsec: number): void;
  fstatvfs(fd: number): [number, number];
  hashFiles(jobs: Buffer): Promise<Buffer>;
  xxh64(data: Buffer): bigint;
  residentPages(fd: number, size: number): Buffer;
  pageSize(): number;
}

const native = createRequire(import.meta.url)('../build/Release/vunify.node') as Native;

const HDR = 88;
const TWO32 = 2 ** 32;

// Hot: called once per directory entry of the walk. Plain reads, no BigInt
// (readBigInt64LE allocated one per time field), one object per entry.
const u64 = (buf: Buffer, o: number) => buf.readUInt32LE(o) + buf.readUInt32LE(o + 4) * TWO32;
const i64 = (buf: Buffer, o: number) => buf.readUInt32LE(o) + buf.readInt32LE(o + 4) * TWO32;
const NO_NAME = Buffer.alloc(0);

/**
 * One packed record. A directory entry gets its name and errno in the same
 * object literal (a second object per file, or properties added after, cost
 * the walk); a stat of one file gets an empty name, so every record decoded
 * here has one shape.
 */
function decode(buf: Buffer, off: number, name = NO_NAME): Entry {
  const type = buf[off + 4] as FileType;
  const mode = buf.readUInt32LE(off + 8);
  return {
    type,
    mode,
    uid: buf.readUInt32LE(off + 12),
    gid: buf.readUInt32LE(off + 16),
    nlink: buf.readUInt32LE(off + 20),
    ino: u64(buf, off + 24),
    dev: u64(buf, off + 32),
    size: u64(buf, off + 40),
    blocks: u64(buf, off + 48),
    mtimeSec: i64(buf, off + 56),
    mtimeNsec: buf.readUInt32LE(off + 64),
    ctimeNsec: buf.readUInt32LE(off + 68),
    ctimeSec: i64(buf, off + 72),
    mntId: u64(buf, off + 80),
    name,
    errno: type === FileType.Error ? mode : 0,
  };
}

/** Decode scanDir's records: the directory itself first, then its entries. */
export function decodeEntries(buf: Buffer): { self: Stat; entries: Entry[] } {
  if (buf.length < HDR) throw new Error('scanDir returned no record for the directory itself');
  const self = decode(buf, 0);
  const entries: Entry[] = [];
  for (let off = buf.readUInt32LE(0); off < buf.length; ) {
    const nameLen = buf.readUInt16LE(off + 6);
    entries.push(decode(buf, off, Buffer.from(buf.subarray(off + HDR, off + HDR + nameLen))));
    off += buf.readUInt32LE(off);
  }
  return { self, entries };
}

export const O = {
  PATH: 0o10000000,
  NOATIME: fs.constants.O_NOATIME,
  NOFOLLOW: fs.constants.O_NOFOLLOW,
  NONBLOCK: fs.constants.O_NONBLOCK,
  DIRECTORY: fs.constants.O_DIRECTORY,
  RDONLY: fs.constants.O_RDONLY,
  WRONLY: fs.constants.O_WRONLY,
  RDWR: fs.constants.O_RDWR,
  CREAT: fs.constants.O_CREAT,
  EXCL: fs.constants.O_EXCL,
  /** An unnamed file in a directory (Linux >= 3.11; this value on x86, arm, arm64, riscv). */
  TMPFILE: 0o20200000,
  CLOEXEC: 0o2000000,
} as const;

export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;
export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;
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

export const sys = {
  openBeneath: (dirFd: number, path: Buffer, flags: number, mode = 0): number =>
    native.openBeneath(dirFd, path, flags, mode),
  forceLegacyLookup: (legacy = true): void => native.forceLegacyLookup(legacy),
  /**
   * List a directory confined beneath rootFd. The scan runs on this thread
   * (scanDirSync in the addon): a trip through the thread pool per directory
   * cost several times the scan itself. Still a promise, so tests can delay
   * or fail one directory.
   */
  scanDir: async (rootFd: number, path: Buffer, expect?: { dev: number; ino: number }) =>
    decodeEntries(expect ? native.scanDirSync(rootFd, path, expect.dev, expect.ino) : native.scanDirSync(rootFd, path)),
  fstat: (fd: number): Stat => decode(native.fstatx(fd), 0),
  statAt: (dirFd: number, name: Buffer): Stat => decode(native.statAt(dirFd, name), 0),
  getXattrs: (fd: number): [Buffer, Buffer][] => native.getXattrs(fd),
  linkAt: (fd: number, dirFd: number, name: Buffer): void => native.linkAt(fd, dirFd, name),
  renameAt: (oldDirFd: number, oldName: Buffer, newDirFd: number, newName: Buffer, flags = 0): void =>
    native.renameAt(oldDirFd, oldName, newDirFd, newName, flags),
  unlinkAt: (dirFd: number, name: Buffer, flags = 0): void => native.unlinkAt(dirFd, name, flags),
  getFlags: (fd: number): number => native.getFlags(fd),
  setFlags: (fd: number, flags: number): void => native.setFlags(fd, flags),
  flock: (fd: number, op: number): boolean => native.flock(fd, op),
  /** The Linux-VServer system call; ENOSYS on other kernels. */
  vserver: (cmd: number, id: number, data: Buffer | null): number => native.vserver(cmd, id, data),
  /** Open by a host path (roots, /proc/self/fd reopening); natively, like every descriptor here (see closeFd in the addon). */
  open: (path: string | Buffer, flags: number, mode = 0): number =>
    native.openPath(typeof path === 'string' ? Buffer.from(path) : path, flags, mode),
  close: (fd: number): void => native.closeFd(fd),
  /**
   * Close on a background thread: for the last descriptor of an unlinked
   * inode, whose close frees its blocks (and, on -o discard, waits for the
   * trim). closeLaterDrain() resolves once every such close has happened.
   */
  closeLater: (fd: number): void => native.closeLater(fd),
  closeLaterDrain: (): Promise<void> => native.closeLaterDrain(),
  /** Open, check, read xattrs of and hash a batch of files on the thread pool (layout: hashFiles in the addon, encoded by hash.ts). */
  hashFiles: (jobs: Buffer): Promise<Buffer> => native.hashFiles(jobs),
  /** XXH64 of bytes in memory: the addon's hash, for tests and benchmarks. */
  xxh64: (data: Buffer): bigint => native.xxh64(data),
  /** One byte per page of the first `size` bytes of `fd`, bit 0 set when in the page cache (mincore; reads nothing). */
  residentPages: (fd: number, size: number): Buffer => native.residentPages(fd, size),
  pageSize: (): number => native.pageSize(),
  readSync: (fd: number, buf: Buffer, length: number, position: number): number => fs.readSync(fd, buf, 0, length, position),
  // For private copies (split.ts): everything on the new file goes through its descriptor.
  setXattr: (fd: number, name: Buffer, value: Buffer): void => native.setXattr(fd, name, value),
  removeXattr: (fd: number, name: Buffer): void => native.removeXattr(fd, name),
  /** Copy `size` bytes from one open file to another, holes kept as holes; the destination ends at `size`. */
  copyData: (srcFd: number, dstFd: number, size: number): void => native.copyData(srcFd, dstFd, size),
  /** Set the mtime to the nanosecond; the atime is left alone. */
  futimens: (fd: number, mtimeSec: number, mtimeNsec: number): void => native.futimens(fd, mtimeSec, mtimeNsec),
  fchown: (fd: number, uid: number, gid: number): void => fs.fchownSync(fd, uid, gid),
  fchmod: (fd: number, mode: number): void => fs.fchmodSync(fd, mode),
  fsync: (fd: number): void => fs.fsyncSync(fd),
  /** Free space on the filesystem of `fd`: bytes and inodes an unprivileged user could still use. */
  statvfs: (fd: number): { bytes: number; inodes: number } => {
    const [bytes, inodes] = native.fstatvfs(fd);
    return { bytes, inodes };
  },
};
