/*
 * Split: give the named guests private copies again of every file whose
 * inode is shared with anything outside them (`vunify split ROOT...`),
 * before a guest moves to another host or may rewrite files in place.
 *
 *   roots -> state -> walk -> shared inodes -> free space -> copy + swap
 *
 * An inode is shared outside when its link count exceeds the number of its
 * paths the walk found under the named roots (excluded paths count as
 * outside: the same excludes as unification apply). Each (inode, root) gets
 * one copy, and every path of that inode in that root is moved to it, so a
 * guest's own hardlinks stay hardlinks; two named roots that share an inode
 * only with each other keep sharing it (split them one at a time to part them).
 *
 * Before anything is copied, the bytes (allocated blocks) and inodes needed
 * are summed per filesystem and compared with what statvfs says is free
 * (f_bavail: root's reserve is left alone); if any falls short the run
 * refuses with exit 2. A dry run reports the same numbers and copies nothing.
 *
 * One copy, all through descriptors confined beneath the root:
 *   1. open the directory (checked to be the one scanned) and the file in it
 *      (O_PATH, checked against the scan, reopened for reading);
 *   2. create an unnamed file (O_TMPFILE) in that directory fd, copy the
 *      bytes (holes kept), then fchown, the xattrs (security.capability and
 *      ACLs included; after chown, which clears capabilities and setuid
 *      bits), fchmod, futimens (mtime to the ns), fsync;
 *   3. check the source is unchanged since the scan (ctime included: nothing
 *      was written while it was copied); journal the temporary name
 *      (state.ts), then give the copy that name with linkat(AT_EMPTY_PATH),
 *      and check it still names the copy (filesystems without O_TMPFILE get
 *      a named O_EXCL|O_NOFOLLOW file instead, see createCopy);
 *   4. renameat2(RENAME_EXCHANGE) the temp name with the file's name: the path
 *      always names a file with the same bytes; then check that what moved out
 *      is the shared inode, unwritten since, and unlink that name (the other
 *      guests keep the inode). Otherwise swap back and skip.
 * The journal entries use the linker's shape (canon = the copy, dup = the
 * shared inode), so a run killed mid-way is put right by the next one the
 * same way.
 */
import { displayPath, openDir, openRegular, sameFile, sameInode, type OpenedFile } from '../os/confine.js';
import { compileRules, withDefaults, type Rule } from '../pipeline/excludes.js';
import { codedError, errorCode, fileError, UsageError, type FileError } from '../core/errors.js';
import { groupFiles } from '../pipeline/group.js';
import { CHUNK } from '../pipeline/hash.js';
import { canonMeta, inodeFlags, removeIfInode, settle, tempName } from '../change/link.js';
import { formatBytes } from '../report/report.js';
import { closeRoots, expandRoots, openRoots } from '../pipeline/roots.js';
import { DEFAULT_STATE_DIR, openState, type JournalEntry, type JournalLine, type RunState } from '../state/run-state.js';
import { FS_FILE_FLAGS, FS_NOCOW_FL, O, RENAME_EXCHANGE, sys, type Stat } from '../os/sys.js';
import type { FileRec, Inode, Root } from '../core/types.js';
import { walk } from '../pipeline/walk.js';
import { xattrKey } from '../pipeline/xattrs.js';

export interface SplitOptions {
  roots: readonly string[];
  dryRun: boolean;
  rules: readonly Rule[];
  noDefaultExcludes: boolean;
  stateDir?: string;
  onError?(e: FileError): void;
  /** Called after each path moved to a private copy (for -v). */
  onSplit?(file: FileRec): void;
}

export interface FilesystemNeed {
  /** The first named root on this filesystem, to name it in messages. */
  root: string;
  bytesNeeded: number;
  bytesAvailable: number;
  inodesNeeded: number;
  inodesAvailable: number;
  enough: boolean;
}

export interface SplitReport {
  version: 1;
  dryRun: boolean;
  summary: {
    filesScanned: number;
    /** Paths under the named roots whose inode is shared outside them. */
    pathsShared: number;
    /** Copies to make (one per shared inode and root), and their allocated bytes. */
    copiesPlanned: number;
    bytesNeeded: number;
    copiesMade: number;
    pathsSplit: number;
    skipped: number;
    errors: number;
  };
  filesystems: FilesystemNeed[];
  errors: FileError[];
  durations: { total: number };
}

/** One copy to make: an inode shared outside, and its paths under one root. */
interface Job {
  inode: Inode;
  paths: FileRec[];
}

export async function split(opts: SplitOptions): Promise<SplitReport> {
  const start = performance.now();
  const errors: FileError[] = [];
  const onError = (e: FileError) => {
    errors.push(e);
    opts.onError?.(e);
  };
  const rules = withDefaults(opts.rules, opts.noDefaultExcludes);
  const roots = openRoots(expandRoots(opts.roots));
  let state: RunState | undefined;
  try {
    if (!opts.dryRun) state = openState(opts.stateDir ?? DEFAULT_STATE_DIR, roots, onError);
    const walked = await walk(roots, { matcher: compileRules(rules), minSize: 0, maxSize: Number.MAX_SAFE_INTEGER, onError });
    const earlySkips = errors.length;
    const { inodes } = groupFiles(walked.files, { ignoreMtime: false });
    const jobs = sharedJobs(inodes);
    const filesystems = spaceNeeded(roots, jobs);
    const short = filesystems.find((f) => !f.enough);
    if (short && !opts.dryRun) {
      throw new UsageError(
        `${short.root}: not enough free space to split: needs ${formatBytes(short.bytesNeeded)} and ${short.inodesNeeded} inodes, ` +
          `has ${formatBytes(short.bytesAvailable)} and ${short.inodesAvailable}; nothing was copied`,
      );
    }
    let copiesMade = 0, pathsSplit = 0, skipped = earlySkips;
    if (state) {
      const journal = state;
      const record = (e: JournalLine) => journal.record(e);
      const buffers: [Buffer, Buffer] = [Buffer.allocUnsafe(CHUNK), Buffer.allocUnsafe(CHUNK)];
      for (const job of jobs) {
        const r = splitJob(job, record, buffers, onError, opts.onSplit);
        if (r.copied) copiesMade++;
        pathsSplit += r.split;
        skipped += job.paths.length - r.split;
      }
    }
    return {
      version: 1,
      dryRun: opts.dryRun,
      summary: {
        filesScanned: walked.files.length,
        pathsShared: jobs.reduce((n, j) => n + j.paths.length, 0),
        copiesPlanned: jobs.length,
        bytesNeeded: filesystems.reduce((n, f) => n + f.bytesNeeded, 0),
        copiesMade,
        pathsSplit,
        skipped,
        errors: errors.length,
      },
      filesystems,
      errors,
      durations: { total: Math.round(performance.now() - start) },
    };
  } finally {
    state?.close();
    closeRoots(roots);
  }
}

/** Inodes with links outside the walked paths, one job per root that names them. */
function sharedJobs(inodes: readonly Inode[]): Job[] {
  const jobs: Job[] = [];
  for (const inode of inodes) {
    if (inode.stat.nlink <= inode.paths.length) continue;
    const byRoot = new Map<Root, FileRec[]>();
    for (const p of inode.paths) {
      const list = byRoot.get(p.dir.root);
      if (list) list.push(p);
      else byRoot.set(p.dir.root, [p]);
    }
    for (const paths of byRoot.values()) jobs.push({ inode, paths });
  }
  return jobs;
}

function spaceNeeded(roots: readonly Root[], jobs: readonly Job[]): FilesystemNeed[] {
  const byDev = new Map<number, FilesystemNeed>();
  for (const root of roots) {
    if (byDev.has(root.dev)) continue;
    const free = sys.statvfs(root.fd);
    byDev.set(root.dev, { root: root.path, bytesNeeded: 0, bytesAvailable: free.bytes, inodesNeeded: 0, inodesAvailable: free.inodes, enough: true });
  }
  for (const job of jobs) {
    const fs = byDev.get(job.paths[0]!.dir.root.dev)!;
    fs.bytesNeeded += job.inode.stat.blocks * 512;
    fs.inodesNeeded++;
  }
  for (const fs of byDev.values()) fs.enough = fs.bytesNeeded <= fs.bytesAvailable && fs.inodesNeeded <= fs.inodesAvailable;
  return [...byDev.values()];
}

/** Make one private copy and move the job's paths to it; errors are reported per path. */
function splitJob(
  job: Job,
  record: (e: JournalLine) => void,
  buffers: [Buffer, Buffer],
  onError: (e: FileError) => void,
  onSplit?: (f: FileRec) => void,
): { copied: boolean; split: number } {
  const [first, ...rest] = job.paths as [FileRec, ...FileRec[]];
  let copy: { fd: number; stat: Stat } | undefined;
  let src: OpenedFile | undefined;
  let done = 0;
  try {
    const dirFd = openDir(first.dir);
    try {
      src = openRegular(dirFd, first.name, first.stat, { ctime: true, nlink: false });
      copy = makeCopy(src, dirFd, first, record, buffers);
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
  const shared = { fd: src.fd, stat: job.inode.stat };
  try {
    // The guest's other names of the same inode join its copy.
    for (const p of rest) {
      try {
        const dirFd = openDir(p.dir);
        try {
          const tmp = tempName();
          record(entry(p, tmp, copy.stat, job.inode.stat));
          sys.linkAt(copy.fd, dirFd, tmp);
          try {
            swapIn(dirFd, tmp, p.name, copy, shared, buffers, record);
          } catch (er) {
            removeIfInode(dirFd, tmp, copy.stat);
            throw er;
          }
          done++;
          onSplit?.(p);
        } finally {
          sys.close(dirFd);
        }
      } catch (er) {
        onError(fileError(displayPath(p), er));
      }
    }
  } finally {
    sys.close(copy.fd);
    sys.close(src.fd);
  }
  return { copied: true, split: done };
}

/** Copy the open file `srcFd` to a new inode in `dirFd` and put it at `file`'s name; returns the copy, still open. */
function makeCopy(source: OpenedFile, dirFd: number, file: FileRec, record: (e: JournalLine) => void, buffers: [Buffer, Buffer]): { fd: number; stat: Stat } {
  const { fd: srcFd, stat: src } = source;
  const tmp = tempName();
  const created = createCopy(dirFd, tmp);
  const fd = created.fd;
  let stat = sys.fstat(fd);
  try {
    if (created.named) record(entry(file, tmp, stat, src));
    // No-copy-on-write takes effect only on an empty file; the other flags
    // go on last, so that e.g. synchronous writes do not slow the copy.
    const flags = inodeFlags(srcFd) & FS_FILE_FLAGS;
    if (flags & FS_NOCOW_FL) setFileFlags(fd, FS_NOCOW_FL);
    sys.copyData(srcFd, fd, src.size);
    sys.fchown(fd, src.uid, src.gid);
    // The new inode may have inherited xattrs (a default ACL of the
    // directory, a security label): it must carry the source's and no more.
    const srcXattrs = sys.getXattrs(srcFd);
    const keep = new Set(srcXattrs.map(([name]) => name.toString('latin1')));
    for (const [name] of sys.getXattrs(fd)) if (!keep.has(name.toString('latin1'))) sys.removeXattr(fd, name);
    for (const [name, value] of srcXattrs) sys.setXattr(fd, name, value);
    sys.fchmod(fd, src.mode & 0o7777);
    sys.futimens(fd, src.mtimeSec, src.mtimeNsec);
    setFileFlags(fd, flags);
    sys.fsync(fd);
    if (!sameFile(sys.fstat(srcFd), src, { ctime: true, nlink: false })) throw codedError('ECHANGED', 'file changed while it was being copied');
    stat = sys.fstat(fd);
    const same = stat.size === src.size && stat.uid === src.uid && stat.gid === src.gid && stat.mode === src.mode &&
      stat.mtimeSec === src.mtimeSec && stat.mtimeNsec === src.mtimeNsec && xattrKey(fd) === xattrKey(srcFd) &&
      (inodeFlags(fd) & FS_FILE_FLAGS) === flags;
    if (!same) throw codedError('EDIFFERENT', 'the copy did not come out identical in metadata, xattrs or inode flags; left as it was');
    if (!created.named) {
      // Journalled before it gets a name, like the linker's temporary links.
      record(entry(file, tmp, stat, src));
      sys.linkAt(fd, dirFd, tmp);
    }
    swapIn(dirFd, tmp, file.name, { fd, stat }, source, buffers, record);
    return { fd, stat };
  } catch (er) {
    removeIfInode(dirFd, tmp, stat);
    sys.close(fd);
    throw er;
  }
}

/**
 * The new file: unnamed (O_TMPFILE) where the filesystem allows, so a kill
 * leaves nothing behind and the guest never sees a half-made copy; it is
 * linked to its temporary name only when complete. Elsewhere a named
 * O_EXCL file, journalled just after it is created: a kill in between leaves
 * an empty `.vunify.*` file the next run does not know (harmless, named).
 */
function createCopy(dirFd: number, tmp: Buffer): { fd: number; named: boolean } {
  try {
    return { fd: sys.openBeneath(dirFd, Buffer.from('.'), O.TMPFILE | O.RDWR, 0), named: false };
  } catch (er) {
    if (!['EOPNOTSUPP', 'EISDIR', 'EINVAL'].includes(errorCode(er) ?? '')) throw er;
  }
  return { fd: sys.openBeneath(dirFd, tmp, O.RDWR | O.CREAT | O.EXCL | O.NOFOLLOW, 0o600), named: true };
}

/**
 * Exchange the temp name (holding `copy`) with `name` (holding the shared
 * inode), then let the linker's settle() check what moved out is the shared
 * inode, unchanged, and identical to the copy in full before unlinking that
 * name; otherwise it swaps back.
 */
function swapIn(
  dirFd: number,
  tmp: Buffer,
  name: Buffer,
  copy: { fd: number; stat: Stat },
  shared: OpenedFile,
  buffers: [Buffer, Buffer],
  record: (e: JournalLine) => void,
): void {
  if (!sameInode(sys.statAt(dirFd, tmp), copy.stat)) throw codedError('ECHANGED', 'temporary copy was moved or replaced by the guest; left as it was');
  sys.renameAt(dirFd, tmp, dirFd, name, RENAME_EXCHANGE);
  settle(dirFd, tmp, name, copy, copy.stat, shared, false, buffers, record);
}

/** Give the copy exactly `flags` among the per-file inode flags, keeping the ones the filesystem set itself. */
function setFileFlags(fd: number, flags: number): void {
  const now = inodeFlags(fd);
  if ((now & FS_FILE_FLAGS) !== flags) sys.setFlags(fd, (now & ~FS_FILE_FLAGS) | flags);
}

function entry(file: FileRec, tmp: Buffer, copy: Stat, src: Stat): JournalEntry {
  const root = file.dir.root;
  return {
    root: root.path, rootDev: root.dev, rootIno: root.ino, dir: file.dir.rel.toString('hex'),
    tmp: tmp.toString('hex'), name: file.name.toString('hex'),
    canon: canonMeta(copy),
    dup: { dev: src.dev, ino: src.ino, size: src.size, mtimeSec: src.mtimeSec, mtimeNsec: src.mtimeNsec },
  };
}

export function formatSplit(r: SplitReport): string {
  const s = r.summary;
  const lines = [
    `${r.dryRun ? 'Dry run (nothing changed): ' : ''}${s.filesScanned} files scanned; ${s.pathsShared} paths share an inode with something outside the named roots`,
    `private copies ${r.dryRun ? 'needed' : 'planned'}: ${s.copiesPlanned}, ${formatBytes(s.bytesNeeded)} on disk`,
  ];
  for (const f of r.filesystems) {
    lines.push(`  filesystem of ${f.root}: needs ${formatBytes(f.bytesNeeded)}, ${f.inodesNeeded} inodes; free ${formatBytes(f.bytesAvailable)}, ${f.inodesAvailable} inodes${f.enough ? '' : ' - NOT ENOUGH'}`);
  }
  if (!r.dryRun) lines.push(`copied: ${s.copiesMade}; paths split: ${s.pathsSplit}`);
  if (s.errors) lines.push(`errors: ${s.errors} (${s.skipped} paths skipped; see messages above)`);
  return lines.join('\n') + '\n';
}
