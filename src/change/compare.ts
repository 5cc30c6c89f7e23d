/*
 * Compare two open inodes: may the second become a link to the first?
 *
 * The one answer the linker, split and crash recovery all use. Everything is
 * read through the two descriptors as they are now (never by name) and
 * judged by the sharing policy (pipeline/policy.ts firstDifference): owner,
 * group, mode, size, mtime (unless ignored), project ID, the per-file inode
 * flags, every xattr; then every byte. A hash match alone never links: XXH64 collisions
 * can be forged. The module owns its two read buffers; it is synchronous,
 * so one pair serves every caller.
 */
import { codedError, errorCode } from '../core/errors.js';
import { displayPath } from '../core/paths.js';
import { FS_APPEND_FL, FS_IMMUTABLE_FL } from '../core/stat.js';
import type { FileRec } from '../core/types.js';
import { readFully, sys } from '../os/sys.js';
import { firstDifference, type Attributes } from '../pipeline/policy.js';
import { fileAttrs, xattrKey } from '../pipeline/xattrs.js';

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

/** What the policy compares, read through an open descriptor now. */
export function attributesOf(fd: number): Attributes {
  return { stat: sys.fstat(fd), xattrs: xattrKey(fd), ...fileAttrs(fd) };
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
 * `content: true` (the linker then splits the set by content).
 */
export function difference(canon: { fd: number; file?: FileRec }, dup: { fd: number }, ignoreMtime: boolean): Error | undefined {
  const ca = attributesOf(canon.fd);
  // Locked files are the caller's business (checkNotLocked, --iunlink).
  const reason = firstDifference(ca, attributesOf(dup.fd), { ignoreMtime, iunlink: true });
  if (reason) {
    const [code, message] = WHY[reason]!;
    return codedError(code, message);
  }
  const c = ca.stat;
  const [a, b] = (buffers ??= [Buffer.allocUnsafe(CHUNK), Buffer.allocUnsafe(CHUNK)]);
  try {
    for (let pos = 0; pos < c.size; pos += CHUNK) {
      const len = Math.min(CHUNK, c.size - pos);
      // Synchronous: the linker works one file at a time, and a trip through
      // the thread pool per chunk cost more than the read itself.
      readFully(canon.fd, a, len, pos);
      readFully(dup.fd, b, len, pos);
      if (!a.subarray(0, len).equals(b.subarray(0, len))) {
        const which = canon.file ? displayPath(canon.file) : 'the canonical copy';
        return Object.assign(codedError('EDIFFERENT', `content differs from ${which} (hash collision or rewritten)`), { content: true });
      }
    }
  } catch (er) {
    // A file that shrank, or a read error: not identical, and the caller
    // (after an exchange: settle()) must still put things right.
    return er as Error;
  }
  return undefined;
}

/** Whether `er` is difference()'s verdict that the bytes differ (not the metadata, not an I/O error). */
export const isContentDifference = (er: unknown): boolean => (er as { content?: boolean } | undefined)?.content === true;
