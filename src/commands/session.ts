/*
 * What every command (unify, split, report) does around its own stages, in
 * one place so they do it alike: open the roots, compile the rules, keep the
 * run log (per-file errors, passed on as they come and collected for the
 * report, and how long each stage took), show progress, take the state
 * directory's locks and journal when the run changes guests (putting right
 * what killed runs left first), use the hash cache, and close all of it
 * whatever happens.
 */
import path from 'node:path';
import type { FileError } from '../core/errors.js';
import { noProgress, type Progress } from '../core/progress.js';
import type { Inode, Root } from '../core/types.js';
import { withDefaults, type Rule } from '../pipeline/excludes.js';
import { MemoryBudget, memoryLimit } from '../os/memory-limit.js';
import { hashRows, readColumns, splitByContent, type ReadColumns } from '../pipeline/hash.js';
import type { GroupRows, InodeRows } from '../pipeline/group.js';
import { ELF_BIT, flagsOf, HI, LO, projidOf, READ, rootIndexOf, setAttrs, sortKeys, type Scan } from '../pipeline/rows.js';
import { ctimeSecOf, inoOf, mtimeSecOf, sizeOf } from '../pipeline/table.js';
import { closeRoots, openRoots } from '../pipeline/roots.js';
import type { Hashed } from '../report/report.js';
import { fileFlags, isLocked, type PolicyOptions } from '../pipeline/policy.js';
import { CACHE_DIR, ELF_NO, ELF_UNKNOWN, ELF_YES, HashCache } from '../state/cache.js';
import { keyLocation, loadHashKey, type HashKey } from '../state/hash-key.js';
import { DEFAULT_STATE_DIR, openState, type RunState } from '../state/run-state.js';
import { closeStateDir, openStateDir, openStateSubdir, type StateDir } from '../state/state-dir.js';

/** What every command (unify, split, report) is given. */
export interface CommandOptions {
  /** ROOT arguments as given (globs are expanded by the command). */
  roots: readonly string[];
  /** User rules, in order; the default list is appended unless noDefaultExcludes. */
  rules: readonly Rule[];
  noDefaultExcludes: boolean;
  /** Locks, journal, hash key and hash cache (default /var/lib/vunify). */
  stateDir?: string;
  /** --max-memory as given ("512M"); else the cgroup's limit applies (os/memory-limit.ts). */
  maxMemory?: string;
  progress?: Progress;
  onError?(e: FileError): void;
  /** Problems that skip no file (an unusable cache): one line each. */
  onWarning?(message: string): void;
  /** Things worth a line with -v only (no cache yet). */
  onNote?(message: string): void;
}

/** What the commands that read content (unify, report) are given besides: the files taken, the cache and the key. */
export interface HashingOptions extends CommandOptions {
  ignoreMtime: boolean;
  minSize: number;
  maxSize: number;
  /** Hash cache directory, one shard per root (default STATE_DIR/cache); false: none. */
  cache?: string | false;
  /** Hash key file (default STATE_DIR/hash.key, created on first use); a fleet's shared key makes manifests comparable across hosts. */
  hashKey?: string;
}

export interface SessionOptions {
  /** Root directories, already expanded (pipeline/roots.ts expandRoots), in command-line order. */
  paths: readonly string[];
  /** User rules, in order; the default list is appended unless noDefaultExcludes. */
  rules: readonly Rule[];
  noDefaultExcludes: boolean;
  /** Locks, journal and hash cache (default /var/lib/vunify). */
  stateDir?: string;
  /** --max-memory as given; else the cgroup's limit applies. */
  maxMemory?: string;
  /** Lock the roots and keep a journal: the run changes guests. */
  changes?: boolean;
  /** Hash cache directory, one shard per root (default STATE_DIR/cache); false: none. */
  cache?: string | false;
  /** The hash key file (default STATE_DIR/hash.key, created when missing). */
  hashKey?: string;
  /** The sharing policy's options, for the content split. */
  ignoreMtime?: boolean;
  iunlink?: boolean;
  progress?: Progress;
  onError?(e: FileError): void;
  /** Problems that skip no file (an unusable cache): one line each. */
  onWarning?(message: string): void;
  /** Things worth a line with -v only (no cache yet). */
  onNote?(message: string): void;
  /** Open (and check) the state directory even if neither changes nor the cache need it. */
  needStateDir?: boolean;
  /**
   * The run hashes content, so it needs the hash key: the state directory
   * holds it (checked as for the cache), or the directory of `hashKey` is
   * checked as a --cache file's is, so no guest can read or plant the key.
   */
  hashes?: boolean;
  /** Checks on the opened roots that must pass before anything is locked or recovered. */
  prepare?(roots: readonly Root[]): void;
}

export interface Session {
  roots: Root[];
  /** The user's rules followed by the defaults (unless dropped). */
  rules: readonly Rule[];
  progress: Progress;
  log: RunLog;
  /** Locks and journal, for a run that changes guests. */
  state?: RunState;
  /** The checked state directory, when the session uses it. */
  stateDir?: StateDir;
  /** The hash cache, once hashGroups() loaded it. */
  cache?: HashCache;
  /** The hash key, once hashGroups() loaded it. */
  key?: HashKey;
  /** The memory limit's checks (os/memory-limit.ts), for the walk and before planning. */
  budget: MemoryBudget;
}

export interface RunLog {
  errors: FileError[];
  /** Milliseconds per stage, and `total` once finish() is called. */
  durations: Record<string, number>;
  onError(e: FileError): void;
  /** The stage that just ended: charge it the time since the last mark. */
  timed(stage: string): void;
  finish(): void;
}

/** Run `body` in a session; everything opened is closed after it, whatever happens. */
export async function withSession<T>(opts: SessionOptions, body: (s: Session) => Promise<T>): Promise<T> {
  const progress = opts.progress ?? noProgress;
  const log = runLog(opts.onError);
  const rules = withDefaults(opts.rules, opts.noDefaultExcludes);
  // Before the roots are opened: a bad --max-memory is a usage error like any other.
  const budget = new MemoryBudget(memoryLimit(opts.maxMemory));
  const roots = openRoots(opts.paths);
  let state: RunState | undefined;
  let sd: StateDir | undefined;
  let session: Session | undefined;
  try {
    opts.prepare?.(roots);
    // Whatever uses the state directory (locks, journals, the default hash
    // cache, so the dry run and the report too) first checks who could
    // have written there (state/state-dir.ts): exit 2, nothing changed.
    if (opts.changes || opts.needStateDir || opts.cache === undefined || (opts.hashes && !opts.hashKey)) sd = openStateDir(opts.stateDir ?? DEFAULT_STATE_DIR, roots);
    // A --cache directory is checked as the state directory is, except that it may contain guest roots.
    if (typeof opts.cache === 'string') closeStateDir(openStateDir(opts.cache, roots, true));
    if (opts.hashes && opts.hashKey) closeStateDir(openStateDir(path.dirname(path.resolve(opts.hashKey)), roots, true));
    // A run that changes guests locks its roots and puts right what a killed
    // run left before it looks at anything; a read-only run needs neither.
    if (opts.changes) state = openState(sd!, roots, log.onError, opts.onWarning);
    session = { roots, rules, progress, log, state, stateDir: sd, budget };
    return await body(session);
  } finally {
    progress.stop();
    session?.cache?.close();
    state?.close();
    if (sd) closeStateDir(sd);
    closeRoots(roots);
  }
}

/** Where the session's hash cache lives (a directory of shards), or undefined for none. */
export function cacheDirOf(opts: Pick<SessionOptions, 'cache' | 'stateDir'>): string | undefined {
  return opts.cache === false ? undefined : (opts.cache ?? path.join(opts.stateDir ?? DEFAULT_STATE_DIR, CACHE_DIR));
}

/**
 * The session's hash cache with the shards of its roots read: the cache
 * directory opened and checked (STATE_DIR/cache as the state directory's
 * own subdirectory, a --cache directory as the state directory itself is).
 */
export function openCache(s: Session, opts: SessionOptions, fingerprint: string): HashCache | undefined {
  const where = cacheDirOf(opts);
  if (!where) return undefined;
  let fd: number;
  let dirPath: string;
  if (typeof opts.cache === 'string') {
    const d = openStateDir(opts.cache, s.roots, true);
    fd = d.fd;
    dirPath = d.path;
  } else {
    fd = openStateSubdir(s.stateDir!, CACHE_DIR);
    dirPath = path.join(s.stateDir!.path, CACHE_DIR);
  }
  const cache = new HashCache(fingerprint, s.roots, { fd, path: dirPath });
  cache.load((m) => opts.onWarning?.(m), (m) => opts.onNote?.(m));
  return cache;
}

/** The hash stage's key and cache (loaded once per session); the cache is told when reading began. */
function startHashing(s: Session, opts: SessionOptions): { key: HashKey; cache: HashCache | undefined } {
  const where = keyLocation({ hashKey: opts.hashKey, stateDir: opts.stateDir ?? DEFAULT_STATE_DIR });
  const key = (s.key ??= loadHashKey(where.file, { create: where.create }));
  const cache = (s.cache ??= openCache(s, opts, key.fingerprint));
  if (cache) cache.readAtSec = Date.now() / 1000;
  return { key, cache };
}

/**
 * The hash stage with the key and the cache: inodes whose entry is still
 * valid get their hash, xattrs, flags and project from it, the rest are read
 * (pipeline/hash.ts), and what was read is remembered. Returns the groups
 * split by everything the policy reads (policy.ts readKey), and what was read. `elf`: the caller needs to know which files are ELF
 * (entries of caches written before that was recorded are read again).
 */
export async function hashGroups(
  s: Session,
  opts: SessionOptions,
  groups: readonly Inode[][],
  need: { elf?: boolean } = {},
): Promise<{ identical: Inode[][]; hashed: Hashed }> {
  const { key, cache } = startHashing(s, opts);
  const all = groups.flat();
  const hits = fromCache(cache, s.roots.length, all, !!need.elf);
  const toHash = all.filter((i) => !hits.has(i));
  const hashed = { files: toHash.length, bytes: toHash.reduce((sum, i) => sum + i.stat.size, 0), cacheHits: all.length - toHash.length };
  s.progress.stage('hashing', hashed.bytes, 'bytes');
  const policy: PolicyOptions = { ignoreMtime: !!opts.ignoreMtime, iunlink: opts.iunlink };
  const identical = await splitByContent(groups, { secret: key.secret, policy, onError: s.log.onError, onProgress: (n) => s.progress.tick(n) });
  if (cache) {
    for (const i of toHash) {
      if (i.hash === undefined) continue;
      cache.putStat(i.paths[0]!.dir.root.index, i.stat, { hash: i.hash, xattrs: i.xattrs ?? '', flags: i.flags ?? 0, projid: i.projid ?? 0, elf: i.elf });
    }
  }
  return { identical, hashed };
}

/**
 * hashGroups on rows: every candidate of `groups` (a position in its member
 * list) gets its hash, xattrs, flags and project from a still-valid cache
 * entry or by being read, into columns; what was read is remembered. The
 * cache is read one shard at a time against the root's rows
 * (fromCacheRows), with no object per candidate.
 *
 * A linking run (opts.changes) does not hash a new file whose set the cache
 * already knows: when every other member of its metadata group has a cache
 * entry and they form one content class (policy.ts readKey: hash, file
 * flags, project, xattrs; none locked), the new file's xattrs, flags and
 * project are read without its content, and if they put it into that class
 * it is assumed to hold the class's content. The linker compares every byte
 * with the canonical before it links anything, so that comparison reads it
 * once instead of a hash and a comparison; one that differs is kept apart
 * there, as the hash would have kept it apart in a dry run (which hashes:
 * it reads each new file once, a comparison reads two). An assumed file is
 * never written to the cache: linked, its path names the canonical's inode;
 * kept apart, its hash is unknown. `assumed` names them for the linker.
 */
export async function hashRowGroups(
  s: Session,
  opts: SessionOptions,
  scan: Scan,
  inodes: InodeRows,
  groups: GroupRows,
  /** Scratch whose contents are spent (grouping's sort keys): the hash columns may be laid over it. */
  reuse?: Float64Array,
): Promise<{ read: ReadColumns; hashed: Hashed; assumed: Assumed }> {
  const { key, cache } = startHashing(s, opts);
  const t = scan.tables;
  const f = t.files;
  const devOf = (row: number) => scan.roots[rootIndexOf(t, row)]!.dev;
  const n = groups.candidates;
  const read = readColumns(n, reuse);
  const rowOf = (m: number) => inodes.head(m);
  const policy = { ignoreMtime: !!opts.ignoreMtime, iunlink: opts.iunlink };
  const hashOpts = { secret: key.secret, policy, onError: s.log.onError, onProgress: (b: number) => s.progress.tick(b) };
  if (!cache) {
    // Every candidate is read, in order: no list of them (4 bytes each, held through the stage).
    // Loops in functions of their own (see group.ts inodeRows): optimized mid-loop, this one
    // was deoptimized by the code after each (and by its small-integer sum passing 2^31).
    const hashed = { files: n, bytes: candidateBytes(t, n, rowOf)[0]!, cacheHits: 0 };
    s.progress.stage('hashing', hashed.bytes, 'bytes');
    const part = new Uint32Array(Math.min(n, IDENTITY_CHUNK));
    for (let from = 0; from < n; from += part.length) {
      const todo = part.subarray(0, Math.min(part.length, n - from));
      countFrom(todo, from);
      await hashRows(scan, todo, rowOf, read, hashOpts);
    }
    return { read, hashed, assumed: new Map() };
  }
  fromCacheRows(cache, scan, inodes, groups, read);
  let todo = new Uint32Array(n);
  let count = 0;
  for (let m = 0; m < n; m++) if (!(read.state[m]! & READ)) todo[count++] = m;
  todo = todo.subarray(0, count);
  const assumed: Assumed = new Map();
  if (cache && opts.changes && count) {
    const { probes, classOf } = knownClassProbes(groups, read, todo, !!policy.iunlink);
    if (probes.length) {
      await hashRows(scan, probes, rowOf, read, { ...hashOpts, attrsOnly: true });
      const again = new Set<number>();
      for (const m of probes) {
        if (!(read.state[m]! & READ)) continue; // could not be opened or read: reported, takes part in nothing (as hashing it would)
        const c = classOf.get(m)!;
        if ((!policy.iunlink && isLocked(flagsOf(read, m))) || compareAttrs(read, m, c) !== 0) {
          read.state[m] = 0;
          read.xattrs.delete(m);
          again.add(m); // another class, or none: hashed as before
          continue;
        }
        read.hashHi[m] = read.hashHi[c]!;
        read.hashLo[m] = read.hashLo[c]!;
        read.state[m] = READ | (read.state[c]! & ELF_BIT);
        const row = rowOf(m);
        let inos = assumed.get(devOf(row));
        if (!inos) assumed.set(devOf(row), (inos = new Set()));
        inos.add(inoOf(t, row));
      }
      const probed = new Set(probes);
      todo = todo.filter((m) => !probed.has(m) || again.has(m));
    }
  }
  // Indexed loops, each candidate's first row read from its column: these run
  // once per process, over every new file of a run beside a cache.
  const heads = inodes.paths;
  let bytes = 0;
  for (let k = 0; k < todo.length; k++) bytes += sizeOf(t, heads[todo[k]!]!);
  const hashed = { files: todo.length, bytes, cacheHits: n - count };
  s.progress.stage('hashing', hashed.bytes, 'bytes');
  await hashRows(scan, todo, rowOf, read, hashOpts);
  const xattrs = read.xattrs;
  for (let k = 0; k < todo.length; k++) {
    const m = todo[k]!;
    const state = read.state[m]!;
    if (!(state & READ)) continue;
    const row = heads[m]!;
    const x = xattrs.size > 0 ? (xattrs.get(m) ?? '') : '';
    cache.putRow(rootIndexOf(t, row), inoOf(t, row), sizeOf(t, row), mtimeSecOf(t, row), f.mtimeNsec[row]!, ctimeSecOf(t, row), f.ctimeNsec[row]!, read.hashHi[m]!, read.hashLo[m]!, x, flagsOf(read, m), projidOf(read, m), state & ELF_BIT ? ELF_YES : ELF_NO);
  }
  return { read, hashed, assumed };
}

/**
 * Bytes of candidates 0..n-1, as the one number of the array returned: a
 * double from the start (a small-integer sum deoptimized at 2^31), and
 * read by the caller (optimized mid-loop, a read here after the loop had
 * no type feedback yet and deoptimized this function on its way out).
 */
function candidateBytes(t: Scan['tables'], n: number, rowOf: (m: number) => number): Float64Array {
  const sum = new Float64Array(1);
  for (let m = 0; m < n; m++) sum[0]! += sizeOf(t, rowOf(m));
  return sum;
}

/** todo[k] = from + k. */
function countFrom(todo: Uint32Array, from: number): void {
  for (let k = 0; k < todo.length; k++) todo[k] = from + k;
}

/** Candidates hashed per hashRows call without a cache: enough that the batches in flight drain rarely. */
const IDENTITY_CHUNK = 1 << 16;

/** Inodes (inode numbers by st_dev) whose hash a linking run took from their set instead of reading them: the linker's comparison is their only check. */
export type Assumed = Map<number, Set<number>>;

export const isAssumed = (assumed: Assumed, inode: { dev: number; ino: number }): boolean => assumed.get(inode.dev)?.has(inode.ino) ?? false;

/** 0 when candidates a and b are of one content class (what readKey compares, as splitRowsByContent in hash.ts does). */
function sameClass(read: ReadColumns, a: number, b: number): number {
  if (read.hashHi[a] !== read.hashHi[b] || read.hashLo[a] !== read.hashLo[b]) return 1;
  return compareAttrs(read, a, b);
}

/** sameClass without the hash: what the attributes-only read gives. */
function compareAttrs(read: ReadColumns, a: number, b: number): number {
  if (fileFlags(flagsOf(read, a)) !== fileFlags(flagsOf(read, b))) return 1;
  if (projidOf(read, a) !== projidOf(read, b)) return 1;
  return (read.xattrs.get(a) ?? '') === (read.xattrs.get(b) ?? '') ? 0 : 1;
}

/**
 * The candidates of `todo` (not in the cache) that are the only such
 * member of their group while every other member has a cache entry, none
 * locked (unless --iunlink), all of one content class; with a member of
 * that class for each.
 */
function knownClassProbes(groups: GroupRows, read: ReadColumns, todo: Uint32Array, iunlink: boolean): { probes: Uint32Array; classOf: Map<number, number> } {
  const uncached = new Uint8Array(read.state.length);
  for (const m of todo) uncached[m] = 1;
  const probes: number[] = [];
  const classOf = new Map<number, number>();
  for (let g = 0; g < groups.count; g++) {
    const from = groups.start[g]!, to = groups.start[g + 1]!;
    let probe = -1, known = -1, ok = true;
    for (let m = from; m < to && ok; m++) {
      if (uncached[m]) {
        if (probe >= 0) ok = false; // two new files: which set each joins is a question for the hash
        probe = m;
      } else if (!iunlink && isLocked(flagsOf(read, m))) ok = false; // takes part in nothing: not a set to join
      else if (known < 0) known = m;
      else if (sameClass(read, known, m) !== 0) ok = false; // two classes: ambiguous
    }
    if (ok && probe >= 0 && known >= 0) {
      probes.push(probe);
      classOf.set(probe, known);
    }
  }
  return { probes: Uint32Array.from(probes), classOf };
}

/**
 * Fill `read` from the cache for the candidates of `groups`, one pass over
 * each root's shard (cache.ts match()) against the root's rows sorted by
 * inode number, so no entry is held: a candidate is looked up under the
 * root of its first path, and every row of a root tells its shard that
 * the inode is still there (the others' entries are dropped at save).
 * A root whose shard has no entry (after unifying, every root but the one
 * each inode is filed under) is skipped. Transient: one number per file of
 * the other roots (a row, or a candidate for its first path: CAND | m), a
 * bit per file, and sort keys for the largest such root.
 */
function fromCacheRows(cache: HashCache, scan: Scan, inodes: InodeRows, groups: GroupRows, read: ReadColumns): void {
  const t = scan.tables;
  const f = t.files;
  const R = scan.roots.length;
  // Only the roots whose shard has entries (after unifying, every inode is
  // filed under one root: the other roots' shards are empty).
  const want = new Uint8Array(R);
  let any = false;
  for (let r = 0; r < R; r++) if (cache.entries(r) > 0) (want[r] = 1), (any = true);
  if (!any) return;
  const n = groups.candidates;
  const rowOf = (m: number) => inodes.head(m);
  // Rows by root (a counting sort), then each root's by inode number. Each pass over the rows
  // or candidates a function of its own (see group.ts inodeRows): optimized in the middle of
  // its loop, this one was deoptimized by the next loop's first run.
  const start = rowsPerRoot(t, want, R);
  const perm = rootOrder(t, want, start, inodes, n);
  const rowAt = (v: number) => (v & CAND ? rowOf(v & ~CAND) : v);
  let most = 0;
  for (let r = 0; r < R; r++) if (want[r]) most = Math.max(most, start[r + 1]! - start[r]!);
  const keys = new Float64Array(most);
  for (let r = 0; r < R; r++) {
    if (!want[r]) continue;
    const vals = perm.subarray(start[r]!, start[r + 1]!);
    const sorted = sortByIno(scan, vals, inodes, keys);
    const ok = cache.match(
      r,
      vals.length,
      sorted ? (i) => sorted[2 * i + HI]! : (i) => inoOf(t, rowAt(vals[i]!)),
      (i, e) => {
        const v = vals[i]!;
        if (!(v & CAND)) return;
        const m = v & ~CAND;
        const row = rowOf(m);
        if (!e.valid(sizeOf(t, row), mtimeSecOf(t, row), f.mtimeNsec[row]!, ctimeSecOf(t, row), f.ctimeNsec[row]!)) return;
        read.hashHi[m] = e.hashHi;
        read.hashLo[m] = e.hashLo;
        setAttrs(read, m, e.flags, e.projid);
        read.state[m] = READ | (e.elf === ELF_YES ? ELF_BIT : 0);
        const x = e.xattrs;
        if (x) read.xattrs.set(m, x);
      },
      true,
    );
    if (ok) continue;
    // The shard went bad half-way: what it gave is not trusted either.
    for (const v of vals) {
      if (!(v & CAND)) continue;
      read.state[v & ~CAND] = 0;
      read.xattrs.delete(v & ~CAND);
    }
  }
}

/** start[r] .. start[r + 1]: where root r's rows go in fromCacheRows' list (only the roots wanted have any). */
function rowsPerRoot(t: Scan['tables'], want: Uint8Array, R: number): Uint32Array {
  const start = countPerRoot(t, want, R);
  for (let r = 0; r < R; r++) start[r + 1]! += start[r]!;
  return start;
}

/** Rows of root r at start[r + 1] (a loop alone: see candidateBytes). */
function countPerRoot(t: Scan['tables'], want: Uint8Array, R: number): Uint32Array {
  const start = new Uint32Array(R + 1);
  for (let row = 0; row < t.files.count; row++) {
    const r = rootIndexOf(t, row);
    if (want[r]) start[r + 1]!++;
  }
  return start;
}

/** The rows of the wanted roots, by root: each candidate's first row as CAND | candidate, every other row as itself. */
function rootOrder(t: Scan['tables'], want: Uint8Array, start: Uint32Array, inodes: InodeRows, n: number): Uint32Array {
  const R = start.length - 1;
  const first = firstRows(inodes, n, t.files.count);
  const at = start.slice(0, R);
  const perm = new Uint32Array(start[R]!);
  placeRows(t, want, first, at, perm);
  placeCandidates(t, want, inodes, n, at, perm);
  return perm;
}

/** A bit per row: the first row of some candidate. */
function firstRows(inodes: InodeRows, n: number, N: number): Uint8Array {
  const first = new Uint8Array((N + 7) >>> 3);
  for (let m = 0; m < n; m++) {
    const row = inodes.head(m);
    first[row >>> 3]! |= 1 << (row & 7);
  }
  return first;
}

function placeRows(t: Scan['tables'], want: Uint8Array, first: Uint8Array, at: Uint32Array, perm: Uint32Array): void {
  for (let row = 0; row < t.files.count; row++) {
    if (first[row >>> 3]! & (1 << (row & 7))) continue;
    const r = rootIndexOf(t, row);
    if (want[r]) perm[at[r]!++] = row;
  }
}

function placeCandidates(t: Scan['tables'], want: Uint8Array, inodes: InodeRows, n: number, at: Uint32Array, perm: Uint32Array): void {
  for (let m = 0; m < n; m++) {
    const r = rootIndexOf(t, inodes.head(m));
    if (want[r]) perm[at[r]!++] = CAND | m;
  }
}

/** Each value's inode number into inos; the largest. */
function readInos(t: Scan['tables'], vals: Uint32Array, heads: Uint32Array, inos: Float64Array): number {
  let most = 0;
  for (let i = 0; i < vals.length; i++) {
    const v = vals[i]!;
    const ino = inoOf(t, v >= CAND ? heads[v - CAND]! : v);
    inos[i] = ino;
    if (ino > most) most = ino;
  }
  return most;
}

/** Key i: (ino, i), the inode numbers below 2^32; written after inos[i] is read (the keys lie over them). */
function inoKeys(inos: Float64Array, words: Uint32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const ino = inos[i]!;
    words[2 * i + HI] = ino;
    words[2 * i + LO] = i;
  }
}

/** The values in their sorted keys' order, each through its key's low word (vals is not written before all are read). */
function reorderByKeys(vals: Uint32Array, words: Uint32Array, n: number): void {
  for (let i = 0; i < n; i++) words[2 * i + LO] = vals[words[2 * i + LO]!]!;
  for (let i = 0; i < n; i++) vals[i] = words[2 * i + LO]!;
}

/** Marks a candidate (its number below) rather than a row in fromCacheRows' per-root lists. */
const CAND = 0x80000000;

/**
 * Sort one root's values (rows, or CAND | candidate for the candidate's
 * first row) by inode number: one native sort of unsigned 64-bit (ino,
 * position) keys while inode numbers fit 32 bits (rows.ts sortKeys: no
 * BigInt made), which then hold the sorted inode numbers in their high
 * words (returned: match() reads them there rather than through the
 * tables again); else of (ino, position) doubles when they fit 53 bits,
 * else by comparison (returns undefined).
 */
function sortByIno(scan: Scan, vals: Uint32Array, inodes: InodeRows, keys: Float64Array): Uint32Array | undefined {
  const t = scan.tables;
  const n = vals.length;
  const inos = new Float64Array(keys.buffer, keys.byteOffset, n);
  const heads = inodes.paths; // candidate m's first row is heads[m] (InodeRows.head)
  // Each loop in a function of its own (see fromCacheRows).
  const most = readInos(t, vals, heads, inos);
  if (most < 2 ** 32) {
    // The keys are laid over the inode numbers: key i is written after inos[i] is read.
    const { keys: k64, words } = sortKeys(n, keys);
    inoKeys(inos, words, n);
    k64.sort();
    reorderByKeys(vals, words, n);
    return words;
  }
  const bits = Math.max(1, Math.ceil(Math.log2(n + 1)));
  const P = 2 ** bits;
  const rowAt = (v: number) => (v >= CAND ? heads[v - CAND]! : v);
  if (most >= 2 ** (53 - bits)) {
    vals.sort((a, b) => inoOf(t, rowAt(a)) - inoOf(t, rowAt(b)));
    return undefined;
  }
  const k = inos;
  for (let i = 0; i < n; i++) k[i] = k[i]! * P + i;
  k.sort();
  // The values in their new order, through the keys (vals is read whole before it is written).
  for (let i = 0; i < n; i++) k[i] = vals[k[i]! % P]!;
  vals.set(k);
  return undefined;
}

/** Fill in hashes, xattrs, flags and project of inodes from still-valid cache entries (one pass over each root's shard); the inodes filled. */
function fromCache(cache: HashCache | undefined, roots: number, all: readonly Inode[], needElf: boolean): Set<Inode> {
  const hits = new Set<Inode>();
  if (!cache) return hits;
  const byRoot: Inode[][] = Array.from({ length: roots }, () => []);
  for (const i of all) byRoot[i.paths[0]!.dir.root.index]!.push(i);
  byRoot.forEach((list, r) => {
    list.sort((a, b) => a.stat.ino - b.stat.ino);
    const ok = cache.match(
      r,
      list.length,
      (k) => list[k]!.stat.ino,
      (k, e) => {
        const inode = list[k]!;
        const st = inode.stat;
        if (!e.valid(st.size, st.mtimeSec, st.mtimeNsec, st.ctimeSec, st.ctimeNsec) || (needElf && e.elf === ELF_UNKNOWN)) return;
        inode.hash = (BigInt(e.hashHi) << 32n) | BigInt(e.hashLo);
        inode.xattrs = e.xattrs;
        inode.elf = e.elf === ELF_UNKNOWN ? undefined : e.elf === ELF_YES;
        inode.flags = e.flags;
        inode.projid = e.projid;
        hits.add(inode);
      },
      false,
    );
    if (ok) return;
    for (const inode of list) {
      if (!hits.delete(inode)) continue;
      inode.hash = inode.xattrs = inode.elf = inode.flags = inode.projid = undefined;
    }
  });
  return hits;
}

/**
 * Save the session's cache (after a run that went through): only entries of
 * inodes seen stay in its roots' shards (hashRowGroups told them which; an
 * object run names them: `seen`); other roots' shards are not touched.
 * The default cache also removes the old single-file cache beside it.
 */
export async function saveSessionCache(s: Session, opts: SessionOptions, seen?: readonly Inode[]): Promise<void> {
  if (!s.cache?.dir) return;
  if (seen) s.cache.prune(seen);
  try {
    const old = opts.cache === undefined && s.stateDir ? { dirFd: s.stateDir.fd, dirPath: s.stateDir.path } : undefined;
    s.cache.save((m) => opts.onNote?.(m), old);
  } catch (er) {
    opts.onWarning?.(`${s.cache.dir.path}: hash cache not saved: ${(er as Error).message}`);
  }
}

function runLog(onError?: (e: FileError) => void): RunLog {
  const start = performance.now();
  let mark = start;
  const log: RunLog = {
    errors: [],
    durations: {},
    onError(e) {
      log.errors.push(e);
      onError?.(e);
    },
    timed(stage) {
      const now = performance.now();
      log.durations[stage] = Math.round(now - mark);
      mark = now;
    },
    finish() {
      log.durations.total = Math.round(performance.now() - start);
    },
  };
  return log;
}
