/*
 * Confined access to a guest's files.
 *
 * Every lookup on behalf of a guest path starts at that guest's root
 * descriptor and goes through sys.openBeneath or sys.openChecked (the addon's
 * openat2 with RESOLVE_BENEATH, RESOLVE_NO_SYMLINKS and RESOLVE_NO_XDEV,
 * both), so a guest that swaps a directory
 * for a symlink to the host's "/" makes the lookup fail instead of escape.
 * After opening, the descriptor is compared with what the scan recorded
 * (dev, ino, and for files the metadata that grouped it); a mismatch is
 * ECHANGED. Files are first opened O_PATH, which never runs a device's open
 * routine nor blocks on a FIFO, and only reopened for reading once fstat says
 * they are the regular file that was scanned.
 */
import { codedError } from '../core/errors.js';
import type { InodeId, Stat } from '../core/stat.js';
import { doublesStat, LINK_ARRAY, O, OPEN_CHECKED, statDoubles, sys } from './sys.js';
import { dirRel, relPath } from '../core/paths.js';
import type { DirNode, FileRec } from '../core/types.js';

/**
 * Open a scanned directory (O_PATH, or `flags` such as O_RDONLY when an
 * ioctl must be made on it: O_DIRECTORY fails on anything but a directory)
 * and check it is still that directory. Its path is built here, for this
 * one lookup (DirNode keeps none).
 */
export function openDir(dir: DirNode, flags: number = O.PATH): number {
  return openDirAt(dir.root.fd, dirRel(dir), dir, flags);
}

/** Open `dir` (O_PATH, or `flags`) by `path` beneath `baseFd` (its root's or an ancestor's descriptor) and check it is still that directory. */
export function openDirAt(baseFd: number, path: Buffer, dir: DirNode, flags: number = O.PATH): number {
  const fd = sys.openBeneath(baseFd, path, flags | O.DIRECTORY);
  try {
    const st = sys.fstat(fd);
    if (st.dev !== dir.dev || st.ino !== dir.ino) throw codedError('ECHANGED', 'directory replaced since it was scanned');
    return fd;
  } catch (er) {
    sys.close(fd);
    throw er;
  }
}

export interface OpenedFile {
  /** Readable descriptor (O_RDONLY | O_NOATIME | O_NONBLOCK). */
  fd: number;
  stat: Stat;
}

/** What openChecked compares with, and the fstat it read: one of each, reused (JavaScript runs one call at a time). */
const S = LINK_ARRAY.stat;
const expected = new Float64Array(S.length);
const found = new Float64Array(S.length);

/**
 * Open `name` in the directory `dirFd` (a descriptor from openDir or a root)
 * for reading, and check it is the inode `expect` describes, unchanged
 * (ctime included unless `ctime: false`).
 */
export function openRegular(dirFd: number, name: Buffer, expect: Stat, opts = { ctime: true, nlink: false }): OpenedFile {
  statDoubles(expect, expected, 0);
  const how = (opts.ctime ? OPEN_CHECKED.ctime : 0) | (opts.nlink ? OPEN_CHECKED.nlink : 0);
  return openChecked(dirFd, name, how, 'file changed since it was scanned');
}

/** Open `name` in `dirFd` for reading, provided it is still the inode `id`. */
export function openInode(dirFd: number, name: Buffer, id: InodeId): OpenedFile {
  expected[S.dev] = id.dev;
  expected[S.ino] = id.ino;
  return openChecked(dirFd, name, OPEN_CHECKED.inode, 'name no longer holds the inode vunify put there');
}

/**
 * Open `name` in `dirFd` O_PATH (so a device's open routine never runs, nor
 * a FIFO blocks), check it is the regular file `expected` describes (`how`),
 * and only then reopen it for reading through /proc/self/fd: the same inode,
 * no second lookup. One call into the addon (it was five from here, and
 * cost a linking run ~0.15 s of this thread's time in its canonicals alone).
 */
function openChecked(dirFd: number, name: Buffer, how: number, why: string): OpenedFile {
  const fd = sys.openChecked(dirFd, name, expected, how, found);
  if (fd < 0) throw codedError('ECHANGED', why);
  return { fd, stat: doublesStat(found, 0) };
}

/**
 * Open a scanned file for reading. One confined lookup from the root: the
 * directory chain may have been rearranged inside the guest, but the inode
 * check pins the file itself, and it cannot be outside the root.
 */
export function openScanned(f: FileRec, opts = { ctime: true, nlink: false }): OpenedFile {
  return openRegular(f.dir.root.fd, relPath(f), f.stat, opts);
}
