/*
 * Hash cache: what earlier runs learned about each inode's content, so the
 * next run reads only what changed, and pays only for the roots it covers.
 *
 * An entry maps an inode to the keyed XXH3-64 of the content, the encoded
 * xattrs (a digest), the inode flags, the project ID and whether the content
 * is ELF, and is valid only while size, mtime (ns) and ctime (ns) are what
 * they were when the file was read: a write changes mtime and ctime, an
 * xattr, owner, mode, chattr or project change changes ctime, and no guest
 * can set ctime (utimensat sets it to "now"). A reused inode number gets a
 * new ctime too. The hashes mean something only under the key they were
 * made with (state/hash-key.ts): each shard records the key's fingerprint.
 * The cache only nominates, like the hash: the linker still compares every
 * byte before a link, so a wrong entry can at worst hide a duplicate or
 * cost an EDIFFERENT, never join different files.
 *
 * One shard per root (its identity: dev, ino and path, rootKey()), in the
 * cache directory (default STATE_DIR/cache), named by a hash of that key.
 * A run opens only its roots' shards and rewrites only those it changed.
 * A shard is never held in memory: it is sorted by inode number, and a run
 * reads it once, front to back through one block-sized buffer, against its
 * own files of that root sorted the same way (match(): a merge join). What
 * the run adds (put), refreshes or forgets goes to a delta; a save merges
 * the old shard, read the same way, with the delta into a new file written
 * block by block to a temporary name, fsynced, renamed over the old one,
 * and the directory fsynced. A root's first shard (no file yet, nothing
 * refreshed or forgotten on its device) is written from the delta alone,
 * the same bytes without the merge's steps per entry (writeDelta). The entries of inodes the run no longer found
 * under a root are noted during match() (only their inode numbers) and
 * left out by that merge. No hash table anywhere: the keys are inode
 * numbers and times a guest controls, and nothing it does may make a lookup
 * slow; a shard holds at most one entry per inode of its root.
 *
 * Racy entries: a file changed in the same clock tick as it was read could
 * keep its ctime across the change, so files whose ctime is within
 * RACY_SECONDS of the hashing are not cached (git's "racily clean" rule).
 * Linking changes a canonical's ctime; the linker's own fstat right after
 * the link refreshes its entry in every shard of the run (refresh()); entries
 * of that inode in other roots' shards simply miss next time.
 *
 * A shard that does not check out (short, wrong magic or format, bad
 * checksum, another root's, another key's, unsorted) is ignored with a
 * warning and rebuilt by the next save: never trusted, never a crash. A
 * shard of an older format is replaced (a note with -v).
 *
 * Shard (format 9), little-endian:
 *   header   "VUNIFYHS", u32 format, u32 header length (48 + root key,
 *            padded to 8, + 8), 8 bytes key fingerprint, u32 entry count,
 *            u32 class count, u32 class table length, u32 root key length,
 *            u32 entries per block, u32 zero, the root key ("dev:ino:path"),
 *            zero padding, u64 XXH64 (seed 0) of the header before it
 *   entries  count × 40 bytes, sorted by inode number, no two alike, in
 *            blocks of (entries per block) each followed by its u64 XXH64:
 *            ino u64, size u48, class u16, mtime u64, ctime u64, hash u64
 *            (the content hash, native/extents.c: keyed XXH3-64 with a
 *            keyed zero-run marker since format 9; format 8 had a public
 *            marker, 7 and before keyed XXH64, so neither is read);
 *            a time is (sec << 30 | nsec) as a signed 64-bit number (exact,
 *            whatever the nanoseconds; seconds within ±2^33, about 272 years
 *            of 1970: a file outside that, or of 2^48 bytes or more, is not
 *            cached). The device is the root's (a root never crosses a mount).
 *   classes  what files share besides the content: u32 flags, u32 projid,
 *            u8 elf (0 unknown, 1 no, 2 yes), u8 zero, u16 xattrs length,
 *            the xattr digest (ASCII); then u64 XXH64 of the table. At most
 *            65,536 per shard: past that a new kind of file is not cached.
 *
 * Beside the shards: `roots`, the keys of the roots that have one (so a
 * save can drop the shard of a root that is gone without opening it), and
 * `lock`, held while saving. The single-file cache of format 5
 * (STATE_DIR/hashes.cache) is not read: the first save removes it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { errorCode } from '../core/errors.js';
import { LOCK_EX, O, sys } from '../os/sys.js';
import type { Inode, Root } from '../core/types.js';
import type { Stat } from '../core/stat.js';
import { openStateFile } from './state-dir.js';

/** 9: the zero-run marker of the content hash is keyed (8: XXH3-64 with a public marker; 7: XXH64, 40-byte entries without the device, classes in a side table, checksummed blocks read as a stream; 6: 72-byte entries read whole; 5: one file, hashes.cache). */
export const CACHE_FORMAT = 9;
/** The roots file's own format (unchanged since shards came, format 6). */
const ROOTS_FORMAT = 6;
/** The cache directory's name in the state directory. */
export const CACHE_DIR = 'cache';
/** The single-file cache of format 5 and older, removed at the first save. */
export const OLD_CACHE_FILE = 'hashes.cache';
const MAGIC = Buffer.from('VUNIFYHS');
const ROOTS_MAGIC = Buffer.from('VUNIFYHR');
const ROOTS_FILE = 'roots';
const LOCK_FILE = 'lock';
const HEAD = 48;
const REC = 40;
/** Entries per block: what a reader or writer holds at once (40 KiB). */
const BLOCK = 1024;
const MAX_CLASSES = 0x10000;
/** Classes a writer compares field by field before it makes a key string to look one up. */
const FEW_CLASSES = 8;
/** Records are little-endian: a host of that order can write their words as they are in memory. */
const LITTLE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
const RACY_SECONDS = 1;
const TWO32 = 2 ** 32;
const TWO30 = 2 ** 30;
const MAX_SIZE = 2 ** 48;
const MAX_SEC = 2 ** 33;
const MAX_XATTRS_LEN = 0xffff;

export const ELF_UNKNOWN = 0;
export const ELF_NO = 1;
export const ELF_YES = 2;

// Field offsets in an entry.
const F_SIZE = 8;
const F_SIZE_HI = 12;
const F_CLASS = 14;
const F_MTIME = 16;
const F_CTIME = 24;
const F_HASH = 32;

/** A valid entry, as an object (the object API: tests, and callers that hold few). */
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
  /** The content starts with the ELF magic; undefined when not recorded. */
  elf?: boolean;
}

/** What entries share besides their content: one per distinct kind of file in a shard. */
interface Klass {
  flags: number;
  projid: number;
  elf: number;
  xattrs: string;
}
const classKey = (c: Klass): string => `${c.flags}:${c.projid}:${c.elf}:${c.xattrs}`;

export const inodeKey = (s: { dev: number; ino: number }): string => `${s.dev}:${s.ino}`;
/** A root as the cache names it: "dev:ino:path", so a save can tell a root that is gone. */
export const rootKey = (r: Pick<Root, 'dev' | 'ino' | 'path'>): string => `${r.dev}:${r.ino}:${r.path}`;
/** The file name of a root's shard: no path bytes of the root in it, a fixed length. */
export const shardName = (key: string): string => `${createHash('sha256').update(key).digest('hex').slice(0, 32)}.shard`;

export class CacheError extends Error {
  override name = 'CacheError';
}
/** A shard of an older format: replaced, worth a note only. */
class OldFormat extends CacheError {}

const u64At = (dv: DataView, o: number): number => dv.getUint32(o + 4, true) * TWO32 + dv.getUint32(o, true);
function setU64(dv: DataView, o: number, n: number): void {
  dv.setUint32(o, n % TWO32, true);
  dv.setUint32(o + 4, Math.floor(n / TWO32), true);
}
/** The low and high words of a time as stored: sec << 30 | nsec, signed. */
const timeLo = (sec: number, nsec: number): number => (sec - Math.floor(sec / 4) * 4) * TWO30 + nsec;
const timeHi = (sec: number): number => Math.floor(sec / 4);
const secAt = (dv: DataView, o: number): number => dv.getInt32(o + 4, true) * 4 + (dv.getUint32(o, true) >>> 30);
const nsecAt = (dv: DataView, o: number): number => dv.getUint32(o, true) & (TWO30 - 1);
const storable = (sec: number, nsec: number): boolean => Number.isInteger(sec) && sec >= -MAX_SEC && sec < MAX_SEC && Number.isInteger(nsec) && nsec >= 0 && nsec < 1e9;

/**
 * One entry of a shard as match() passes it: a view on the reader's block,
 * valid only during the call (one object for the whole read, so a lookup
 * allocates nothing).
 */
export class CacheEntry {
  /** @internal */ dv: DataView = new DataView(new ArrayBuffer(0));
  /** @internal */ o = 0;
  /** @internal */ cls: Klass = { flags: 0, projid: 0, elf: 0, xattrs: '' };

  /** Size, mtime and ctime are what the entry was made for: its hash describes this file. */
  valid(size: number, mtimeSec: number, mtimeNsec: number, ctimeSec: number, ctimeNsec: number): boolean {
    const dv = this.dv;
    const o = this.o;
    return (
      dv.getUint32(o + F_SIZE, true) + dv.getUint16(o + F_SIZE_HI, true) * TWO32 === size &&
      dv.getUint32(o + F_MTIME, true) === timeLo(mtimeSec, mtimeNsec) &&
      dv.getInt32(o + F_MTIME + 4, true) === timeHi(mtimeSec) &&
      dv.getUint32(o + F_CTIME, true) === timeLo(ctimeSec, ctimeNsec) &&
      dv.getInt32(o + F_CTIME + 4, true) === timeHi(ctimeSec)
    );
  }
  get hashHi(): number {
    return this.dv.getUint32(this.o + F_HASH + 4, true);
  }
  get hashLo(): number {
    return this.dv.getUint32(this.o + F_HASH, true);
  }
  get flags(): number {
    return this.cls.flags;
  }
  get projid(): number {
    return this.cls.projid;
  }
  /** ELF_UNKNOWN, ELF_NO or ELF_YES. */
  get elf(): number {
    return this.cls.elf;
  }
  /** The xattr digest ("" for none). */
  get xattrs(): string {
    return this.cls.xattrs;
  }
}

/** A column twice as long, its contents kept (the delta's and the edits' growth). */
function grow<T extends Float64Array | Uint32Array | Uint8Array>(a: T): T {
  const b = new (a.constructor as new (n: number) => T)(a.length * 2);
  b.set(a);
  return b;
}

/** Growable columns of the entries a run added to one shard (the device is the root's). */
class Delta {
  n = 0;
  ino = new Float64Array(16);
  size = new Float64Array(16);
  msec = new Float64Array(16);
  csec = new Float64Array(16);
  mns = new Uint32Array(16);
  cns = new Uint32Array(16);
  hashHi = new Uint32Array(16);
  hashLo = new Uint32Array(16);
  flags = new Uint32Array(16);
  projid = new Uint32Array(16);
  elf = new Uint8Array(16);
  xattrs: string[] = [];
  /** Row numbers sorted by ino, the last put of an inode only; undefined after a put. */
  order: Uint32Array | undefined;

  push(): number {
    if (this.n === this.ino.length) {
      this.ino = grow(this.ino);
      this.size = grow(this.size);
      this.msec = grow(this.msec);
      this.csec = grow(this.csec);
      this.mns = grow(this.mns);
      this.cns = grow(this.cns);
      this.hashHi = grow(this.hashHi);
      this.hashLo = grow(this.hashLo);
      this.flags = grow(this.flags);
      this.projid = grow(this.projid);
      this.elf = grow(this.elf);
    }
    this.order = undefined;
    return this.n++;
  }

  sorted(): Uint32Array {
    if (this.order) return this.order;
    const n = this.n;
    const all = new Uint32Array(n);
    // Ties by row, so the last put of an inode is the last of its run of equal keys.
    // One numeric sort of (ino, row) keys, the row in the low bits, when they
    // fit a double exactly: no comparator called per pair, in code that runs
    // once per process (a new root's save sorts thousands of puts).
    const P = 2 ** Math.max(1, Math.ceil(Math.log2(n + 1)));
    let most = 0;
    for (let r = 0; r < n; r++) if (this.ino[r]! > most) most = this.ino[r]!;
    if (most < 2 ** 53 / P) {
      const keys = new Float64Array(n);
      for (let r = 0; r < n; r++) keys[r] = this.ino[r]! * P + r;
      keys.sort();
      for (let i = 0; i < n; i++) all[i] = keys[i]! % P;
    } else {
      for (let i = 0; i < n; i++) all[i] = i;
      all.sort((a, b) => this.ino[a]! - this.ino[b]! || a - b);
    }
    let k = 0;
    for (let i = 0; i < all.length; i++) {
      const r = all[i]!;
      const next = all[i + 1];
      if (next !== undefined && this.ino[next] === this.ino[r]) continue;
      all[k++] = r;
    }
    return (this.order = all.subarray(0, k));
  }
}

const REFRESH = 1;
const FORGET = 2;

/** refresh() and forget() calls, applied to every shard of their device at save, in the order made. */
class Edits {
  n = 0;
  dev = new Float64Array(16);
  ino = new Float64Array(16);
  size = new Float64Array(16);
  msec = new Float64Array(16);
  csec = new Float64Array(16);
  mns = new Uint32Array(16);
  cns = new Uint32Array(16);
  kind = new Uint8Array(16);

  push(kind: number, dev: number, ino: number, size: number, msec: number, mns: number, csec: number, cns: number): void {
    // The linker refreshes a canonical once per file it links to it: one edit will do.
    const last = this.n - 1;
    let r = last;
    if (!(last >= 0 && this.kind[last] === kind && this.dev[last] === dev && this.ino[last] === ino)) {
      if (this.n === this.dev.length) {
        this.dev = grow(this.dev);
        this.ino = grow(this.ino);
        this.size = grow(this.size);
        this.msec = grow(this.msec);
        this.csec = grow(this.csec);
        this.mns = grow(this.mns);
        this.cns = grow(this.cns);
        this.kind = grow(this.kind);
      }
      r = this.n++;
    }
    this.order = undefined;
    this.kind[r] = kind;
    this.dev[r] = dev;
    this.ino[r] = ino;
    this.size[r] = size;
    this.msec[r] = msec;
    this.mns[r] = mns;
    this.csec[r] = csec;
    this.cns[r] = cns;
  }

  /** All edits by (dev, ino), each inode's in the order made; made once per save, undefined after a push. */
  private order: Uint32Array | undefined;

  /** The edits of one device, by ino, each inode's in the order made (a view on one sort of them all). */
  of(dev: number): Uint32Array {
    if (!this.order) {
      const all = new Uint32Array(this.n);
      for (let r = 0; r < this.n; r++) all[r] = r;
      this.order = all.sort((a, b) => this.dev[a]! - this.dev[b]! || this.ino[a]! - this.ino[b]! || a - b);
    }
    const o = this.order;
    const first = (d: number) => {
      let lo = 0;
      let hi = o.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (this.dev[o[mid]!]! < d) lo = mid + 1;
        else hi = mid;
      }
      return lo;
    };
    // Device numbers are integers: the next one's first edit ends this one's.
    return o.subarray(first(dev), first(dev + 1));
  }

  has(dev: number): boolean {
    return this.of(dev).length > 0;
  }
}

/** One root's shard: what is known of its file, and the run's delta. */
class Shard {
  /** ok: its header and classes checked out at load; else nothing of it is read (missing, bad, older format). */
  ok = false;
  delta = new Delta();
  /** Inode numbers of entries of the file whose inode the run did not find under the root (any order). */
  dead: number[] = [];
  /** Something to write: entries added or pruned, or the file was missing or bad. */
  dirty = false;
  /** Entries in the file when load() checked its header (0 unless ok). */
  count = 0;

  constructor(
    readonly root: Root,
    readonly key: string,
    readonly name: string,
  ) {}
}

/** An open shard file whose header and classes checked out; its entries are read by each(). */
class Reader {
  constructor(
    readonly fd: number,
    readonly headLen: number,
    readonly count: number,
    readonly block: number,
    readonly classes: Klass[],
  ) {}

  /** Every entry in order, its block's checksum and its order checked before it is passed on. */
  each(f: (dv: DataView, o: number, ino: number) => void): void {
    const buf = Buffer.allocUnsafeSlow(this.block * REC + 8);
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
    const bad = (why: string) => new CacheError(why);
    const classes = this.classes.length;
    let pos = this.headLen;
    let left = this.count;
    let prev = -1;
    while (left > 0) {
      const k = Math.min(this.block, left);
      const len = k * REC;
      if (readAt(this.fd, buf, len + 8, pos) !== len + 8) throw bad('sizes do not add up (truncated or corrupt)');
      if (sys.xxh64(buf.subarray(0, len)) !== buf.readBigUInt64LE(len)) throw bad('checksum mismatch (truncated or corrupt)');
      for (let o = 0; o < len; o += REC) {
        const ino = u64At(dv, o);
        if (ino <= prev) throw bad('entries out of order');
        if (dv.getUint16(o + F_CLASS, true) >= classes) throw bad('an entry does not check out');
        prev = ino;
        f(dv, o, ino);
      }
      pos += len + 8;
      left -= k;
    }
  }

  close(): void {
    sys.close(this.fd);
  }
}

function readAt(fd: number, buf: Buffer, len: number, pos: number): number {
  let got = 0;
  while (got < len) {
    const n = fs.readSync(fd, buf, got, len - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}

const pad8 = (n: number) => (n + 7) & ~7;
const headLenOf = (keyLen: number) => pad8(HEAD + keyLen) + 8;
const blocksOf = (count: number, block: number) => Math.ceil(count / block);

/** Open a shard and check its header and class table; throws CacheError (or an fs error) if it cannot be trusted. */
function openShard(dirFd: number, sh: Shard, key: string): Reader {
  const fd = openStateFile(dirFd, sh.name, O.RDONLY);
  try {
    const size = fs.fstatSync(fd).size;
    const bad = (why: string) => new CacheError(why);
    const first = Buffer.alloc(Math.min(size, HEAD));
    readAt(fd, first, first.length, 0);
    if (size < HEAD + 16 || !first.subarray(0, 8).equals(MAGIC)) throw bad('not a vunify hash cache shard');
    const format = first.readUInt32LE(8);
    if (format !== CACHE_FORMAT) {
      if (format < CACHE_FORMAT && format >= 6) throw new OldFormat(`written by an older vunify (format ${format}, this one reads ${CACHE_FORMAT})`);
      throw bad(`written by another version of vunify (format ${format}, this one reads ${CACHE_FORMAT})`);
    }
    const headLen = first.readUInt32LE(12);
    const count = first.readUInt32LE(24);
    const classCount = first.readUInt32LE(28);
    const classBytes = first.readUInt32LE(32);
    const keyLen = first.readUInt32LE(36);
    const block = first.readUInt32LE(40);
    if (headLen !== headLenOf(keyLen) || block === 0 || block > 65536 || classCount > MAX_CLASSES) throw bad('sizes do not add up (truncated or corrupt)');
    const classesAt = headLen + count * REC + blocksOf(count, block) * 8;
    if (classesAt + classBytes + 8 !== size) throw bad('sizes do not add up (truncated or corrupt)');
    const head = Buffer.alloc(headLen);
    readAt(fd, head, headLen, 0);
    if (sys.xxh64(head.subarray(0, headLen - 8)) !== head.readBigUInt64LE(headLen - 8)) throw bad('checksum mismatch (truncated or corrupt)');
    const written = head.toString('utf8', HEAD, HEAD + keyLen);
    if (written !== sh.key) throw bad(`written for another root (${written})`);
    const fingerprint = head.subarray(16, 24).toString('hex');
    if (fingerprint !== key) throw bad(`written under another hash key (fingerprint ${fingerprint}, this run's is ${key})`);
    const table = Buffer.alloc(classBytes + 8);
    if (readAt(fd, table, table.length, classesAt) !== table.length) throw bad('sizes do not add up (truncated or corrupt)');
    if (sys.xxh64(table.subarray(0, classBytes)) !== table.readBigUInt64LE(classBytes)) throw bad('checksum mismatch (truncated or corrupt)');
    const classes: Klass[] = [];
    let o = 0;
    for (let c = 0; c < classCount; c++) {
      if (o + 12 > classBytes) throw bad('an entry does not check out');
      const xlen = table.readUInt16LE(o + 10);
      const elf = table[o + 8]!;
      if (o + 12 + xlen > classBytes || elf > ELF_YES) throw bad('an entry does not check out');
      classes.push({ flags: table.readUInt32LE(o), projid: table.readUInt32LE(o + 4), elf, xattrs: table.toString('latin1', o + 12, o + 12 + xlen) });
      o += 12 + xlen;
    }
    if (o !== classBytes) throw bad('an entry does not check out');
    return new Reader(fd, headLen, count, block, classes);
  } catch (er) {
    sys.close(fd);
    throw er;
  }
}

/** Entries written block by block to a shard file (or only counted: no descriptor). */
/** Sees each entry as written: its inode, the block, its offset there, its class. */
type Visit = (ino: number, dv: DataView, o: number, cls: Klass) => void;

class Writer {
  readonly buf = Buffer.allocUnsafeSlow(BLOCK * REC + 8);
  readonly dv = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.length);
  /** The block as 32-bit words, in the host's order (put() writes through it on little-endian hosts). */
  private readonly words = new Uint32Array(this.buf.buffer, this.buf.byteOffset, this.buf.length >>> 2);
  /** Entries in the current block, and in all. */
  n = 0;
  count = 0;
  pos: number;
  readonly classes: Klass[] = [];
  private readonly classIndex = new Map<string, number>();

  constructor(
    readonly fd: number,
    readonly headLen: number,
  ) {
    this.pos = headLen;
  }

  /** The class index of `c` in this file, or -1 when the table is full. */
  classOf(c: Klass): number {
    // A shard mostly has a few classes: found by their fields, no key string made.
    const few = Math.min(this.classes.length, FEW_CLASSES);
    for (let i = 0; i < few; i++) {
      const k = this.classes[i]!;
      if (k.flags === c.flags && k.projid === c.projid && k.elf === c.elf && k.xattrs === c.xattrs) return i;
    }
    if (few === this.classes.length) return this.add(c, classKey(c));
    const k = classKey(c);
    return this.classIndex.get(k) ?? this.add(c, k);
  }

  private add(c: Klass, k: string): number {
    if (this.classes.length >= MAX_CLASSES) return -1;
    const i = this.classes.length;
    this.classIndex.set(k, i);
    this.classes.push(c);
    return i;
  }

  /**
   * One entry, its ten little-endian words (the format above): through the
   * block's words on a little-endian host (no DataView call per field),
   * else through the DataView. Sizes below 2^48 and storable times only
   * (put() and the file's own entries are so). `visit` sees it in the block.
   */
  put(ino: number, size: number, cls: number, ms: number, mns: number, cs: number, cns: number, hashLo: number, hashHi: number, visit?: Visit): void {
    const o = this.n * REC;
    if (LITTLE) {
      const w = this.words, i = o >>> 2;
      w[i] = ino % TWO32;
      w[i + 1] = Math.floor(ino / TWO32);
      w[i + 2] = size % TWO32;
      w[i + 3] = Math.floor(size / TWO32) + cls * 0x10000; // size's high 16 bits, then the class (F_SIZE_HI, F_CLASS)
      w[i + 4] = timeLo(ms, mns);
      w[i + 5] = timeHi(ms); // a negative high word is stored as its two's complement, as setInt32 does
      w[i + 6] = timeLo(cs, cns);
      w[i + 7] = timeHi(cs);
      w[i + 8] = hashLo;
      w[i + 9] = hashHi;
    } else {
      const dv = this.dv;
      setU64(dv, o, ino);
      dv.setUint32(o + F_SIZE, size % TWO32, true);
      dv.setUint16(o + F_SIZE_HI, Math.floor(size / TWO32), true);
      dv.setUint16(o + F_CLASS, cls, true);
      dv.setUint32(o + F_MTIME, timeLo(ms, mns), true);
      dv.setInt32(o + F_MTIME + 4, timeHi(ms), true);
      dv.setUint32(o + F_CTIME, timeLo(cs, cns), true);
      dv.setInt32(o + F_CTIME + 4, timeHi(cs), true);
      dv.setUint32(o + F_HASH, hashLo, true);
      dv.setUint32(o + F_HASH + 4, hashHi, true);
    }
    visit?.(ino, this.dv, o, this.classes[cls]!);
    this.count++;
    if (++this.n === BLOCK) this.flush();
  }

  private flush(): void {
    if (this.n === 0) return;
    const len = this.n * REC;
    this.buf.writeBigUInt64LE(sys.xxh64(this.buf.subarray(0, len)), len);
    if (this.fd >= 0) writeAt(this.fd, this.buf, len + 8, this.pos);
    this.pos += len + 8;
    this.n = 0;
  }

  /** The last block, the class table and the header. */
  finish(sh: Shard, key: string): void {
    this.flush();
    if (this.fd < 0) return;
    const parts: Buffer[] = [];
    for (const c of this.classes) {
      const x = Buffer.from(c.xattrs, 'latin1');
      const b = Buffer.alloc(12);
      b.writeUInt32LE(c.flags >>> 0, 0);
      b.writeUInt32LE(c.projid >>> 0, 4);
      b[8] = c.elf;
      b.writeUInt16LE(x.length, 10);
      parts.push(b, x);
    }
    const table = Buffer.concat(parts);
    const sum = Buffer.alloc(8);
    sum.writeBigUInt64LE(sys.xxh64(table));
    writeAt(this.fd, Buffer.concat([table, sum]), table.length + 8, this.pos);
    const keyBytes = Buffer.from(sh.key);
    const head = Buffer.alloc(this.headLen);
    MAGIC.copy(head, 0);
    head.writeUInt32LE(CACHE_FORMAT, 8);
    head.writeUInt32LE(this.headLen, 12);
    Buffer.from(key.padEnd(16, '0').slice(0, 16), 'hex').copy(head, 16);
    head.writeUInt32LE(this.count, 24);
    head.writeUInt32LE(this.classes.length, 28);
    head.writeUInt32LE(table.length, 32);
    head.writeUInt32LE(keyBytes.length, 36);
    head.writeUInt32LE(BLOCK, 40);
    keyBytes.copy(head, HEAD);
    head.writeBigUInt64LE(sys.xxh64(head.subarray(0, this.headLen - 8)), this.headLen - 8);
    writeAt(this.fd, head, head.length, 0);
  }
}

/** The class of each delta row written: runs of rows mostly share their class, so one lookup per change of class. */
class DeltaClasses {
  private cls = -1;
  private flags = -1;
  private projid = -1;
  private elf = -1;
  private x = '';
  constructor(
    private readonly d: Delta,
    private readonly out: Writer,
  ) {}

  of(r: number): number {
    const d = this.d;
    const x = d.xattrs[r]!;
    if (this.cls < 0 || d.flags[r] !== this.flags || d.projid[r] !== this.projid || d.elf[r] !== this.elf || x !== this.x) {
      this.flags = d.flags[r]!;
      this.projid = d.projid[r]!;
      this.elf = d.elf[r]!;
      this.x = x;
      this.cls = this.out.classOf({ flags: this.flags, projid: this.projid, elf: this.elf, xattrs: x });
    }
    return this.cls;
  }
}

/**
 * What merge() writes when there is no file to merge with and no refresh or
 * forget on the shard's device (a root's first save, a rebuilt shard): the
 * delta's entries by inode number, without merge()'s steps per entry (they
 * were most of a new root's save, in code that runs once per process). The
 * same bytes.
 */
function writeDelta(d: Delta, order: Uint32Array, out: Writer, visit?: Visit): void {
  const classes = new DeltaClasses(d, out);
  for (let k = 0; k < order.length; k++) {
    const r = order[k]!;
    const cls = classes.of(r);
    if (cls < 0) continue; // the class table is full: not cached, as in merge()
    out.put(d.ino[r]!, d.size[r]!, cls, d.msec[r]!, d.mns[r]!, d.csec[r]!, d.cns[r]!, d.hashLo[r]!, d.hashHi[r]!, visit);
  }
}

/**
 * One merge() of a shard: its steps are methods of one class rather than
 * closures made per shard, so V8's optimized code for them keeps one call
 * target from shard to shard (the closures deoptimized the per-entry step
 * on "wrong call target" at every shard after the first: ~75 deopts and 5
 * recompiles per linking run on the fleet).
 */
class Merge {
  private readonly d: Delta;
  private readonly order: Uint32Array;
  private readonly dead: Float64Array;
  private readonly edits: Uint32Array;
  changed: boolean;
  private j = 0;
  private di = 0;
  private ei = 0;
  // The entry being written.
  private size = 0;
  private ms = 0;
  private mns = 0;
  private cs = 0;
  private cns = 0;
  private hashLo = 0;
  private hashHi = 0;
  // The class of the entry being written, found only once it is known to be written
  // (a dropped entry leaves no class behind): the file's (oldClass) or the delta row's.
  private oldClass = -1;
  private row = -1;
  private readonly deltaClasses: DeltaClasses;
  private readonly remap: Int32Array;

  constructor(
    sh: Shard,
    private readonly ed: Edits,
    private readonly rd: Reader | undefined,
    private readonly out: Writer,
    private readonly visit: Visit | undefined,
  ) {
    this.d = sh.delta;
    this.order = this.d.sorted();
    this.dead = Float64Array.from(sh.dead).sort();
    this.edits = ed.of(sh.root.dev);
    this.changed = this.order.length > 0 || !rd;
    this.remap = new Int32Array(rd?.classes.length ?? 0).fill(-2);
    this.deltaClasses = new DeltaClasses(this.d, out);
  }

  run(): boolean {
    const rd = this.rd;
    if (rd) {
      try {
        rd.each((dv, o, ino) => this.fromFile(dv, o, ino));
      } finally {
        rd.close();
      }
    }
    this.deltaBelow(Infinity);
    return this.changed;
  }

  private fromFile(dv: DataView, o: number, ino: number): void {
    const d = this.d, order = this.order, dead = this.dead;
    this.deltaBelow(ino);
    if (this.j < order.length && d.ino[order[this.j]!] === ino) {
      this.fromDelta(order[this.j++]!); // the run's entry of an inode replaces the file's
      return;
    }
    while (this.di < dead.length && dead[this.di]! < ino) this.di++;
    if (this.di < dead.length && dead[this.di] === ino) {
      this.changed = true;
      return;
    }
    this.size = dv.getUint32(o + F_SIZE, true) + dv.getUint16(o + F_SIZE_HI, true) * TWO32;
    this.ms = secAt(dv, o + F_MTIME);
    this.mns = nsecAt(dv, o + F_MTIME);
    this.cs = secAt(dv, o + F_CTIME);
    this.cns = nsecAt(dv, o + F_CTIME);
    this.hashLo = dv.getUint32(o + F_HASH, true);
    this.hashHi = dv.getUint32(o + F_HASH + 4, true);
    this.oldClass = dv.getUint16(o + F_CLASS, true);
    this.emit(ino);
  }

  private deltaBelow(limit: number): void {
    const d = this.d, order = this.order;
    while (this.j < order.length && d.ino[order[this.j]!]! < limit) this.fromDelta(order[this.j++]!);
  }

  private fromDelta(r: number): void {
    const d = this.d;
    this.size = d.size[r]!;
    this.ms = d.msec[r]!;
    this.mns = d.mns[r]!;
    this.cs = d.csec[r]!;
    this.cns = d.cns[r]!;
    this.hashLo = d.hashLo[r]!;
    this.hashHi = d.hashHi[r]!;
    this.oldClass = -1;
    this.row = r;
    this.emit(d.ino[r]!);
  }

  private emit(ino: number): void {
    const ed = this.ed, edits = this.edits;
    while (this.ei < edits.length && ed.ino[edits[this.ei]!]! < ino) this.ei++;
    let alive = true;
    for (; this.ei < edits.length && ed.ino[edits[this.ei]!] === ino; this.ei++) {
      const r = edits[this.ei]!;
      if (!alive) continue;
      if (ed.kind[r] === REFRESH && ed.size[r] === this.size && ed.msec[r] === this.ms && ed.mns[r] === this.mns) {
        if (ed.csec[r] !== this.cs || ed.cns[r] !== this.cns) {
          this.cs = ed.csec[r]!;
          this.cns = ed.cns[r]!;
          this.changed = true;
        }
      } else {
        alive = false;
        this.changed = true;
      }
    }
    const cls = !alive || !storable(this.cs, this.cns) ? -1 : this.oldClass >= 0 ? this.oldClassOf(this.oldClass) : this.deltaClasses.of(this.row);
    if (cls < 0) {
      this.changed = true;
      return;
    }
    this.out.put(ino, this.size, cls, this.ms, this.mns, this.cs, this.cns, this.hashLo, this.hashHi, this.visit);
  }

  private oldClassOf(c: number): number {
    const remap = this.remap;
    return remap[c] === -2 ? (remap[c] = this.out.classOf(this.rd!.classes[c]!)) : remap[c]!;
  }
}

function writeAt(fd: number, buf: Buffer, len: number, pos: number): void {
  let off = 0;
  while (off < len) off += fs.writeSync(fd, buf, off, len - off, pos + off);
}

/**
 * The cache of one run: the shards of its roots, read as streams (match(),
 * save()), never held.
 */
export class HashCache {
  /** Distinct shards; `ofRoot[i]` is the shard of the run's root i. */
  private readonly shards: Shard[] = [];
  private readonly ofRoot: Shard[] = [];
  private readonly edits = new Edits();
  private readonly entry = new CacheEntry();
  private warn: (message: string) => void = () => {};
  /** When this run started reading content: entries changed after readAtSec - RACY_SECONDS are not kept. */
  readAtSec = Date.now() / 1000;

  /**
   * @param key fingerprint of the hash key its hashes are made under (state/hash-key.ts)
   * @param roots the run's roots, in order (put()'s and match()'s rootIndex)
   * @param dir the cache directory (a descriptor checked by state-dir.ts, and its path for messages); none: a cache in memory only
   */
  constructor(
    readonly key: string,
    roots: readonly Root[] = [],
    readonly dir?: { fd: number; path: string },
  ) {
    const byName = new Map<string, Shard>();
    for (const r of roots) {
      const k = rootKey(r);
      const name = shardName(k);
      let s = byName.get(name);
      if (!s) {
        byName.set(name, (s = new Shard(r, k, name)));
        this.shards.push(s);
      }
      this.ofRoot.push(s);
    }
  }

  // ---- lookups: one pass over a root's shard ----

  /**
   * Read the shard of the run's root `rootIndex` once, in order, against
   * that root's inodes given in ascending inode number (`inoAt(i)`, i < n;
   * an inode may come several times, adjacently: its paths). For each entry
   * whose inode is among them, `hit(i, entry)` is called for each such i;
   * the entry is a view valid during the call, and says whether it is
   * valid for a file (entry.valid(size, mtime, ctime)). `complete`: these
   * are all the root's inodes the run found, so the entries of the others
   * are dropped at save (prune). Returns false when the shard turned out
   * bad on the way (a warning was given): every hit it gave must be
   * forgotten, and the shard is rebuilt at save.
   */
  match(rootIndex: number, n: number, inoAt: (i: number) => number, hit: (i: number, e: CacheEntry) => void, complete: boolean): boolean {
    const sh = this.ofRoot[rootIndex];
    if (!sh) throw new RangeError(`hash cache: no root ${rootIndex} in this run`);
    if (!sh.ok || !this.dir) return true;
    let rd: Reader;
    try {
      rd = openShard(this.dir.fd, sh, this.key);
    } catch (er) {
      return this.discard(sh, er);
    }
    const e = this.entry;
    const classes = rd.classes;
    const dead: number[] = [];
    // inoAt(i), asked once per position (past the end: Infinity).
    let i = 0;
    let cur = n > 0 ? inoAt(0) : Infinity;
    try {
      rd.each((dv, o, ino) => {
        while (cur < ino) cur = ++i < n ? inoAt(i) : Infinity;
        if (cur === ino) {
          e.dv = dv;
          e.o = o;
          e.cls = classes[dv.getUint16(o + F_CLASS, true)]!;
          hit(i, e);
          for (let j = i + 1; j < n && inoAt(j) === ino; j++) hit(j, e);
        } else if (complete) dead.push(ino);
      });
    } catch (er) {
      return this.discard(sh, er);
    } finally {
      rd.close();
    }
    if (dead.length) {
      for (const ino of dead) sh.dead.push(ino);
      sh.dirty = true;
    }
    return true;
  }

  /**
   * Entries of the shard of the run's root `rootIndex` when load() read its
   * header; 0 for a shard not read (missing, bad, none). A root whose shard
   * has none needs no match(): it could give no hit and find nothing gone.
   */
  entries(rootIndex: number): number {
    const sh = this.ofRoot[rootIndex];
    return sh?.ok && this.dir ? sh.count : 0;
  }

  /** A shard that did not check out on the way: a warning, and it is rebuilt at save. Errors of the caller's are not the shard's. */
  private discard(sh: Shard, er: unknown): false {
    if (!(er instanceof CacheError) && !errorCode(er)) throw er;
    this.warn(`${path.join(this.dir!.path, sh.name)}: hash cache of ${sh.root.path} discarded: ${(er as Error).message}`);
    sh.ok = false;
    sh.dirty = true;
    sh.dead = [];
    return false;
  }

  /**
   * Remember what was just read from a file of the run's root `rootIndex`
   * (on the root's device), unless it changed too recently to trust (after
   * readAtSec - RACY_SECONDS) or does not fit an entry. `elf`: ELF_UNKNOWN,
   * ELF_NO or ELF_YES.
   */
  put(
    rootIndex: number,
    _dev: number,
    ino: number,
    size: number,
    mtimeSec: number,
    mtimeNsec: number,
    ctimeSec: number,
    ctimeNsec: number,
    hash: bigint,
    xattrs: string,
    flags: number,
    projid: number,
    elf: number,
  ): void {
    this.putRow(rootIndex, ino, size, mtimeSec, mtimeNsec, ctimeSec, ctimeNsec, Number(hash >> 32n) >>> 0, Number(hash & 0xffffffffn) >>> 0, xattrs, flags, projid, elf);
  }

  /** put() with the hash as its high and low 32 bits (the hash stage's columns: no BigInt per entry). */
  putRow(
    rootIndex: number,
    ino: number,
    size: number,
    mtimeSec: number,
    mtimeNsec: number,
    ctimeSec: number,
    ctimeNsec: number,
    hashHi: number,
    hashLo: number,
    xattrs: string,
    flags: number,
    projid: number,
    elf: number,
  ): void {
    if (ctimeSec + ctimeNsec / 1e9 > this.readAtSec - RACY_SECONDS) return;
    if (xattrs.length > MAX_XATTRS_LEN) return; // a digest is 64 digits: anything else is not ours to keep
    if (!(size >= 0 && size < MAX_SIZE) || !storable(mtimeSec, mtimeNsec) || !storable(ctimeSec, ctimeNsec)) return;
    const sh = this.ofRoot[rootIndex];
    if (!sh) throw new RangeError(`hash cache: no root ${rootIndex} in this run`);
    const d = sh.delta;
    const r = d.push();
    d.ino[r] = ino;
    d.size[r] = size;
    d.msec[r] = mtimeSec;
    d.mns[r] = mtimeNsec;
    d.csec[r] = ctimeSec;
    d.cns[r] = ctimeNsec;
    d.hashHi[r] = hashHi;
    d.hashLo[r] = hashLo;
    d.flags[r] = flags >>> 0;
    d.projid[r] = projid >>> 0;
    d.elf[r] = elf === ELF_YES || elf === ELF_NO ? elf : ELF_UNKNOWN;
    d.xattrs[r] = xattrs;
    sh.dirty = true;
  }

  /**
   * After vunify linked to an inode, fstat shows a new ctime (its link count
   * changed) and nothing else: carry its entries over to it, in every shard
   * of the run on its device (at save). A size or mtime change means the
   * content may have changed too: drop them instead.
   */
  refreshRow(dev: number, ino: number, size: number, mtimeSec: number, mtimeNsec: number, ctimeSec: number, ctimeNsec: number): void {
    this.edits.push(REFRESH, dev, ino, size, mtimeSec, mtimeNsec, ctimeSec, ctimeNsec);
  }

  /**
   * Drop an inode's entries: the linker found its bytes differ from a file
   * the cache said was identical. Size, mtime and ctime cannot tell every
   * write: one through a shared mapping to a page already dirty changes none
   * of them. The next run reads the file again.
   */
  forget(id: { dev: number; ino: number }): void {
    this.edits.push(FORGET, id.dev, id.ino, 0, 0, 0, 0, 0);
  }

  refresh(stat: Stat): void {
    this.refreshRow(stat.dev, stat.ino, stat.size, stat.mtimeSec, stat.mtimeNsec, stat.ctimeSec, stat.ctimeNsec);
  }

  /** Links of each duplicate inode the linker replaced so far, by device and inode number (replaced()). */
  private readonly replacedLinks = new Map<number, Map<number, number>>();

  /**
   * The linker replaced one path of the inode `stat` describes (as the walk
   * saw it, its link count included) with a link to the canonical. Once as
   * many paths are replaced as it had links, the inode is gone: its entries
   * are dropped at save (forget()), as the next run would drop them (it
   * finds the inode under no root), so that run need neither read the
   * shards that held them nor write them again (the first rerun after a
   * linking run did both for every root). A link the walk did not see
   * (nlink higher) leaves the entries to the next run, as before; a link a
   * guest added since only costs that inode a read.
   */
  replaced(stat: Pick<Stat, 'dev' | 'ino' | 'nlink'>): void {
    let byIno = this.replacedLinks.get(stat.dev);
    if (!byIno) this.replacedLinks.set(stat.dev, (byIno = new Map()));
    const n = (byIno.get(stat.ino) ?? 0) + 1;
    if (n < stat.nlink) {
      byIno.set(stat.ino, n);
      return;
    }
    byIno.delete(stat.ino);
    this.forget(stat);
  }

  // ---- the object API (vunify report, and tests) ----

  /**
   * The entry of an inode, if valid for `stat`, as the next save would
   * write it (the run's puts, refreshes and forgets applied); in the shard
   * of root `rootIndex` of the run, else in any. Reads the shard whole: for
   * tests and few lookups.
   */
  lookup(stat: Pick<Stat, 'dev' | 'ino' | 'size' | 'mtimeSec' | 'mtimeNsec' | 'ctimeSec' | 'ctimeNsec'>, rootIndex = -1): Cached | undefined {
    for (const sh of rootIndex >= 0 ? [this.ofRoot[rootIndex]!] : this.shards) {
      if (sh.root.dev !== stat.dev) continue;
      let found: Cached | undefined;
      const e = new CacheEntry();
      this.contents(sh, (ino, dv, o, cls) => {
        if (ino !== stat.ino) return;
        e.dv = dv;
        e.o = o;
        e.cls = cls;
        if (!e.valid(stat.size, stat.mtimeSec, stat.mtimeNsec, stat.ctimeSec, stat.ctimeNsec)) return;
        const { size, mtimeSec, mtimeNsec, ctimeSec, ctimeNsec } = stat;
        found = { size, mtimeSec, mtimeNsec, ctimeSec, ctimeNsec, hash: (BigInt(e.hashHi) << 32n) | BigInt(e.hashLo), xattrs: cls.xattrs, flags: cls.flags, projid: cls.projid, elf: cls.elf === ELF_UNKNOWN ? undefined : cls.elf === ELF_YES };
      });
      if (found) return found;
    }
    return undefined;
  }

  /** put() from a stat and what was read (the object API). */
  putStat(rootIndex: number, stat: Stat, read: { hash: bigint; xattrs: string; flags: number; projid: number; elf?: boolean }): void {
    const elf = read.elf === undefined ? ELF_UNKNOWN : read.elf ? ELF_YES : ELF_NO;
    this.put(rootIndex, stat.dev, stat.ino, stat.size, stat.mtimeSec, stat.mtimeNsec, stat.ctimeSec, stat.ctimeNsec, read.hash, read.xattrs, read.flags, read.projid, elf);
  }

  /** Keep, in the run's shards, only entries of the inodes of `seen` (each under the roots of its paths): match() with every root's. */
  prune(seen: readonly Inode[]): void {
    const byRoot: number[][] = this.ofRoot.map(() => []);
    for (const i of seen) for (const p of i.paths) byRoot[p.dir.root.index]?.push(i.stat.ino);
    byRoot.forEach((inos, r) => {
      const sorted = Float64Array.from(inos).sort();
      this.match(r, sorted.length, (k) => sorted[k]!, () => {}, true);
    });
  }

  /** Live entries in the run's shards, as the next save would write them. */
  get size(): number {
    let n = 0;
    for (const sh of this.shards) n += this.contents(sh);
    return n;
  }

  /** What the next save would write to a shard, entry by entry; the count. */
  private contents(sh: Shard, visit?: Visit): number {
    const out = new Writer(-1, 0);
    try {
      this.fill(sh, out, visit);
    } catch (er) {
      this.discard(sh, er);
      return this.contents(sh, visit);
    }
    return out.count;
  }

  // ---- loading and saving ----

  /**
   * Check the headers of the run's roots' shards (their entries are read
   * by match()). A missing shard is a note (the normal first run over that
   * root), so is one of an older format (replaced); one that does not check
   * out is a warning, and the root is read as if uncached.
   */
  load(warn: (message: string) => void, note: (message: string) => void = warn): void {
    this.warn = warn;
    if (!this.dir) return;
    const missing: Shard[] = [];
    const old: Shard[] = [];
    let why = '';
    for (const sh of this.shards) {
      const file = path.join(this.dir.path, sh.name);
      try {
        const rd = openShard(this.dir.fd, sh, this.key);
        rd.close();
        sh.count = rd.count;
        sh.ok = true;
      } catch (er) {
        sh.dirty = true;
        if (errorCode(er) === 'ENOENT') missing.push(sh);
        else if (er instanceof OldFormat) (old.push(sh), (why = er.message));
        else warn(`${file}: hash cache of ${sh.root.path} discarded: ${(er as Error).message}`);
      }
    }
    // One line, not one per root: a first run over 200 guests has no shard at all.
    if (missing.length === 1) note(`${path.join(this.dir.path, missing[0]!.name)}: no hash cache yet for ${missing[0]!.root.path}; its candidate files are read`);
    else if (missing.length > 1)
      note(`${this.dir.path}: no hash cache yet for ${missing.length === this.shards.length ? 'any' : `${missing.length}`} of the ${this.shards.length} roots (${missing[0]!.root.path}, ...); their candidate files are read`);
    if (old.length === 1) note(`${path.join(this.dir.path, old[0]!.name)}: hash cache of ${old[0]!.root.path} ${why}: not read, replaced at save; its candidate files are read`);
    else if (old.length > 1) note(`${this.dir.path}: the hash cache of ${old.length} roots (${old[0]!.root.path}, ...) was ${why}: not read, replaced at save; their candidate files are read`);
  }

  /**
   * What merge() writes, through writeDelta() when the shard has no file to
   * merge with and no refresh or forget on its device (a root's first save:
   * merge() is then not even compiled).
   */
  private fill(sh: Shard, out: Writer, visit?: Visit): boolean {
    if (!(sh.ok && this.dir) && !this.edits.has(sh.root.dev)) {
      writeDelta(sh.delta, sh.delta.sorted(), out, visit);
      return true;
    }
    return this.merge(sh, out, visit);
  }

  /**
   * The shard as a save writes it, into `out`: the file's entries (but for
   * those of inodes the run found gone) and the delta's, by inode number,
   * the delta's replacing the file's, the run's refreshes and forgets
   * applied in order. Returns whether that differs from the file. Throws
   * CacheError when the file turns out bad on the way.
   */
  private merge(sh: Shard, out: Writer, visit?: Visit): boolean {
    const rd = sh.ok && this.dir ? openShard(this.dir.fd, sh, this.key) : undefined;
    return new Merge(sh, this.edits, rd, out, visit).run();
  }

  /**
   * Write the shards the run changed (each atomically), under the cache
   * directory's lock: drop the shards of roots that are gone and a killed
   * save's temporary files, and remove the old single-file cache (its
   * directory's descriptor and name, when the cache is the state
   * directory's) with a note.
   */
  save(note: (message: string) => void = () => {}, old?: { dirFd: number; dirPath: string }): void {
    if (!this.dir) return;
    const dirFd = this.dir.fd;
    const lock = openStateFile(dirFd, LOCK_FILE, O.RDWR | O.CREAT);
    try {
      sys.flock(lock, LOCK_EX);
      // Under the lock no other run is saving: temporary files are a killed run's.
      for (const name of fs.readdirSync(this.dir.path)) {
        if (!name.includes('.tmp.')) continue;
        try {
          sys.unlinkAt(dirFd, Buffer.from(name)); // a directory under that name (EISDIR) is left alone
        } catch {
          // gone already, or not ours to remove
        }
      }
      const temps: Temp[] = [];
      try {
        for (const sh of this.shards) {
          if (!sh.dirty) {
            // Refreshes and forgets touch a shard only if it holds their inodes: see first.
            if (!this.edits.has(sh.root.dev)) continue;
            let changed: boolean;
            try {
              changed = this.merge(sh, new Writer(-1, 0));
            } catch (er) {
              this.discard(sh, er);
              changed = true;
            }
            if (!changed) continue;
          }
          temps.push(this.writeShard(dirFd, sh));
        }
        const roots = this.updateRoots(dirFd);
        if (roots) temps.push(roots);
        // Every temporary file is written before the first fsync, so that one
        // journal commit carries them all and the others find little to do.
        for (const t of temps) syncTemp(dirFd, t);
        while (temps.length) {
          const t = temps.shift()!;
          sys.renameAt(dirFd, t.tmp, dirFd, Buffer.from(t.name));
        }
        sys.fsync(dirFd);
      } finally {
        for (const t of temps) {
          try {
            sys.unlinkAt(dirFd, t.tmp);
          } catch {
            // nothing left to remove
          }
        }
      }
      if (old) {
        for (const name of [OLD_CACHE_FILE, `${OLD_CACHE_FILE}.lock`]) {
          try {
            sys.unlinkAt(old.dirFd, Buffer.from(name));
            if (name === OLD_CACHE_FILE) note(`${path.join(old.dirPath, name)}: removed the single-file hash cache of an older vunify (format 5, not read): the cache is now kept per root in ${this.dir.path}`);
          } catch {
            // none (the usual case), or not a file
          }
        }
      }
    } finally {
      sys.close(lock);
    }
  }

  /** The merge of a shard, into a temporary file (save() fsyncs it and renames it over the old one). */
  private writeShard(dirFd: number, sh: Shard): Temp {
    const write = () =>
      writeTemp(dirFd, sh.name, (fd) => {
        const out = new Writer(fd, headLenOf(Buffer.byteLength(sh.key)));
        this.fill(sh, out);
        out.finish(sh, this.key);
      });
    try {
      return write();
    } catch (er) {
      // The old file went bad since it was read: what the run knows is written alone.
      if (!sh.ok || !(er instanceof CacheError)) throw er;
      this.discard(sh, er);
      return write();
    }
  }

  /** Record this run's roots in the roots file (a temporary file to rename, if it changes), and drop the shards (and lines) of roots that no longer exist. */
  private updateRoots(dirFd: number): Temp | undefined {
    let keys: string[];
    try {
      keys = decodeRoots(readStateFile(dirFd, ROOTS_FILE));
    } catch {
      keys = []; // none yet, or unreadable: rebuilt from this run's roots
    }
    const ours = new Set(this.shards.map((s) => s.key));
    const keep = [...ours];
    let changed = false;
    for (const k of new Set(keys)) {
      if (ours.has(k)) continue;
      if (rootStillThere(k)) keep.push(k);
      else {
        changed = true;
        try {
          sys.unlinkAt(dirFd, Buffer.from(shardName(k)));
        } catch {
          // never written, or gone already
        }
      }
    }
    if (!changed && keys.length === new Set(keys).size && [...ours].every((k) => keys.includes(k))) return undefined;
    const data = encodeRoots(keep.sort());
    return writeTemp(dirFd, ROOTS_FILE, (fd) => writeAt(fd, data, data.length, 0));
  }

  /** Close the cache directory. */
  close(): void {
    if (this.dir) sys.close(this.dir.fd);
  }
}

/** Whether a root named by rootKey() still exists (same path, same directory). */
function rootStillThere(key: string): boolean {
  const m = /^(\d+):(\d+):/.exec(key);
  if (!m) return false;
  try {
    // No exception made for a root that is gone (the usual answer is "there" anyway).
    const st = fs.lstatSync(key.slice(m[0].length), { throwIfNoEntry: false });
    return !!st && st.isDirectory() && String(st.dev) === m[1] && String(st.ino) === m[2];
  } catch {
    return false;
  }
}

function readStateFile(dirFd: number, name: string): Buffer {
  const fd = openStateFile(dirFd, name, O.RDONLY);
  try {
    const size = fs.fstatSync(fd).size;
    // Its own memory (not the pool's), so the entries start where the file does.
    const buf = Buffer.allocUnsafeSlow(size);
    let got = 0;
    while (got < size) {
      const n = fs.readSync(fd, buf, got, size - got, got);
      if (n === 0) break;
      got += n;
    }
    return buf.subarray(0, got);
  } finally {
    sys.close(fd);
  }
}

function encodeRoots(keys: readonly string[]): Buffer {
  // One buffer, written in place (a Buffer per key and a concatenation of them all cost more than the file's checks).
  let len = 16 + 8;
  for (const k of keys) len += 4 + Buffer.byteLength(k);
  const buf = Buffer.alloc(len);
  ROOTS_MAGIC.copy(buf, 0);
  buf.writeUInt32LE(ROOTS_FORMAT, 8);
  buf.writeUInt32LE(keys.length, 12);
  let off = 16;
  for (const k of keys) {
    const n = buf.write(k, off + 4);
    buf.writeUInt32LE(n, off);
    off += 4 + n;
  }
  buf.writeBigUInt64LE(sys.xxh64(buf.subarray(0, off)), off);
  return buf;
}

function decodeRoots(buf: Buffer): string[] {
  if (buf.length < 24 || !buf.subarray(0, 8).equals(ROOTS_MAGIC) || buf.readUInt32LE(8) !== ROOTS_FORMAT) throw new CacheError('not a roots file');
  if (sys.xxh64(buf.subarray(0, buf.length - 8)) !== buf.readBigUInt64LE(buf.length - 8)) throw new CacheError('checksum mismatch');
  const n = buf.readUInt32LE(12);
  const out: string[] = [];
  let off = 16;
  for (let i = 0; i < n; i++) {
    if (off + 4 > buf.length - 8) throw new CacheError('truncated');
    const len = buf.readUInt32LE(off);
    off += 4;
    if (off + len > buf.length - 8) throw new CacheError('truncated');
    out.push(buf.toString('utf8', off, off + len));
    off += len;
  }
  return out;
}

/** A file written under a temporary name, to be fsynced and renamed to `name`. */
interface Temp {
  tmp: Buffer;
  name: string;
}

/** Write a temporary file for `name` with `fill` (not yet fsynced: syncTemp). */
function writeTemp(dirFd: number, name: string, fill: (fd: number) => void): Temp {
  const tmp = Buffer.from(`${name}.tmp.${process.pid}.${randomBytes(4).toString('hex')}`);
  const fd = openStateFile(dirFd, tmp.toString(), O.WRONLY | O.CREAT | O.EXCL);
  try {
    fill(fd);
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
  return { tmp, name };
}

function syncTemp(dirFd: number, t: Temp): void {
  const fd = openStateFile(dirFd, t.tmp.toString(), O.RDONLY);
  try {
    sys.fsync(fd);
  } finally {
    sys.close(fd);
  }
}
