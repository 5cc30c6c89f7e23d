/*
 * The state directory, checked before anything in it is trusted.
 *
 * Recovery deletes and renames guest files on the word of the journals kept
 * here, and the hash cache decides what the dry run promises, so whoever can
 * write here steers a root-run tool. A directory is accepted only if no one
 * but root can have put anything in it: it is not a symlink, is owned by
 * root and not writable by group or others, every directory above it is
 * root's and not writable by others (unless sticky, like /tmp: then no one
 * else can rename our entry away), and it is neither inside a guest root
 * (where the guest writes) nor above one (where the walk would meet it, and
 * a guest's files would sit beside our journals). Anything else is refused
 * with exit 2 before a lock is taken or a file changed.
 *
 * Even so, root itself (a careless operator, another tool) can leave a FIFO,
 * a directory or a symlink under a name we use: every file in here is
 * opened beneath the directory's descriptor without following symlinks,
 * non-blocking, and used only once fstat says it is a regular file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { codedError, UsageError } from '../core/errors.js';
import { FileType } from '../core/stat.js';
import type { Root } from '../core/types.js';
import { O, sys } from '../os/sys.js';

export interface StateDir {
  /** The resolved path, for messages and for the few calls Node makes by path. */
  path: string;
  /** O_RDONLY | O_DIRECTORY, opened without following a symlink and checked. */
  fd: number;
  dev: number;
  ino: number;
}

const weak = (mode: number, sticky: boolean) => (mode & 0o022) !== 0 && !(sticky && (mode & 0o1000) !== 0);
const stateRefused = (dir: string, why: string) => new UsageError(`${dir}: state directory refused: ${why}`);

/**
 * Open (creating it 0700 if missing) and check the state directory `dir`
 * for a run over `roots`. Throws UsageError naming the path and the reason;
 * `cache`: a --cache directory (or a --hash-key file's), held to the same
 * rules except that it may contain a guest root (only cache shards or the
 * key are kept there, and the walk never climbs above a root to meet them).
 */
export function openStateDir(dir: string, roots: readonly Root[], cache = false): StateDir {
  const refused = (where: string, why: string) => new UsageError(`${where}: ${cache ? 'hash cache directory' : 'state directory'} refused: ${why}`);
  const given = path.resolve(dir);
  const lst = lstatOrNull(given, refused);
  if (lst?.isSymbolicLink()) throw refused(dir, 'it is a symlink; give the directory itself');
  if (lst && !lst.isDirectory()) throw refused(dir, 'not a directory');
  // The nearest existing directory above it, resolved: from there up to /,
  // only root may be able to rename anything (checked before anything is
  // created, as is that it is not in a guest root).
  let missing: string[] = [];
  let above = path.dirname(given);
  while (!lstatOrNull(above, refused)) {
    missing = [path.basename(above), ...missing];
    above = path.dirname(above);
  }
  let parent: string;
  try {
    parent = fs.realpathSync(above);
  } catch (er) {
    throw refused(dir, `${above} cannot be resolved: ${(er as Error).message}`);
  }
  const chain: { dev: number; ino: number }[] = [];
  for (let d = parent; ; d = path.dirname(d)) {
    const st = fs.lstatSync(d);
    if (st.uid !== 0) throw refused(dir, `${d} is owned by uid ${st.uid}, not root`);
    if (weak(st.mode, true)) throw refused(dir, `${d} is writable by group or others`);
    chain.push({ dev: st.dev, ino: st.ino });
    if (d === '/') break;
  }
  const inside = (id: { dev: number; ino: number }[]) => roots.find((r) => id.some((c) => c.dev === r.dev && c.ino === r.ino));
  const guest = inside(chain);
  if (guest) throw refused(dir, `it is inside the guest root ${guest.path}, where the guest could write journals for vunify to act on`);
  const real = path.join(parent, ...missing, path.basename(given));
  if (!lst) {
    try {
      fs.mkdirSync(real, { recursive: true, mode: 0o700 });
    } catch (er) {
      throw refused(dir, `cannot create it: ${(er as Error).message}`);
    }
  }
  let fd: number;
  try {
    fd = sys.open(real, O.RDONLY | O.DIRECTORY | O.NOFOLLOW | O.CLOEXEC);
  } catch (er) {
    const code = (er as NodeJS.ErrnoException).code;
    throw refused(dir, code === 'ELOOP' || code === 'ENOTDIR' ? 'it is a symlink or not a directory' : `cannot open it: ${(er as Error).message}`);
  }
  try {
    const st = sys.fstat(fd);
    if (st.type !== FileType.Directory) throw refused(dir, 'not a directory');
    if (st.uid !== 0) throw refused(dir, `it is owned by uid ${st.uid}, not root`);
    if (weak(st.mode, false)) throw refused(dir, `it is writable by group or others (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')})`);
    chain.push({ dev: st.dev, ino: st.ino });
    for (const root of roots) {
      if (chain.some((c) => c.dev === root.dev && c.ino === root.ino)) {
        throw refused(dir, `it is inside the guest root ${root.path}, where the guest could write journals for vunify to act on`);
      }
      for (let d = root.path; !cache; d = path.dirname(d)) {
        const a = fs.statSync(d);
        if (a.dev === st.dev && a.ino === st.ino) throw refused(dir, `it contains the guest root ${root.path}`);
        if (d === '/') break;
      }
    }
    return { path: real, fd, dev: st.dev, ino: st.ino };
  } catch (er) {
    sys.close(fd);
    throw er;
  }
}

export function closeStateDir(sd: StateDir): void {
  sys.close(sd.fd);
}

/**
 * Open `name` beneath the directory `dirFd` (no symlink followed anywhere,
 * never blocking on a FIFO) and check it is a regular file; ENOTREG (with
 * what it is) otherwise. `flags` are O_RDONLY / O_RDWR / O_CREAT ...
 */
export function openStateFile(dirFd: number, name: string, flags: number, mode = 0o600): number {
  const fd = sys.openBeneath(dirFd, Buffer.from(name), flags | O.NOFOLLOW | O.NONBLOCK | O.CLOEXEC, mode);
  const st = sys.fstat(fd);
  if (st.type !== FileType.Regular) {
    sys.close(fd);
    throw codedError('ENOTREG', `not a regular file (${FileType[st.type]?.toLowerCase() ?? 'unknown type'})`);
  }
  return fd;
}

/**
 * A subdirectory of the state directory (`locks`), created 0700 if missing
 * and held to the same rules as the directory itself.
 */
export function openStateSubdir(sd: StateDir, name: string): number {
  try {
    fs.mkdirSync(path.join(sd.path, name), { mode: 0o700 });
  } catch (er) {
    if ((er as NodeJS.ErrnoException).code !== 'EEXIST') throw stateRefused(path.join(sd.path, name), `cannot create it: ${(er as Error).message}`);
  }
  let fd: number;
  try {
    fd = sys.openBeneath(sd.fd, Buffer.from(name), O.RDONLY | O.DIRECTORY | O.NOFOLLOW | O.CLOEXEC);
  } catch (er) {
    throw stateRefused(path.join(sd.path, name), `cannot open it as a directory: ${(er as Error).message}`);
  }
  const st = sys.fstat(fd);
  if (st.type !== FileType.Directory || st.uid !== 0 || weak(st.mode, false)) {
    sys.close(fd);
    throw stateRefused(path.join(sd.path, name), 'not a directory owned by root and writable by root alone');
  }
  return fd;
}

function lstatOrNull(p: string, refused: (where: string, why: string) => Error): fs.Stats | undefined {
  try {
    return fs.lstatSync(p);
  } catch (er) {
    if ((er as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw stateRefused(p, (er as Error).message);
  }
}
