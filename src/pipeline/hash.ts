/*
 * Hash: one keyed XXH3-64 per candidate inode, with its xattrs, inode flags
 * and project ID, to split groups by everything the sharing policy reads
 * through a descriptor (policy.ts readKey).
 *
 * XXH3 is fast, not collision resistant: under its public default secret a
 * guest can forge a file with another file's hash. So its 192-byte secret
 * is derived from the host's secret key (state/hash-key.ts), which guests
 * cannot read: a keyed nomination, not a MAC (XXH3 is no cryptographic function), so a
 * hash match still only nominates files, and the linker compares bytes
 * before any link and splits a set that holds more than one content. Each inode is read once, through a descriptor opened confined
 * beneath its root and checked against the scan (O_PATH and fstat first, so
 * a device's open routine never runs; O_NONBLOCK so a FIFO swapped in cannot
 * hang us; O_NOATIME so a report-only run leaves atimes alone); its xattrs
 * are read through the same descriptor (see xattrs.ts). Reading them here
 * rather than in a stage of their own saves one open per file; the price,
 * hashing a file whose xattrs alone would have set it apart, is rarely
 * paid: almost no files carry xattrs.
 *
 * The per-file work runs in the addon (hashFiles in native/hash.c), a
 * batch of files per call on libuv's thread pool, two batches in flight per
 * core. Files go in walk order (inRowOrder), so that the addon opens each
 * directory once for the files in it and looks each file up by its name
 * alone: with a host's dentry cache full, a name lookup costs more than
 * reading a small file. Done from JavaScript it took seven calls per file (open O_PATH,
 * fstat, reopen, xattrs, reads, two closes) plus a message to a worker
 * thread, which cost more than reading and hashing a typical small file:
 * on the fleet the hash stage went from 3.0 s to ~1 s (bench/README.md).
 * The addon hashes with its own XXH3 (native/xxh3.c: AVX2 where the CPU
 * has it: 2.5x XXH64 on 1 MiB in cache, bench/xxh3.mjs). `inFlight: 0` keeps a path
 * in this thread: it is the reference the native hash is tested against
 * (test/pipeline/hash.test.ts), hashing with the TypeScript XXH3 of
 * core/xxh3.ts, written apart from the C, one shot over the file's whole
 * stream (so it holds a file's data in memory: tests only).
 */
import os from 'node:os';
import { SECRET_SIZE, xxh3 } from '../core/xxh3.js';
import { openRegular } from '../os/confine.js';
import { fileError, type FileError } from '../core/errors.js';
import { splitGroups, type GroupRows, type InodeRows } from './group.js';
import { dirRelLength, displayRow, ELF_BIT, hashOf, permuteRead, READ, readColumns, relPathRow, rootIndexOf, setAttrs, setRead, statOfRow, writeDirRelRow, type ReadColumns, type Scan } from './rows.js';
import { ctimeSecOf, inoOf, metaOf, mtimeSecOf, sizeOf } from './table.js';
import { readFully, sys } from '../os/sys.js';
import { layout } from '../os/native.js';
import { getSystemErrorName } from 'node:util';
import type { Inode } from '../core/types.js';
import { fileAttrs, tooLarge, xattrKey } from './xattrs.js';
import { displayPath, relPath, relPathLength } from '../core/paths.js';
import type { Stat } from '../core/stat.js';
import { fileFlags, isLocked, readKey, type PolicyOptions } from './policy.js';

export const CHUNK = 1 << 20;

export interface HashOptions {
  /** The XXH3 secret (SECRET_SIZE bytes), derived from the host's hash key (state/hash-key.ts). */
  secret: Buffer;
  /** What makes inodes of identical content shareable (--ignore-mtime, --iunlink). */
  policy: PolicyOptions;
  /** Native batches in flight on libuv's thread pool (default: two per core); 0 hashes in this thread with core/xxh3.ts, the reference path. */
  inFlight?: number;
  onError(e: FileError): void;
  onProgress?(bytes: number): void;
}

const ZERO_BLOCK = layout.zeroBlock;
if (layout.hashSecretSize !== SECRET_SIZE) throw new Error(`vunify: the addon's hash secret is ${layout.hashSecretSize} bytes, not ${SECRET_SIZE}; rebuild it (npm ci)`);
const ZEROS = Buffer.alloc(ZERO_BLOCK);
const MARKER_TAG = Buffer.from('\0vunify\0', 'latin1');

/**
 * Hash the open file `fd` of `size` bytes with `buf` (at least
 * layout.zeroBlock bytes) as scratch: the reference for the addon's
 * content hash (native/extents.c). XXH3-64 under `secret` of the bytes,
 * except that each run of k whole, aligned, all-zero 1 MiB blocks counts
 * as a 16-byte marker (a keyed tag, XXH3-64 of "\0vunify\0" under the
 * same secret xor the secret's last 8 bytes, then k, both u64 LE; keyed so
 * that a guest cannot write a marker as data, native/extents.c
 * marker_tag): so a hole and written
 * zeros hash alike, and the addon need not read holes. Files under 1 MiB,
 * and files without such a block, hash to plain XXH3-64. This path reads
 * every byte, and hashes the stream in one shot (core/xxh3.ts has no
 * streaming form): it holds the file's data, less its zero runs, in memory.
 */
export function hashFd(fd: number, size: number, buf: Buffer, secret: Buffer): bigint {
  if (size < ZERO_BLOCK) return xxh3(buf.subarray(0, readFully(fd, buf, size, 0)), secret);
  const parts: Buffer[] = [];
  const tag = xxh3(MARKER_TAG, secret) ^ secret.readBigUInt64LE(secret.length - 8);
  let run = 0;
  const flush = () => {
    if (!run) return;
    const marker = Buffer.alloc(16);
    marker.writeBigUInt64LE(tag, 0);
    marker.writeBigUInt64LE(BigInt(run), 8);
    parts.push(marker);
    run = 0;
  };
  for (let pos = 0; pos < size; ) {
    const len = Math.min(ZERO_BLOCK, size - pos);
    readFully(fd, buf, len, pos);
    if (len === ZERO_BLOCK && buf.subarray(0, len).equals(ZEROS)) run++;
    else {
      flush();
      parts.push(Buffer.from(buf.subarray(0, len)));
    }
    pos += len;
  }
  flush();
  return xxh3(Buffer.concat(parts), secret);
}

/** One file to hash on the reference path: its root, its path under it, and what the scan saw. */
export interface HashJob {
  rootFd: number;
  rel: Uint8Array;
  stat: Stat;
}

export type HashResult = { hash: bigint; xattrs: string; elf: boolean; flags: number; projid: number } | { error: { code?: string; syscall?: string; message: string } };

/**
 * Open (confined, checked against the scan) and hash one file, and read its
 * xattrs. `attrsOnly`: no content read (hash 0, not ELF); the reference for
 * hashFiles' attributes-only mode.
 */
export function hashJob(job: HashJob, buf: Buffer, secret: Buffer, attrsOnly = false): HashResult {
  try {
    const rel = Buffer.from(job.rel.buffer, job.rel.byteOffset, job.rel.byteLength);
    const file = openRegular(job.rootFd, rel, job.stat);
    try {
      const xattrs = xattrKey(file.fd);
      const { flags, projid } = fileAttrs(file.fd);
      if (attrsOnly) return { xattrs, hash: 0n, elf: false, flags, projid };
      const hash = hashFd(file.fd, file.stat.size, buf, secret);
      return { xattrs, hash, elf: isElf(file.fd, file.stat.size, buf), flags, projid };
    } finally {
      sys.close(file.fd);
    }
  } catch (er) {
    const e = er as { code?: string; syscall?: string; message?: string };
    return { error: { code: e.code, syscall: e.syscall, message: e.message ?? String(er) } };
  }
}

const ELF_MAGIC = 0x7f454c46; // "\x7fELF"

/**
 * Whether the file just hashed starts with the ELF magic (the capacity
 * report counts shared executables and libraries apart). A file that fit in
 * `buf` is still there; a larger one costs one 4-byte pread on the same
 * descriptor, so no second open and nothing a guest could swap in between.
 */
function isElf(fd: number, size: number, buf: Buffer): boolean {
  if (size < 4) return false;
  if (size > buf.length) readFully(fd, buf, 4, 0);
  return buf.readUInt32BE(0) === ELF_MAGIC;
}

/**
 * Two batches per core: with one, a core idled while this thread decoded
 * a finished batch and queued the next (fleet dry run, 5 alternating runs:
 * 2.33 s with one per core, 2.07 s with two; hash stage 1,206 -> 946 ms).
 * libuv's pool (4 threads unless UV_THREADPOOL_SIZE says more; it starts
 * while modules load, so the program cannot resize it) bounds the rest.
 */
export const BATCHES_IN_FLIGHT = 2 * os.availableParallelism();
/** A batch ends at this many files or bytes, whichever comes first: small enough to spread big files over the cores. */
const BATCH_FILES = 256;
const BATCH_BYTES = 32 << 20;
/**
 * Bytes per file of a batch's input buffer as first made: a record is the
 * 72-byte header and the path (~60 bytes on the fleet's guests). At 128 a
 * batch of 256 such files outgrew it on the first batch; the first growth
 * came after V8 had optimized encodeBatch, whose growth branch had not run
 * yet: it deoptimized, ran in the interpreter meanwhile and was compiled
 * again (~50 ms of the compiler thread, taken from the hash threads on 2
 * cores). 64 KiB per batch in flight.
 */
const JOB_BYTES = 256;

/**
 * Hash every inode of the groups and read its xattrs, then split the groups
 * by both. Inodes that already carry a hash (from the cache, see cache.ts)
 * are not read again.
 */
export async function splitByContent(groups: readonly Inode[][], opts: HashOptions): Promise<Inode[][]> {
  const inodes = groups.flat().filter((i) => i.hash === undefined);
  const settle = (k: number, r: HashResult) => {
    const inode = inodes[k]!;
    if ('hash' in r) {
      inode.hash = r.hash;
      inode.xattrs = r.xattrs;
      inode.elf = r.elf;
      inode.flags = r.flags;
      inode.projid = r.projid;
      opts.onProgress?.(inode.stat.size);
    } else {
      opts.onError(fileError(displayPath(inode.paths[0]!), Object.assign(new Error(r.error.message), r.error)));
    }
  };
  if (opts.inFlight === 0) {
    const buf = Buffer.allocUnsafe(CHUNK);
    inodes.forEach((inode, k) => {
      const job = { rootFd: inode.paths[0]!.dir.root.fd, rel: relPath(inode.paths[0]!), stat: inode.stat };
      settle(k, hashJob(job, buf, opts.secret));
    });
  } else {
    await inBatches(inodes, opts.inFlight ?? BATCHES_IN_FLIGHT, opts.secret, settle);
  }
  return splitGroups(groups, (inode) => readKey(inode, opts.policy));
}

/** Keep `inFlight` native batches going until every inode is settled. */
async function inBatches(inodes: readonly Inode[], inFlight: number, secret: Buffer, settle: (k: number, r: HashResult) => void): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.max(1, inFlight) }, async () => {
      while (next < inodes.length) {
        const start = next;
        let bytes = 0;
        // Path bytes count too: in a deep tree each path is up to ~1 MiB (walk.ts MAX_DEPTH).
        while (next < inodes.length && next - start < BATCH_FILES && bytes < BATCH_BYTES) {
          const inode = inodes[next++]!;
          bytes += inode.stat.size + relPathLength(inode.paths[0]!);
        }
        const out = await sys.hashFiles(encodeJobs(inodes, start, next), secret);
        decodeResults(out).forEach((r, k) => settle(start + k, r));
      }
    }),
  );
}

// Hot: encodeJobs runs once per file, decodeResults once per result. The
// offsets (layout.hashIn, hashOut, hashXattr: the structs in native/hash.c)
// are bound to constants once, here.
const {
  headerSize: IN_HDR,
  recordLength: IN_LEN,
  rootFd: IN_ROOT_FD,
  pathLength: IN_PATH_LEN,
  mode: IN_MODE,
  uid: IN_UID,
  gid: IN_GID,
  ino: IN_INO,
  dev: IN_DEV,
  size: IN_SIZE,
  mtimeSec: IN_MTIME_SEC,
  mtimeNsec: IN_MTIME_NSEC,
  ctimeNsec: IN_CTIME_NSEC,
  ctimeSec: IN_CTIME_SEC,
} = layout.hashIn;
const { headerSize: OUT_HDR, recordLength: OUT_LEN, error: OUT_ERROR, detail: OUT_DETAIL, xattrCount: OUT_XATTRS, hash: OUT_HASH, flags: OUT_FLAGS, projid: OUT_PROJID } =
  layout.hashOut;
const ALIGN = layout.recordAlign;

/** The input records of hashFiles (struct hash_in in native/hash.c) for inodes[from, to). */
export function encodeJobs(inodes: readonly Inode[], from: number, to: number): Buffer {
  const pad = (n: number) => (n + ALIGN - 1) & -ALIGN;
  let total = 0;
  for (let k = from; k < to; k++) {
    const f = inodes[k]!.paths[0]!;
    total += pad(IN_HDR + relPathLength(f));
  }
  const buf = Buffer.alloc(total);
  let off = 0;
  for (let k = from; k < to; k++) {
    const f = inodes[k]!.paths[0]!;
    const s = inodes[k]!.stat;
    const p = off + IN_HDR + relPath(f).copy(buf, off + IN_HDR);
    const len = pad(p - off);
    buf.writeUInt32LE(len, off + IN_LEN);
    buf.writeInt32LE(f.dir.root.fd, off + IN_ROOT_FD);
    buf.writeUInt32LE(p - off - IN_HDR, off + IN_PATH_LEN);
    buf.writeUInt32LE(s.mode, off + IN_MODE);
    buf.writeUInt32LE(s.uid, off + IN_UID);
    buf.writeUInt32LE(s.gid, off + IN_GID);
    buf.writeBigUInt64LE(BigInt(s.ino), off + IN_INO);
    buf.writeBigUInt64LE(BigInt(s.dev), off + IN_DEV);
    buf.writeBigUInt64LE(BigInt(s.size), off + IN_SIZE);
    buf.writeBigInt64LE(BigInt(s.mtimeSec), off + IN_MTIME_SEC);
    buf.writeUInt32LE(s.mtimeNsec, off + IN_MTIME_NSEC);
    buf.writeUInt32LE(s.ctimeNsec, off + IN_CTIME_NSEC);
    buf.writeBigInt64LE(BigInt(s.ctimeSec), off + IN_CTIME_SEC);
    off += len;
  }
  return buf;
}

/** Failing calls, by the index hashFiles reports (HASH_CALLS in native/hash.c). */
const HASH_CALLS = layout.hashCalls;
const { changed: HASH_CHANGED, shrank: HASH_SHRANK, elf: HASH_ELF } = layout.hashCodes;

/** hashFiles' output records as HashResults, in job order. */
export function decodeResults(out: Buffer): HashResult[] {
  const results: HashResult[] = [];
  for (let off = 0; off < out.length; ) {
    const len = out.readUInt32LE(off + OUT_LEN);
    const err = out.readInt32LE(off + OUT_ERROR);
    if (err === HASH_CHANGED || err === HASH_SHRANK) {
      results.push({ error: { code: 'ECHANGED', message: err === HASH_CHANGED ? 'file changed since it was scanned' : 'file shrank while being read' } });
    } else if (err !== 0) {
      const code = getSystemErrorName(-err);
      const syscall = HASH_CALLS[out.readUInt32LE(off + OUT_DETAIL)];
      const big = code === 'E2BIG' && (syscall === 'flistxattr' || syscall === 'fgetxattr');
      results.push({ error: { code, syscall, message: big ? tooLarge() : `${code}, ${syscall}` } });
    } else {
      // A file with xattrs carries the 32-byte digest of the set after the header.
      const xattrs = out.readUInt32LE(off + OUT_XATTRS) > 0 ? out.toString('hex', off + OUT_HDR, off + OUT_HDR + 32) : '';
      const elf = (out.readUInt32LE(off + OUT_DETAIL) & HASH_ELF) !== 0;
      const flags = out.readUInt32LE(off + OUT_FLAGS);
      const projid = out.readUInt32LE(off + OUT_PROJID);
      results.push({ hash: out.readBigUInt64LE(off + OUT_HASH), xattrs, elf, flags, projid });
    }
    off += len;
  }
  return results;
}

export { ELF_BIT, hashOf, READ, readColumns, setRead, type ReadColumns };

/**
 * Hash the candidates `todo` (candidate numbers; `rowOf` gives the file row
 * each is opened by) into `cols`, in native batches as splitByContent does:
 * each batch's input records are written from the tables (the relative
 * paths built from the directory table into the batch's buffer, dropped
 * with it) and its results decoded straight into the columns.
 * `attrsOnly`: the same opens and checks, xattrs, inode flags and project
 * ID, but no content read: hash 0 and no ELF bit (the caller fills both in).
 * `todo` is left sorted in walk order (inRowOrder).
 */
export async function hashRows(scan: Scan, todo: Uint32Array, rowOf: (m: number) => number, cols: ReadColumns, opts: HashOptions & { attrsOnly?: boolean }): Promise<void> {
  const t = scan.tables;
  inRowOrder(todo, rowOf);
  const attrsOnly = !!opts.attrsOnly;
  const fail = (m: number, error: { code?: string; syscall?: string; message: string }) =>
    opts.onError(fileError(displayRow(scan, rowOf(m)), Object.assign(new Error(error.message), error)));
  const progress = attrsOnly ? undefined : opts.onProgress;
  if (opts.inFlight === 0) {
    const buf = Buffer.allocUnsafe(CHUNK);
    for (const m of todo) {
      const row = rowOf(m);
      const job = { rootFd: scan.roots[rootIndexOf(t, row)]!.fd, rel: relPathRow(t, row), stat: statOfRow(scan, row) };
      const r = hashJob(job, buf, opts.secret, attrsOnly);
      if ('hash' in r) {
        setRead(cols, m, r);
        progress?.(sizeOf(t, row));
      } else fail(m, r.error);
    }
    return;
  }
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.max(1, opts.inFlight ?? BATCHES_IN_FLIGHT) }, async () => {
      // One input and one output buffer per batch in flight, reused: a new
      // pair per batch was ~40 KiB of garbage each, and the collector let
      // tens of MiB of it pile up before it ran.
      let jobs: Buffer = Buffer.allocUnsafeSlow(BATCH_FILES * JOB_BYTES);
      const results = Buffer.allocUnsafeSlow(BATCH_FILES * (OUT_HDR + 32));
      while (next < todo.length) {
        const from = next;
        const batch = encodeBatch(scan, todo, from, todo.length, rowOf, jobs, BATCH_FILES, BATCH_BYTES, !attrsOnly);
        next = batch.next;
        const input = batch.buf;
        if (input.buffer !== jobs.buffer) jobs = Buffer.from(input.buffer); // grown for long paths: keep the larger one
        const out = await (attrsOnly ? sys.fileAttrsBatch(input) : sys.hashFiles(input, opts.secret, results));
        decodeInto(out, todo, from, cols, fail, (m) => progress?.(sizeOf(t, rowOf(m))));
      }
    }),
  );
}

/** Candidates sorted in one window at a time: the scratch stays small whatever the count. */
const ORDER_WINDOW = 1 << 16;

/**
 * Sort `todo` in walk order (by the row each is opened by), in place, a
 * window of ORDER_WINDOW candidates at a time (so the scratch is a fixed
 * 768 KiB, and no second list of every candidate is made). Candidates come
 * in group order (by size), so neighbours were in other guests and
 * directories; in walk order most share their directory with the one
 * before, which hashFiles then opens once for them (its directory cache,
 * native/hash.c). Only the order of the reads changes: results go to each
 * candidate's own slot, and every caller reads its list in any order.
 */
export function inRowOrder(todo: Uint32Array, rowOf: (m: number) => number): Uint32Array {
  // row * ORDER_WINDOW + index is exact in a double (rows < 2^32), and a Float64Array sorts natively without a comparator.
  const keys = new Float64Array(Math.min(todo.length, ORDER_WINDOW));
  const copy = new Uint32Array(keys.length);
  for (let from = 0; from < todo.length; from += ORDER_WINDOW) {
    const n = Math.min(ORDER_WINDOW, todo.length - from);
    const k = keys.subarray(0, n);
    copy.set(todo.subarray(from, from + n));
    // Each loop in a function of its own: optimized in the middle of one, the sort
    // after it no longer deoptimizes this one when first reached.
    windowKeys(k, copy, n, rowOf);
    k.sort();
    windowPlace(todo, from, copy, k, n);
  }
  return todo;
}

function windowKeys(k: Float64Array, copy: Uint32Array, n: number, rowOf: (m: number) => number): void {
  for (let i = 0; i < n; i++) k[i] = rowOf(copy[i]!) * ORDER_WINDOW + i;
}

function windowPlace(todo: Uint32Array, from: number, copy: Uint32Array, k: Float64Array, n: number): void {
  for (let i = 0; i < n; i++) todo[from + i] = copy[k[i]! % ORDER_WINDOW]!;
}

/**
 * 32-bit views of a record buffer, so that the hot loops write and read
 * words by index rather than through Buffer's checked writeUInt32LE and
 * readUInt32LE (a call each, ~15 per file). Every field of hash_in and
 * hash_out is 4-aligned and records are RECORD_ALIGN (8) aligned, so word
 * index (off + FIELD) >> 2 is exact once the buffer itself starts 4-aligned.
 */
function words(buf: Buffer): { u32: Uint32Array; i32: Int32Array } {
  const n = buf.length >>> 2;
  return { u32: new Uint32Array(buf.buffer, buf.byteOffset, n), i32: new Int32Array(buf.buffer, buf.byteOffset, n) };
}

/** A 64-bit little-endian integer (two's complement: the times may be negative) from a safe integer, at word w, without a BigInt. */
function u64(u32: Uint32Array, i32: Int32Array, w: number, v: number): void {
  if (v >= 0 && v < 4294967296) {
    u32[w] = v;
    u32[w + 1] = 0;
    return;
  }
  const hi = Math.floor(v / 4294967296);
  u32[w] = v - hi * 4294967296;
  i32[w + 1] = hi;
}

/** The input records of hashFiles (struct hash_in in native/hash.c) for candidates todo[from, to), in `into` when it is large enough. */
export function encodeRows(scan: Scan, todo: Uint32Array, from: number, to: number, rowOf: (m: number) => number, into?: Buffer): Buffer {
  return encodeBatch(scan, todo, from, to, rowOf, into, Infinity, Infinity, false).buf;
}

/**
 * The input records for candidates todo[from, next): as many as fit in
 * `files` records and `bytes` (path bytes, and content bytes when
 * `countSize`; a batch ends once either is reached, so it is never
 * empty), written in `into` while it
 * has room, else in a larger buffer. Hot: once per hashed file. Each row is
 * looked up once, and a file in the directory of the one before takes that
 * one's directory path (walk order makes that most of them) instead of
 * walking its parents again.
 */
function encodeBatch(
  scan: Scan,
  todo: Uint32Array,
  from: number,
  to: number,
  rowOf: (m: number) => number,
  into: Buffer | undefined,
  files: number,
  bytes: number,
  countSize: boolean,
): { buf: Buffer; next: number } {
  const t = scan.tables, f = t.files, m = t.metas, roots = scan.roots;
  const { dir: dirOf, nameLen, nameOff, mtimeNsec, ctimeNsec } = f;
  const names = t.names;
  const { mode, uid, gid } = m;
  let buf = into && (into.byteOffset & 3) === 0 ? into : Buffer.allocUnsafeSlow(Math.max(BATCH_FILES * JOB_BYTES, into?.length ?? 0));
  let { u32, i32 } = words(buf);
  let off = 0, k = from, seen = 0;
  let lastDir = -1, dirLen = 0, lastPath = 0;
  while (k < to && k - from < files && seen < bytes) {
    const row = rowOf(todo[k]!);
    const dir = dirOf[row]!;
    const sameDir = dir === lastDir;
    if (!sameDir) dirLen = dirRelLength(t, dir);
    const nl = nameLen[row]!;
    const pathLen = (dirLen ? dirLen + 1 : 0) + nl;
    const len = (IN_HDR + pathLen + ALIGN - 1) & -ALIGN;
    if (off + len > buf.length) {
      const grown = Buffer.allocUnsafeSlow(Math.max(2 * buf.length, off + len));
      buf.copy(grown, 0, 0, off);
      buf = grown;
      ({ u32, i32 } = words(buf));
    }
    const at = off + IN_HDR;
    if (dirLen) {
      if (sameDir) buf.copyWithin(at, lastPath, lastPath + dirLen);
      else writeDirRelRow(t, dir, buf, at);
      buf[at + dirLen] = SLASH;
    }
    const name = at + pathLen - nl, no = nameOff[row]!;
    for (let i = 0; i < nl; i++) buf[name + i] = names[no + i]!;
    // Zeros after the path, as a fresh buffer had.
    for (let i = at + pathLen; i < off + len; i++) buf[i] = 0;
    lastDir = dir;
    lastPath = at;
    const root = roots[rootIndexOf(t, row)]!;
    const meta = metaOf(t, row);
    const size = sizeOf(t, row);
    const w = off >>> 2;
    u32[w + W_LEN] = len;
    i32[w + W_ROOT_FD] = root.fd;
    u32[w + W_PATH_LEN] = pathLen;
    u32[w + W_MODE] = mode[meta]!;
    u32[w + W_UID] = uid[meta]!;
    u32[w + W_GID] = gid[meta]!;
    u64(u32, i32, w + W_INO, inoOf(t, row));
    u64(u32, i32, w + W_DEV, root.dev);
    u64(u32, i32, w + W_SIZE, size);
    u64(u32, i32, w + W_MTIME_SEC, mtimeSecOf(t, row));
    u32[w + W_MTIME_NSEC] = mtimeNsec[row]!;
    u32[w + W_CTIME_NSEC] = ctimeNsec[row]!;
    u64(u32, i32, w + W_CTIME_SEC, ctimeSecOf(t, row));
    off += len;
    k++;
    seen += (countSize ? size : 0) + pathLen;
  }
  return { buf: buf.subarray(0, off), next: k };
}

const SLASH = 0x2f;
/** The fields of hash_in and hash_out as word indices from a record's start (all 4-aligned: checked at load). */
const word = (at: number): number => {
  if (at & 3) throw new Error(`vunify: a hashFiles record field at byte ${at} is not 4-aligned; rebuild the addon (npm ci)`);
  return at >>> 2;
};
const [W_LEN, W_ROOT_FD, W_PATH_LEN, W_MODE, W_UID, W_GID, W_INO, W_DEV, W_SIZE, W_MTIME_SEC, W_MTIME_NSEC, W_CTIME_NSEC, W_CTIME_SEC] = [
  IN_LEN, IN_ROOT_FD, IN_PATH_LEN, IN_MODE, IN_UID, IN_GID, IN_INO, IN_DEV, IN_SIZE, IN_MTIME_SEC, IN_MTIME_NSEC, IN_CTIME_NSEC, IN_CTIME_SEC,
].map(word) as [number, number, number, number, number, number, number, number, number, number, number, number, number];
const [WO_LEN, WO_ERROR, WO_DETAIL, WO_XATTRS, WO_HASH, WO_FLAGS, WO_PROJID] = [OUT_LEN, OUT_ERROR, OUT_DETAIL, OUT_XATTRS, OUT_HASH, OUT_FLAGS, OUT_PROJID].map(word) as [
  number, number, number, number, number, number, number,
];
if (ALIGN & 3 || IN_HDR & 3 || OUT_HDR & 3) throw new Error('vunify: hashFiles records are not 4-aligned; rebuild the addon (npm ci)');

/** hashFiles' output records for todo[from, ..), into the columns. */
function decodeInto(
  out: Buffer,
  todo: Uint32Array,
  from: number,
  cols: ReadColumns,
  fail: (m: number, e: { code?: string; syscall?: string; message: string }) => void,
  done: (m: number) => void,
): void {
  if (out.byteOffset & 3) out = Buffer.from(out); // a copy starts aligned
  const { u32, i32 } = words(out);
  const xattrs = cols.xattrs;
  for (let off = 0, k = from; off < out.length; k++) {
    const m = todo[k]!;
    const w = off >>> 2;
    const len = u32[w + WO_LEN]!;
    const err = i32[w + WO_ERROR]!;
    if (err === HASH_CHANGED || err === HASH_SHRANK) {
      fail(m, { code: 'ECHANGED', message: err === HASH_CHANGED ? 'file changed since it was scanned' : 'file shrank while being read' });
    } else if (err !== 0) {
      const code = getSystemErrorName(-err);
      const syscall = HASH_CALLS[u32[w + WO_DETAIL]!];
      const big = code === 'E2BIG' && (syscall === 'flistxattr' || syscall === 'fgetxattr');
      fail(m, { code, syscall, message: big ? tooLarge() : `${code}, ${syscall}` });
    } else {
      if (u32[w + WO_XATTRS]! > 0) xattrs.set(m, out.toString('hex', off + OUT_HDR, off + OUT_HDR + 32));
      else if (xattrs.size) xattrs.delete(m);
      cols.state[m] = READ | ((u32[w + WO_DETAIL]! & HASH_ELF) !== 0 ? ELF_BIT : 0);
      setAttrs(cols, m, u32[w + WO_FLAGS]!, u32[w + WO_PROJID]!);
      cols.hashLo[m] = u32[w + WO_HASH]!;
      cols.hashHi[m] = u32[w + WO_HASH + 1]!;
      done(m);
    }
    off += len;
  }
}

/**
 * Identical sets on rows: set s is candidates start[s] .. end[s] - 1
 * (splitRowsByContent numbers the candidates so that each set's are
 * consecutive: no list of members, 4 bytes per candidate in a set).
 */
export interface SetRows {
  count: number;
  start: Uint32Array;
  end: Uint32Array;
}

/**
 * The content split on rows: each candidate group split by what readKey
 * (policy.ts) says, parts of two or more kept. Candidates not read, or
 * locked (without --iunlink), take part in nothing, as readKey leaves them
 * out. Within a group, candidates are sorted by (hash, file flags,
 * project, xattrs) and cut where those change. Then the group's
 * candidates are numbered anew, its sets first (each set's members in a
 * row, in their order), the others after them in theirs: `cols` and
 * `inodes` (candidate m is inode m) are renumbered alike.
 */
export function splitRowsByContent(groups: GroupRows, cols: ReadColumns, policy: PolicyOptions, inodes: InodeRows): SetRows {
  const { hashHi, hashLo, attrs, state, xattrs } = cols;
  const cmp = (a: number, b: number): number => {
    if (hashHi[a] !== hashHi[b]) return hashHi[a]! < hashHi[b]! ? -1 : 1;
    if (hashLo[a] !== hashLo[b]) return hashLo[a]! < hashLo[b]! ? -1 : 1;
    const fa = fileFlags(attrs.flags(a)), fb = fileFlags(attrs.flags(b));
    if (fa !== fb) return fa < fb ? -1 : 1;
    const pa = attrs.projid(a), pb = attrs.projid(b);
    if (pa !== pb) return pa < pb ? -1 : 1;
    if (xattrs.size === 0) return 0; // no file carries xattrs (most hosts)
    const xa = xattrs.get(a) ?? '', xb = xattrs.get(b) ?? '';
    return xa < xb ? -1 : xa > xb ? 1 : 0;
  };
  const byKey = (a: number, b: number): number => cmp(a, b) || a - b;
  const take = (m: number) => (state[m]! & READ) !== 0 && (!!policy.iunlink || !isLocked(attrs.flags(m)));
  const starts: number[] = [], ends: number[] = [];
  let scratch = new Uint32Array(64), order = new Uint32Array(64), inSet = new Uint8Array(64);
  for (let g = 0; g < groups.count; g++) {
    const from = groups.start[g]!, to = groups.start[g + 1]!, size = to - from;
    if (size > scratch.length) {
      scratch = new Uint32Array(Math.max(size, scratch.length * 2));
      order = new Uint32Array(scratch.length);
      inSet = new Uint8Array(scratch.length);
    }
    let n = 0;
    for (let m = from; m < to; m++) if (take(m)) scratch[n++] = m;
    if (n < 2) continue;
    const part = scratch.subarray(0, n);
    // Most groups are one content: one comparison per member tells, and the
    // sort would leave them as they are (ascending, ties by candidate).
    let same = 1;
    while (same < n && cmp(part[0]!, part[same]!) === 0) same++;
    if (same < n) part.sort(byKey);
    inSet.fill(0, 0, size);
    let at = 0;
    for (let a = 0; a < n; ) {
      let b = same === n ? n : a + 1; // one content: one set, compared above
      while (b < n && cmp(part[a]!, part[b]!) === 0) b++;
      if (b - a >= 2) {
        starts.push(from + at);
        for (let k = a; k < b; k++) (order[at++] = part[k]!), (inSet[part[k]! - from] = 1);
        ends.push(from + at);
      }
      a = b;
    }
    if (at === 0) continue;
    for (let m = from; m < to; m++) if (!inSet[m - from]) order[at++] = m;
    permuteRead(cols, from, order, size);
    inodes.permute(from, order, size);
  }
  return { count: starts.length, start: Uint32Array.from(starts), end: Uint32Array.from(ends) };
}
