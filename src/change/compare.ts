/*
 * Compare two open inodes: may the second become a link to the first?
 *
 * The one answer the linker, split and crash recovery all use. Everything is
 * read through the two descriptors as they are now (never by name): owner,
 * group, mode, size, mtime (unless ignored), every xattr, the per-file inode
 * flags, and every byte. A hash match alone never links: XXH64 collisions
 * can be forged. The module owns its two read buffers; it is synchronous,
 * so one pair serves every caller.
 */
import { codedError, errorCode } from '../core/errors.js';
import { displayPath } from '../core/paths.js';
import { FS_APPEND_FL, FS_FILE_FLAGS, FS_IMMUTABLE_FL } from '../core/stat.js';
import type { FileRec } from '../core/types.js';
import { readFully, sys } from '../os/sys.js';
import { xattrKey } from '../pipeline/xattrs.js';

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
 * Why `dup` may not become a link to `canon`, or undefined when it may:
 * owner, mode, size, mtime (unless ignored), every xattr, the per-file inode
 * flags and every byte, read through the two descriptors as they are now.
 */
export function difference(canon: { fd: number; file?: FileRec }, dup: { fd: number }, ignoreMtime: boolean): Error | undefined {
  const c = sys.fstat(canon.fd);
  const d = sys.fstat(dup.fd);
  const metaOk =
    c.size === d.size &&
    c.uid === d.uid &&
    c.gid === d.gid &&
    c.mode === d.mode &&
    (ignoreMtime || (c.mtimeSec === d.mtimeSec && c.mtimeNsec === d.mtimeNsec));
  if (!metaOk) return codedError('ECHANGED', 'owner, mode, size or mtime no longer match the canonical copy');
  if (xattrKey(dup.fd) !== xattrKey(canon.fd)) {
    return codedError('EDIFFERENT', 'extended attributes differ from the canonical copy');
  }
  if ((inodeFlags(dup.fd) & FS_FILE_FLAGS) !== (inodeFlags(canon.fd) & FS_FILE_FLAGS)) {
    return codedError('EDIFFERENT', 'inode flags (lsattr) differ from the canonical copy');
  }
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
        return codedError('EDIFFERENT', `content differs from ${which} (hash collision or rewritten)`);
      }
    }
  } catch (er) {
    // A file that shrank, or a read error: not identical, and the caller
    // (after an exchange: settle()) must still put things right.
    return er as Error;
  }
  return undefined;
}
