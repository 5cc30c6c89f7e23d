/*
 * The one seam between vunify and the operating system.
 *
 * Every system call vunify makes on guest files, and on the descriptors it
 * holds for them, goes through the `sys` object below (the state directory
 * and the hash cache, which are the host's own files, also use node:fs): the
 * native addon (native/*.c, loaded by native.ts) for what Node lacks
 * (lookups confined beneath a directory descriptor, the parallel walk,
 * xattrs by descriptor, linkat/renameat2/unlinkat, inode flags, flock) and
 * the handful of Node fs calls used on descriptors. Tests replace single
 * members (vi.spyOn(sys, 'linkAt')) to inject faults a real filesystem
 * cannot produce on demand, such as EMLINK after a few links.
 *
 * Packed stat records from the addon are decoded here into plain objects,
 * at the offsets the addon exports (layout.stat, see native.ts).
 */
import fs from 'node:fs';
import { codedError } from '../core/errors.js';
import { FileType, type Stat } from '../core/stat.js';
import { checkCodes, layout, native } from './native.js';

checkCodes('fileTypes', FileType, layout.fileTypes);

// The offsets are bound to constants once, here, rather than looked up on
// the layout per field.
const {
  type: TYPE,
  mode: MODE,
  uid: UID,
  gid: GID,
  nlink: NLINK,
  ino: INO,
  dev: DEV,
  size: SIZE,
  blocks: BLOCKS,
  mtimeSec: MTIME_SEC,
  mtimeNsec: MTIME_NSEC,
  ctimeNsec: CTIME_NSEC,
  ctimeSec: CTIME_SEC,
  mntId: MNT_ID,
} = layout.stat;
const TWO32 = 2 ** 32;

// Plain reads, no BigInt (readBigInt64LE allocates one per field).
const u64 = (buf: Buffer, o: number) => buf.readUInt32LE(o) + buf.readUInt32LE(o + 4) * TWO32;
const i64 = (buf: Buffer, o: number) => buf.readUInt32LE(o) + buf.readInt32LE(o + 4) * TWO32;

/** One packed stat record (fstatx, statAt). */
function decode(buf: Buffer, off: number): Stat {
  return {
    type: buf[off + TYPE] as FileType,
    mode: buf.readUInt32LE(off + MODE),
    uid: buf.readUInt32LE(off + UID),
    gid: buf.readUInt32LE(off + GID),
    nlink: buf.readUInt32LE(off + NLINK),
    ino: u64(buf, off + INO),
    dev: u64(buf, off + DEV),
    size: u64(buf, off + SIZE),
    blocks: u64(buf, off + BLOCKS),
    mtimeSec: i64(buf, off + MTIME_SEC),
    mtimeNsec: buf.readUInt32LE(off + MTIME_NSEC),
    ctimeNsec: buf.readUInt32LE(off + CTIME_NSEC),
    ctimeSec: i64(buf, off + CTIME_SEC),
    mntId: u64(buf, off + MNT_ID),
  };
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

/** Status of each directory from sys.dirXattrs (DX_* in native/fsattr.c). */
export const DIR_XATTRS = { ok: 0, gone: 1, unsupported: 2, failed: 3 } as const;

/** The secret argument of an attributes-only batch, which hashes nothing. */
const NO_SECRET = Buffer.alloc(layout.hashSecretSize);

export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;
export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;
export const sys = {
  openBeneath: (dirFd: number, path: Buffer, flags: number, mode = 0): number =>
    native.openBeneath(dirFd, path, flags, mode),
  forceLegacyLookup: (legacy = true): void => native.forceLegacyLookup(legacy),
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
  hashFiles: async (jobs: Buffer, secret: Buffer, into?: Buffer): Promise<Buffer> => {
    const r = await native.hashFiles(jobs, secret, false, into);
    return typeof r === 'number' ? into!.subarray(0, r) : r;
  },
  /** hashFiles without reading content: the same opens and checks, xattrs, inode flags and project ID; hash 0, no ELF bit. */
  fileAttrsBatch: async (jobs: Buffer): Promise<Buffer> => (await native.hashFiles(jobs, NO_SECRET, true)) as Buffer,
  /** FS_IOC_FSGETXATTR: the extended flags (fsx_xflags) and project ID (fsx_projid) of an open file or directory. */
  fsGetXattr: (fd: number): { xflags: number; projid: number } => {
    const [xflags, projid] = native.fsGetXattr(fd);
    return { xflags, projid };
  },
  /**
   * fsGetXattr of many directories beneath rootFd, each opened confined and
   * checked against its scanned dev and ino (as openDir does): `paths` holds
   * one NUL-ended relative path per directory, `expect` their dev, ino pairs;
   * `out` gets status (DIR_XATTRS), xflags, projid for each.
   */
  dirXattrs: (rootFd: number, paths: Buffer, expect: Float64Array, out: Uint32Array): void => native.dirXattrsSync(rootFd, paths, expect, out),
  /** FS_IOC_FSSETXATTR with a new fsx_projid (split's private copies keep their original's project). */
  setProject: (fd: number, projid: number): void => native.setProject(fd, projid),
  /** XXH64 (seed 0) of bytes in memory: the hash cache's checksums. */
  xxh64: (data: Buffer): bigint => native.xxh64(data),
  /**
   * XXH3-64 of bytes in memory under `secret` (192 bytes; the default secret
   * when omitted): the content hash's function, for tests and benchmarks.
   * `impl` forces the scalar (1) or AVX2 (2) loop; null when this CPU lacks it.
   */
  xxh3: (data: Buffer, secret?: Buffer, impl?: number): bigint | null => native.xxh3(data, secret, impl),
  /** The same through the streaming form, fed in pieces that end at each of `cuts`. */
  xxh3Stream: (data: Buffer, cuts: number[], secret?: Buffer, impl?: number): bigint | null => native.xxh3Stream(data, cuts, secret, impl),
  /** The content hash of hashFiles (native/extents.c: holes unread, zero runs as markers) of an open file, in this thread. */
  hashFd: (fd: number, size: number, secret: Buffer): bigint => native.hashFd(fd, size, secret),
  /** SHA-256 of bytes in memory: the addon's xattr digest, for tests. */
  sha256: (data: Buffer): Buffer => native.sha256(data),
  /** lseek SEEK_DATA (or SEEK_HOLE with `hole`) from `pos`; -1 when no data follows (ENXIO). */
  seekData: (fd: number, pos: number, hole = false): number => native.seekData(fd, pos, hole),
  /** One byte per page of the first `size` bytes of `fd`, bit 0 set when in the page cache (mincore; reads nothing). */
  residentPages: (fd: number, size: number): Buffer => native.residentPages(fd, size),
  pageSize: (): number => native.pageSize(),
  mallocTrim: (): boolean => native.mallocTrim(),
  /**
   * Read leases on two descriptors opened O_RDONLY (native/lease.c): 0 when
   * both are held, else the errno that refused one (then neither is held).
   * leaseHeld: bit 0 while A's is intact (no break pending), bit 1 for B.
   */
  leasePair: (fdA: number, fdB: number): number => native.leasePair(fdA, fdB),
  leaseHeld: (fdA: number, fdB: number): number => native.leaseHeld(fdA, fdB),
  leaseRelease: (fdA: number, fdB: number): void => native.leaseRelease(fdA, fdB),
  /**
   * The linker's per-pair sequence for segments of pairs, each one set's
   * pairs with its canonical, on up to `threads` threads (native/link.c;
   * change/link.ts builds the arrays and reads the results). Each segment
   * goes up to and including its first pair that did not end LINKED (its
   * count is written to its `done` field), and its `canonExpect` is
   * updated to the canonical's stat after each link. Off (`nativeLinker =
   * false`), the linker takes its JS path for every pair.
   */
  linkBatch: (segs: Float64Array, canonExpect: Float64Array, journalFd: number, flags: number, fileFlagsMask: number, pairs: Float64Array, names: Buffer, out: Float64Array, tmps: Buffer, threads: number): number =>
    native.linkBatch(segs, canonExpect, journalFd, flags, fileFlagsMask, pairs, names, out, tmps, threads),
  /** linkBatch on the thread pool: the JS thread is free until the promise settles (one call at a time). */
  linkBatchStart: (segs: Float64Array, canonExpect: Float64Array, journalFd: number, flags: number, fileFlagsMask: number, pairs: Float64Array, names: Buffer, out: Float64Array, tmps: Buffer, threads: number): Promise<number> =>
    native.linkBatchStart(segs, canonExpect, journalFd, flags, fileFlagsMask, pairs, names, out, tmps, threads),
  /** Block until no linkBatchStart job runs (its promise may settle later); whether one ran. */
  linkBatchWait: (): boolean => native.linkBatchWait(),
  /**
   * confine.ts openChecked() in one call: `name` opened O_PATH beneath
   * `dirFd`, its fstat written to `out` (LINK_ARRAY.stat order) and checked
   * against `expect` (OPEN_CHECKED: sameFile with ctime and/or nlink, or
   * sameInode), then reopened for reading; -1 when it is not that regular file.
   */
  openChecked: (dirFd: number, name: Buffer, expect: Float64Array, how: number, out: Float64Array): number =>
    native.openChecked(dirFd, name, expect, how, out),
  nativeLinker: true,
  /**
   * Test-only: fail the n-th occurrence (1-based, counted before the step)
   * of a linker step with `errno`, or SIGKILL the process, just before or
   * just after it; linkAt, renameAt and unlinkAt count as the steps link,
   * exchange and unlink. undefined clears it. Returns how many changes
   * (link, exchange, unlink) the process has made so far.
   */
  setLinkFault: (f?: { step: LinkStep; nth: number; when?: 'before' | 'after'; errno?: number; kill?: boolean }): number =>
    f ? native.setLinkFault(layout.link.steps[f.step]!, f.nth, f.when === 'after' ? 1 : 0, f.errno ?? 0, f.kill ? 1 : 0) : native.setLinkFault(-1),
  /**
   * Test-only: `fn(step, when, dirFd, name)` is called by the addon's
   * linker just before each comparison ('compare', once the leases are
   * taken; the guest's name), just before each link (name: the temporary
   * name), before and after each exchange and before the checks that settle
   * it ('settle'; the guest's name) and just after each unlink of a
   * temporary name, so a
   * test can act as a guest at that exact point; its batches then run on
   * one thread. null removes it.
   */
  setLinkHook: (fn: ((step: LinkStep, when: 'before' | 'after', dirFd: number, name: Buffer) => void) | null): void =>
    native.setLinkHook(fn as ((step: string, when: string, dirFd: number, name: Buffer) => void) | null),
  /** The number of changes (link, exchange, unlink) made so far, the fault hook left as it is. */
  changesMade: (): number => native.setLinkFault(),
  /** The error the addon throws for `errno` in `syscall`. */
  errnoError: (errno: number, syscall: string): Error => native.errnoError(errno, syscall),
  readSync: (fd: number, buf: Buffer, length: number, position: number): number => fs.readSync(fd, buf, 0, length, position),
  // For private copies (change/copy.ts): everything on the new file goes through its descriptor.
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

/** The linker's steps, for the fault hook (STEP_* in native/link.c); `change` is any of link, exchange, unlink; `lease` (with an errno) refuses the addon's leases on a pair. */
export const LINK_STEPS = ['open', 'compare', 'link', 'journal', 'exchange', 'settle', 'unlink', 'change', 'lease'] as const;
export type LinkStep = (typeof LINK_STEPS)[number];

/**
 * What one pair of sys.linkBatch came to (R_* in native/link.c): LINKED is
 * done; FALLBACK changed nothing (the JS path redoes the pair); the others
 * hand the pair, its descriptors still open, back to swap.ts to finish.
 */
export const LINK = { LINKED: 0, FALLBACK: 1, JOURNAL: 2, LINK: 3, TMP: 4, KNOWN: 5, LEASE: 6, RENAME: 7, SETTLE: 8, SETTLED_JOURNAL: 9, UNLINK: 10 } as const;
checkCodes('link.results', LINK, layout.link.results);
checkCodes('link.steps', Object.fromEntries(LINK_STEPS.map((step, i) => [step, i])), layout.link.steps);
/** sys.openChecked's `how` bits (OC_* in native/link.c). */
export const OPEN_CHECKED = { ctime: 1, nlink: 2, inode: 4 } as const;
checkCodes('link.openChecked', OPEN_CHECKED, layout.link.openChecked);
/**
 * linkBatch's arrays of doubles, as the addon lays them out (layout.link):
 * the slot of each field of a stat, a pair in, a pair out and a segment,
 * and `length`, the doubles each takes; and the bytes per temporary name
 * in its `tmps` (NUL-ended).
 */
export const LINK_ARRAY = { stat: layout.link.stat, pair: layout.link.pair, out: layout.link.out, seg: layout.link.seg };
export const LINK_TMP = layout.link.tmpLength;

const S = layout.link.stat;

/** A Stat as linkBatch's doubles. */
export function statDoubles(st: Stat, into: Float64Array, at: number): void {
  into[at + S.type] = st.type;
  into[at + S.dev] = st.dev;
  into[at + S.ino] = st.ino;
  into[at + S.size] = st.size;
  into[at + S.mode] = st.mode;
  into[at + S.uid] = st.uid;
  into[at + S.gid] = st.gid;
  into[at + S.nlink] = st.nlink;
  into[at + S.mtimeSec] = st.mtimeSec;
  into[at + S.mtimeNsec] = st.mtimeNsec;
  into[at + S.ctimeSec] = st.ctimeSec;
  into[at + S.ctimeNsec] = st.ctimeNsec;
  into[at + S.mntId] = st.mntId;
  into[at + S.blocks] = st.blocks;
}

/** linkBatch's doubles as a Stat. */
export function doublesStat(d: Float64Array, at: number): Stat {
  return {
    type: d[at + S.type] as FileType,
    dev: d[at + S.dev]!,
    ino: d[at + S.ino]!,
    size: d[at + S.size]!,
    mode: d[at + S.mode]!,
    uid: d[at + S.uid]!,
    gid: d[at + S.gid]!,
    nlink: d[at + S.nlink]!,
    mtimeSec: d[at + S.mtimeSec]!,
    mtimeNsec: d[at + S.mtimeNsec]!,
    ctimeSec: d[at + S.ctimeSec]!,
    ctimeNsec: d[at + S.ctimeNsec]!,
    mntId: d[at + S.mntId]!,
    blocks: d[at + S.blocks]!,
  };
}

/** Read exactly `length` bytes at `pos`; a short file is ECHANGED. */
export function readFully(fd: number, buf: Buffer, length: number, pos: number): number {
  let got = 0;
  while (got < length) {
    const n = sys.readSync(fd, buf.subarray(got), length - got, pos + got);
    if (n === 0) throw codedError('ECHANGED', 'file shrank while being read');
    got += n;
  }
  return got;
}
