/*
 * Host-side state of linking runs, in a directory guests cannot see
 * (default /var/lib/vunify): locks, so two runs never work on overlapping
 * roots, and a journal of temporary names, so a run killed at any moment
 * leaves nothing the next run cannot put right.
 *
 * Locks are flock(2)s, which the kernel drops when their holder dies, so a
 * killed run never blocks the next one. Each run takes an exclusive lock on
 * a file named after each root's (dev, ino) and a shared lock on each of the
 * root's ancestors: two runs with the same root, or one root inside
 * another's, then always collide on one file, while siblings do not.
 *
 * The journal is written before each temporary name is created (one line per
 * link: where, which name, which inodes). A run that ends normally deletes
 * its journal. The next run opens every journal whose owner no longer holds
 * its lock and, for each temporary name still present, removes it only if it
 * is one of the two inodes recorded for it — a guest file that merely looks
 * like ours is left alone — and swaps the duplicate's old inode back if it
 * was written after vunify compared it.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { codedError, errorCode, UsageError, type FileError } from '../core/errors.js';
import { openInode, printable, sameInode } from '../os/confine.js';
import { CHUNK } from '../pipeline/hash.js';
import { difference, undo } from '../change/link.js';
import { LOCK_EX, LOCK_NB, LOCK_SH, O, sys, type Stat } from '../os/sys.js';
import type { Root } from '../core/types.js';

export const DEFAULT_STATE_DIR = '/var/lib/vunify';

/** One temporary name in flight. Byte strings are hex so any name survives JSON. */
export interface JournalEntry {
  root: string;
  rootDev: number;
  rootIno: number;
  dir: string;
  tmp: string;
  name: string;
  /** The inode linked in; its metadata as linked (absent in journals of older versions). */
  canon: { dev: number; ino: number } & Partial<Meta>;
  dup: { dev: number; ino: number; size: number; mtimeSec: number; mtimeNsec: number };
}

interface Meta {
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  mode: number;
  uid: number;
  gid: number;
}

/**
 * Written after the exchange once the full comparison has passed, just
 * before the old inode's temporary name is unlinked: from here the old inode
 * is known to have been identical to the one now at the name, and the ctime
 * it had then tells whether anyone wrote to it since.
 */
export interface SettledMark {
  settled: string;
  ctimeSec: number;
  ctimeNsec: number;
}

export type JournalLine = JournalEntry | SettledMark;

export interface RunState {
  /** Append an entry; called before the temporary name is created. */
  record(line: JournalLine): void;
  /** Release locks and delete the journal (the run is over). */
  close(): void;
}

export function openState(dir: string, roots: readonly Root[], onError: (e: FileError) => void): RunState {
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (er) {
    throw new UsageError(`${dir}: cannot create the state directory: ${(er as Error).message}`);
  }
  const held: number[] = [];
  try {
    for (const root of roots) lockRoot(dir, root, held);
    recover(dir, onError);
    const journalPath = path.join(dir, `journal.${process.pid}.${randomBytes(6).toString('hex')}`);
    const journal = sys.open(journalPath, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_APPEND, 0o600);
    sys.flock(journal, LOCK_EX);
    return {
      record(line) {
        // No fsync: a killed process loses nothing it wrote; only a power
        // failure could, and then the page cache's temporary names go too.
        fs.writeSync(journal, JSON.stringify(line) + '\n');
      },
      close() {
        fs.unlinkSync(journalPath);
        sys.close(journal);
        for (const fd of held) sys.close(fd);
      },
    };
  } catch (er) {
    for (const fd of held) sys.close(fd);
    throw er;
  }
}

function lockFile(dir: string, dev: number, ino: number): number {
  fs.mkdirSync(path.join(dir, 'locks'), { recursive: true, mode: 0o700 });
  return sys.open(path.join(dir, 'locks', `${dev}-${ino}`), fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
}

function lockRoot(dir: string, root: Root, held: number[]): void {
  const fd = lockFile(dir, root.dev, root.ino);
  held.push(fd);
  if (!sys.flock(fd, LOCK_EX | LOCK_NB)) throw busy(root.path, fd);
  fs.ftruncateSync(fd);
  fs.writeSync(fd, `${process.pid}\n`, 0);
  for (let d = path.dirname(root.path); ; d = path.dirname(d)) {
    const st = fs.statSync(d);
    const afd = lockFile(dir, st.dev, st.ino);
    held.push(afd);
    if (!sys.flock(afd, LOCK_SH | LOCK_NB)) throw busy(d, afd);
    if (d === '/') break;
  }
}

function busy(where: string, fd: number): UsageError {
  const pid = fs.readFileSync(fd, 'utf8').trim();
  return new UsageError(`${where}: another vunify run${pid ? ` (pid ${pid})` : ''} is working on this tree or one that contains it; try again when it is done`);
}

/** Put right what killed runs left behind. */
export function recover(dir: string, onError: (e: FileError) => void): void {
  for (const name of fs.readdirSync(dir)) {
    if (!name.startsWith('journal.')) continue;
    const file = path.join(dir, name);
    const fd = sys.open(file, O.RDONLY);
    try {
      if (!sys.flock(fd, LOCK_EX | LOCK_NB)) continue; // its run is alive
      const lines = fs.readFileSync(fd, 'utf8').split('\n').filter(Boolean);
      const entries: JournalEntry[] = [];
      const settled = new Map<string, SettledMark>();
      for (const line of lines) {
        let parsed: JournalLine;
        try {
          parsed = JSON.parse(line) as JournalLine;
        } catch {
          continue; // a line cut short by the kill: its name was never created
        }
        if ('settled' in parsed) settled.set(parsed.settled, parsed);
        else entries.push(parsed);
      }
      for (const entry of entries) {
        try {
          recoverEntry(entry, settled.get(entry.tmp));
        } catch (er) {
          if (errorCode(er) !== 'ENOENT') onError({ path: shown(entry, entry.tmp), code: errorCode(er) ?? 'EUNKNOWN', message: `leftover temporary name not removed: ${(er as Error).message}` });
        }
      }
      fs.unlinkSync(file);
    } finally {
      sys.close(fd);
    }
  }
}

function shown(e: JournalEntry, name: string): string {
  const dir = Buffer.from(e.dir, 'hex');
  return e.root.replace(/\/$/, '') + '/' + printable(dir.length ? Buffer.concat([dir, Buffer.from('/'), Buffer.from(name, 'hex')]) : Buffer.from(name, 'hex'));
}

function recoverEntry(e: JournalEntry, mark: SettledMark | undefined): void {
  const rootFd = sys.open(e.root, O.RDONLY | O.DIRECTORY | O.NOFOLLOW | O.CLOEXEC);
  try {
    const rst = sys.fstat(rootFd);
    if (rst.dev !== e.rootDev || rst.ino !== e.rootIno) throw codedError('ECHANGED', 'root was replaced since the run that left it');
    const dirFd = sys.openBeneath(rootFd, Buffer.from(e.dir, 'hex'), O.PATH | O.DIRECTORY);
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
    sys.close(rootFd);
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
      return difference(canon, dup, true, buffers()) === undefined;
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

let recoveryBuffers: [Buffer, Buffer] | undefined;
const buffers = () => (recoveryBuffers ??= [Buffer.allocUnsafe(CHUNK), Buffer.allocUnsafe(CHUNK)]);
