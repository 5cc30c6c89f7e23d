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
 * Mount points (from the mount table, mounts.ts) and excluded names are
 * decided on names, before any statx, and never stat'ed: a statx on a mount
 * point asks its filesystem, which may never answer.
 *
 * Never followed or crossed: symlinks, mount points (another st_dev or mount
 * id than the root's), and excluded directories (pruned, never listed).
 * Only regular files within the size bounds are kept; the rest is counted.
 */
import os from 'node:os';
import { fileError, type FileError } from '../core/errors.js';
import { compileRules, type Matcher, type Rule } from './excludes.js';
import { sys, type KeepEntry } from '../os/sys.js';
import type { DirNode, FileRec, Root } from '../core/types.js';
import { childNode, dirRel, dirRelFrom, displayDir, printable, rootNode } from '../core/paths.js';
import { openDirAt } from '../os/confine.js';
import { FileType } from '../core/stat.js';
import type { Progress } from '../core/progress.js';
import type { MemoryBudget } from '../os/memory-limit.js';
import { mountPointsUnder, type MountPoints } from './mounts.js';

export interface WalkOptions {
  matcher: Matcher;
  minSize: number;
  maxSize: number;
  onError(e: FileError): void;
  /** Called after each directory with the number of entries it held. */
  onProgress?(entries: number): void;
  /** The memory budget (os/memory-limit.ts), after each directory: files kept so far, entries it held; throws to stop. */
  budget?: { walked(files: number, listed: number): void };
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
  budget?: MemoryBudget,
): Promise<WalkResult> {
  progress.stage('scanning', 0);
  // budget.tableBytes() is the native walk's maxBytes; its EBUDGET becomes the exit-2 MemoryLimitError.
  return walk(roots, { matcher: compileRules(rules), minSize: bounds.minSize, maxSize: bounds.maxSize, onError, onProgress: (n) => progress.tick(n), budget }).catch(
    (er: unknown) => Promise.reject(budget ? budget.fromWalk(er) : er),
  );
}

/**
 * Deepest level listed: directories below it are not read, with one message
 * per directory at this level that has subdirectories. A path this deep is
 * already up to ~1 MiB (255-byte names); every message, exclude match and
 * open of a file costs time linear in its path, and a path near V8's string
 * limit (~512 MiB) would end the run for every guest.
 */
export const MAX_DEPTH = 4096;

/**
 * Every this many levels, a directory being walked keeps an O_PATH
 * descriptor open while its subtree is listed, and directories below it are
 * opened relative to the nearest such descriptor: at most STRIDE names per
 * lookup whatever the depth (a lookup from the root is quadratic in a deep
 * chain), and at most MAX_DEPTH / STRIDE descriptors held.
 */
export const STRIDE = 16;

interface Held {
  dir: DirNode;
  fd: number;
}

async function walkRoot(root: Root, opts: WalkOptions, counts: WalkResult, mounts: MountPoints): Promise<FileRec[]> {
  const files: FileRec[] = [];
  const stack: DirNode[] = [rootNode(root)];
  // Descriptors of ancestors of the directory being listed (every STRIDE levels), shallowest first.
  const held: Held[] = [];
  try {
    while (stack.length) {
      const dir = stack.pop()!;
      while (held.length && !isAncestor(held[held.length - 1]!.dir, dir)) sys.close(held.pop()!.fd);
      // The matcher's path, built from one prefix per directory: a Buffer
      // (and a string) per entry was a large part of the walk's cost.
      const rel = dir.relLength ? dirRel(dir).toString('latin1') : '';
      const prefix = rel ? '/' + rel + '/' : '/';
      const here = mounts.size ? mounts.get(rel) : undefined;
      // Decided on the name, before any statx: mount points and excluded names are never stat'ed.
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
        listing = await list(root, dir, held, keep);
      } catch (er) {
        opts.onError(fileError(displayDir(dir), er));
        continue;
      }
      const subdirs: DirNode[] = [];
      for (const e of listing.entries) {
        switch (e.type) {
          case FileType.Error:
            opts.onError(fileError(displayDir(dir) + '/' + printable(e.name), { code: errnoName(e.errno), syscall: 'statx', message: errnoName(e.errno) }));
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
          subdirs.push(childNode(dir, e.name, e.dev, e.ino));
        } else if (e.size < opts.minSize || e.size > opts.maxSize) {
          counts.outOfBounds++;
        } else {
          files.push({ dir, name: e.name, stat: e });
        }
      }
      if (subdirs.length && dir.depth >= MAX_DEPTH) {
        opts.onError(fileError(displayDir(dir), { code: 'EDEEP', message: `${subdirs.length} subdirectories not listed: vunify lists ${MAX_DEPTH} levels below a root` }));
        subdirs.length = 0;
      }
      // Reverse so the stack pops subdirectories in listing order.
      for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]!);
      opts.onProgress?.(listing.entries.length);
      opts.budget?.walked(counts.files.length + files.length, listing.entries.length);
    }
  } finally {
    for (const h of held) sys.close(h.fd);
  }
  return files;
}

/**
 * List `dir`, looked up (confined, and checked against its scan) from the
 * nearest held ancestor, or from the root. Every STRIDE levels the
 * directory's own descriptor is kept in `held` for its subtree.
 */
async function list(root: Root, dir: DirNode, held: Held[], keep: KeepEntry) {
  const expect = { dev: dir.dev, ino: dir.ino };
  if (!dir.parent) return sys.scanDir(root.fd, Buffer.alloc(0), expect, keep);
  const base = held.length ? held[held.length - 1]! : undefined;
  const path = base ? dirRelFrom(dir, base.dir) : dirRel(dir);
  const baseFd = base ? base.fd : root.fd;
  if (dir.depth % STRIDE) return sys.scanDir(baseFd, path, expect, keep);
  const fd = openDirAt(baseFd, path, dir);
  held.push({ dir, fd });
  return sys.scanDir(fd, DOT, expect, keep);
}

const DOT = Buffer.from('.');

function isAncestor(a: DirNode, d: DirNode): boolean {
  if (a.depth >= d.depth) return false;
  while (d.depth > a.depth) d = d.parent!;
  return d === a;
}
