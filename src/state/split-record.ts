/*
 * What split has copied, so a killed split can be run again without
 * breaking the guest's own hardlinks.
 *
 * Split gives one guest's paths of a shared inode S one private copy C, path
 * by path. A run killed after the first path moved to C leaves the others
 * on S, and nothing in the tree says that C was S's copy: a rerun would make
 * a second copy for them, and two names that were one inode in the guest
 * would stay two. So before each path is moved onto a copy, one line goes to
 * `split.<rootDev>-<rootIno>` in the state directory: the shared inode, the
 * copy, and where the copy is being put. A rerun over that root reuses C for
 * S's remaining paths when the walk finds C at one of the places recorded
 * for it, private to the root (all its links found there). The swap onto it
 * still compares the two in full, so a copy the guest changed since is
 * refused, not joined.
 *
 * One line of JSON each (names in hex); a line cut short by a kill, or not
 * understood, is ignored (at worst a fresh copy is made, as before). The
 * file is rewritten at the end of a run to what is still pending (paths
 * that could not be moved), and removed when nothing is.
 */
import { dirRel } from '../core/paths.js';
import fs from 'node:fs';
import { errorCode } from '../core/errors.js';
import type { InodeId } from '../core/stat.js';
import type { FileRec, Inode, Root } from '../core/types.js';
import { O, sys } from '../os/sys.js';
import { openStateFile, type StateDir } from './state-dir.js';

export interface SplitLine {
  shared: InodeId;
  copy: InodeId;
  /** Directory (relative to the root) and name the copy is put at, hex. */
  dir: string;
  name: string;
}

const fileName = (root: Root) => `split.${root.dev}-${root.ino}`;
const key = (id: InodeId) => `${id.dev}:${id.ino}`;
const isId = (x: unknown): x is InodeId =>
  typeof x === 'object' && x !== null && Number.isSafeInteger((x as InodeId).dev) && Number.isSafeInteger((x as InodeId).ino);

/** The split record of one root: what earlier (killed) runs copied, and a writer for this run's lines. */
export class SplitRecord {
  private fd: number | undefined;
  private readonly lines: SplitLine[];

  constructor(private readonly sd: StateDir, private readonly root: Root, onWarning: (m: string) => void) {
    this.lines = read(sd, root, onWarning);
  }

  /**
   * The copy an earlier run made of `shared` for this root, if the walk
   * (`byId`: every inode it found) shows it still private to the root at a
   * place recorded for it.
   */
  earlierCopy(shared: InodeId, byId: ReadonlyMap<string, Inode>): Inode | undefined {
    for (const line of this.lines) {
      if (key(line.shared) !== key(shared)) continue;
      const c = byId.get(key(line.copy));
      if (!c || c.stat.nlink !== c.paths.length || !c.paths.every((p) => p.dir.root === this.root)) continue;
      const at = this.lines.filter((l) => key(l.copy) === key(line.copy));
      if (c.paths.some((p) => at.some((l) => l.dir === dirRel(p.dir).toString('hex') && l.name === p.name.toString('hex')))) return c;
    }
    return undefined;
  }

  /** Before `at` is moved onto `copy` (a copy of `shared`): kept on disk before the move can happen. */
  note(shared: InodeId, copy: InodeId, at: FileRec): void {
    const line: SplitLine = { shared: { dev: shared.dev, ino: shared.ino }, copy: { dev: copy.dev, ino: copy.ino }, dir: dirRel(at.dir).toString('hex'), name: at.name.toString('hex') };
    this.fd ??= openStateFile(this.sd.fd, fileName(this.root), O.WRONLY | O.CREAT | fs.constants.O_APPEND);
    fs.writeSync(this.fd, JSON.stringify(line) + '\n');
    this.lines.push(line);
  }

  /**
   * The run is over: keep only the lines of shared inodes that still have
   * paths waiting (`pending`), or remove the file when none has.
   */
  finish(pending: readonly InodeId[]): void {
    if (this.fd !== undefined) sys.close(this.fd);
    this.fd = undefined;
    const wait = new Set(pending.map(key));
    const keep = this.lines.filter((l) => wait.has(key(l.shared)));
    const name = Buffer.from(fileName(this.root));
    if (!keep.length) {
      try {
        sys.unlinkAt(this.sd.fd, name);
      } catch (er) {
        if (errorCode(er) !== 'ENOENT') throw er;
      }
      return;
    }
    const tmp = Buffer.from(`${fileName(this.root)}.tmp`);
    try {
      sys.unlinkAt(this.sd.fd, tmp);
    } catch {
      // none left by a killed run
    }
    const fd = openStateFile(this.sd.fd, tmp.toString(), O.WRONLY | O.CREAT | O.EXCL);
    try {
      fs.writeSync(fd, keep.map((l) => JSON.stringify(l) + '\n').join(''));
      sys.fsync(fd);
    } finally {
      sys.close(fd);
    }
    sys.renameAt(this.sd.fd, tmp, this.sd.fd, name);
  }
}

function read(sd: StateDir, root: Root, onWarning: (m: string) => void): SplitLine[] {
  let fd: number;
  try {
    fd = openStateFile(sd.fd, fileName(root), O.RDONLY);
  } catch (er) {
    if (errorCode(er) !== 'ENOENT') onWarning(`${sd.path}/${fileName(root)}: split record not read: ${(er as Error).message}; copies made by a killed run are not reused`);
    return [];
  }
  try {
    const out: SplitLine[] = [];
    for (const text of fs.readFileSync(fd, 'utf8').split('\n')) {
      try {
        const l = JSON.parse(text) as SplitLine;
        if (isId(l.shared) && isId(l.copy) && typeof l.dir === 'string' && typeof l.name === 'string') out.push(l);
      } catch {
        // cut short by a kill: its move never started
      }
    }
    return out;
  } finally {
    sys.close(fd);
  }
}
