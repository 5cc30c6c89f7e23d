/*
 * Private copies (vunify split): give one guest's paths of a shared inode a
 * new inode of their own, all through descriptors confined beneath the root.
 *
 *   1. open the directory (checked to be the one scanned) and the file in it
 *      (O_PATH, checked against the scan, reopened for reading);
 *   2. create an unnamed file (O_TMPFILE) in that directory fd, copy the
 *      bytes (holes kept), then fchown, the xattrs (security.capability and
 *      ACLs included; after chown, which clears capabilities and setuid
 *      bits), fchmod, futimens (mtime to the ns), the project ID, the inode
 *      flags, fsync;
 *   3. check the source is unchanged since the scan (ctime included: nothing
 *      was written while it was copied) and the copy one the sharing policy
 *      (pipeline/policy.ts) could have linked to it: same owner, mode, mtime,
 *      project, flags and xattrs;
 *   4. swap it in at the name (swap.ts: journal, temporary link, exchange,
 *      full comparison, settle or undo), as the linker swaps a canonical in.
 * The guest's other names of the same inode then join the copy, so its own
 * hardlinks stay hardlinks.
 */
import { codedError, errorCode, fileError, type FileError } from '../core/errors.js';
import { displayPath } from '../core/paths.js';
import { FS_FILE_FLAGS, FS_NOCOW_FL, sameFile, type Stat } from '../core/stat.js';
import type { FileRec, Inode } from '../core/types.js';
import { openDir, openRegular, type OpenedFile } from '../os/confine.js';
import { O, sys } from '../os/sys.js';
import { fileAttrs, readXattrs, sameXattrs } from '../pipeline/xattrs.js';
import { attributesOf, inodeFlags } from './compare.js';
import { firstDifference } from '../pipeline/policy.js';
import { journalEntry, type Journal } from './journal.js';
import { leftNote, removeIfInode, swap, tempName } from './swap.js';

/** One copy to make: an inode shared outside, and its paths under one root. */
export interface CopyJob {
  inode: Inode;
  paths: FileRec[];
  /** The copy a killed run already made for these paths (state/split-record.ts): they join it. */
  existing?: Inode;
}

/** Called before a path is moved onto a copy: (shared inode, copy, path). */
export type NoteCopy = (shared: Stat, copy: Stat, at: FileRec) => void;

/** Make one private copy (or take the job's existing one) and move the job's paths to it; errors are reported per path. */
export function copyJob(
  job: CopyJob,
  journal: Journal,
  onError: (e: FileError) => void,
  onSplit?: (f: FileRec) => void,
  note: NoteCopy = () => {},
): { copied: boolean; split: number } {
  const [first, ...rest] = job.paths as [FileRec, ...FileRec[]];
  if (job.existing) return joinExisting(job, job.existing, journal, onError, onSplit, note);
  let copy: { fd: number; stat: Stat } | undefined;
  let src: OpenedFile | undefined;
  let done = 0;
  try {
    const dirFd = openDir(first.dir);
    try {
      src = openRegular(dirFd, first.name, first.stat, { ctime: true, nlink: false });
      copy = makeCopy(src, dirFd, first, journal, (c) => note(job.inode.stat, c, first));
      done++;
      onSplit?.(first);
    } finally {
      sys.close(dirFd);
    }
  } catch (er) {
    if (src) sys.close(src.fd);
    onError(fileError(displayPath(first), er));
    return { copied: false, split: 0 };
  }
  try {
    // The guest's other names of the same inode join its copy.
    done += moveOnto(rest, copy, { fd: src.fd, stat: job.inode.stat }, journal, onError, onSplit, note);
  } finally {
    sys.close(copy.fd);
    sys.close(src.fd);
  }
  return { copied: true, split: done };
}

/** Move each of `paths` (names of the shared inode `shared`) onto `copy` by the swap; returns how many moved, errors reported per path. */
function moveOnto(
  paths: readonly FileRec[],
  copy: { fd: number; stat: Stat },
  shared: { fd: number; stat: Stat },
  journal: Journal,
  onError: (e: FileError) => void,
  onSplit: ((f: FileRec) => void) | undefined,
  note: NoteCopy,
): number {
  let done = 0;
  for (const p of paths) {
    try {
      const dirFd = openDir(p.dir);
      try {
        note(shared.stat, copy.stat, p);
        swap(dirFd, p, { fd: copy.fd, before: copy.stat }, shared, { ignoreMtime: false, journal });
        done++;
        onSplit?.(p);
      } finally {
        sys.close(dirFd);
      }
    } catch (er) {
      onError(fileError(displayPath(p), er));
    }
  }
  return done;
}

/**
 * A killed run already gave this root its copy of the shared inode: move the
 * paths still on the shared inode onto that copy (swap, as for the first
 * run's other paths), so the guest's hardlinks stay one inode. The swap
 * compares the two in full: a copy changed since is not joined.
 */
function joinExisting(job: CopyJob, existing: Inode, journal: Journal, onError: (e: FileError) => void, onSplit: ((f: FileRec) => void) | undefined, note: NoteCopy): { copied: boolean; split: number } {
  const at = existing.paths[0]!;
  let copy: OpenedFile;
  try {
    const dirFd = openDir(at.dir);
    try {
      copy = openRegular(dirFd, at.name, existing.stat, { ctime: true, nlink: false });
    } finally {
      sys.close(dirFd);
    }
  } catch (er) {
    for (const p of job.paths) onError(fileError(displayPath(p), codedError(errorCode(er) ?? 'ECHANGED', `its private copy from an interrupted split (${displayPath(at)}) cannot be used: ${(er as Error).message}; left shared`)));
    return { copied: false, split: 0 };
  }
  // The shared inode, opened once and checked against the scan: each swap
  // below unlinks one of its names, which changes its ctime.
  const first = job.paths[0]!;
  let shared: OpenedFile;
  try {
    const dirFd = openDir(first.dir);
    try {
      shared = openRegular(dirFd, first.name, first.stat, { ctime: true, nlink: false });
    } finally {
      sys.close(dirFd);
    }
  } catch (er) {
    sys.close(copy.fd);
    onError(fileError(displayPath(first), er));
    return { copied: false, split: 0 };
  }
  try {
    return { copied: false, split: moveOnto(job.paths, copy, { fd: shared.fd, stat: job.inode.stat }, journal, onError, onSplit, note) };
  } finally {
    sys.close(copy.fd);
    sys.close(shared.fd);
  }
}

/** Copy the open file `source` to a new inode in `dirFd` and swap it in at `file`'s name; returns the copy, still open. */
function makeCopy(source: OpenedFile, dirFd: number, file: FileRec, journal: Journal, note: (copy: Stat) => void): { fd: number; stat: Stat } {
  const { fd: srcFd, stat: src } = source;
  const tmp = tempName();
  const created = createCopy(dirFd, tmp);
  const fd = created.fd;
  let stat = sys.fstat(fd);
  let swapping = false;
  try {
    if (created.named) journal.record(journalEntry(file, tmp, stat, src));
    // No-copy-on-write takes effect only on an empty file; the other flags
    // go on last, so that e.g. synchronous writes do not slow the copy.
    const flags = inodeFlags(srcFd) & FS_FILE_FLAGS;
    if (flags & FS_NOCOW_FL) setFileFlags(fd, FS_NOCOW_FL);
    sys.copyData(srcFd, fd, src.size);
    sys.fchown(fd, src.uid, src.gid);
    // The new inode may have inherited xattrs (a default ACL of the
    // directory, a security label): it must carry the source's and no more.
    const srcXattrs = readXattrs(srcFd);
    const keep = new Set(srcXattrs.map(([name]) => name.toString('latin1')));
    for (const [name] of sys.getXattrs(fd)) if (!keep.has(name.toString('latin1'))) sys.removeXattr(fd, name);
    for (const [name, value] of srcXattrs) sys.setXattr(fd, name, value);
    sys.fchmod(fd, src.mode & 0o7777);
    sys.futimens(fd, src.mtimeSec, src.mtimeNsec);
    // A new inode takes its directory's project (or none): the copy keeps its source's quota project.
    const { projid } = fileAttrs(srcFd);
    if (fileAttrs(fd).projid !== projid) sys.setProject(fd, projid);
    setFileFlags(fd, flags);
    sys.fsync(fd);
    if (!sameFile(sys.fstat(srcFd), src, { ctime: true, nlink: false })) throw codedError('ECHANGED', 'file changed while it was being copied');
    stat = sys.fstat(fd);
    const why = firstDifference(attributesOf(fd), attributesOf(srcFd), { ignoreMtime: false, iunlink: true }) ?? (sameXattrs(fd, srcFd) ? undefined : 'xattrs');
    if (why) throw codedError('EDIFFERENT', `the copy did not come out identical (${why}); left as it was`);
    // An unnamed copy is journalled and linked to its temporary name by
    // swap(), like the linker's temporary links; a named one already is.
    note(stat);
    swapping = true; // from here swap() removes its own temporary name, or says why not
    swap(dirFd, file, { fd, before: stat }, source, { ignoreMtime: false, journal, named: created.named ? tmp : undefined });
    return { fd, stat };
  } catch (er) {
    const left = swapping ? undefined : removeIfInode(dirFd, tmp, stat);
    sys.close(fd);
    if (left) throw codedError(errorCode(er) ?? 'EUNKNOWN', `${fileError('', er).message}${leftNote(left)}`);
    throw er;
  }
}

/**
 * The new file: unnamed (O_TMPFILE) where the filesystem allows, so a kill
 * leaves nothing behind and the guest never sees a half-made copy; it gets
 * a name only when complete. Elsewhere a named O_EXCL file, journalled just
 * after it is created: a kill in between leaves an empty `.vunify.*` file
 * the next run does not know (harmless, named).
 */
function createCopy(dirFd: number, tmp: Buffer): { fd: number; named: boolean } {
  try {
    return { fd: sys.openBeneath(dirFd, Buffer.from('.'), O.TMPFILE | O.RDWR, 0), named: false };
  } catch (er) {
    if (!['EOPNOTSUPP', 'EISDIR', 'EINVAL'].includes(errorCode(er) ?? '')) throw er;
  }
  return { fd: sys.openBeneath(dirFd, tmp, O.RDWR | O.CREAT | O.EXCL | O.NOFOLLOW, 0o600), named: true };
}

/** Give the copy exactly `flags` among the per-file inode flags, keeping the ones the filesystem set itself. */
function setFileFlags(fd: number, flags: number): void {
  const now = inodeFlags(fd);
  if ((now & FS_FILE_FLAGS) !== flags) sys.setFlags(fd, (now & ~FS_FILE_FLAGS) | flags);
}
