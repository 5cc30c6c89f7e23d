/*
 * Walk: list every regular file under each guest root.
 *
 * Roots are walked one after another; within a root,
 * directories are listed one at a time by the addon's scanDirSync, which
 * opens the directory confined beneath the root descriptor, checks it is
 * the directory its parent listed, and returns names plus statx data for the
 * whole directory in one call on this thread (a trip through libuv's pool
 * per directory cost several times the scan; see sys.ts). So there is no
 * promise per file, and a guest that swaps a directory for a symlink
 * mid-walk gets an error for that directory instead of a walk of the host.
 *
 * Never followed or crossed: symlinks, mount points (another st_dev or mount
 * id than the root's), and excluded directories (pruned, never listed).
 * Mount points (from the mount table, mounts.ts) and excluded names are
 * decided on names, before any statx, and never stat'ed: a statx on a mount
 * point asks its filesystem, which may never answer.
 * Only regular files within the size bounds are kept; the rest is counted.
 */
import os from 'node:os';
import { fileError, type FileError } from '../core/errors.js';
import { compileRules, type Matcher, type Rule } from './excludes.js';
import { sys } from '../os/sys.js';
import type { DirNode, FileRec, Root } from '../core/types.js';
import { printable } from '../core/paths.js';
import { FileType } from '../core/stat.js';
import { mountPointsUnder, type MountPoints } from './mounts.js';
import type { Progress } from '../core/progress.js';

export interface WalkOptions {
  matcher: Matcher;
  minSize: number;
  maxSize: number;
  onError(e: FileError): void;
  /** Called after each directory with the number of entries it held. */
  onProgress?(entries: number): void;
}

export interface WalkResult {
  files: FileRec[];
  /** Entries that are not regular files or directories (symlinks, FIFOs, sockets, devices). */
  special: number;
  /** Regular files outside --min-size/--max-size. */
  outOfBounds: number;
  excluded: number;
  mountPoints: number;
}

const SLASH = Buffer.from('/');
const ERRNO_NAMES = new Map(Object.entries(os.constants.errno).map(([k, v]) => [v, k]));

export function errnoName(n: number): string {
  return ERRNO_NAMES.get(n) ?? `E${n}`;
}

export async function walk(roots: readonly Root[], opts: WalkOptions): Promise<WalkResult> {
  const result: WalkResult = { files: [], special: 0, outOfBounds: 0, excluded: 0, mountPoints: 0 };
  // One root at a time: the listing runs synchronously on this thread (see
  // sys.scanDir), so walking roots "concurrently" only interleaved them and
  // bounded nothing real; the result is in command-line order either way.
  const mounts = mountPointsUnder(roots);
  for (const root of roots) for (const f of await walkRoot(root, opts, result, mounts.get(root)!)) result.files.push(f);
  return result;
}

/** The walk as the commands run it: excludes compiled from `rules`, shown as the "scanning" stage. */
export function scanRoots(
  roots: readonly Root[],
  rules: readonly Rule[],
  bounds: { minSize: number; maxSize: number },
  onError: (e: FileError) => void,
  progress: Progress,
): Promise<WalkResult> {
  progress.stage('scanning', 0);
  return walk(roots, { matcher: compileRules(rules), minSize: bounds.minSize, maxSize: bounds.maxSize, onError, onProgress: (n) => progress.tick(n) });
}

async function walkRoot(root: Root, opts: WalkOptions, counts: WalkResult, mounts: MountPoints): Promise<FileRec[]> {
  const files: FileRec[] = [];
  const stack: DirNode[] = [{ root, rel: Buffer.alloc(0), dev: root.dev, ino: root.ino }];
  const rootPath = root.path.replace(/\/$/, '');
  const show = (rel: Buffer) => rootPath + '/' + printable(rel);
  while (stack.length) {
    const dir = stack.pop()!;
    // The matcher's path, built from one prefix per directory: a Buffer
    // (and a string) per entry was a large part of the walk's cost.
    const prefix = dir.rel.length ? '/' + dir.rel.toString('latin1') + '/' : '/';
    const here = mounts.size ? mounts.get(dir.rel.toString('latin1')) : undefined;
    const keep = (name: string): boolean => {
      if (here?.has(name)) {
        counts.mountPoints++;
        return false;
      }
      if (opts.matcher.match(prefix + name) === 'exclude') {
        counts.excluded++;
        return false;
      }
      return true;
    };
    let listing;
    try {
      listing = await sys.scanDir(root.fd, dir.rel, { dev: dir.dev, ino: dir.ino }, keep);
    } catch (er) {
      opts.onError(fileError(show(dir.rel), er));
      continue;
    }
    const subdirs: DirNode[] = [];
    for (const e of listing.entries) {
      switch (e.type) {
        case FileType.Error:
          opts.onError(fileError(show(childRel(dir, e.name)), { code: errnoName(e.errno), syscall: 'statx', message: errnoName(e.errno) }));
          continue;
        case FileType.Directory:
        case FileType.Regular:
          break;
        default:
          counts.special++;
          continue;
      }
      if (e.dev !== root.dev || e.mntId !== root.mntId) {
        counts.mountPoints++;
        continue;
      }
      if (e.type === FileType.Directory) {
        subdirs.push({ root, rel: childRel(dir, e.name), dev: e.dev, ino: e.ino });
      } else if (e.size < opts.minSize || e.size > opts.maxSize) {
        counts.outOfBounds++;
      } else {
        files.push({ dir, name: e.name, stat: e });
      }
    }
    // Reverse so the stack pops subdirectories in listing order.
    for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]!);
    opts.onProgress?.(listing.entries.length);
  }
  return files;
}

function childRel(dir: DirNode, name: Buffer): Buffer {
  return dir.rel.length ? Buffer.concat([dir.rel, SLASH, name]) : name;
}
