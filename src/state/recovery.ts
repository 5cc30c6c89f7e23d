/*
 * Recovery: find the journals that killed runs left in the state directory
 * and put right each temporary name they record (change/recover.ts), for the
 * roots given to this run only: an entry is matched to an open root by the
 * root's (dev, ino), never by the path it names, and acted on through that
 * root's descriptor. Journals (or entries) for other roots are left for a
 * run that has them. A journal whose run is alive is locked by it and
 * skipped; one fully recovered is deleted.
 *
 * The state directory is checked (state-dir.ts), but root can still leave
 * anything under a journal's name: a FIFO, a directory or a symlink is not
 * opened as a journal, and a journal with malformed lines is acted on only
 * for its well-formed entries and kept; each is a warning, never a hang or
 * a crash.
 */
import fs from 'node:fs';
import path from 'node:path';
import { errorCode, type FileError } from '../core/errors.js';
import type { Root } from '../core/types.js';
import { parseJournal } from '../change/journal.js';
import { recoverEntry, shownPath } from '../change/recover.js';
import { LOCK_EX, LOCK_NB, O, sys } from '../os/sys.js';
import { closeStateDir, openStateDir, openStateFile, type StateDir } from './state-dir.js';

/** Put right what killed runs left behind under `roots`. */
export function recover(
  dir: string | StateDir,
  roots: readonly Root[],
  onError: (e: FileError) => void,
  onWarning: (message: string) => void = () => {},
): void {
  const sd = typeof dir === 'string' ? openStateDir(dir, roots) : dir;
  try {
    for (const name of fs.readdirSync(sd.path)) {
      if (name.startsWith('tmp-journal.')) removeUnborn(sd, name);
      else if (name.startsWith('journal.')) recoverJournal(sd, name, roots, onError, onWarning);
    }
  } finally {
    if (typeof dir === 'string') closeStateDir(sd);
  }
}

function recoverJournal(sd: StateDir, name: string, roots: readonly Root[], onError: (e: FileError) => void, warn: (m: string) => void): void {
  const file = path.join(sd.path, name);
  let fd: number;
  try {
    fd = openStateFile(sd.fd, name, O.RDONLY);
  } catch (er) {
    warn(`${file}: not read as a journal: ${errorCode(er) === 'ELOOP' ? 'a symlink' : (er as Error).message}; left alone`);
    return;
  }
  try {
    if (!sys.flock(fd, LOCK_EX | LOCK_NB)) return; // its run is alive
    // Unlinked after we opened it: a run that ended normally just now.
    if (sys.fstat(fd).nlink === 0) return;
    const { entries, settled, malformed } = parseJournal(fs.readFileSync(fd, 'utf8'));
    if (malformed.length) {
      warn(`${file}: malformed journal (line${malformed.length > 1 ? 's' : ''} ${malformed.slice(0, 5).join(', ')}${malformed.length > 5 ? ', ...' : ''}); only its well-formed entries were acted on, and it is kept`);
    }
    let foreign = false;
    for (const entry of entries) {
      const root = roots.find((r) => r.dev === entry.rootDev && r.ino === entry.rootIno);
      if (!root) {
        foreign = true; // another run's roots: that run recovers it
        continue;
      }
      const e = { ...entry, root: root.path };
      try {
        recoverEntry(e, settled.get(e.tmp), root.fd);
      } catch (er) {
        if (errorCode(er) !== 'ENOENT') onError({ path: shownPath(e, e.tmp), code: errorCode(er) ?? 'EUNKNOWN', message: `leftover temporary name not removed: ${(er as Error).message}` });
      }
    }
    if (!foreign && !malformed.length) unlinkQuiet(sd, name);
  } finally {
    sys.close(fd);
  }
}

/**
 * A journal a killed run made but never named as one (no O_TMPFILE here):
 * empty. Its maker may be alive and between creating and locking it, so it
 * goes only once the pid in its name is gone (a reused pid merely keeps an
 * empty file a while longer).
 */
function removeUnborn(sd: StateDir, name: string): void {
  const pid = Number(/^tmp-journal\.journal\.(\d+)\./.exec(name)?.[1]);
  if (!pid || alive(pid)) return;
  let fd: number;
  try {
    fd = openStateFile(sd.fd, name, O.RDONLY);
  } catch {
    return;
  }
  try {
    if (sys.flock(fd, LOCK_EX | LOCK_NB) && sys.fstat(fd).nlink > 0) unlinkQuiet(sd, name);
  } finally {
    sys.close(fd);
  }
}

function unlinkQuiet(sd: StateDir, name: string): void {
  try {
    sys.unlinkAt(sd.fd, Buffer.from(name));
  } catch (er) {
    if (errorCode(er) !== 'ENOENT') throw er;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (er) {
    return errorCode(er) !== 'ESRCH';
  }
}
