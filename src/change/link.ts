/*
 * Link: carry out a plan, one duplicate path at a time, re-checking
 * everything a guest could have changed since the scan.
 *
 * For each set the canonical inode is opened once, confined beneath its
 * root, and kept open. For each duplicate path:
 *   1. open its directory (confined, and checked to be the directory that
 *      was scanned) and the file in it (O_PATH first, checked against the
 *      scan, then reopened for reading);
 *   2. check both files are unchanged since the scan, except for the nlink
 *      and ctime changes vunify's own links caused, and that the duplicate is
 *      neither immutable nor append-only;
 *   3. compare metadata, xattrs and every byte, read through those two
 *      descriptors: a hash match alone never links;
 *   4. linkat(canonical descriptor, AT_EMPTY_PATH) to `.vunify.<random>` in
 *      the duplicate's directory, so the new name is exactly the inode whose
 *      bytes were compared, whatever its paths are by now;
 *   5. renameat2(RENAME_EXCHANGE) the temporary name with the duplicate's
 *      name: the path always names a file, and the old inode is not lost but
 *      moves to the temporary name;
 *   6. check the inode that moved out is the one compared, and compare the
 *      two again in full (see replace()); then unlink it. Otherwise swap
 *      back (see undo()) and skip.
 * EMLINK (the canonical reached the filesystem's link limit) makes the
 * current duplicate the canonical for the rest of its set. Any other error
 * is reported with the path and the run goes on.
 */
import { randomBytes } from 'node:crypto';
import { displayPath, openDir, openRegular, openScanned, printable, relPath, sameFile, sameInode, type InodeId, type OpenedFile } from '../os/confine.js';
import { codedError, errorCode, fileError, type FileError } from '../core/errors.js';
import { CHUNK, readFully } from '../pipeline/hash.js';
import type { LinkOp, Plan, PlanSet } from '../pipeline/plan.js';
import { FS_APPEND_FL, FS_FILE_FLAGS, FS_IMMUTABLE_FL, RENAME_EXCHANGE, sys, type Stat } from '../os/sys.js';
import type { FileRec, Inode } from '../core/types.js';
import { isIunlinked, setIunlink } from './iunlink.js';
import type { JournalEntry, JournalLine } from '../state/run-state.js';
import { xattrKey } from '../pipeline/xattrs.js';

export interface LinkOptions {
  ignoreMtime: boolean;
  onError(e: FileError): void;
  /** Called when two inodes the plan held identical turn out to differ (the hash cache forgets both). */
  onDiffer?(canonical: Inode, duplicate: Inode): void;
  /** Called after each link made (for -v), with what fstat says of the canonical now (for the cache). */
  onLink?(file: FileRec, canonical: FileRec, canonicalStat: Stat): void;
  onProgress?(ops: number): void;
  /** Journal each temporary name before it is created (see state.ts). */
  record?(line: JournalLine): void;
  /** Mark each canonical immutable + immutable-unlink before its first link (see iunlink.ts). */
  iunlink?: boolean;
}

export interface LinkResult {
  linksMade: number;
  /** Inodes whose last link was replaced, the sum of their sizes, and of their allocated blocks. */
  freedInodes: number;
  freedBytes: number;
  freedDiskBytes: number;
  /** Planned links not made because of an error. */
  skipped: number;
}

interface Canonical {
  file: FileRec;
  inode: Inode;
  fd: number;
  /** What fstat must say now: the scan's stat, updated after each link we made. */
  expect: Stat;
  /** Already carries the immutable-unlink attributes (--iunlink). */
  iunlinked: boolean;
}

/** What fstat of each inode should say, after vunify's own changes to it. */
type Expected = Map<Inode, Stat>;

export const TEMP_PREFIX = '.vunify.';

export async function link(plan: Plan, opts: LinkOptions): Promise<LinkResult> {
  const result: LinkResult = { linksMade: 0, freedInodes: 0, freedBytes: 0, freedDiskBytes: 0, skipped: 0 };
  const buffers: [Buffer, Buffer] = [Buffer.allocUnsafe(CHUNK), Buffer.allocUnsafe(CHUNK)];
  const expected: Expected = new Map();
  try {
    for (const set of plan.sets) await linkSet(set, opts, result, buffers, expected);
  } finally {
    // The space is free when the run says so.
    await sys.closeLaterDrain();
  }
  return result;
}

async function linkSet(
  set: PlanSet,
  opts: LinkOptions,
  result: LinkResult,
  buffers: [Buffer, Buffer],
  expected: Expected,
): Promise<void> {
  let canon: Canonical;
  try {
    canon = openCanonical(set.source, set.canonical, expected, opts);
  } catch (er) {
    opts.onError(fileError(displayPath(set.source), er));
    result.skipped += set.ops.length;
    return;
  }
  try {
    for (const op of set.ops) {
      opts.onProgress?.(1);
      if (op.inode === canon.inode) continue; // became canonical after EMLINK
      try {
        const freed = await linkOne(canon, op, opts, buffers, expected);
        result.linksMade++;
        if (freed) {
          result.freedInodes++;
          result.freedBytes += op.inode.stat.size;
          result.freedDiskBytes += op.inode.stat.blocks * 512;
        }
        opts.onLink?.(op.file, canon.file, canon.expect);
      } catch (er) {
        if (errorCode(er) === 'EMLINK') {
          // The canonical is full: this duplicate carries the set from here.
          try {
            const next = openCanonical(op.file, op.inode, expected, opts);
            sys.close(canon.fd);
            canon = next;
            continue;
          } catch (er2) {
            er = er2;
          }
        }
        if (errorCode(er) === 'EDIFFERENT') opts.onDiffer?.(canon.inode, op.inode);
        opts.onError(fileError(displayPath(op.file), er));
        result.skipped++;
        if (errorCode(er) === 'ECANONICAL') {
          result.skipped += set.ops.length - set.ops.indexOf(op) - 1;
          return;
        }
      }
    }
  } finally {
    sys.close(canon.fd);
  }
}

function openCanonical(file: FileRec, inode: Inode, expected: Expected, opts: LinkOptions): Canonical {
  const expect = expected.get(inode);
  const opened = expect
    ? openRegular(file.dir.root.fd, relPath(file), expect, { ctime: true, nlink: true })
    : openScanned(file);
  try {
    // An inode this tool marked immutable-unlink earlier may be linked to
    // again on a vserver kernel; any other immutable or append-only
    // canonical is left alone with its whole set.
    const iunlinked = !!opts.iunlink && isIunlinked(opened.fd);
    if (!iunlinked) checkFlags(opened.fd, 'canonical copy');
    return { file, inode, fd: opened.fd, expect: opened.stat, iunlinked };
  } catch (er) {
    sys.close(opened.fd);
    throw er;
  }
}

/** An open file's inode flags (chattr); 0 on filesystems that have none. */
export function inodeFlags(fd: number): number {
  try {
    return sys.getFlags(fd);
  } catch (er) {
    if (!['ENOTTY', 'EINVAL', 'EOPNOTSUPP', 'ENOSYS'].includes(errorCode(er) ?? '')) throw er;
    return 0;
  }
}

function checkFlags(fd: number, what: string): void {
  const flags = inodeFlags(fd);
  if (flags & (FS_IMMUTABLE_FL | FS_APPEND_FL)) {
    const which = flags & FS_IMMUTABLE_FL ? 'immutable' : 'append-only';
    throw codedError('EFLAGS', `${what} is ${which} (chattr); left alone`);
  }
}

/** Replace one duplicate path; returns true when its inode lost its last link. */
async function linkOne(
  canon: Canonical,
  op: LinkOp,
  opts: LinkOptions,
  buffers: [Buffer, Buffer],
  expected: Expected,
): Promise<boolean> {
  const dirFd = openDir(op.file.dir);
  try {
    const expectDup = expected.get(op.inode) ?? op.file.stat;
    const dup = openRegular(dirFd, op.file.name, expectDup, { ctime: true, nlink: false });
    let freed = false;
    try {
      if (!(opts.iunlink && isIunlinked(dup.fd))) checkFlags(dup.fd, 'duplicate');
      const canonBefore = await verify(canon, dup, opts, buffers);
      if (opts.iunlink && !canon.iunlinked) {
        // As util-vserver does: the canonical first, then the links to it.
        setIunlink(canon.fd);
        canon.iunlinked = true;
        canon.expect = sys.fstat(canon.fd);
      }
      try {
        replace(canon, canonBefore, dup, dirFd, op.file, opts, buffers);
      } catch (er) {
        // Our link and unlink moved the canonical's ctime; if nothing else
        // changed, the rest of its set may still be linked to it.
        const now = sys.fstat(canon.fd);
        if (sameFile(now, canonBefore, { ctime: false, nlink: true })) canon.expect = now;
        throw er;
      }
      canon.expect = sys.fstat(canon.fd);
      expected.set(canon.inode, canon.expect);
      const after = sys.fstat(dup.fd);
      expected.set(op.inode, after);
      freed = after.nlink === 0;
      return freed;
    } finally {
      // Closing the last descriptor of the replaced inode frees its blocks,
      // which costs more than the rest of the link: not on this thread.
      if (freed) sys.closeLater(dup.fd);
      else sys.close(dup.fd);
    }
  } finally {
    sys.close(dirFd);
  }
}

/** Everything that must hold before the duplicate's name may point at the canonical. */
async function verify(canon: Canonical, dup: OpenedFile, opts: LinkOptions, buffers: [Buffer, Buffer]): Promise<Stat> {
  const c = sys.fstat(canon.fd);
  if (!sameFile(c, canon.expect, { ctime: true, nlink: true })) {
    throw codedError('ECANONICAL', `canonical ${displayPath(canon.file)} changed since it was scanned; rest of its set skipped`);
  }
  const why = difference(canon, dup, opts.ignoreMtime, buffers);
  if (why) throw why;
  // Nothing may have been written while we compared.
  if (!sameFile(sys.fstat(canon.fd), c, { ctime: true, nlink: true }) || !sameFile(sys.fstat(dup.fd), dup.stat, { ctime: true, nlink: true })) {
    throw codedError('ECHANGED', 'file changed while it was being compared');
  }
  return c;
}

/**
 * Why `dup` may not become a link to `canon`, or undefined when it may:
 * owner, mode, size, mtime (unless ignored), every xattr and every byte,
 * read through the two descriptors as they are now. A hash match alone
 * never links: XXH64 collisions can be forged.
 */
export function difference(
  canon: { fd: number; file?: FileRec },
  dup: { fd: number },
  ignoreMtime: boolean,
  buffers: [Buffer, Buffer],
): Error | undefined {
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
  const [a, b] = buffers;
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

/**
 * Swap the duplicate's name over to the canonical inode, then compare the
 * two again: a guest may act between the comparison and the exchange (a
 * chmod, or a rewrite with the mtime put back, leaves no trace a stat before
 * the exchange could see, and the link and the exchange themselves move both
 * ctimes). Only after the exchange is the duplicate's name known to show the
 * canonical, and its old inode still held at the temporary name: whatever
 * the comparison finds then is what the guests had at the moment of linking.
 */
function replace(
  canon: Canonical,
  canonBefore: Stat,
  dup: OpenedFile,
  dirFd: number,
  file: FileRec,
  opts: LinkOptions,
  buffers: [Buffer, Buffer],
): void {
  const tmp = tempName();
  const name = file.name;
  const root = file.dir.root;
  opts.record?.({
    root: root.path, rootDev: root.dev, rootIno: root.ino, dir: file.dir.rel.toString('hex'),
    tmp: tmp.toString('hex'), name: name.toString('hex'),
    canon: canonMeta(canon.expect),
    dup: { dev: dup.stat.dev, ino: dup.stat.ino, size: dup.stat.size, mtimeSec: dup.stat.mtimeSec, mtimeNsec: dup.stat.mtimeNsec },
  });
  sys.linkAt(canon.fd, dirFd, tmp);
  try {
    sys.renameAt(dirFd, tmp, dirFd, name, RENAME_EXCHANGE);
  } catch (er) {
    removeIfInode(dirFd, tmp, canon.expect);
    if (errorCode(er) === 'EINVAL') {
      throw codedError('EINVAL', 'filesystem does not support RENAME_EXCHANGE, which vunify needs to replace files without a window of loss');
    }
    throw er;
  }
  settle(dirFd, tmp, name, canon, canonBefore, dup, opts.ignoreMtime, buffers, opts.record);
}

/** What the journal keeps of the inode linked in, so recovery can tell whether the guest changed it since. */
export function canonMeta(st: Stat): JournalEntry['canon'] {
  return { dev: st.dev, ino: st.ino, size: st.size, mtimeSec: st.mtimeSec, mtimeNsec: st.mtimeNsec, mode: st.mode, uid: st.uid, gid: st.gid };
}

/**
 * After the exchange: `tmp` holds what was at `name` a moment ago. It must be
 * `out`, unchanged since `out.stat`, `into` unchanged since `intoBefore`
 * (ctime and nlink aside: the link and the exchange move them), and the two
 * identical in metadata, xattrs and every byte, compared now, as the guests
 * have them at this moment. Then the old inode's name goes; otherwise the
 * exchange is undone and the reason thrown. Shared with split, where `into`
 * is the private copy and `out` the shared inode.
 */
export function settle(
  dirFd: number,
  tmp: Buffer,
  name: Buffer,
  into: { fd: number; file?: FileRec },
  intoBefore: Stat,
  out: OpenedFile,
  ignoreMtime: boolean,
  buffers: [Buffer, Buffer],
  record?: (line: JournalLine) => void,
): void {
  const meta = { ctime: false, nlink: false };
  // Taken first: from here on the guest's path shows `into`, and what it
  // does through that path is its own business, shared as with any link.
  // The exchange gave both inodes one ctime; `out` is beyond the guest's
  // paths now, so its ctime still says when the exchange was, and an
  // `into` whose ctime is later was changed after it, through the path.
  const intoAt = sys.fstat(into.fd);
  const outAt = sys.fstat(out.fd);
  const later = (a: Stat, b: Stat) => a.ctimeSec > b.ctimeSec || (a.ctimeSec === b.ctimeSec && a.ctimeNsec > b.ctimeNsec);
  let why: Error | undefined;
  if (!sameInode(sys.statAt(dirFd, tmp), out.stat)) why = codedError('ECHANGED', 'file was replaced while being linked; left as it was');
  else if (!sameFile(outAt, out.stat, meta)) why = codedError('ECHANGED', 'file was written or its owner or mode changed while being linked; left as it was');
  else if (later(intoAt, outAt)) why = undefined; // the guest has written to its file as linked: the link stands
  else if (!sameFile(intoAt, intoBefore, meta)) why = codedError('ECHANGED', `${into.file ? displayPath(into.file) : 'the copy'} changed while being linked; left as it was`);
  else {
    why = difference(into, out, ignoreMtime, buffers);
    // `into` changed while we compared, `out` did not: a write through the
    // path, after the exchange; it was identical up to the exchange
    // (compared before it, metadata checked just after), so the link stands.
    if (why && later(sys.fstat(into.fd), intoAt) && sameFile(sys.fstat(out.fd), out.stat, meta)) why = undefined;
  }
  if (why) {
    undo(dirFd, tmp, name, intoBefore, out.stat, () => !difference(into, out, ignoreMtime, buffers));
    throw why;
  }
  const now = sys.fstat(out.fd);
  record?.({ settled: tmp.toString('hex'), ctimeSec: now.ctimeSec, ctimeNsec: now.ctimeNsec });
  sys.unlinkAt(dirFd, tmp);
}

/**
 * Put the duplicate's name back as it was, after the exchange: normally the
 * canonical link goes and the old inode returns. A guest may have put a new
 * file at the name meanwhile (a package manager installing an update): then
 * that file is what belongs at the name, and the old inode is deleted only
 * if `redundant()` says it holds nothing the canonical does not (the guest
 * may have moved the canonical elsewhere, believing it was its file);
 * otherwise it stays at the temporary name, named in the error. Nothing is
 * deleted unless it is known.
 */
export function undo(dirFd: number, tmp: Buffer, name: Buffer, canon: InodeId, dup: InodeId, redundant: () => boolean): void {
  exchangeBack(dirFd, tmp, name);
  const back = sys.statAt(dirFd, tmp);
  if (sameInode(back, canon)) return sys.unlinkAt(dirFd, tmp);
  if (sameInode(back, dup)) throw leftAt(tmp, 'the name changed twice while being linked');
  exchangeBack(dirFd, tmp, name);
  if (!sameInode(sys.statAt(dirFd, tmp), dup)) throw leftAt(tmp, 'the name changed again while being put back');
  if (!redundant()) throw leftAt(tmp, 'a new file was put at the name while it was being linked, and the old one differs');
  sys.unlinkAt(dirFd, tmp);
}

/** Exchange `tmp` and `name` again; a name the guest removed meanwhile leaves what `tmp` holds there, said in the error. */
function exchangeBack(dirFd: number, tmp: Buffer, name: Buffer): void {
  try {
    sys.renameAt(dirFd, tmp, dirFd, name, RENAME_EXCHANGE);
  } catch (er) {
    if (errorCode(er) === 'ENOENT') throw leftAt(tmp, 'the name was removed while being linked');
    throw er;
  }
}

function leftAt(tmp: Buffer, why: string): Error {
  return codedError('ECHANGED', `${why}; the previous file is kept beside it as ${printable(tmp)}`);
}

/** Remove our temporary name, but only while it still names `inode`. */
export function removeIfInode(dirFd: number, tmp: Buffer, inode: Stat): void {
  try {
    if (sameInode(sys.statAt(dirFd, tmp), inode)) sys.unlinkAt(dirFd, tmp);
  } catch {
    // Already gone; nothing of ours is left.
  }
}

// Nine random bytes per name, drawn from a pool: a randomBytes() call per
// name cost 14 µs in the linking run, more than the write to the journal.
const NAME_BYTES = 9;
let pool = Buffer.alloc(0);
let poolAt = 0;

export function tempName(): Buffer {
  if (poolAt + NAME_BYTES > pool.length) {
    pool = randomBytes(NAME_BYTES * 512);
    poolAt = 0;
  }
  poolAt += NAME_BYTES;
  return Buffer.from(TEMP_PREFIX + pool.toString('base64url', poolAt - NAME_BYTES, poolAt));
}
