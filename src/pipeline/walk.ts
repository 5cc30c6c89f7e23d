/*
 * Walk: list every regular file under each guest root, into the record
 * tables of table.ts.
 *
 * The walk itself is native (native/walk.c): several threads list
 * directories and fill the tables' columns in memory the addon reserves,
 * while this thread stays free (the call is a promise; progress is a
 * counter polled from here). This module passes it the roots, the mount
 * points below them (mounts.ts), the exclude rules (matched in C, same
 * semantics as excludes.ts) and the budget, and turns what comes back into
 * tables, counts and error messages.
 *
 * The rules the native walk keeps are today's: each directory opened
 * confined beneath its root (openat2, no symlinks, no mount crossing) and
 * checked against what its parent's listing said; mount points and excluded
 * names decided on names, before any statx, and never stat'ed (a statx on a
 * mount point asks its filesystem, which may never answer); never followed
 * or crossed: symlinks, mount points (another st_dev or mount id than the
 * root's), excluded directories (pruned, never listed). Only regular files
 * within the size bounds are kept; the rest is counted.
 */
import os from 'node:os';
import { fileError, type FileError } from '../core/errors.js';
import type { Rule } from './excludes.js';
import type { FileRec, Root } from '../core/types.js';
import { compareRelPaths, printable } from '../core/paths.js';
import type { Progress } from '../core/progress.js';
import type { MemoryBudget } from '../os/memory-limit.js';
import { native } from '../os/native.js';
import { mountPointsUnder } from './mounts.js';
import { Materializer } from './rows.js';
import { dirName, type Tables } from './table.js';

/**
 * Deepest level listed: directories below it are not read, with one message
 * per directory at this level that has subdirectories. A path this deep is
 * already up to ~1 MiB (255-byte names); every message, exclude match and
 * open of a file costs time linear in its path, and a path near V8's string
 * limit (~512 MiB) would end the run for every guest. (MAX_DEPTH in walk.c.)
 */
export const MAX_DEPTH = 4096;

/**
 * Every this many levels, the native walk keeps a directory's descriptor
 * open while its subtree is listed, and opens directories below it relative
 * to the nearest such descriptor: at most STRIDE names per lookup whatever
 * the depth (a lookup from the root is quadratic in a deep chain). Below
 * the root it also keeps every other directory's descriptor for its
 * subdirectories while fewer than 256 are kept (HOLD_CAP), so most open by
 * one name. (STRIDE in walk.c.)
 */
export const STRIDE = 16;

export interface WalkOptions {
  /** Exclude rules, first match wins (parsed and validated by excludes.ts). */
  rules: readonly Rule[];
  minSize: number;
  maxSize: number;
  onError(e: FileError): void;
  /** Called now and then with the number of entries listed since the last call. */
  onProgress?(entries: number): void;
  /** Threads listing directories; default min(available CPUs, 8). */
  threads?: number;
  /**
   * The tables' budget in bytes: past it the walk stops and rejects with an
   * Error whose code is 'EBUDGET' (nothing has been changed yet). Default:
   * the machine's memory.
   */
  maxBytes?: number;
  /**
   * Bytes charged against maxBytes for each file kept, on top of its rows:
   * what the stages after the walk hold per file (the budget's FILE_BYTES).
   * Default 0: the tables alone.
   */
  fileBytes?: number;
  /** Tests: called (on this thread, the walk waiting) before each directory is opened, with its path from the root. */
  hook?(root: Root, rel: Buffer): void;
}

export interface TablesWalk {
  tables: Tables;
  /** Entries that are not regular files or directories (symlinks, FIFOs, sockets, devices). */
  special: number;
  /** Regular files outside --min-size/--max-size. */
  outOfBounds: number;
  excluded: number;
  mountPoints: number;
  /** Entries listed (everything getdents returned but "." and ".."). */
  listed: number;
  /** What was reported through onError, in the same order: by root, then path. */
  errors: FileError[];
  /** Each directory's project and flags as the walk listed it (projects.ts reads them instead of opening it again). */
  dirAttrs: DirAttrs;
}

/**
 * FS_IOC_FSGETXATTR of each directory row, read by the native walk on the
 * descriptor it lists the directory through (opened confined and checked
 * against its parent's listing, so the same directory a later confined
 * open would check): `state` holds XS_* in its low two bits (XS_UNREAD for
 * a directory that was not listed), with XS_INHERIT and XS_LOCKED
 * (immutable or append-only) from its flags.
 */
export interface DirAttrs {
  state: Uint8Array;
  projid: Uint32Array;
}
/** XS_* in native/walk.c. */
export const XS = { unread: 0, ok: 1, unsupported: 2, failed: 3, mask: 3, inherit: 4, locked: 8 } as const;

/** The walk's result as records (one object per file), for the stages not yet on tables. */
export interface WalkResult extends Omit<TablesWalk, 'errors' | 'listed'> {
  files: FileRec[];
}

const ERRNO_NAMES = new Map(Object.entries(os.constants.errno).map(([k, v]) => [v, k]));

export function errnoName(n: number): string {
  return ERRNO_NAMES.get(n) ?? `E${n}`;
}

export const defaultThreads = (): number => Math.max(1, Math.min(os.availableParallelism(), 8));

interface NativeWalk {
  dirs: Tables['dirs'] & { xstate: Uint8Array; projid: Uint32Array };
  files: Tables['files'];
  metas: Tables['metas'];
  wide: Tables['wide'];
  names: Buffer;
  special: number;
  outOfBounds: number;
  excluded: number;
  mountPoints: number;
  listed: number;
  /** [dir row, entry name (statx failed) or null, the error (null: EDEEP), errno, subdirectories not listed] */
  errors: [number, Buffer | null, (Error & { code?: string; syscall?: string }) | null, number, number][];
}

const walkNative = (o: object) => native.walk(o) as Promise<NativeWalk>;

/** Walk `roots` into tables (see table.ts): dirs rows 0.. are the roots, in order. */
export async function walkTables(roots: readonly Root[], opts: WalkOptions): Promise<TablesWalk> {
  const mounts = mountPointsUnder(roots);
  const progress = new Float64Array(1);
  let reported = 0;
  const poll = () => {
    const n = progress[0]!;
    if (n > reported) opts.onProgress?.(n - reported);
    reported = n;
  };
  const timer = opts.onProgress ? setInterval(poll, 100) : undefined;
  let r: NativeWalk;
  try {
    r = await walkNative({
      roots: roots.map((root) => ({
        fd: root.fd,
        dev: root.dev,
        ino: root.ino,
        mntId: root.mntId,
        mounts: [...mounts.get(root)!].flatMap(([dir, names]) => [...names].map((n) => Buffer.from(dir ? `${dir}/${n}` : n, 'latin1'))),
      })),
      patterns: opts.rules.map((rule) => Buffer.from(rule.pattern, 'utf8')),
      include: Uint8Array.from(opts.rules, (rule) => (rule.kind === 'include' ? 1 : 0)),
      minSize: opts.minSize,
      maxSize: opts.maxSize,
      threads: opts.threads ?? defaultThreads(),
      maxBytes: opts.maxBytes ?? os.totalmem(),
      fileBytes: opts.fileBytes ?? 0,
      progress,
      hook: opts.hook ? (root: number, rel: Buffer) => opts.hook!(roots[root]!, rel) : undefined,
    });
  } finally {
    if (timer) clearInterval(timer);
  }
  poll();
  const { xstate, projid, ...dirs } = r.dirs;
  const tables: Tables = { dirs, files: r.files, metas: r.metas, wide: r.wide, names: r.names };
  const errors = walkErrors(roots, tables, r.errors);
  for (const e of errors) opts.onError(e);
  const dirAttrs = { state: xstate, projid };
  return { tables, special: r.special, outOfBounds: r.outOfBounds, excluded: r.excluded, mountPoints: r.mountPoints, listed: r.listed, errors, dirAttrs };
}

/** A directory row's path below its root, as bytes. */
export function dirPath(t: Tables, dir: number): Buffer {
  const parts: Buffer[] = [];
  for (let d = dir; t.dirs.parent[d]! >= 0; d = t.dirs.parent[d]!) parts.push(dirName(t, d));
  const out: Buffer[] = [];
  for (let i = parts.length - 1; i >= 0; i--) out.push(parts[i]!, SLASH);
  out.pop();
  return Buffer.concat(out);
}

const SLASH = Buffer.from('/');

/** The native errors as today's messages, sorted by root and then path (thread timing must not show). */
function walkErrors(roots: readonly Root[], t: Tables, raw: NativeWalk['errors']): FileError[] {
  const keyed = raw.map(([dir, name, er, errno, count]) => {
    const root = roots[t.dirs.root[dir]!]!;
    const rel = dirPath(t, dir);
    const shown = root.path.replace(/\/$/, '') + '/' + printable(rel);
    const key = name ? Buffer.concat([rel, SLASH, name]) : rel;
    let e: FileError;
    if (name) {
      const code = errnoName(errno);
      e = fileError(shown + '/' + printable(name), { code, syscall: 'statx', message: code });
    } else if (er) {
      e = fileError(shown, er);
    } else {
      e = fileError(shown, { code: 'EDEEP', message: `${count} subdirectories not listed: vunify lists ${MAX_DEPTH} levels below a root` });
    }
    return { root: root.index, key, e };
  });
  keyed.sort((a, b) => a.root - b.root || Buffer.compare(a.key, b.key));
  return keyed.map((k) => k.e);
}

/**
 * The tables as records (FileRec, DirNode): one object per file, for the
 * stages that still take records until they work on rows. Sorted by root,
 * then path, so the order does not depend on the walk's threads.
 */
export function fileRecs(roots: readonly Root[], t: Tables): FileRec[] {
  const mat = new Materializer({ tables: t, roots });
  const files: FileRec[] = Array.from({ length: t.files.count }, (_, row) => mat.file(row));
  files.sort((a, b) => a.dir.root.index - b.dir.root.index || compareRelPaths(a, b));
  return files;
}

/** The walk, as records (see fileRecs); the tables come along for the stages that take them. */
export async function walk(roots: readonly Root[], opts: WalkOptions): Promise<WalkResult & { errors: FileError[] }> {
  const r = await walkTables(roots, opts);
  return { ...r, files: fileRecs(roots, r.tables) };
}

/** The walk as the commands run it, shown as the "scanning" stage. */
export function scanRoots(
  roots: readonly Root[],
  rules: readonly Rule[],
  bounds: { minSize: number; maxSize: number },
  onError: (e: FileError) => void,
  progress: Progress,
  budget?: MemoryBudget,
): Promise<TablesWalk> {
  progress.stage('scanning', 0);
  // The budget's share for the walk is the native walk's maxBytes, each file kept charged at what the whole run
  // holds per file (not only its rows: those are a twentieth of it); its EBUDGET becomes the exit-2 MemoryLimitError.
  const limits = { maxBytes: budget?.tableBytes(), fileBytes: budget?.fileBytes() };
  return walkTables(roots, { rules, minSize: bounds.minSize, maxSize: bounds.maxSize, onError, onProgress: (n) => progress.tick(n), ...limits }).catch(
    (er: unknown) => Promise.reject(budget ? budget.fromWalk(er) : er),
  );
}
