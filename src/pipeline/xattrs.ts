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
 */
import { errorCode } from '../core/errors.js';
import { sys } from '../os/sys.js';

/** All xattrs of an open file as one comparable string. */
export function xattrKey(fd: number): string {
  return encodeXattrs(sys.getXattrs(fd));
}

export function encodeXattrs(pairs: readonly [Buffer, Buffer][]): string {
  // Names are sorted by the addon; hex for names, base64 for values keeps the
  // encoding unambiguous whatever bytes they hold.
  return pairs.map(([k, v]) => k.toString('hex') + '=' + v.toString('base64')).join(',');
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

