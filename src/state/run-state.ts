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
 * Each linking run writes a journal here (format: change/journal.ts), locked
 * while the run lives, deleted when it ends normally. Before a run starts,
 * recovery.ts puts right what the journals of dead runs recorded.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { UsageError, type FileError } from '../core/errors.js';
import type { Root } from '../core/types.js';
import { journalWriter, type Journal } from '../change/journal.js';
import { LOCK_EX, LOCK_NB, LOCK_SH, sys } from '../os/sys.js';
import { recover } from './recovery.js';

export const DEFAULT_STATE_DIR = '/var/lib/vunify';

export interface RunState {
  /** This run's journal (see change/journal.ts). */
  journal: Journal;
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
      journal: journalWriter(journal),
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
