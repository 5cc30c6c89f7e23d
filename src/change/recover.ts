/*
 * Crash recovery of one journal entry: a temporary name a killed run left
 * in a guest directory. It is removed only if it is one of the two inodes
 * recorded for it (a guest file that merely looks like ours is left alone),
 * and the guest's old inode goes back to its name if it was written after
 * vunify compared it. state/recovery.ts finds the journals of dead runs.
 */
import { codedError, errorCode } from '../core/errors.js';
import { printable } from '../core/paths.js';
import { sameFile, sameInode } from '../core/stat.js';
import { openInode } from '../os/confine.js';
import { O, sys } from '../os/sys.js';
import { difference } from './compare.js';
import type { JournalEntry, SettledMark } from './journal.js';
import { undo } from './swap.js';

/** The entry's path for messages: root, directory and `name` (hex). */
export function shownPath(e: JournalEntry, name: string): string {
  const dir = Buffer.from(e.dir, 'hex');
  return e.root.replace(/\/$/, '') + '/' + printable(dir.length ? Buffer.concat([dir, Buffer.from('/'), Buffer.from(name, 'hex')]) : Buffer.from(name, 'hex'));
}

/**
 * Put right what one entry left; throws (ENOENT when there is nothing left)
 * with the reason otherwise. `root`: the descriptor of the run's root the
 * entry was matched to (state/recovery.ts); without it, the path the entry
 * names is opened.
 */
export function recoverEntry(e: JournalEntry, mark: SettledMark | undefined, root?: number): void {
  const rootFd = root ?? sys.open(e.root, O.RDONLY | O.DIRECTORY | O.NOFOLLOW | O.CLOEXEC);
  try {
    const rst = sys.fstat(rootFd);
    if (rst.dev !== e.rootDev || rst.ino !== e.rootIno) throw codedError('ECHANGED', 'root was replaced since the run that left it');
    let dirFd: number;
    try {
      dirFd = sys.openBeneath(rootFd, Buffer.from(e.dir, 'hex'), O.PATH | O.DIRECTORY);
    } catch (er) {
      // Not "nothing left": the guest may have renamed the directory, with
      // the temporary name (and perhaps its old file) still in it.
      if (errorCode(er) === 'ENOENT' || errorCode(er) === 'ENOTDIR') {
        throw codedError('ECHANGED', 'its directory is no longer at this path (renamed or removed since the run that left it); the temporary name may be left in it');
      }
      throw er;
    }
    try {
      const tmp = Buffer.from(e.tmp, 'hex');
      const st = sys.statAt(dirFd, tmp);
      if (sameInode(st, e.canon)) {
        sys.unlinkAt(dirFd, tmp); // killed before the swap, or after swapping back
      } else if (sameInode(st, e.dup)) {
        // Killed after the exchange: the guest's old inode is here and the
        // canonical at its name, where the guest may have written since.
        const name = Buffer.from(e.name, 'hex');
        if (mark) {
          // Compared in full after the exchange: it goes unless written since
          // (through a descriptor held from before); the name is left alone.
          if (st.ctimeSec !== mark.ctimeSec || st.ctimeNsec !== mark.ctimeNsec) throw kept(tmp, 'written after it was unified');
          sys.unlinkAt(dirFd, tmp);
        } else if (unchanged(dirFd, tmp, name, e)) {
          sys.unlinkAt(dirFd, tmp);
        } else if (linkedAsIs(dirFd, name, e)) {
          // Changed before the comparison after the exchange could see it:
          // the guest's file goes back to its name.
          undo(dirFd, tmp, name, e.canon, e.dup, () => false);
        } else {
          throw kept(tmp, 'it and the file now at its name both changed since the run that left them');
        }
      } else {
        throw codedError('ECHANGED', 'it names a file vunify did not put there; left in place');
      }
    } finally {
      sys.close(dirFd);
    }
  } finally {
    if (root === undefined) sys.close(rootFd);
  }
}

/** The duplicate at `tmp` has its recorded mtime and the canonical's owner, mode, size, xattrs and bytes. */
function unchanged(dirFd: number, tmp: Buffer, name: Buffer, e: JournalEntry): boolean {
  const dup = openInode(dirFd, tmp, e.dup);
  try {
    if (dup.stat.mtimeSec !== e.dup.mtimeSec || dup.stat.mtimeNsec !== e.dup.mtimeNsec) return false;
    let canon;
    try {
      canon = openInode(dirFd, name, e.canon);
    } catch (er) {
      if (errorCode(er) !== 'ECHANGED' && errorCode(er) !== 'ENOENT') throw er;
      throw codedError('ECHANGED', 'the name was replaced since the run that left it, so the two cannot be compared; left in place');
    }
    try {
      // A guest process holding the old inode open may write to it while it
      // is compared, where it was already compared: its ctime tells.
      return difference(canon, dup, true) === undefined && sameFile(sys.fstat(dup.fd), dup.stat, { ctime: true, nlink: true });
    } finally {
      sys.close(canon.fd);
    }
  } finally {
    sys.close(dup.fd);
  }
}

/** The file at `name` is still the canonical as it was linked (owner, mode, size, mtime), as far as the journal recorded it. */
function linkedAsIs(dirFd: number, name: Buffer, e: JournalEntry): boolean {
  const st = sys.statAt(dirFd, name);
  const c = e.canon;
  if (!sameInode(st, c)) return false;
  if (c.size === undefined) return true; // an older journal: nothing more to check
  return st.size === c.size && st.mtimeSec === c.mtimeSec && st.mtimeNsec === c.mtimeNsec && st.mode === c.mode && st.uid === c.uid && st.gid === c.gid;
}

function kept(tmp: Buffer, why: string): Error {
  return codedError('ECHANGED', `${why}; the old file is kept as ${printable(tmp)}, the path holds the unified one`);
}
