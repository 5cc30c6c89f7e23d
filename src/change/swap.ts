/*
 * The swap: how a guest's name moves from one inode to another without a
 * moment where the name is missing or shows anything but one of the two
 * identical files. Used by the linker (the canonical takes the duplicate's
 * name), by split (a private copy takes the shared inode's name) and, for
 * undo(), by crash recovery.
 *
 *   1. journal the temporary name, then link the incoming inode to it
 *      (linkat of the open descriptor: exactly the inode compared, whatever
 *      its paths are by now);
 *   2. check the temporary name still holds it (the guest can act on it too);
 *   3. renameat2(RENAME_EXCHANGE) it with the guest's name: the name always
 *      names a file, and the old inode is not lost but moves to the
 *      temporary name;
 *   4. settle(): check what moved out is the inode expected, unchanged, and
 *      identical to the one now at the name, compared in full as the guests
 *      have them at this moment (the bytes only where the caller holds no
 *      read leases on both since its own comparison, see lease.ts); then
 *      unlink the temporary name. Otherwise undo(): exchange back and
 *      report why.
 * Nothing is deleted unless it is known to be redundant.
 */
import { randomBytes } from 'node:crypto';
import { codedError, errorCode, fileError } from '../core/errors.js';
import { dirRel, displayPath, printable } from '../core/paths.js';
import { FS_APPEND_FL, FS_IMMUTABLE_FL, sameFile, sameInode, type InodeId, type Stat } from '../core/stat.js';
import type { FileRec } from '../core/types.js';
import type { OpenedFile } from '../os/confine.js';
import { O, RENAME_EXCHANGE, sys } from '../os/sys.js';
import { difference, inodeFlags } from './compare.js';
import { journalEntry, settledMark, type Journal } from './journal.js';
import { leaseError, type PairLease } from './lease.js';

export const TEMP_PREFIX = '.vunify.';

/** The inode that takes the name: open, with what fstat said of it before the swap. */
export interface Incoming {
  fd: number;
  before: Stat;
  /** Where it lives, for messages (the canonical's path); absent for a new copy. */
  file?: FileRec;
}

export interface SwapOptions {
  ignoreMtime: boolean;
  journal?: Journal;
  /** A temporary name that already holds `into`, journalled by the caller (split's named copy). */
  named?: Buffer;
  /**
   * `into` and `out` were compared in full before, and the caller checked
   * both unchanged since (the linker, for the second and later paths of one
   * duplicate inode): `out` is checked unchanged, ctime included, just
   * before the exchange, and the full comparison after it is left out.
   */
  known?: boolean;
  /**
   * Read leases on `into` and `out`, taken by the caller before it compared
   * them in full: checked just before the exchange and when settling; while
   * both are intact the bytes are not compared again (lease.ts). Released
   * by the caller.
   */
  lease?: PairLease;
}

/**
 * Put `into` at `file`'s name (in `dirFd`, the directory opened and checked
 * by the caller) in place of `out`, the inode the name held when it was
 * opened. Throws, with the name as it was, when anything does not check out.
 */
export function swap(dirFd: number, file: FileRec, into: Incoming, out: OpenedFile, opts: SwapOptions): void {
  checkDirectory(dirFd, file);
  const tmp = opts.named ?? tempName();
  if (!opts.named) {
    opts.journal?.record(journalEntry(file, tmp, into.before, out.stat));
    sys.linkAt(into.fd, dirFd, tmp);
  }
  let intoPre: Stat;
  try {
    // Also what `into` is just before the exchange: settle() tells a change after it by this ctime.
    intoPre = sys.statAt(dirFd, tmp);
    if (!sameInode(intoPre, into.before)) throw tempMoved();
    // The exchange sets both ctimes: the last moment a write to `out` shows in its ctime.
    if (opts.known && !sameFile(sys.fstat(out.fd), out.stat, { ctime: true, nlink: true })) throw changedWhileLinked();
    // A writer waiting on either inode: not exchanged at all.
    const broken = opts.lease?.broken();
    if (broken) throw leaseError(broken, 'while it was being linked');
    sys.renameAt(dirFd, tmp, dirFd, file.name, RENAME_EXCHANGE);
  } catch (er) {
    throw swapFailure(er, removeIfInode(dirFd, tmp, into.before));
  }
  settle(dirFd, tmp, file.name, into, out, opts, undefined, intoPre);
}

/** The temporary name no longer holds the incoming inode, just before the exchange. */
export const tempMoved = (): Error => codedError('ECHANGED', 'temporary name was moved or replaced by the guest; left as it was');
/** A `known` duplicate changed between its opening and the exchange. */
export const changedWhileLinked = (): Error => codedError('ECHANGED', 'file changed while it was being linked; left as it was');

/**
 * What swap() throws when a step between the temporary link and the
 * exchange failed with `er`; `left`: what removeIfInode() left behind.
 */
export function swapFailure(er: unknown, left: { tmp: Buffer; why: string } | undefined): Error {
  if (errorCode(er) === 'EINVAL') {
    return codedError('EINVAL', 'filesystem does not support RENAME_EXCHANGE, which vunify needs to replace files without a window of loss' + leftNote(left));
  }
  if (left) return codedError(errorCode(er) ?? 'EUNKNOWN', `${fileError('', er).message}${leftNote(left)}`);
  return er as Error;
}

/**
 * After the exchange: `tmp` holds what was at `name` a moment ago. It must be
 * `out`, unchanged since `out.stat`, `into` unchanged since `into.before`
 * (ctime and nlink aside: the link and the exchange move them), and the two
 * identical in metadata, xattrs and every byte, compared now. A guest may
 * act between an earlier comparison and the exchange (a chmod, or a rewrite
 * with the mtime put back, leaves no trace a stat before the exchange could
 * see), so only this comparison tells what the guests had at the moment of
 * linking. Then the old inode's name goes; otherwise the exchange is undone
 * and the reason thrown.
 */
export function settle(dirFd: number, tmp: Buffer, name: Buffer, into: Incoming, out: OpenedFile, opts: SwapOptions, at?: { intoAt: Stat; outAt: Stat; intoChanged: boolean }, intoPre?: Stat): void {
  const meta = { ctime: false, nlink: false };
  // Taken first: from here on the guest's path shows `into`, and what it
  // does through that path is its own business, shared as with any link.
  // The exchange gave both inodes one ctime; `out` is beyond the guest's
  // paths now, so its ctime still says when the exchange was, and an
  // `into` whose ctime is later was changed after it, through the path.
  // `at`: both as the addon saw them just after its exchange (native/link.c).
  const intoAt = at?.intoAt ?? sys.fstat(into.fd);
  const outAt = at?.outAt ?? sys.fstat(out.fd);
  const later = (a: Stat, b: Stat) => a.ctimeSec > b.ctimeSec || (a.ctimeSec === b.ctimeSec && a.ctimeNsec > b.ctimeNsec);
  // Where the exchange stamps neither ctime (XFS), `into` keeps the ctime of
  // our link, later than anything done to `out` before it: only a ctime
  // later than `into`'s just before the exchange (`intoPre`) is a change
  // after it. `at.intoChanged`: the addon's verdict, by the same rule.
  const intoChanged = at ? at.intoChanged : later(intoAt, outAt) && (!intoPre || later(intoAt, intoPre));
  // A broken lease on `out`: a writer waits to write to the old inode (it
  // opened the name before the exchange, or another of its links), and
  // would write to a deleted file if it went: put it back at the name.
  const lease = opts.lease;
  const broken = lease?.broken();
  let why: Error | undefined;
  if (!sameInode(sys.statAt(dirFd, tmp), out.stat)) why = codedError('ECHANGED', 'file was replaced while being linked; left as it was');
  else if (!sameFile(outAt, out.stat, meta)) why = codedError('ECHANGED', 'file was written or its owner or mode changed while being linked; left as it was');
  else if (broken?.duplicate) why = leaseError(broken, 'while it was being linked');
  else if (intoChanged) why = undefined; // the guest has written to its file as linked: the link stands
  else if (!sameFile(intoAt, into.before, meta)) why = codedError('ECHANGED', `${into.file ? displayPath(into.file) : 'the copy'} changed while being linked; left as it was`);
  else if (opts.known) why = undefined; // compared before, and unchanged up to the exchange (checked in swap())
  else if (lease && (!broken || lease.unwritten())) {
    // Not a byte written to either since the caller compared them: both
    // leases intact (checked again below), or one on `into` broken since
    // the check just before the exchange by a writer that still waits for
    // us (a guest opening its path, which shows `into` now, or another name
    // of it: a change to the shared file, made once we release). Owner,
    // mode, size, mtime, flags, project and xattrs are compared now, the
    // bytes are not.
    why = difference(into, out, opts.ignoreMtime, false);
  } else {
    // No leases, or a break on `into` that may have timed out: the writer
    // goes on now, and the comparison below tells a write after the
    // exchange, as before.
    lease?.release();
    why = difference(into, out, opts.ignoreMtime);
    // `into` changed while we compared, `out` did not: a write through the
    // path, after the exchange; it was identical up to the exchange
    // (compared before it, metadata checked just after), so the link stands.
    if (why && later(sys.fstat(into.fd), intoAt) && sameFile(sys.fstat(out.fd), out.stat, meta)) why = undefined;
  }
  // A guest process holding the old inode open may write to it during the
  // comparison, where it was already compared: its ctime moves, and only
  // then may the old inode go with what it holds.
  const outNow = sys.fstat(out.fd);
  if (!why && !sameFile(outNow, outAt, { ctime: true, nlink: true })) why = codedError('ECHANGED', 'file was written while being linked; left as it was');
  // The leases' word for the bytes, up to this moment: a writer that opened
  // either inode meanwhile is still waiting, nothing written yet. One
  // waiting on `out` goes back to the name with it; one waiting on `into`
  // opened it after the exchange (checked above), a change to the shared
  // file like any other, and the link stands (link.ts sees its ctime move).
  if (!why && lease && !lease.released && !opts.known) {
    const late = lease.broken();
    if (late?.duplicate) why = leaseError(late, 'while it was being linked');
  }
  if (why) {
    undo(dirFd, tmp, name, into.before, out.stat, () => !difference(into, out, opts.ignoreMtime));
    throw why;
  }
  try {
    opts.journal?.record(settledMark(tmp, outNow));
  } catch (er) {
    throw settledMarkFailure(er, tmp);
  }
  try {
    sys.unlinkAt(dirFd, tmp);
  } catch (er) {
    throw tempUnlinkFailure(er, tmp);
  }
}

/** The settled mark could not be written: the name already shows `into`; the old inode stays where it is, said here, and its journal entry (written before the link) stays too. */
export function settledMarkFailure(er: unknown, tmp: Buffer): Error {
  return codedError(
    errorCode(er) ?? 'EUNKNOWN',
    `linked, but the journal could not record it (${fileError('', er).message}); the file that was at this name, compared identical to the one now there, is left beside it as ${printable(tmp)}`,
  );
}

/** The old inode's temporary name could not be unlinked after a settled swap. */
export function tempUnlinkFailure(er: unknown, tmp: Buffer): Error {
  return codedError(errorCode(er) ?? 'EUNKNOWN', `linked, but the old file could not be removed from its temporary name ${printable(tmp)} (${fileError('', er).message}); it is left there, and the next linking run tries again`);
}

/**
 * Put the name back as it was, after the exchange: normally the incoming
 * link goes and the old inode returns. A guest may have put a new file at
 * the name meanwhile (a package manager installing an update): then that
 * file is what belongs at the name, and the old inode is deleted only if
 * `redundant()` says it holds nothing the incoming one does not (the guest
 * may have moved it elsewhere, believing it was its file); otherwise it
 * stays at the temporary name, named in the error. Nothing is deleted
 * unless it is known.
 */
export function undo(dirFd: number, tmp: Buffer, name: Buffer, incoming: InodeId, old: InodeId, redundant: () => boolean): void {
  exchangeBack(dirFd, tmp, name);
  const back = sys.statAt(dirFd, tmp);
  if (sameInode(back, incoming)) return sys.unlinkAt(dirFd, tmp);
  if (sameInode(back, old)) throw leftAt(tmp, 'the name changed twice while being linked');
  exchangeBack(dirFd, tmp, name);
  if (!sameInode(sys.statAt(dirFd, tmp), old)) throw leftAt(tmp, 'the name changed again while being put back');
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

/**
 * Remove our temporary name, but only while it still names `inode`. Returns
 * undefined when nothing of ours is left, or what is left and why, for the
 * caller's message: a temporary name is never left behind unsaid.
 */
export function removeIfInode(dirFd: number, tmp: Buffer, inode: InodeId): { tmp: Buffer; why: string } | undefined {
  let st: Stat;
  try {
    st = sys.statAt(dirFd, tmp);
  } catch (er) {
    if (errorCode(er) === 'ENOENT') return undefined; // never made, or already gone
    return { tmp, why: fileError('', er).message };
  }
  if (!sameInode(st, inode)) return undefined; // the guest's now, not ours
  try {
    sys.unlinkAt(dirFd, tmp);
    return undefined;
  } catch (er) {
    if (errorCode(er) === 'ENOENT') return undefined;
    return { tmp, why: fileError('', er).message };
  }
}

/** The sentence a message gets when removeIfInode() left something. */
export function leftNote(left: { tmp: Buffer; why: string } | undefined): string {
  return left ? `; and its temporary link ${printable(left.tmp)} could not be removed (${left.why}): it is left there, a link to the file vunify was putting in place` : '';
}

/**
 * Throw EFLAGS when the directory holding the name is append-only or
 * immutable (chattr +a / +i): the exchange would be refused after the
 * temporary link was made, and in an append-only directory that link could
 * not be removed again. Checked through the directory's descriptor.
 */
function checkDirectory(dirFd: number, file: FileRec): void {
  let fd: number;
  try {
    fd = sys.open(`/proc/self/fd/${dirFd}`, O.RDONLY | O.DIRECTORY | O.NONBLOCK | O.CLOEXEC);
  } catch {
    return; // cannot tell; the swap itself will say why if it fails
  }
  try {
    const flags = inodeFlags(fd);
    if (flags & (FS_IMMUTABLE_FL | FS_APPEND_FL)) {
      const which = flags & FS_IMMUTABLE_FL ? 'immutable' : 'append-only';
      const dir = file.dir.relLength ? printable(dirRel(file.dir)) : 'the root';
      throw codedError('EFLAGS', `its directory (${dir}) is ${which} (chattr); names in it cannot be replaced, left alone`);
    }
  } finally {
    sys.close(fd);
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
