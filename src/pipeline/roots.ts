/*
 * Roots: turn ROOT arguments into open, validated guest roots.
 *
 * A ROOT with glob characters is expanded here with fast-glob, because a
 * systemd unit passes `/vservers/*` unexpanded; matches are sorted so "the
 * first ROOT on the command line" means the same thing on every run. Each
 * root must exist, be a directory and not be a symlink (a symlinked root
 * could be repointed by whoever controls the link). The same directory
 * twice, or one root inside another, is refused: a file would otherwise be
 * seen twice or its guest would be unified with itself under two names.
 *
 * Roots are opened O_DIRECTORY|O_NOFOLLOW and every later lookup starts from
 * that descriptor, so the root path is resolved exactly once.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import type fgT from 'fast-glob';
import { UsageError, errorCode } from '../core/errors.js';
import { O, sys } from '../os/sys.js';
import type { Root } from '../core/types.js';

const MAYBE_PATTERN = /[*?[\]{}()!+@\\]/;
const loadGlob = () => createRequire(import.meta.url)('fast-glob') as typeof fgT;

/** Expand glob arguments (sorted per argument); plain arguments pass through. */
export function expandRoots(args: readonly string[]): string[] {
  const out: string[] = [];
  for (const arg of args) {
    if (arg.includes('\ufffd')) throw new UsageError(`${arg}: root path is not valid UTF-8`);
    // fast-glob is loaded only for an argument that may be a pattern (the
    // shell usually expands them): loading it slowed every start.
    const fg = MAYBE_PATTERN.test(arg) ? loadGlob() : undefined;
    if (!fg?.isDynamicPattern(arg)) {
      out.push(arg);
      continue;
    }
    const matches = fg.sync(arg, { onlyFiles: false, followSymbolicLinks: false, dot: true, unique: true });
    if (matches.length === 0) throw new UsageError(`${arg}: no root matches this pattern`);
    out.push(...matches.sort());
  }
  return out;
}

export function openRoots(paths: readonly string[]): Root[] {
  if (paths.length === 0) throw new UsageError('no ROOT given');
  const roots: Root[] = [];
  try {
    for (const [index, given] of paths.entries()) roots.push(openRoot(given, index));
    checkOverlap(roots);
  } catch (er) {
    closeRoots(roots);
    throw er;
  }
  return roots;
}

export function closeRoots(roots: readonly Root[]): void {
  for (const r of roots) sys.close(r.fd);
}

function openRoot(given: string, index: number): Root {
  let lst: fs.Stats;
  try {
    lst = fs.lstatSync(given);
  } catch (er) {
    throw new UsageError(`${given}: ${errorCode(er) === 'ENOENT' ? 'no such file or directory' : String(er)}`);
  }
  if (lst.isSymbolicLink()) throw new UsageError(`${given}: is a symlink; give the directory itself`);
  if (!lst.isDirectory()) throw new UsageError(`${given}: not a directory`);
  const resolved = fs.realpathSync(given);
  let fd: number;
  try {
    fd = sys.open(resolved, O.RDONLY | O.DIRECTORY | O.NOFOLLOW | O.CLOEXEC);
  } catch (er) {
    throw new UsageError(`${given}: cannot open: ${errorCode(er) ?? String(er)}`);
  }
  const st = sys.fstat(fd);
  if (st.dev !== lst.dev || st.ino !== lst.ino) {
    sys.close(fd);
    throw new UsageError(`${given}: changed while being opened`);
  }
  return { index, path: resolved, fd, dev: st.dev, ino: st.ino, mntId: st.mntId };
}

/** Refuse duplicates and nesting, by identity (dev, ino) of each root and its ancestors. */
function checkOverlap(roots: readonly Root[]): void {
  const byId = new Map<string, Root>();
  for (const r of roots) {
    const id = `${r.dev}:${r.ino}`;
    const other = byId.get(id);
    if (other) throw new UsageError(`${other.path} and ${r.path} are the same directory`);
    byId.set(id, r);
  }
  for (const r of roots) {
    for (let dir = path.dirname(r.path); ; dir = path.dirname(dir)) {
      const st = fs.statSync(dir);
      const outer = byId.get(`${st.dev}:${st.ino}`);
      if (outer) throw new UsageError(`${r.path} is inside ${outer.path}; give only one of them`);
      if (dir === '/') break;
    }
  }
}
