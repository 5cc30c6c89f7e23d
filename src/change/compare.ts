/*
 * Compare two open inodes: may the second become a link to the first?
 *
 * The one answer the linker, split and crash recovery all use. Everything is
 * read through the two descriptors as they are now (never by name) and
 * judged by the sharing policy (pipeline/policy.ts firstDifference): owner,
 * group, mode, size, mtime (unless ignored), project ID, the per-file inode
 * flags; then every xattr and every byte. A hash match alone never links: hash collisions
 * can be forged. The module owns its two read buffers; it is synchronous,
 * so one pair serves every caller.
 *
 * Bytes are compared by data extents (lseek SEEK_DATA/SEEK_HOLE) in files
 * of 1 MiB or more: where both files have a hole nothing is read, where
 * one has a hole the other's bytes must be zeros, so a guest's pair of
 * 1 PiB sparse files costs a few lseeks, and a hole still equals written
 * zeros. Xattrs are compared value by value (xattrs.ts sameXattrs), never
 * by a digest.
 */
import { codedError, errorCode } from '../core/errors.js';
import { displayPath } from '../core/paths.js';
import { FS_APPEND_FL, FS_IMMUTABLE_FL } from '../core/stat.js';
import type { FileRec } from '../core/types.js';
import { readFully, sys } from '../os/sys.js';
import { firstDifference, type Attributes } from '../pipeline/policy.js';
import { fileAttrs, sameXattrs } from '../pipeline/xattrs.js';

/** Bytes compared per read. */
export const CHUNK = 1 << 20;

let buffers: [Buffer, Buffer] | undefined;

/** An open file's inode flags (chattr); 0 on filesystems that have none. */
export function inodeFlags(fd: number): number {
  try {
    return sys.getFlags(fd);
  } catch (er) {
    if (!['ENOTTY', 'EINVAL', 'EOPNOTSUPP', 'ENOSYS'].includes(errorCode(er) ?? '')) throw er;
    return 0;
  }
}

/** Throw EFLAGS when the open file is immutable or append-only: such files are never replaced nor linked to. */
export function checkNotLocked(fd: number, what: string): void {
  const flags = inodeFlags(fd);
  if (flags & (FS_IMMUTABLE_FL | FS_APPEND_FL)) {
    const which = flags & FS_IMMUTABLE_FL ? 'immutable' : 'append-only';
    throw codedError('EFLAGS', `${what} is ${which} (chattr); left alone`);
  }
}

/**
 * What the policy compares, read through an open descriptor now; xattrs
 * are left out (compared value by value with sameXattrs, never by digest).
 */
export function attributesOf(fd: number): Attributes {
  return { stat: sys.fstat(fd), ...fileAttrs(fd) };
}

/** How each policy reason reads in a message, and its code: metadata that changed since the scan, or attributes that differ. */
const WHY: Record<string, [string, string]> = {
  size: ['ECHANGED', 'owner, mode, size or mtime no longer match the canonical copy'],
  owner: ['ECHANGED', 'owner, mode, size or mtime no longer match the canonical copy'],
  mode: ['ECHANGED', 'owner, mode, size or mtime no longer match the canonical copy'],
  mtime: ['ECHANGED', 'owner, mode, size or mtime no longer match the canonical copy'],
  filesystem: ['EDIFFERENT', 'on another filesystem than the canonical copy'],
  mount: ['EDIFFERENT', 'on another mount than the canonical copy'],
  project: ['EDIFFERENT', 'project ID differs from the canonical copy'],
  flags: ['EDIFFERENT', 'inode flags (lsattr) differ from the canonical copy'],
  xattrs: ['EDIFFERENT', 'extended attributes differ from the canonical copy'],
};

/**
 * Why `dup` may not become a link to `canon`, or undefined when it may: the
 * sharing policy's attributes, then every byte, read through the two
 * descriptors as they are now. A content difference is EDIFFERENT with
 * `content: true` (the linker then splits the set by content). `bytes`
 * false: everything but the bytes, which the caller knows unchanged since
 * it compared them (read leases held since, see lease.ts).
 */
export function difference(canon: { fd: number; file?: FileRec }, dup: { fd: number }, ignoreMtime: boolean, bytes = true): Error | undefined {
  // The policy's attributes but xattrs, read through the descriptors now;
  // locked files are the caller's business (checkNotLocked, --iunlink).
  const ca = attributesOf(canon.fd);
  const reason = firstDifference(ca, attributesOf(dup.fd), { ignoreMtime, iunlink: true });
  if (reason) {
    const [code, message] = WHY[reason]!;
    return codedError(code, message);
  }
  const c = ca.stat;
  try {
    if (!sameXattrs(dup.fd, canon.fd)) return codedError(...WHY.xattrs!);
  } catch (er) {
    return er as Error; // too large to read whole, or unreadable: not known to be the same
  }
  if (!bytes) return undefined;
  try {
    if (!sameBytes(canon.fd, dup.fd, c.size)) {
      const which = canon.file ? displayPath(canon.file) : 'the canonical copy';
      return Object.assign(codedError('EDIFFERENT', `content differs from ${which} (hash collision or rewritten)`), { content: true });
    }
  } catch (er) {
    // A file that shrank, or a read error: not identical, and the caller
    // (after an exchange: settle()) must still put things right.
    return er as Error;
  }
  return undefined;
}

/** The next data extent of `fd` at or after `pos`, as [start, end); [size, size] when only a hole follows. */
function nextData(fd: number, pos: number, size: number): [number, number] {
  const start = sys.seekData(fd, pos);
  if (start < 0 || start >= size) return [size, size];
  const end = sys.seekData(fd, start, true);
  return [start, end < 0 ? size : Math.min(end, size)];
}

const isZero = (buf: Buffer): boolean => {
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
};

/**
 * Whether the first `size` bytes of two open files are equal, reading only
 * where either has data. A hole found by lseek reads as zeros anyway, so
 * skipping it is the same comparison; a guest that writes into a hole
 * meanwhile changes mtime and ctime, which the callers check afterwards.
 */
export function sameBytes(fdA: number, fdB: number, size: number): boolean {
  const [a, b] = (buffers ??= [Buffer.allocUnsafe(CHUNK), Buffer.allocUnsafe(CHUNK)]);
  // Small files: read them, as before (two lseeks each cost more than that).
  const sparse = size >= CHUNK;
  let [aStart, aEnd] = sparse ? [0, 0] : [0, size];
  let [bStart, bEnd] = sparse ? [0, 0] : [0, size];
  for (let pos = 0; pos < size; ) {
    if (pos >= aEnd) [aStart, aEnd] = nextData(fdA, pos, size);
    if (pos >= bEnd) [bStart, bEnd] = nextData(fdB, pos, size);
    const aData = aStart <= pos;
    const bData = bStart <= pos;
    if (!aData && !bData) {
      pos = Math.min(aStart, bStart); // a hole in both: zeros in both
      continue;
    }
    const end = Math.min(pos + CHUNK, aData ? aEnd : aStart, bData ? bEnd : bStart, size);
    const len = end - pos;
    // Synchronous: the linker works one file at a time, and a trip through
    // the thread pool per chunk cost more than the read itself.
    if (aData) readFully(fdA, a, len, pos);
    if (bData) readFully(fdB, b, len, pos);
    const same = aData && bData ? a.subarray(0, len).equals(b.subarray(0, len)) : isZero((aData ? a : b).subarray(0, len));
    if (!same) return false;
    pos = end;
  }
  return true;
}

/** Whether `er` is difference()'s verdict that the bytes differ (not the metadata, not an I/O error). */
export const isContentDifference = (er: unknown): boolean => (er as { content?: boolean } | undefined)?.content === true;
