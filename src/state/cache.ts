/*
 * Hash cache: what earlier runs learned about each inode's content, so the
 * next run reads only what changed, and pays only for the roots it covers.
 *
 * An entry maps (dev, ino) to the keyed XXH64 of the content, the encoded
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
 * A run opens only its roots' shards and rewrites only those: a 2-guest run
 * on a host whose other 200 guests are cached reads two small files. A
 * shard is read into one Buffer and searched there by binary search on the
 * bytes: a lookup builds no object (a 1,000,000-entry shard costs its 72 MB
 * and nothing per entry). What a run adds or changes goes to a delta, kept
 * per shard in columns and as large as what the run read; a save merges it
 * with the shard (both sorted: one linear pass) into a new file, written to
 * a temporary name, fsynced, renamed over the old one, and the directory
 * fsynced. No hash table anywhere: the keys are inode numbers and times a
 * guest controls, and nothing it does may make a lookup slow; a shard holds
 * at most one entry per inode of its root.
 *
 * Racy entries: a file changed in the same clock tick as it was read could
 * keep its ctime across the change, so files whose ctime is within
 * RACY_SECONDS of the hashing are not cached (git's "racily clean" rule).
 * Linking changes a canonical's ctime; the linker's own fstat right after
 * the link refreshes its entry in every loaded shard (refresh()); entries
 * of that inode in other roots' shards simply miss next time.
 *
 * A shard that does not check out (short, wrong magic or format, bad
 * checksum, another root's, another key's, unsorted) is ignored with a
 * warning and rebuilt by the next save: never trusted, never a crash.
 *
 * Shard, little-endian:
 *   header   "VUNIFYHS", u32 format, u32 header length (48 + root key,
 *            padded to 8), 8 bytes key fingerprint, u32 entry count,
 *            u32 xattr heap length, u32 root key length, 12 zero bytes,
 *            the root key ("dev:ino:path"), zero padding
 *   entries  count × 72 bytes, sorted by (dev, ino), no two alike:
 *            dev u64, ino u64, size u64, mtimeSec i64, ctimeSec i64,
 *            mtimeNsec u32, ctimeNsec u32, hash u64, flags u32, projid u32,
 *            xattrs offset u32 and length u16 (in the heap), elf u8
 *            (0 unknown, 1 no, 2 yes), u8 zero
 *   heap     the distinct xattr digests (ASCII), each once
 *   footer   u64 XXH64 (seed 0) of everything before it
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

/** 6: one shard per root (5: one file for all roots, hashes.cache). */
export const CACHE_FORMAT = 6;
/** The cache directory's name in the state directory. */
export const CACHE_DIR = 'cache';
/** The single-file cache of format 5 and older, removed at the first save. */
export const OLD_CACHE_FILE = 'hashes.cache';
const MAGIC = Buffer.from('VUNIFYHS');
const ROOTS_MAGIC = Buffer.from('VUNIFYHR');
const ROOTS_FILE = 'roots';
const LOCK_FILE = 'lock';
const HEAD = 48;
const REC = 72;
const RACY_SECONDS = 1;
const TWO32 = 2 ** 32;
const MAX_XATTRS_LEN = 0xffff;

export const ELF_UNKNOWN = 0;
export const ELF_NO = 1;
export const ELF_YES = 2;

// Field offsets in an entry.
const F_SIZE = 16;
const F_MSEC = 24;
const F_CSEC = 32;
const F_MNS = 40;
const F_CNS = 44;
const F_HASH = 48;
const F_FLAGS = 56;
const F_PROJ = 60;
const F_XOFF = 64;
const F_XLEN = 68;
const F_ELF = 70;
/** In memory only (zero on disk): the entry was forgotten or pruned. */
const F_DEAD = 71;

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

export const inodeKey = (s: { dev: number; ino: number }): string => `${s.dev}:${s.ino}`;
/** A root as the cache names it: "dev:ino:path", so a save can tell a root that is gone. */
export const rootKey = (r: Pick<Root, 'dev' | 'ino' | 'path'>): string => `${r.dev}:${r.ino}:${r.path}`;
/** The file name of a root's shard: no path bytes of the root in it, a fixed length. */
export const shardName = (key: string): string => `${createHash('sha256').update(key).digest('hex').slice(0, 32)}.shard`;

export class CacheError extends Error {
  override name = 'CacheError';
}

const u64At = (dv: DataView, o: number): number => dv.getUint32(o + 4, true) * TWO32 + dv.getUint32(o, true);
const i64At = (dv: DataView, o: number): number => dv.getInt32(o + 4, true) * TWO32 + dv.getUint32(o, true);
function setU64(dv: DataView, o: number, n: number): void {
  dv.setUint32(o, n % TWO32, true);
  dv.setUint32(o + 4, Math.floor(n / TWO32), true);
}
function setI64(dv: DataView, o: number, n: number): void {
  const hi = Math.floor(n / TWO32);
  dv.setUint32(o, n - hi * TWO32, true);
  dv.setInt32(o + 4, hi, true);
}

/** Growable columns of the entries a run added to one shard. */
class Delta {
  n = 0;
  dev = new Float64Array(16);
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
  dead = new Uint8Array(16);
  xattrs: string[] = [];
  /** Row numbers sorted by (dev, ino), the last put of a key only; undefined after a put. */
  order: Uint32Array | undefined;

  push(): number {
    if (this.n === this.dev.length) {
      const grow = <T extends Float64Array | Uint32Array | Uint8Array>(a: T): T => {
        const b = new (a.constructor as new (n: number) => T)(a.length * 2);
        b.set(a);
        return b;
      };
      this.dev = grow(this.dev);
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
      this.dead = grow(this.dead);
    }
    this.order = undefined;
    return this.n++;
  }

  sorted(): Uint32Array {
    if (this.order) return this.order;
    const all = new Uint32Array(this.n);
    for (let i = 0; i < this.n; i++) all[i] = i;
    // Ties by row, so the last put of an inode is the last of its run of equal keys.
    all.sort((a, b) => this.dev[a]! - this.dev[b]! || this.ino[a]! - this.ino[b]! || a - b);
    let k = 0;
    for (let i = 0; i < all.length; i++) {
      const r = all[i]!;
      const next = all[i + 1];
      if (next !== undefined && this.dev[next] === this.dev[r] && this.ino[next] === this.ino[r]) continue;
      all[k++] = r;
    }
    return (this.order = all.subarray(0, k));
  }

  /** Row of (dev, ino), or -1. */
  search(dev: number, ino: number): number {
    if (this.n === 0) return -1;
    const order = this.sorted();
    let lo = 0;
    let hi = order.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = order[mid]!;
      const c = this.dev[r]! - dev || this.ino[r]! - ino;
      if (c === 0) return r;
      if (c < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }
}

/** One root's shard: the file's bytes (or none) and the run's delta. */
class Shard {
  buf: Buffer = Buffer.alloc(0);
  dv: DataView<ArrayBufferLike> = new DataView(new ArrayBuffer(0));
  /** Byte offset of entry 0, and of the xattr heap. */
  base = 0;
  heap = 0;
  n = 0;
  delta = new Delta();
  /** Something to write: entries added, refreshed, forgotten or pruned, or the file was missing or bad. */
  dirty = false;

  constructor(
    readonly root: Root,
    readonly key: string,
    readonly name: string,
  ) {}

  /** Entry index of (dev, ino) in the file's entries, or -1. */
  search(dev: number, ino: number): number {
    const dv = this.dv;
    let lo = 0;
    let hi = this.n - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const o = this.base + mid * REC;
      const d = u64At(dv, o);
      const i = d === dev ? u64At(dv, o + 8) : 0;
      if (d === dev && i === ino) return mid;
      if (d < dev || (d === dev && i < ino)) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  validAt(e: number, size: number, ms: number, mns: number, cs: number, cns: number): boolean {
    const dv = this.dv;
    const o = this.base + e * REC;
    return (
      dv.getUint8(o + F_DEAD) === 0 &&
      u64At(dv, o + F_SIZE) === size &&
      i64At(dv, o + F_MSEC) === ms &&
      dv.getUint32(o + F_MNS, true) === mns &&
      i64At(dv, o + F_CSEC) === cs &&
      dv.getUint32(o + F_CNS, true) === cns
    );
  }

  deltaValid(r: number, size: number, ms: number, mns: number, cs: number, cns: number): boolean {
    const d = this.delta;
    return d.dead[r] === 0 && d.size[r] === size && d.msec[r] === ms && d.mns[r] === mns && d.csec[r] === cs && d.cns[r] === cns;
  }
}

/**
 * The cache of one run: the shards of its roots, searched on their bytes.
 * Handles returned by find() stay valid until save().
 */
export class HashCache {
  /** Distinct shards; `ofRoot[i]` is the shard of the run's root i. */
  private readonly shards: Shard[] = [];
  private readonly ofRoot: Shard[] = [];
  /** `shards` index of the shard of the run's root i. */
  private readonly shardOf: number[] = [];
  /** When this run started reading content: entries changed after readAtSec - RACY_SECONDS are not kept. */
  readAtSec = Date.now() / 1000;

  /**
   * @param key fingerprint of the hash key its hashes are made under (state/hash-key.ts)
   * @param roots the run's roots, in order (put()'s rootIndex)
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
      this.shardOf.push(this.shards.indexOf(s));
    }
  }

  // ---- the row API: numbers in, numbers out, nothing allocated per lookup ----

  /**
   * A handle on the valid entry of this inode (size, mtime and ctime match), or -1;
   * with `rootIndex`, in the shard of that root of the run only (where a run
   * over that root put it), else in any loaded shard.
   * One function body on purpose: numbers above 2^30 (times, inode numbers)
   * passed to or returned from a call V8 does not inline are boxed, so the
   * search and the checks are written out here, on 32-bit halves.
   */
  find(dev: number, ino: number, size: number, mtimeSec: number, mtimeNsec: number, ctimeSec: number, ctimeNsec: number, rootIndex = -1): number {
    const S = this.shards.length;
    const devHi = Math.floor(dev / TWO32);
    const devLo = dev - devHi * TWO32;
    const inoHi = Math.floor(ino / TWO32);
    const inoLo = ino - inoHi * TWO32;
    // A file is looked up in its own root's shard: searching every shard cost
    // one binary search per root of the run per lookup (200 roots: ~30 µs).
    const first = rootIndex >= 0 ? this.shardOf[rootIndex]! : 0;
    const end = rootIndex >= 0 ? first + 1 : S;
    for (let s = first; s < end; s++) {
      const sh = this.shards[s]!;
      const dv = sh.dv;
      const base = sh.base;
      let lo = 0;
      let hi = sh.n - 1;
      while (lo <= hi) {
        const mid = (lo + hi) >>> 1;
        const o = base + mid * REC;
        let c = dv.getUint32(o + 4, true) - devHi || dv.getUint32(o, true) - devLo;
        if (c === 0) c = dv.getUint32(o + 12, true) - inoHi || dv.getUint32(o + 8, true) - inoLo;
        if (c < 0) lo = mid + 1;
        else if (c > 0) hi = mid - 1;
        else {
          if (
            dv.getUint8(o + F_DEAD) === 0 &&
            dv.getUint32(o + F_SIZE, true) + dv.getUint32(o + F_SIZE + 4, true) * TWO32 === size &&
            dv.getUint32(o + F_MSEC, true) + dv.getInt32(o + F_MSEC + 4, true) * TWO32 === mtimeSec &&
            dv.getUint32(o + F_MNS, true) === mtimeNsec &&
            dv.getUint32(o + F_CSEC, true) + dv.getInt32(o + F_CSEC + 4, true) * TWO32 === ctimeSec &&
            dv.getUint32(o + F_CNS, true) === ctimeNsec
          )
            return mid * S + s;
          break;
        }
      }
      if (sh.delta.n === 0) continue;
      const r = sh.delta.search(dev, ino);
      if (r >= 0 && sh.deltaValid(r, size, mtimeSec, mtimeNsec, ctimeSec, ctimeNsec)) return (sh.n + r) * S + s;
    }
    return -1;
  }

  /** The high and low 32 bits of the content hash of entry `h`. */
  hashHiAt(h: number): number {
    const S = this.shards.length;
    const sh = this.shards[h % S]!;
    const e = Math.floor(h / S);
    return e < sh.n ? sh.dv.getUint32(sh.base + e * REC + F_HASH + 4, true) : sh.delta.hashHi[e - sh.n]!;
  }
  hashLoAt(h: number): number {
    const S = this.shards.length;
    const sh = this.shards[h % S]!;
    const e = Math.floor(h / S);
    return e < sh.n ? sh.dv.getUint32(sh.base + e * REC + F_HASH, true) : sh.delta.hashLo[e - sh.n]!;
  }
  hashAt(h: number): bigint {
    return (BigInt(this.hashHiAt(h)) << 32n) | BigInt(this.hashLoAt(h));
  }
  /** The xattr digest ("" for none): a string is made only here. */
  xattrsAt(h: number): string {
    const S = this.shards.length;
    const sh = this.shards[h % S]!;
    const e = Math.floor(h / S);
    if (e >= sh.n) return sh.delta.xattrs[e - sh.n]!;
    const o = sh.base + e * REC;
    const len = sh.dv.getUint16(o + F_XLEN, true);
    if (len === 0) return '';
    const off = sh.heap + sh.dv.getUint32(o + F_XOFF, true);
    return sh.buf.toString('latin1', off, off + len);
  }
  flagsAt(h: number): number {
    const S = this.shards.length;
    const sh = this.shards[h % S]!;
    const e = Math.floor(h / S);
    return e < sh.n ? sh.dv.getUint32(sh.base + e * REC + F_FLAGS, true) : sh.delta.flags[e - sh.n]!;
  }
  projidAt(h: number): number {
    const S = this.shards.length;
    const sh = this.shards[h % S]!;
    const e = Math.floor(h / S);
    return e < sh.n ? sh.dv.getUint32(sh.base + e * REC + F_PROJ, true) : sh.delta.projid[e - sh.n]!;
  }
  /** ELF_UNKNOWN, ELF_NO or ELF_YES. */
  elfAt(h: number): number {
    const S = this.shards.length;
    const sh = this.shards[h % S]!;
    const e = Math.floor(h / S);
    return e < sh.n ? sh.dv.getUint8(sh.base + e * REC + F_ELF) : sh.delta.elf[e - sh.n]!;
  }

  /**
   * Remember what was just read from a file of the run's root `rootIndex`,
   * unless it changed too recently to trust (after readAtSec - RACY_SECONDS).
   * `elf`: ELF_UNKNOWN, ELF_NO or ELF_YES.
   */
  put(
    rootIndex: number,
    dev: number,
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
    if (ctimeSec + ctimeNsec / 1e9 > this.readAtSec - RACY_SECONDS) return;
    if (xattrs.length > MAX_XATTRS_LEN) return; // a digest is 64 digits: anything else is not ours to keep
    const sh = this.ofRoot[rootIndex];
    if (!sh) throw new RangeError(`hash cache: no root ${rootIndex} in this run`);
    const d = sh.delta;
    const r = d.push();
    d.dev[r] = dev;
    d.ino[r] = ino;
    d.size[r] = size;
    d.msec[r] = mtimeSec;
    d.mns[r] = mtimeNsec;
    d.csec[r] = ctimeSec;
    d.cns[r] = ctimeNsec;
    d.hashHi[r] = Number(hash >> 32n) >>> 0;
    d.hashLo[r] = Number(hash & 0xffffffffn) >>> 0;
    d.flags[r] = flags >>> 0;
    d.projid[r] = projid >>> 0;
    d.elf[r] = elf === ELF_YES || elf === ELF_NO ? elf : ELF_UNKNOWN;
    d.dead[r] = 0;
    d.xattrs[r] = xattrs;
    sh.dirty = true;
  }

  /**
   * After vunify linked to an inode, fstat shows a new ctime (its link count
   * changed) and nothing else: carry its entries over to it, in every loaded
   * shard. A size or mtime change means the content may have changed too:
   * drop them instead.
   */
  refreshRow(dev: number, ino: number, size: number, mtimeSec: number, mtimeNsec: number, ctimeSec: number, ctimeNsec: number): void {
    for (const sh of this.shards) {
      const e = sh.search(dev, ino);
      if (e >= 0 && sh.dv.getUint8(sh.base + e * REC + F_DEAD) === 0) {
        const o = sh.base + e * REC;
        const dv = sh.dv;
        if (u64At(dv, o + F_SIZE) === size && i64At(dv, o + F_MSEC) === mtimeSec && dv.getUint32(o + F_MNS, true) === mtimeNsec) {
          setI64(dv, o + F_CSEC, ctimeSec);
          dv.setUint32(o + F_CNS, ctimeNsec, true);
        } else dv.setUint8(o + F_DEAD, 1);
        sh.dirty = true;
      }
      const d = sh.delta;
      const r = d.search(dev, ino);
      if (r >= 0 && d.dead[r] === 0) {
        if (d.size[r] === size && d.msec[r] === mtimeSec && d.mns[r] === mtimeNsec) {
          d.csec[r] = ctimeSec;
          d.cns[r] = ctimeNsec;
        } else d.dead[r] = 1;
        sh.dirty = true;
      }
    }
  }

  /**
   * Drop an inode's entries: the linker found its bytes differ from a file
   * the cache said was identical. Size, mtime and ctime cannot tell every
   * write: one through a shared mapping to a page already dirty changes none
   * of them. The next run reads the file again.
   */
  forget(id: { dev: number; ino: number }): void {
    for (const sh of this.shards) {
      const e = sh.search(id.dev, id.ino);
      if (e >= 0) {
        sh.dv.setUint8(sh.base + e * REC + F_DEAD, 1);
        sh.dirty = true;
      }
      const r = sh.delta.search(id.dev, id.ino);
      if (r >= 0) {
        sh.delta.dead[r] = 1;
        sh.dirty = true;
      }
    }
  }

  refresh(stat: Stat): void {
    this.refreshRow(stat.dev, stat.ino, stat.size, stat.mtimeSec, stat.mtimeNsec, stat.ctimeSec, stat.ctimeNsec);
  }

  /**
   * Keep, in the run's shards, only entries of inodes the run saw: `seen`
   * maps a device to the inode numbers found on it (any order; sorted here,
   * a copy). Entries of inodes that are gone would otherwise stay forever.
   */
  pruneTo(seen: ReadonlyMap<number, ArrayLike<number>>): void {
    const sorted = new Map<number, Float64Array>();
    for (const [dev, inos] of seen) sorted.set(dev, Float64Array.from(inos).sort());
    const has = (dev: number, ino: number): boolean => {
      const a = sorted.get(dev);
      if (!a) return false;
      let lo = 0;
      let hi = a.length - 1;
      while (lo <= hi) {
        const mid = (lo + hi) >>> 1;
        if (a[mid] === ino) return true;
        if (a[mid]! < ino) lo = mid + 1;
        else hi = mid - 1;
      }
      return false;
    };
    for (const sh of this.shards) {
      const dv = sh.dv;
      for (let e = 0; e < sh.n; e++) {
        const o = sh.base + e * REC;
        if (dv.getUint8(o + F_DEAD) === 0 && !has(u64At(dv, o), u64At(dv, o + 8))) {
          dv.setUint8(o + F_DEAD, 1);
          sh.dirty = true;
        }
      }
      const d = sh.delta;
      for (let r = 0; r < d.n; r++) if (d.dead[r] === 0 && !has(d.dev[r]!, d.ino[r]!)) d.dead[r] = 1;
    }
  }

  // ---- the object API (today's callers and tests) ----

  /** The entry of an inode, if still valid for `stat` (an object: for tests and few lookups). */
  lookup(stat: Pick<Stat, 'dev' | 'ino' | 'size' | 'mtimeSec' | 'mtimeNsec' | 'ctimeSec' | 'ctimeNsec'>): Cached | undefined {
    const h = this.find(stat.dev, stat.ino, stat.size, stat.mtimeSec, stat.mtimeNsec, stat.ctimeSec, stat.ctimeNsec);
    if (h < 0) return undefined;
    const elf = this.elfAt(h);
    const { size, mtimeSec, mtimeNsec, ctimeSec, ctimeNsec } = stat;
    return { size, mtimeSec, mtimeNsec, ctimeSec, ctimeNsec, hash: this.hashAt(h), xattrs: this.xattrsAt(h), flags: this.flagsAt(h), projid: this.projidAt(h), elf: elf === ELF_UNKNOWN ? undefined : elf === ELF_YES };
  }

  /** put() from a stat and what was read (the object API). */
  putStat(rootIndex: number, stat: Stat, read: { hash: bigint; xattrs: string; flags: number; projid: number; elf?: boolean }): void {
    const elf = read.elf === undefined ? ELF_UNKNOWN : read.elf ? ELF_YES : ELF_NO;
    this.put(rootIndex, stat.dev, stat.ino, stat.size, stat.mtimeSec, stat.mtimeNsec, stat.ctimeSec, stat.ctimeNsec, read.hash, read.xattrs, read.flags, read.projid, elf);
  }

  /** pruneTo() with the inodes of a walk (the object API). */
  prune(seen: readonly Inode[]): void {
    const by = new Map<number, number[]>();
    for (const i of seen) {
      let a = by.get(i.stat.dev);
      if (!a) by.set(i.stat.dev, (a = []));
      a.push(i.stat.ino);
    }
    this.pruneTo(by);
  }

  /** Live entries in the run's shards (file and delta; an inode put twice counts once). */
  get size(): number {
    let n = 0;
    for (const sh of this.shards) {
      for (let e = 0; e < sh.n; e++) if (sh.dv.getUint8(sh.base + e * REC + F_DEAD) === 0 && sh.delta.search(u64At(sh.dv, sh.base + e * REC), u64At(sh.dv, sh.base + e * REC + 8)) < 0) n++;
      for (const r of sh.delta.sorted()) if (sh.delta.dead[r] === 0) n++;
    }
    return n;
  }

  // ---- loading and saving ----

  /**
   * Read the shards of the run's roots. A missing shard is a note (the
   * normal first run over that root); one that does not check out is a
   * warning, and the root is read as if uncached.
   */
  load(warn: (message: string) => void, note: (message: string) => void = warn): void {
    if (!this.dir) return;
    const missing: Shard[] = [];
    for (const sh of this.shards) {
      const file = path.join(this.dir.path, sh.name);
      try {
        readShard(this.dir.fd, sh, this.key);
      } catch (er) {
        sh.dirty = true;
        if (errorCode(er) === 'ENOENT') missing.push(sh);
        else warn(`${file}: hash cache of ${sh.root.path} discarded: ${(er as Error).message}`);
      }
    }
    // One line, not one per root: a first run over 200 guests has no shard at all.
    if (missing.length === 1) note(`${path.join(this.dir.path, missing[0]!.name)}: no hash cache yet for ${missing[0]!.root.path}; its candidate files are read`);
    else if (missing.length > 1)
      note(`${this.dir.path}: no hash cache yet for ${missing.length === this.shards.length ? 'any' : `${missing.length}`} of the ${this.shards.length} roots (${missing[0]!.root.path}, ...); their candidate files are read`);
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
      for (const sh of this.shards) if (sh.dirty) writeAtomically(dirFd, sh.name, encodeShard(sh, this.key));
      this.updateRoots(dirFd);
      sys.fsync(dirFd);
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

  /** Record this run's roots in the roots file, and drop the shards (and lines) of roots that no longer exist. */
  private updateRoots(dirFd: number): void {
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
    if (!changed && keys.length === new Set(keys).size && [...ours].every((k) => keys.includes(k))) return;
    writeAtomically(dirFd, ROOTS_FILE, encodeRoots(keep.sort()));
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
    const st = fs.lstatSync(key.slice(m[0].length));
    return st.isDirectory() && String(st.dev) === m[1] && String(st.ino) === m[2];
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

/** Read and check a shard into `sh`; throws CacheError (or an fs error) if it cannot be trusted. */
function readShard(dirFd: number, sh: Shard, key: string): void {
  const buf = readStateFile(dirFd, sh.name);
  const bad = (why: string) => new CacheError(why);
  if (buf.length < HEAD + 8 || !buf.subarray(0, 8).equals(MAGIC)) throw bad('not a vunify hash cache shard');
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
  const format = dv.getUint32(8, true);
  if (format !== CACHE_FORMAT) throw bad(`written by another version of vunify (format ${format}, this one reads ${CACHE_FORMAT})`);
  const body = buf.subarray(0, buf.length - 8);
  if (sys.xxh64(body) !== buf.readBigUInt64LE(buf.length - 8)) throw bad('checksum mismatch (truncated or corrupt)');
  const headLen = dv.getUint32(12, true);
  const count = dv.getUint32(24, true);
  const heapLen = dv.getUint32(28, true);
  const keyLen = dv.getUint32(32, true);
  if (headLen !== pad8(HEAD + keyLen) || headLen + count * REC + heapLen !== body.length) throw bad('sizes do not add up (truncated or corrupt)');
  const written = buf.toString('utf8', HEAD, HEAD + keyLen);
  if (written !== sh.key) throw bad(`written for another root (${written})`);
  const fingerprint = buf.subarray(16, 24).toString('hex');
  if (fingerprint !== key) throw bad(`written under another hash key (fingerprint ${fingerprint}, this run's is ${key})`);
  // Binary search needs order; the heap references must stay inside the heap.
  let pd = -1;
  let pi = -1;
  for (let e = 0, o = headLen; e < count; e++, o += REC) {
    const d = u64At(dv, o);
    const i = u64At(dv, o + 8);
    if (d < pd || (d === pd && i <= pi)) throw bad('entries out of order');
    pd = d;
    pi = i;
    if (dv.getUint32(o + F_XOFF, true) + dv.getUint16(o + F_XLEN, true) > heapLen || dv.getUint8(o + F_ELF) > ELF_YES || dv.getUint8(o + F_DEAD) !== 0) throw bad('an entry does not check out');
  }
  sh.buf = buf;
  sh.dv = dv;
  sh.base = headLen;
  sh.n = count;
  sh.heap = headLen + count * REC;
}

const pad8 = (n: number) => (n + 7) & ~7;

/** The shard's live entries and delta, merged in (dev, ino) order into the bytes of a new shard. */
function encodeShard(sh: Shard, key: string): Buffer {
  const d = sh.delta;
  const order = d.sorted();
  const src = sh.dv;
  const keyBytes = Buffer.from(sh.key);
  const headLen = pad8(HEAD + keyBytes.length);
  // One buffer for the whole file (no copy to concatenate parts), sized for
  // the most it can hold: every entry of both, the old heap and the delta's
  // strings; the heap goes after the entries once their count is known.
  let heapBound = Math.max(0, sh.buf.length - 8 - sh.heap);
  for (const r of order) heapBound += d.xattrs[r]!.length;
  const file = Buffer.alloc(headLen + (sh.n + order.length) * REC + heapBound + 8);
  const recs = file.subarray(headLen);
  const out = new DataView(recs.buffer, recs.byteOffset, recs.length);
  const heap: Buffer[] = [];
  let heapLen = 0;
  const interned = new Map<string, number>();
  const intern = (x: string): number => {
    let off = interned.get(x);
    if (off === undefined) {
      interned.set(x, (off = heapLen));
      const b = Buffer.from(x, 'latin1');
      heap.push(b);
      heapLen += b.length;
    }
    return off;
  };
  let n = 0;
  const fromFile = (e: number) => {
    const o = sh.base + e * REC;
    const w = n++ * REC;
    recs.set(sh.buf.subarray(o, o + REC), w);
    const len = src.getUint16(o + F_XLEN, true);
    out.setUint32(w + F_XOFF, 0, true);
    if (len > 0) {
      const x = sh.buf.toString('latin1', sh.heap + src.getUint32(o + F_XOFF, true), sh.heap + src.getUint32(o + F_XOFF, true) + len);
      out.setUint32(w + F_XOFF, intern(x), true);
    }
  };
  const fromDelta = (r: number) => {
    const w = n++ * REC;
    setU64(out, w, d.dev[r]!);
    setU64(out, w + 8, d.ino[r]!);
    setU64(out, w + F_SIZE, d.size[r]!);
    setI64(out, w + F_MSEC, d.msec[r]!);
    setI64(out, w + F_CSEC, d.csec[r]!);
    out.setUint32(w + F_MNS, d.mns[r]!, true);
    out.setUint32(w + F_CNS, d.cns[r]!, true);
    out.setUint32(w + F_HASH, d.hashLo[r]!, true);
    out.setUint32(w + F_HASH + 4, d.hashHi[r]!, true);
    out.setUint32(w + F_FLAGS, d.flags[r]!, true);
    out.setUint32(w + F_PROJ, d.projid[r]!, true);
    const x = d.xattrs[r]!;
    out.setUint32(w + F_XOFF, x ? intern(x) : 0, true);
    out.setUint16(w + F_XLEN, x.length, true);
    out.setUint8(w + F_ELF, d.elf[r]!);
  };
  let e = 0;
  let j = 0;
  const liveFile = (k: number) => src.getUint8(sh.base + k * REC + F_DEAD) === 0;
  while (e < sh.n || j < order.length) {
    if (j >= order.length) {
      if (liveFile(e)) fromFile(e);
      e++;
      continue;
    }
    const r = order[j]!;
    if (e >= sh.n) {
      if (d.dead[r] === 0) fromDelta(r);
      j++;
      continue;
    }
    const o = sh.base + e * REC;
    const c = u64At(src, o) - d.dev[r]! || u64At(src, o + 8) - d.ino[r]!;
    if (c < 0) {
      if (liveFile(e)) fromFile(e);
      e++;
    } else {
      // The run's entry of an inode replaces the file's (a dead one drops both).
      if (d.dead[r] === 0) fromDelta(r);
      j++;
      if (c === 0) e++;
    }
  }
  MAGIC.copy(file, 0);
  file.writeUInt32LE(CACHE_FORMAT, 8);
  file.writeUInt32LE(headLen, 12);
  Buffer.from(key.padEnd(16, '0').slice(0, 16), 'hex').copy(file, 16);
  file.writeUInt32LE(n, 24);
  file.writeUInt32LE(heapLen, 28);
  file.writeUInt32LE(keyBytes.length, 32);
  keyBytes.copy(file, HEAD);
  let end = headLen + n * REC;
  for (const b of heap) end += b.copy(file, end);
  file.writeBigUInt64LE(sys.xxh64(file.subarray(0, end)), end);
  return file.subarray(0, end + 8);
}

function encodeRoots(keys: readonly string[]): Buffer {
  const parts: Buffer[] = [ROOTS_MAGIC, u32(CACHE_FORMAT), u32(keys.length)];
  for (const k of keys) {
    const b = Buffer.from(k);
    parts.push(u32(b.length), b);
  }
  const body = Buffer.concat(parts);
  const sum = Buffer.alloc(8);
  sum.writeBigUInt64LE(sys.xxh64(body));
  return Buffer.concat([body, sum]);
}

function decodeRoots(buf: Buffer): string[] {
  if (buf.length < 24 || !buf.subarray(0, 8).equals(ROOTS_MAGIC) || buf.readUInt32LE(8) !== CACHE_FORMAT) throw new CacheError('not a roots file');
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

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

/** Write `name` whole or not at all: a temporary file, fsync, rename over the old one (the caller fsyncs the directory). */
function writeAtomically(dirFd: number, name: string, data: Buffer): void {
  const tmp = Buffer.from(`${name}.tmp.${process.pid}.${randomBytes(4).toString('hex')}`);
  const fd = openStateFile(dirFd, tmp.toString(), O.WRONLY | O.CREAT | O.EXCL);
  try {
    let off = 0;
    while (off < data.length) off += fs.writeSync(fd, data, off, data.length - off);
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
  sys.renameAt(dirFd, tmp, dirFd, Buffer.from(name));
}
