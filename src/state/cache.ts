/*
 * Hash cache: what a nightly run learned about each inode's content, so the
 * next run reads only what changed.
 *
 * An entry maps (dev, ino) to the keyed XXH64 of the content, the encoded
 * xattrs, the inode flags and the project ID, and is valid only while
 * size, mtime (ns) and ctime (ns) are what they were when the file was
 * read: a write changes mtime and ctime, an xattr, owner, mode, chattr or
 * project change changes ctime, and no guest can set ctime (utimensat sets
 * it to "now"). A reused inode number gets a new ctime too.
 *
 * The hashes are only meaningful under the key they were made with
 * (state/hash-key.ts): the header records the key's fingerprint, and a
 * cache written under another key is discarded with a warning.
 * The cache only nominates, like the hash itself: the linker still compares
 * every byte before a link, so a wrong entry can at worst hide a duplicate
 * or cost an EDIFFERENT, never join different files.
 *
 * Racy entries: a file changed in the same clock tick as it was read could
 * keep its ctime across the change (timestamps are coarse on most kernels),
 * so files whose ctime is within RACY_SECONDS (far more than a clock tick)
 * of the hashing are not cached (git's "racily clean" rule). Linking changes a canonical's ctime; the
 * linker's own fstat right after the link refreshes its entry (refresh()).
 *
 * File: binary, little-endian, written to a temp file and renamed over the
 * old one (atomic), under an flock so two runs over disjoint roots merge
 * rather than lose each other's entries. Anything that does not check out
 * (missing, short, wrong magic or version, bad checksum) is discarded with a
 * warning and the run hashes as if there were no cache: never trusted,
 * never a crash.
 *
 *   header   "VUNIFYHC" u32 version u32 entryCount, 8 bytes key fingerprint
 *   roots    u32 n, then n × (u16 len, bytes "dev:ino:path" of a root directory)
 *   xattrs   u32 n, then n × (u32 len, bytes): distinct xattr digests (64 hex
 *            digits, never the names and values); index 0 is "" (no xattrs)
 *   entries  entryCount × 72 bytes: dev u64, ino u64, size u64, mtimeSec i64,
 *            ctimeSec i64, mtimeNsec u32, ctimeNsec u32, hash u64,
 *            xattrIdx u32, rootIdx u32 (bit 31: ELF known, bit 30: ELF),
 *            inode flags u32, project ID u32
 *   footer   u64 XXH64 of everything before it
 *
 * 72 bytes per inode plus a few for the tables: about 69 MiB per million
 * files on disk, and roughly three times that in memory while a run holds it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { errorCode } from '../core/errors.js';
import { LOCK_EX, O, sys } from '../os/sys.js';
import type { Inode, Root } from '../core/types.js';
import type { Stat } from '../core/stat.js';
import { getHasher } from '../core/xxhash.js';
import { openStateFile } from './state-dir.js';

/** Run `fn` with the cache file's directory open (not following a symlink at its last component) and the file's name. */
function withDir<T>(file: string, fn: (dirFd: number, base: string) => T): T {
  const dirFd = sys.open(path.dirname(path.resolve(file)), O.RDONLY | O.DIRECTORY | O.CLOEXEC);
  try {
    return fn(dirFd, path.basename(file));
  } finally {
    sys.close(dirFd);
  }
}

/**
 * 5: keyed hashes, the key's fingerprint, inode flags and project ID (older
 * caches hold unkeyed hashes: discarded).
 * 4: xattrs are kept as a digest (SHA-256, see pipeline/xattrs.ts), and the
 * content hash counts whole zero MiBs as markers (native/extents.c); older
 * files are discarded, since their keys and some hashes mean other things.
 * 3: whether the content is ELF; 2: roots are named by dev, ino and path.
 */
export const CACHE_VERSION = 5;
/** In an entry's root index (format 3): the ELF flag is known, and what it is. */
const ELF_KNOWN = 2 ** 31;
const ELF_YES = 2 ** 30;
export const CACHE_FILE = 'hashes.cache';
const MAGIC = Buffer.from('VUNIFYHC');
const ENTRY = 72;
const HEADER = 24;
const RACY_SECONDS = 1;

export interface Cached {
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  ctimeSec: number;
  ctimeNsec: number;
  hash: bigint;
  xattrs: string;
  flags: number;
  projid: number;
  /** Identity ("dev:ino") of the root the inode was last seen under. */
  root: string;
  /** The content starts with the ELF magic; undefined when not recorded. */
  elf?: boolean;
}

export const inodeKey = (s: { dev: number; ino: number }): string => `${s.dev}:${s.ino}`;
/** A root as the cache names it: "dev:ino:path", so a save can tell a root that is gone. */
export const rootKey = (r: Root): string => `${r.dev}:${r.ino}:${r.path}`;

/** Whether the root a cache entry came from still exists (same path, same directory). */
function rootStillThere(key: string): boolean {
  const [dev, ino] = key.split(':', 2);
  const where = key.slice(`${dev}:${ino}:`.length);
  try {
    const st = fs.lstatSync(where);
    return st.isDirectory() && String(st.dev) === dev && String(st.ino) === ino;
  } catch {
    return false;
  }
}

function valid(e: Cached, s: Stat): boolean {
  return (
    e.size === s.size &&
    e.mtimeSec === s.mtimeSec &&
    e.mtimeNsec === s.mtimeNsec &&
    e.ctimeSec === s.ctimeSec &&
    e.ctimeNsec === s.ctimeNsec
  );
}

export class HashCache {
  readonly entries = new Map<string, Cached>();

  /** @param key fingerprint of the hash key its hashes are made under (state/hash-key.ts) */
  constructor(readonly key: string) {}

  /** The cached hash and xattrs of an inode, if the entry is still valid for `stat`. */
  lookup(stat: Stat): Cached | undefined {
    const e = this.entries.get(inodeKey(stat));
    return e && valid(e, stat) ? e : undefined;
  }

  /** Remember what was just read from a file with `stat`, unless it is too fresh to trust. */
  put(stat: Stat, read: { hash: bigint; xattrs: string; flags: number; projid: number; elf?: boolean }, root: string, readAtSec: number): void {
    if (stat.ctimeSec + stat.ctimeNsec / 1e9 > readAtSec - RACY_SECONDS) return;
    const { size, mtimeSec, mtimeNsec, ctimeSec, ctimeNsec } = stat;
    const { hash, xattrs, flags, projid, elf } = read;
    this.entries.set(inodeKey(stat), { size, mtimeSec, mtimeNsec, ctimeSec, ctimeNsec, hash, xattrs, flags, projid, root, elf });
  }

  /**
   * Drop an inode's entry: the linker found its bytes differ from a file the
   * cache said was identical. Size, mtime and ctime cannot tell every write:
   * one through a shared mapping to a page already dirty changes none of
   * them. The next run reads the file again.
   */
  forget(id: { dev: number; ino: number }): void {
    this.entries.delete(inodeKey(id));
  }

  /**
   * After vunify linked to an inode, fstat shows a new ctime (its link count
   * changed) and nothing else: carry the entry over to it. A size or mtime
   * change means the content may have changed too: drop the entry instead.
   */
  refresh(stat: Stat): void {
    const key = inodeKey(stat);
    const e = this.entries.get(key);
    if (!e) return;
    if (e.size === stat.size && e.mtimeSec === stat.mtimeSec && e.mtimeNsec === stat.mtimeNsec) {
      this.entries.set(key, { ...e, ctimeSec: stat.ctimeSec, ctimeNsec: stat.ctimeNsec });
    } else {
      this.entries.delete(key);
    }
  }

  /**
   * Drop entries of inodes that no longer exist: for the roots of this run,
   * keep entries of inodes seen in this walk (lookup() still checks each
   * against the file's stat); entries of other roots are kept as they are
   * (another run looks after them).
   */
  prune(roots: readonly Root[], seen: Iterable<Pick<Inode, 'stat' | 'paths'>>): void {
    const ours = new Set(roots.map(rootKey));
    const keep = new Map<string, Cached>();
    for (const inode of seen) {
      const k = inodeKey(inode.stat);
      const e = this.entries.get(k);
      if (e) keep.set(k, { ...e, root: rootKey(inode.paths[0]!.dir.root) });
    }
    for (const [k, e] of this.entries) if (!ours.has(e.root) && !keep.has(k)) keep.set(k, e);
    this.entries.clear();
    for (const [k, e] of keep) this.entries.set(k, e);
  }
}

export class CacheError extends Error {
  override name = 'CacheError';
}

/**
 * Read a cache file; throws CacheError (or an fs error) if it cannot be
 * trusted, or was written under another key than `key` (a fingerprint).
 */
export async function readCache(file: string, key: string): Promise<HashCache> {
  const buf = withDir(file, (dirFd, base) => {
    const fd = openStateFile(dirFd, base, O.RDONLY);
    try {
      return fs.readFileSync(fd);
    } finally {
      sys.close(fd);
    }
  });
  const bad = (why: string) => new CacheError(why);
  if (buf.length < HEADER + 8 || !buf.subarray(0, 8).equals(MAGIC)) throw bad('not a vunify hash cache');
  const version = buf.readUInt32LE(8);
  if (version !== CACHE_VERSION) throw bad(`written by another version of vunify (format ${version}, this one reads ${CACHE_VERSION})`);
  const h = await getHasher();
  const body = buf.subarray(0, buf.length - 8);
  if (h.h64Raw(body) !== buf.readBigUInt64LE(buf.length - 8)) throw bad('checksum mismatch (truncated or corrupt)');
  const written = buf.subarray(16, 24).toString('hex');
  if (written !== key) throw bad(`written under another hash key (fingerprint ${written}, this run's is ${key})`);
  const count = buf.readUInt32LE(12);
  let off = HEADER;
  const need = (n: number) => {
    if (off + n > body.length) throw bad('truncated');
  };
  const table = (lenBytes: 2 | 4): string[] => {
    need(4);
    const n = buf.readUInt32LE(off);
    off += 4;
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      need(lenBytes);
      const len = lenBytes === 2 ? buf.readUInt16LE(off) : buf.readUInt32LE(off);
      off += lenBytes;
      need(len);
      out.push(buf.toString('utf8', off, off + len));
      off += len;
    }
    return out;
  };
  const roots = table(2);
  const xattrs = table(4);
  if (off + count * ENTRY !== body.length) throw bad('entry count does not match the file size');
  const cache = new HashCache(key);
  const u64 = (o: number) => buf.readUInt32LE(o) + buf.readUInt32LE(o + 4) * 2 ** 32;
  for (let i = 0; i < count; i++, off += ENTRY) {
    const x = xattrs[buf.readUInt32LE(off + 56)];
    const rootWord = buf.readUInt32LE(off + 60);
    const elfKnown = rootWord >= ELF_KNOWN;
    const root = roots[rootWord % ELF_YES];
    if (x === undefined || root === undefined) throw bad('entry refers to a missing table row');
    cache.entries.set(`${u64(off)}:${u64(off + 8)}`, {
      size: u64(off + 16),
      mtimeSec: Number(buf.readBigInt64LE(off + 24)),
      ctimeSec: Number(buf.readBigInt64LE(off + 32)),
      mtimeNsec: buf.readUInt32LE(off + 40),
      ctimeNsec: buf.readUInt32LE(off + 44),
      hash: buf.readBigUInt64LE(off + 48),
      xattrs: x,
      flags: buf.readUInt32LE(off + 64),
      projid: buf.readUInt32LE(off + 68),
      root,
      elf: elfKnown ? (rootWord & ELF_YES) !== 0 : undefined,
    });
  }
  return cache;
}

export async function encodeCache(cache: HashCache): Promise<Buffer> {
  const roots = new Map<string, number>();
  const xattrs = new Map<string, number>([['', 0]]);
  const index = (m: Map<string, number>, k: string) => m.get(k) ?? (m.set(k, m.size), m.size - 1);
  const entries = Buffer.alloc(cache.entries.size * ENTRY);
  let off = 0;
  for (const [key, e] of cache.entries) {
    // Numbers below 2^53 written as two u32 halves: BigInt per entry cost ~3 s per million.
    const colon = key.indexOf(':');
    putU64(entries, Number(key.slice(0, colon)), off);
    putU64(entries, Number(key.slice(colon + 1)), off + 8);
    putU64(entries, e.size, off + 16);
    entries.writeBigInt64LE(BigInt(e.mtimeSec), off + 24);
    entries.writeBigInt64LE(BigInt(e.ctimeSec), off + 32);
    entries.writeUInt32LE(e.mtimeNsec, off + 40);
    entries.writeUInt32LE(e.ctimeNsec, off + 44);
    entries.writeBigUInt64LE(e.hash, off + 48);
    entries.writeUInt32LE(index(xattrs, e.xattrs), off + 56);
    entries.writeUInt32LE(index(roots, e.root) + (e.elf === undefined ? 0 : ELF_KNOWN + (e.elf ? ELF_YES : 0)), off + 60);
    entries.writeUInt32LE(e.flags >>> 0, off + 64);
    entries.writeUInt32LE(e.projid >>> 0, off + 68);
    off += ENTRY;
  }
  const fingerprint = Buffer.from(cache.key.padEnd(16, '0').slice(0, 16), 'hex');
  const parts: Buffer[] = [MAGIC, u32(CACHE_VERSION), u32(cache.entries.size), fingerprint, u32(roots.size)];
  for (const r of roots.keys()) {
    const b = Buffer.from(r);
    parts.push(Buffer.from([b.length & 0xff, b.length >> 8]), b);
  }
  parts.push(u32(xattrs.size));
  for (const x of xattrs.keys()) {
    const b = Buffer.from(x);
    parts.push(u32(b.length), b);
  }
  parts.push(entries);
  const body = Buffer.concat(parts);
  const sum = Buffer.alloc(8);
  sum.writeBigUInt64LE((await getHasher()).h64Raw(body));
  return Buffer.concat([body, sum]);
}

function putU64(buf: Buffer, n: number, off: number): void {
  buf.writeUInt32LE(n % 2 ** 32, off);
  buf.writeUInt32LE(Math.floor(n / 2 ** 32), off + 4);
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

/**
 * Load the cache at `file`; anything wrong means an empty cache and one
 * warning. A missing file is the normal first run: a note, not a warning.
 */
export async function loadCache(file: string, key: string, warn: (message: string) => void, note: (message: string) => void = warn): Promise<HashCache> {
  try {
    return await readCache(file, key);
  } catch (er) {
    if (errorCode(er) === 'ENOENT') note(`${file}: no hash cache yet; every candidate file is read`);
    else warn(`${file}: hash cache discarded: ${(er as Error).message}`);
    return new HashCache(key);
  }
}

/**
 * Write the cache atomically. Under an exclusive flock on FILE.lock, entries
 * another run saved meanwhile for roots this run did not scan are merged in.
 */
export async function saveCache(file: string, cache: HashCache, roots: readonly Root[]): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const dirFd = sys.open(path.dirname(file), O.RDONLY | O.DIRECTORY | O.CLOEXEC);
  const base = path.basename(file);
  let lock: number;
  try {
    // Never follows a symlink nor blocks on a FIFO put at the lock's name.
    lock = openStateFile(dirFd, `${base}.lock`, O.RDWR | O.CREAT);
  } catch (er) {
    sys.close(dirFd);
    throw er;
  }
  try {
    sys.flock(lock, LOCK_EX);
    const ours = new Set(roots.map(rootKey));
    try {
      const disk = await readCache(file, cache.key); // under another key: not merged
      for (const [k, e] of disk.entries) if (!ours.has(e.root) && !cache.entries.has(k)) cache.entries.set(k, e);
    } catch {
      // Nothing usable on disk: ours is all there is.
    }
    // Entries of roots that are gone (a guest removed, a copy deleted) would
    // otherwise stay forever, loaded and rewritten by every run.
    const there = new Map<string, boolean>();
    for (const [k, e] of cache.entries) {
      if (ours.has(e.root)) continue;
      let ok = there.get(e.root);
      if (ok === undefined) there.set(e.root, (ok = rootStillThere(e.root)));
      if (!ok) cache.entries.delete(k);
    }
    // Under the lock no other run is writing: temporary files here are a killed run's.
    const prefix = base + '.tmp.';
    for (const name of fs.readdirSync(path.dirname(file))) {
      if (!name.startsWith(prefix)) continue;
      try {
        sys.unlinkAt(dirFd, Buffer.from(name)); // a directory under that name (EISDIR) is left alone
      } catch {
        // gone already, or not ours to remove
      }
    }
    const tmp = Buffer.from(`${prefix}${process.pid}.${randomBytes(4).toString('hex')}`);
    const fd = openStateFile(dirFd, tmp.toString(), O.WRONLY | O.CREAT | O.EXCL);
    try {
      fs.writeFileSync(fd, await encodeCache(cache));
      sys.fsync(fd);
    } catch (er) {
      sys.close(fd);
      try {
        sys.unlinkAt(dirFd, tmp);
      } catch {
        // nothing left to remove
      }
      throw er;
    }
    sys.close(fd);
    sys.renameAt(dirFd, tmp, dirFd, Buffer.from(base));
  } finally {
    sys.close(lock);
    sys.close(dirFd);
  }
}
