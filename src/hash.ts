/*
 * Hash: one XXH64 per candidate inode, to split groups by content.
 *
 * XXH64 is fast, not collision resistant, and guests can forge collisions:
 * a hash match only nominates files, and the linker compares bytes before
 * any link. Each inode is read once, through a descriptor opened confined
 * beneath its root and checked against the scan (O_NOATIME so a report-only
 * run leaves atimes alone, O_NONBLOCK so a FIFO swapped in cannot hang us).
 *
 * Reads are asynchronous on libuv's pool with a bounded number of files in
 * flight, each with its own reused buffer. Files that fit in one buffer are
 * hashed with the one-shot h64Raw: the streaming object costs several times
 * more per call, which small files would feel.
 */
import pLimit from 'p-limit';
import xxhash from 'xxhash-wasm';
import { displayPath, openScanned } from './confine.js';
import { codedError, fileError, type FileError } from './errors.js';
import { splitGroups } from './group.js';
import { sys } from './sys.js';
import type { Inode } from './types.js';

export const CHUNK = 1 << 20;

export interface HashOptions {
  /** Files read at once. */
  concurrency?: number;
  onError(e: FileError): void;
  onProgress?(bytes: number): void;
}

type Hasher = Awaited<ReturnType<typeof xxhash>>;
let hasherPromise: Promise<Hasher> | undefined;
export const getHasher = (): Promise<Hasher> => (hasherPromise ??= xxhash());

/** Hash the open file `fd` of `size` bytes with `buf` as scratch. */
export async function hashFd(h: Hasher, fd: number, size: number, buf: Buffer): Promise<bigint> {
  if (size <= buf.length) {
    const n = await readFully(fd, buf, size, 0);
    return h.h64Raw(buf.subarray(0, n));
  }
  const stream = h.create64();
  for (let pos = 0; pos < size; ) {
    const n = await readFully(fd, buf, Math.min(buf.length, size - pos), pos);
    stream.update(buf.subarray(0, n));
    pos += n;
  }
  return stream.digest();
}

/** Read exactly `length` bytes at `pos`, synchronously; a short file is ECHANGED. */
export function readFullySync(fd: number, buf: Buffer, length: number, pos: number): number {
  let got = 0;
  while (got < length) {
    const n = sys.readSync(fd, buf.subarray(got), length - got, pos + got);
    if (n === 0) throw codedError('ECHANGED', 'file shrank while being read');
    got += n;
  }
  return got;
}

/** Read exactly `length` bytes at `pos`; a short file is ECHANGED. */
export async function readFully(fd: number, buf: Buffer, length: number, pos: number): Promise<number> {
  let got = 0;
  while (got < length) {
    const n = await sys.read(fd, buf.subarray(got), length - got, pos + got);
    if (n === 0) throw codedError('ECHANGED', 'file shrank while being read');
    got += n;
  }
  return got;
}

/** Hash every inode of the groups, then split the groups by hash. */
export async function splitByHash(groups: readonly Inode[][], opts: HashOptions): Promise<Inode[][]> {
  const h = await getHasher();
  const slots = opts.concurrency ?? 4;
  const limit = pLimit(slots);
  const free: Buffer[] = Array.from({ length: slots }, () => Buffer.allocUnsafe(CHUNK));
  const jobs: Promise<void>[] = [];
  for (const group of groups) {
    for (const inode of group) {
      jobs.push(
        limit(async () => {
          const buf = free.pop()!;
          const f = inode.paths[0]!;
          try {
            const file = openScanned(f);
            try {
              inode.hash = await hashFd(h, file.fd, file.stat.size, buf);
            } finally {
              sys.close(file.fd);
            }
            opts.onProgress?.(inode.stat.size);
          } catch (er) {
            opts.onError(fileError(displayPath(f), er));
          } finally {
            free.push(buf);
          }
        }),
      );
    }
  }
  await Promise.all(jobs);
  return splitGroups(groups, (inode) => inode.hash);
}
