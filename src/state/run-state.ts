/*
 * Host-side state of linking runs, in a directory guests cannot see
 * (default /var/lib/vunify, checked by state-dir.ts): locks, so two runs
 * never work on overlapping roots, and a journal of temporary names, so a
 * run killed at any moment leaves nothing the next run cannot put right.
 *
 * Locks are flock(2)s, which the kernel drops when their holder dies, so a
 * killed run never blocks the next one. Each run takes an exclusive lock on
 * a file named after each root's (dev, ino) and a shared lock on each of the
 * root's ancestors: two runs with the same root, or one root inside
 * another's, then always collide on one file, while siblings do not.
 *
 * Each linking run writes a journal here (format: change/journal.ts), locked
 * while the run lives, deleted when it ends normally. The journal is locked
 * before it has a name: it is made unnamed (O_TMPFILE), locked, then linked
 * in, so another run's recovery can never find it unlocked and take it for a
 * dead run's. Before a run starts, recovery.ts puts right what the journals
 * of dead runs recorded for this run's roots.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { errorCode, UsageError, type FileError } from '../core/errors.js';
import type { Root } from '../core/types.js';
import { journalWriter, type Journal } from '../change/journal.js';
import { LOCK_EX, LOCK_NB, LOCK_SH, O, RENAME_NOREPLACE, sys } from '../os/sys.js';
import { recover } from './recovery.js';
import { closeStateDir, openStateDir, openStateFile, openStateSubdir, type StateDir } from './state-dir.js';

export const DEFAULT_STATE_DIR = '/var/lib/vunify';
/** A journal being made where O_TMPFILE is not supported: not yet a journal to recovery. */
export const JOURNAL_TEMP_PREFIX = 'tmp-journal.';

export interface RunState {
  /** This run's journal (see change/journal.ts). */
  journal: Journal;
  /** Release locks and delete the journal (the run is over), unless a write to it failed. */
  close(): void;
}

/**
 * Lock `roots`, recover what dead runs left for them, and start this run's
 * journal, in `dir`: a checked state directory, or a path to check and open.
 */
export function openState(
  dir: string | StateDir,
  roots: readonly Root[],
  onError: (e: FileError) => void,
  onWarning: (message: string) => void = () => {},
): RunState {
  const sd = typeof dir === 'string' ? openStateDir(dir, roots) : dir;
  const ownDir = typeof dir === 'string';
  const held: number[] = [];
  let locks: number | undefined;
  try {
    locks = openStateSubdir(sd, 'locks');
    for (const root of roots) lockRoot(sd, locks, root, held);
    recover(sd, roots, onError, onWarning);
    const name = `journal.${process.pid}.${randomBytes(6).toString('hex')}`;
    const journal = createLocked(sd, name);
    const writer = journalWriter(journal);
    return {
      journal: writer,
      close() {
        // A journal a write failed on is left for the next run's recovery.
        if (!writer.failed) sys.unlinkAt(sd.fd, Buffer.from(name));
        sys.close(journal);
        for (const fd of held) sys.close(fd);
        if (ownDir) closeStateDir(sd);
      },
    };
  } catch (er) {
    for (const fd of held) sys.close(fd);
    if (ownDir) closeStateDir(sd);
    throw er;
  } finally {
    if (locks !== undefined) sys.close(locks);
  }
}

/** The journal file, exclusively locked before it appears under `name`. */
function createLocked(sd: StateDir, name: string): number {
  const flags = O.RDWR | fs.constants.O_APPEND | O.CLOEXEC;
  let fd: number;
  try {
    fd = sys.openBeneath(sd.fd, Buffer.from('.'), flags | O.TMPFILE, 0o600);
  } catch (er) {
    if (!['EOPNOTSUPP', 'EISDIR', 'EINVAL'].includes(errorCode(er) ?? '')) throw er;
    // No O_TMPFILE here: a name recovery does not read as a journal, locked,
    // then renamed. A kill in between leaves an empty file recovery removes.
    const tmp = `${JOURNAL_TEMP_PREFIX}${name}`;
    fd = openStateFile(sd.fd, tmp, flags | O.CREAT | O.EXCL);
    try {
      sys.flock(fd, LOCK_EX);
      sys.renameAt(sd.fd, Buffer.from(tmp), sd.fd, Buffer.from(name), RENAME_NOREPLACE);
    } catch (er2) {
      sys.close(fd);
      throw er2;
    }
    return fd;
  }
  try {
    sys.flock(fd, LOCK_EX);
    sys.linkAt(fd, sd.fd, Buffer.from(name));
  } catch (er) {
    sys.close(fd);
    throw er;
  }
  return fd;
}

function lockFile(locks: number, dev: number, ino: number): number {
  return openStateFile(locks, `${dev}-${ino}`, O.RDWR | O.CREAT);
}

function lockRoot(sd: StateDir, locks: number, root: Root, held: number[]): void {
  const where = (name: string) => path.join(sd.path, 'locks', name);
  const open = (dev: number, ino: number) => {
    try {
      return lockFile(locks, dev, ino);
    } catch (er) {
      throw new UsageError(`${where(`${dev}-${ino}`)}: cannot use this lock file: ${(er as Error).message}`);
    }
  };
  const fd = open(root.dev, root.ino);
  held.push(fd);
  if (!sys.flock(fd, LOCK_EX | LOCK_NB)) throw busy(root.path, fd);
  // Written over the last run's pid, then cut to length: truncating to 0 first freed the file's block and
  // the write allocated a new one, per root and run (with -o discard, ~5 ms each: most of a rerun's locking).
  const pid = Buffer.from(`${process.pid}\n`);
  fs.writeSync(fd, pid, 0, pid.length, 0);
  fs.ftruncateSync(fd, pid.length);
  for (let d = path.dirname(root.path); ; d = path.dirname(d)) {
    const st = fs.statSync(d);
    const afd = open(st.dev, st.ino);
    held.push(afd);
    if (!sys.flock(afd, LOCK_SH | LOCK_NB)) throw busy(d, afd);
    if (d === '/') break;
  }
}

function busy(where: string, fd: number): UsageError {
  const pid = fs.readFileSync(fd, 'utf8').trim();
  return new UsageError(`${where}: another vunify run${pid ? ` (pid ${/^\d+$/.test(pid) ? pid : '?'})` : ''} is working on this tree or one that contains it; try again when it is done`);
}
