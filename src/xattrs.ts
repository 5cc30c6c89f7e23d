/*
 * Extended attributes: a hardlink shares one set of xattrs, so files may
 * only be unified when their xattrs are identical, names and values, in
 * every namespace root can read: user.*, trusted.*, security.* (file
 * capabilities, SELinux labels) and system.* (POSIX ACLs).
 *
 * Each file is opened O_PATH, confined beneath its root, checked against the
 * scan, and its xattrs are read through that descriptor (never by a path
 * that could be a symlink by now).
 */
import { displayPath, relPath, sameFile } from './confine.js';
import { codedError, fileError, type FileError } from './errors.js';
import { splitGroups } from './group.js';
import { FileType, O, sys } from './sys.js';
import type { FileRec, Inode } from './types.js';

/** Read all xattrs of a scanned file as one comparable string. */
export function xattrKey(f: FileRec): string {
  const fd = sys.openBeneath(f.dir.root.fd, relPath(f), O.PATH);
  try {
    const st = sys.fstat(fd);
    if (st.type !== FileType.Regular || !sameFile(st, f.stat, { ctime: true, nlink: false })) {
      throw codedError('ECHANGED', 'file changed since it was scanned');
    }
    return encodeXattrs(sys.getXattrs(fd));
  } finally {
    sys.close(fd);
  }
}

export function encodeXattrs(pairs: readonly [Buffer, Buffer][]): string {
  // Names are sorted by the addon; hex for names, base64 for values keeps the
  // encoding unambiguous whatever bytes they hold.
  return pairs.map(([k, v]) => k.toString('hex') + '=' + v.toString('base64')).join(',');
}

export function splitByXattrs(groups: readonly Inode[][], onError: (e: FileError) => void): Inode[][] {
  return splitGroups(groups, (inode) => {
    const f = inode.paths[0]!;
    try {
      return xattrKey(f);
    } catch (er) {
      onError(fileError(displayPath(f), er));
      return undefined;
    }
  });
}
