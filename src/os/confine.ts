/*
 * Confined access to a guest's files.
 *
 * Every lookup on behalf of a guest path starts at that guest's root
 * descriptor and goes through sys.openBeneath (openat2 with RESOLVE_BENEATH,
 * RESOLVE_NO_SYMLINKS and RESOLVE_NO_XDEV), so a guest that swaps a directory
 * for a symlink to the host's "/" makes the lookup fail instead of escape.
 * After opening, the descriptor is compared with what the scan recorded
 * (dev, ino, and for files the metadata that grouped it); a mismatch is
 * ECHANGED. Files are first opened O_PATH, which never runs a device's open
 * routine nor blocks on a FIFO, and only reopened for reading once fstat says
 * they are the regular file that was scanned.
 */
import { codedError, errorCode } from '../core/errors.js';
import { FileType, O, sys, type Stat } from './sys.js';
import type { DirNode, FileRec } from '../core/types.js';

const SLASH = Buffer.from('/');

/** Path of a file relative to its root, as bytes. */
export function relPath(f: FileRec): Buffer {
  return f.dir.rel.length ? Buffer.concat([f.dir.rel, SLASH, f.name]) : f.name;
}

/** Printable absolute path (invalid UTF-8 bytes shown as \xNN). */
export function displayPath(f: FileRec): string {
  return f.dir.root.path.replace(/\/$/, '') + '/' + printable(relPath(f));
}

export function printable(bytes: Buffer): string {
  const s = bytes.toString('utf8');
  if (!s.includes('\ufffd') && Buffer.from(s, 'utf8').equals(bytes)) return escapeControls(s);
  let out = '';
  for (let i = 0; i < bytes.length; ) {
    // Decode valid UTF-8 runs, escape the rest byte by byte.
    let j = i + 1;
    while (j <= bytes.length && j - i <= 4) {
      const chunk = bytes.subarray(i, j).toString('utf8');
      if (!chunk.includes('\ufffd') && Buffer.from(chunk, 'utf8').equals(bytes.subarray(i, j))) break;
      j++;
    }
    if (j <= bytes.length && j - i <= 4) {
      out += escapeControls(bytes.subarray(i, j).toString('utf8'));
      i = j;
    } else {
      out += '\\x' + bytes[i]!.toString(16).padStart(2, '0');
      i++;
    }
  }
  return out;
}

function escapeControls(s: string): string {
  // A newline in a name must not forge a second line in the report.
  return s.replace(/[\x00-\x1f\x7f\\]/g, (c) => (c === '\\' ? '\\\\' : '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0')));
}

/** Open a scanned directory (O_PATH) and check it is still that directory. */
export function openDir(dir: DirNode): number {
  const fd = sys.openBeneath(dir.root.fd, dir.rel, O.PATH | O.DIRECTORY);
  try {
    const st = sys.fstat(fd);
    if (st.dev !== dir.dev || st.ino !== dir.ino) throw codedError('ECHANGED', 'directory replaced since it was scanned');
    return fd;
  } catch (er) {
    sys.close(fd);
    throw er;
  }
}

/** The metadata that must not change between scan and use. */
/** A file's identity: the device and inode number. */
export type InodeId = { dev: number; ino: number };

/** Whether `a` and `b` are the same inode (one may be a stat, the other a record of one). */
export const sameInode = (a: InodeId, b: InodeId): boolean => a.dev === b.dev && a.ino === b.ino;

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

export interface OpenedFile {
  /** Readable descriptor (O_RDONLY | O_NOATIME | O_NONBLOCK). */
  fd: number;
  stat: Stat;
}

let noatime = true;

/**
 * Open `name` in the directory `dirFd` (a descriptor from openDir or a root)
 * for reading, and check it is the inode `expect` describes, unchanged
 * (ctime included unless `ctime: false`).
 */
export function openRegular(dirFd: number, name: Buffer, expect: Stat, opts = { ctime: true, nlink: false }): OpenedFile {
  return openChecked(dirFd, name, (st) => sameFile(st, expect, opts), 'file changed since it was scanned');
}

/** Open `name` in `dirFd` for reading, provided it is still the inode `id`. */
export function openInode(dirFd: number, name: Buffer, id: InodeId): OpenedFile {
  return openChecked(dirFd, name, (st) => sameInode(st, id), 'name no longer holds the inode vunify put there');
}

function openChecked(dirFd: number, name: Buffer, ok: (st: Stat) => boolean, why: string): OpenedFile {
  const pathFd = sys.openBeneath(dirFd, name, O.PATH);
  try {
    const st = sys.fstat(pathFd);
    if (st.type !== FileType.Regular || !ok(st)) throw codedError('ECHANGED', why);
    return { fd: reopen(pathFd), stat: st };
  } finally {
    sys.close(pathFd);
  }
}

/** Reopen an O_PATH descriptor for reading: same inode, no second lookup. */
function reopen(pathFd: number): number {
  const proc = `/proc/self/fd/${pathFd}`;
  const flags = O.RDONLY | O.NONBLOCK | O.CLOEXEC;
  if (noatime) {
    try {
      return sys.open(proc, flags | O.NOATIME);
    } catch (er) {
      // O_NOATIME needs ownership or CAP_FOWNER; without them read normally.
      if (errorCode(er) !== 'EPERM') throw er;
      noatime = false;
    }
  }
  return sys.open(proc, flags);
}

/**
 * Open a scanned file for reading. One confined lookup from the root: the
 * directory chain may have been rearranged inside the guest, but the inode
 * check pins the file itself, and it cannot be outside the root.
 */
export function openScanned(f: FileRec, opts = { ctime: true, nlink: false }): OpenedFile {
  return openRegular(f.dir.root.fd, relPath(f), f.stat, opts);
}
