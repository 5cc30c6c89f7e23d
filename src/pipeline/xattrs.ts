/*
 * Extended attributes: a hardlink shares one set of xattrs, so files may
 * only be unified when their xattrs are identical, names and values, in
 * every namespace root can read: user.*, trusted.*, security.* (file
 * capabilities, SELinux labels) and system.* (POSIX ACLs).
 *
 * They are read through a descriptor, never by a path that could be a
 * symlink by now: the hash stage reads them through the very descriptor it
 * hashes (one open per candidate, xattrs and bytes from one file), and the
 * linker re-reads them through the descriptors it compares. The inode
 * flags and project ID, which the sharing policy compares too, are read the
 * same way (fileAttrs).
 *
 * A guest can give a file hundreds of MiB of xattrs (XFS allows it), so
 * they are never joined into one string (V8 cannot hold one that long):
 * the hash stage, the hash cache and the reports carry a digest of the set
 * (xattrDigest: SHA-256 of a canonical encoding, '' for none), and the
 * linker compares the values themselves (sameXattrs), never a digest of
 * guest-controlled data. More than layout.xattrTotalMax bytes (64 MiB) of
 * names and values is refused whole (E2BIG, see tooLarge()): the file is
 * skipped with that message, by the hash stage and the linker alike.
 */
import { createHash } from 'node:crypto';
import { codedError, errorCode } from '../core/errors.js';
import { layout } from '../os/native.js';
import { sys } from '../os/sys.js';

export const XATTR_TOTAL_MAX = layout.xattrTotalMax;

/**
 * The digest of an xattr set (pairs sorted by name, as the addon returns
 * them): hex SHA-256 of, per xattr, its name length and value length (u32
 * little-endian each), the name and the value; '' when there are none.
 * The addon's hash batch computes the same (native/hash.c digest_xattr).
 */
export function xattrDigest(pairs: readonly [Buffer, Buffer][]): string {
  if (pairs.length === 0) return '';
  const h = createHash('sha256');
  const lengths = Buffer.alloc(8);
  for (const [name, value] of pairs) {
    lengths.writeUInt32LE(name.length, 0);
    lengths.writeUInt32LE(value.length, 4);
    h.update(lengths).update(name).update(value);
  }
  return h.digest('hex');
}

/** The digest of an open file's xattrs. */
export function xattrKey(fd: number): string {
  return xattrDigest(readXattrs(fd));
}

/** Whether two open files carry exactly the same xattrs: every name, then every value, byte for byte. */
export function sameXattrs(a: number, b: number): boolean {
  const x = readXattrs(a);
  const y = readXattrs(b);
  return x.length === y.length && x.every(([name, value], k) => name.equals(y[k]![0]) && value.equals(y[k]![1]));
}

/** All xattrs of an open file, sorted by name; a set too large to read whole is E2BIG with tooLarge()'s message. */
export function readXattrs(fd: number): [Buffer, Buffer][] {
  try {
    return sys.getXattrs(fd);
  } catch (er) {
    if (errorCode(er) === 'E2BIG') throw codedError('E2BIG', tooLarge());
    throw er;
  }
}

/** Why a file whose xattrs cannot be read whole is left alone. */
export function tooLarge(): string {
  return `extended attributes too large to read whole (over ${XATTR_TOTAL_MAX / 2 ** 20} MiB of names and values, or a name list over 64 KiB); left alone`;
}

/**
 * An open file's inode flags and project ID, 0 each where the filesystem
 * has none (the addon's hashFiles reads them the same way).
 */
export function fileAttrs(fd: number): { flags: number; projid: number } {
  const none = (er: unknown) => {
    if (!['ENOTTY', 'EINVAL', 'EOPNOTSUPP', 'ENOSYS'].includes(errorCode(er) ?? '')) throw er;
    return 0;
  };
  let flags: number, projid: number;
  try {
    flags = sys.getFlags(fd);
  } catch (er) {
    flags = none(er);
  }
  try {
    projid = sys.fsGetXattr(fd).projid;
  } catch (er) {
    projid = none(er);
  }
  return { flags, projid };
}

