/*
 * Hash: one XXH64 per candidate inode, and its xattrs, to split groups by
 * content and extended attributes.
 *
 * XXH64 is fast, not collision resistant, and guests can forge collisions:
 * a hash match only nominates files, and the linker compares bytes before
 * any link. Each inode is read once, through a descriptor opened confined
 * beneath its root and checked against the scan (O_NOATIME so a report-only
 * run leaves atimes alone, O_NONBLOCK so a FIFO swapped in cannot hang us);
 * its xattrs are read through the same descriptor (see xattrs.ts). Reading
 * them here rather than in a stage of their own saves one open per file;
 * the price, hashing a file whose xattrs alone would have set it apart, is
 * rarely paid: almost no files carry xattrs.
 *
 * Reading from the page cache is a memory copy: a trip through libuv's pool
 * per read cost more than the read, so files are read synchronously into
 * one reused buffer per thread. Big candidate sets are spread over worker
 * threads (one per core, see hash-worker.ts), each taking batches of files;
 * small ones are hashed in this thread, where starting workers would cost
 * more than it saves. Files that fit in one buffer are hashed with the
 * one-shot h64Raw: the streaming object costs several times more per call,
 * which small files would feel.
 */
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import xxhash from 'xxhash-wasm';
import { displayPath, openRegular, relPath } from './confine.js';
import { codedError, fileError, type FileError } from './errors.js';
import { splitGroups } from './group.js';
import { sys, type Stat } from './sys.js';
import type { Inode } from './types.js';
import { xattrKey } from './xattrs.js';

export const CHUNK = 1 << 20;

export interface HashOptions {
  /** Worker threads; 0 hashes in this thread. Default: one per core for large sets. */
  workers?: number;
  onError(e: FileError): void;
  onProgress?(bytes: number): void;
}

type Hasher = Awaited<ReturnType<typeof xxhash>>;
let hasherPromise: Promise<Hasher> | undefined;
export const getHasher = (): Promise<Hasher> => (hasherPromise ??= xxhash());

/** Hash the open file `fd` of `size` bytes with `buf` as scratch. */
export function hashFd(h: Hasher, fd: number, size: number, buf: Buffer): bigint {
  if (size <= buf.length) return h.h64Raw(buf.subarray(0, readFully(fd, buf, size, 0)));
  const stream = h.create64();
  for (let pos = 0; pos < size; ) {
    const n = readFully(fd, buf, Math.min(buf.length, size - pos), pos);
    stream.update(buf.subarray(0, n));
    pos += n;
  }
  return stream.digest();
}

/** Read exactly `length` bytes at `pos`; a short file is ECHANGED. */
export function readFully(fd: number, buf: Buffer, length: number, pos: number): number {
  let got = 0;
  while (got < length) {
    const n = sys.readSync(fd, buf.subarray(got), length - got, pos + got);
    if (n === 0) throw codedError('ECHANGED', 'file shrank while being read');
    got += n;
  }
  return got;
}

/** One file to hash, as plain data a worker thread can receive. */
export interface HashJob {
  rootFd: number;
  rel: Uint8Array;
  stat: Stat;
}

export type HashResult = { hash: bigint; xattrs: string; elf: boolean } | { error: { code?: string; syscall?: string; message: string } };

/** Open (confined, checked against the scan) and hash one file, and read its xattrs. */
export function hashJob(h: Hasher, job: HashJob, buf: Buffer): HashResult {
  try {
    const rel = Buffer.from(job.rel.buffer, job.rel.byteOffset, job.rel.byteLength);
    const file = openRegular(job.rootFd, rel, job.stat);
    try {
      const xattrs = xattrKey(file.fd);
      const hash = hashFd(h, file.fd, file.stat.size, buf);
      return { xattrs, hash, elf: isElf(file.fd, file.stat.size, buf) };
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

/** Below this many bytes of candidates, workers are not worth starting. */
const WORKER_THRESHOLD = 64 << 20;
const BATCH_FILES = 256;

/**
 * Hash every inode of the groups and read its xattrs, then split the groups
 * by both. Inodes that already carry a hash (from the cache, see cache.ts)
 * are not read again.
 */
export async function splitByContent(groups: readonly Inode[][], opts: HashOptions): Promise<Inode[][]> {
  const inodes = groups.flat().filter((i) => i.hash === undefined);
  const bytes = inodes.reduce((sum, i) => sum + i.stat.size, 0);
  const workers = opts.workers ?? (bytes >= WORKER_THRESHOLD ? os.availableParallelism() : 0);
  const jobs = inodes.map((i): HashJob => ({ rootFd: i.paths[0]!.dir.root.fd, rel: relPath(i.paths[0]!), stat: i.stat }));
  const settle = (k: number, r: HashResult) => {
    const inode = inodes[k]!;
    if ('hash' in r) {
      inode.hash = r.hash;
      inode.xattrs = r.xattrs;
      inode.elf = r.elf;
      opts.onProgress?.(inode.stat.size);
    } else {
      opts.onError(fileError(displayPath(inode.paths[0]!), Object.assign(new Error(r.error.message), r.error)));
    }
  };
  if (workers === 0) {
    const h = await getHasher();
    const buf = Buffer.allocUnsafe(CHUNK);
    jobs.forEach((job, k) => settle(k, hashJob(h, job, buf)));
  } else {
    await inWorkers(jobs, workers, settle);
  }
  return splitGroups(groups, (inode) => (inode.hash === undefined ? undefined : `${inode.hash.toString(16)}\0${inode.xattrs}`));
}

/** Hand batches of jobs to `count` worker threads, each taking the next batch when done. */
async function inWorkers(jobs: HashJob[], count: number, settle: (k: number, r: HashResult) => void): Promise<void> {
  let next = 0;
  // Under the test runner this module is TypeScript source, which a worker
  // cannot load: use the compiled worker (npm test builds dist/ first).
  const url = import.meta.url.endsWith('.ts')
    ? new URL('../dist/hash-worker.js', import.meta.url)
    : new URL('./hash-worker.js', import.meta.url);
  await Promise.all(
    Array.from({ length: count }, async () => {
      const worker = new Worker(url);
      try {
        for (;;) {
          const start = next;
          if (start >= jobs.length) break;
          next = Math.min(jobs.length, start + BATCH_FILES);
          const results = await new Promise<HashResult[]>((resolve, reject) => {
            worker.once('message', resolve);
            worker.once('error', reject);
            worker.postMessage(jobs.slice(start, next));
          });
          worker.removeAllListeners('error');
          results.forEach((r, k) => settle(start + k, r));
        }
      } finally {
        await worker.terminate();
      }
    }),
  );
}
