/*
 * Recovery: find the journals that killed runs left in the state directory
 * and put right each temporary name they record (change/recover.ts). A
 * journal whose run is alive is locked by it and skipped; one that was
 * recovered is deleted.
 */
import fs from 'node:fs';
import path from 'node:path';
import { errorCode, type FileError } from '../core/errors.js';
import { parseJournal } from '../change/journal.js';
import { recoverEntry, shownPath } from '../change/recover.js';
import { LOCK_EX, LOCK_NB, O, sys } from '../os/sys.js';

/** Put right what killed runs left behind. */
export function recover(dir: string, onError: (e: FileError) => void): void {
  for (const name of fs.readdirSync(dir)) {
    if (!name.startsWith('journal.')) continue;
    const file = path.join(dir, name);
    const fd = sys.open(file, O.RDONLY);
    try {
      if (!sys.flock(fd, LOCK_EX | LOCK_NB)) continue; // its run is alive
      const { entries, settled } = parseJournal(fs.readFileSync(fd, 'utf8'));
      for (const entry of entries) {
        try {
          recoverEntry(entry, settled.get(entry.tmp));
        } catch (er) {
          if (errorCode(er) !== 'ENOENT') onError({ path: shownPath(entry, entry.tmp), code: errorCode(er) ?? 'EUNKNOWN', message: `leftover temporary name not removed: ${(er as Error).message}` });
        }
      }
      fs.unlinkSync(file);
    } finally {
      sys.close(fd);
    }
  }
}
