/*
 * Loads the native addon (native/*.c) and the record layouts it exports.
 *
 * The addon hands back packed records (stat records of one file,
 * hash job results) and takes packed hash jobs. Their offsets, the file
 * type and hash result codes, and the names of the calls a hash job can
 * fail at are defined once, in C (offsetof and sizeof on its structs), and
 * read here at load time instead of being copied by hand. Each field is
 * checked against the width its decoder reads it with, so an addon built
 * from other sources fails here, with a message, rather than decoding
 * garbage. Only sys.ts (the seam) and the hash stage's encoder and decoder
 * use this module; everything else goes through `sys`.
 */
import { createRequire } from 'node:module';

export interface Native {
  openBeneath(dirFd: number, path: Buffer, flags: number, mode?: number): number;
  forceLegacyLookup(legacy?: boolean): void;
  fstatx(fd: number): Buffer;
  statAt(dirFd: number, name: Buffer): Buffer;
  getXattrs(fd: number): [Buffer, Buffer][];
  linkAt(fd: number, dirFd: number, name: Buffer): void;
  renameAt(oldDirFd: number, oldName: Buffer, newDirFd: number, newName: Buffer, flags: number): void;
  unlinkAt(dirFd: number, name: Buffer, flags?: number): void;
  getFlags(fd: number): number;
  setFlags(fd: number, flags: number): void;
  flock(fd: number, op: number): boolean;
  vserver(cmd: number, id: number, data: Buffer | null): number;
  openPath(path: Buffer, flags: number, mode?: number): number;
  closeFd(fd: number): void;
  closeLater(fd: number): void;
  closeLaterDrain(): Promise<void>;
  setXattr(fd: number, name: Buffer, value: Buffer): void;
  removeXattr(fd: number, name: Buffer): void;
  copyData(srcFd: number, dstFd: number, size: number): void;
  futimens(fd: number, mtimeSec: number, mtimeNsec: number): void;
  fstatvfs(fd: number): [number, number];
  hashFiles(jobs: Buffer, secret: Buffer, attrsOnly?: boolean, into?: Buffer): Promise<Buffer | number>;
  fsGetXattr(fd: number): [number, number];
  dirXattrsSync(rootFd: number, paths: Buffer, expect: Float64Array, out: Uint32Array): void;
  setProject(fd: number, projid: number): void;
  xxh64(data: Buffer): bigint;
  xxh3(data: Buffer, secret?: Buffer, impl?: number): bigint | null;
  xxh3Stream(data: Buffer, cuts: number[], secret?: Buffer, impl?: number): bigint | null;
  hashFd(fd: number, size: number, secret: Buffer): bigint;
  sha256(data: Buffer): Buffer;
  seekData(fd: number, pos: number, hole: boolean): number;
  residentPages(fd: number, size: number): Buffer;
  pageSize(): number;
  /** glibc malloc_trim(0): freed heap memory back to the kernel; true when some was. */
  mallocTrim(): boolean;
  /** The C exclude matcher's whole verdict (every level, as compileRules().match); for tests. */
  globExcluded(patterns: Buffer[], include: Uint8Array, path: Buffer): boolean;
  /** The parallel walk into the record tables (native/walk.c; its options and result: src/pipeline/walk.ts). */
  walk(opts: object): Promise<unknown>;
  leasePair(fdA: number, fdB: number): number;
  leaseHeld(fdA: number, fdB: number): number;
  leaseRelease(fdA: number, fdB: number): void;
  linkBatch(segs: Float64Array, canonExpect: Float64Array, journalFd: number, flags: number, fileFlagsMask: number, pairs: Float64Array, names: Buffer, out: Float64Array, tmps: Buffer, threads: number): number;
  linkBatchStart(segs: Float64Array, canonExpect: Float64Array, journalFd: number, flags: number, fileFlagsMask: number, pairs: Float64Array, names: Buffer, out: Float64Array, tmps: Buffer, threads: number): Promise<number>;
  linkBatchWait(): boolean;
  setLinkFault(step?: number, nth?: number, after?: number, errno?: number, kill?: number): number;
  errnoError(errno: number, syscall: string): Error;
  openChecked(dirFd: number, name: Buffer, expect: Float64Array, how: number, out: Float64Array): number;
  setLinkHook(fn: ((step: string, when: string, dirFd: number, name: Buffer) => void) | null): void;
  /** The record layouts, as the addon defines them; read through `layout` below. */
  layout: unknown;
}

export const ADDON = '../../build/Release/vunify.node';
export const native = createRequire(import.meta.url)(ADDON) as Native;

/**
 * The fields each decoder or encoder uses, with the width in bytes it reads
 * or writes them with. The addon must define every one, at that width.
 */
const RECORDS = {
  stat: {
    recordLength: 4, type: 1, nameLength: 2, mode: 4, uid: 4, gid: 4, nlink: 4, ino: 8, dev: 8,
    size: 8, blocks: 8, mtimeSec: 8, mtimeNsec: 4, ctimeNsec: 4, ctimeSec: 8, mntId: 8,
  },
  hashIn: {
    recordLength: 4, rootFd: 4, pathLength: 4, mode: 4, uid: 4, gid: 4, ino: 8, dev: 8, size: 8,
    mtimeSec: 8, mtimeNsec: 4, ctimeNsec: 4, ctimeSec: 8,
  },
  hashOut: { recordLength: 4, error: 4, detail: 4, xattrCount: 4, hash: 8, flags: 4, projid: 4 },
  hashXattr: { nameLength: 4, valueLength: 4 },
} as const;
const CODES = { hashCodes: ['changed', 'shrank', 'elf'] } as const;
/**
 * The linker's arrays of doubles (native/link.c): the slot of each field in
 * a stat, a pair in, a pair out and a segment, and each one's length.
 */
const LINK_ARRAYS = {
  stat: ['type', 'dev', 'ino', 'size', 'mode', 'uid', 'gid', 'nlink', 'mtimeSec', 'mtimeNsec', 'ctimeSec', 'ctimeNsec', 'mntId', 'blocks'],
  pair: ['root', 'dirDev', 'dirIno', 'known', 'at', 'nameOff', 'expect'],
  out: ['code', 'errno', 'aux', 'dirFd', 'dupFd', 'left', 'canon', 'dup', 'intoAt', 'outAt'],
  seg: ['canon', 'start', 'count', 'done'],
} as const;
type LinkArrays = typeof LINK_ARRAYS;
/** One of the linker's arrays: each field's slot, and `length`, the doubles one takes. */
export type LinkArray<K extends keyof LinkArrays> = { readonly length: number } & { readonly [F in LinkArrays[K][number]]: number };

type Records = typeof RECORDS;
/** One record: the size of its fixed header and each field's offset in it. */
export type RecordLayout<K extends keyof Records> = { readonly headerSize: number } & { readonly [F in keyof Records[K]]: number };

export interface Layout {
  /** Every record starts at a multiple of this. */
  readonly recordAlign: number;
  readonly stat: RecordLayout<'stat'>;
  readonly hashIn: RecordLayout<'hashIn'>;
  readonly hashOut: RecordLayout<'hashOut'>;
  readonly hashXattr: RecordLayout<'hashXattr'>;
  /** File type codes of stat records, by FileType name (checked against FileType in sys.ts). */
  readonly fileTypes: Readonly<Record<string, number>>;
  /** A hash result's error codes besides errnos (changed, shrank) and its flag bits (elf). */
  readonly hashCodes: { readonly [C in (typeof CODES)['hashCodes'][number]]: number };
  /** The calls a hash job can fail at, by the index a result reports. */
  readonly hashCalls: readonly string[];
  /** Most bytes of xattr names and values a file may carry (more: E2BIG, the file is left alone). */
  readonly xattrTotalMax: number;
  /** The block size of the content hash's zero runs (native/extents.c). */
  readonly zeroBlock: number;
  /** The bytes of the content hash's XXH3 secret (native/xxh3.h; derived from the hash key). */
  readonly hashSecretSize: number;
  /** The linker's batches (native/link.c): its arrays, result codes and fault-hook steps (checked in sys.ts), temporary name length. */
  readonly link: { readonly [K in keyof LinkArrays]: LinkArray<K> } & {
    readonly results: Readonly<Record<string, number>>;
    readonly steps: Readonly<Record<string, number>>;
    readonly openChecked: Readonly<Record<string, number>>;
    readonly tmpLength: number;
  };
}

class LayoutError extends Error {
  constructor(what: string) {
    super(`vunify: the native addon (build/Release/vunify.node) does not match this program: ${what}; rebuild it (npm ci)`);
  }
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0;
const own = (o: unknown, k: string): unknown =>
  typeof o === 'object' && o !== null && Object.hasOwn(o, k) ? (o as Record<string, unknown>)[k] : undefined;

/** Check the addon's `layout` has everything the decoders need, and flatten it to offsets. */
export function checkLayout(raw: unknown): Layout {
  const align = own(raw, 'recordAlign');
  if (!isCount(align) || align === 0 || (align & (align - 1)) !== 0) throw new LayoutError('layout.recordAlign is missing or not a power of two');
  const out: Record<string, unknown> = { recordAlign: align };
  for (const [rec, widths] of Object.entries(RECORDS)) {
    const r = own(raw, rec);
    const size = own(r, 'headerSize');
    if (!isCount(size) || size % align !== 0) throw new LayoutError(`layout.${rec}.headerSize is missing or unaligned`);
    const flat: Record<string, number> = { headerSize: size };
    for (const [name, width] of Object.entries(widths)) {
      const f = own(own(r, 'fields'), name);
      const offset = own(f, 'offset');
      if (!isCount(offset) || own(f, 'width') !== width || offset + width > size) {
        throw new LayoutError(`layout.${rec}.fields.${name} is missing or not ${width} bytes inside the ${size}-byte header`);
      }
      flat[name] = offset;
    }
    out[rec] = Object.freeze(flat);
  }
  const types = own(raw, 'fileTypes');
  if (typeof types !== 'object' || types === null || !Object.values(types).every(isCount)) {
    throw new LayoutError('layout.fileTypes is missing');
  }
  out.fileTypes = Object.freeze({ ...types });
  const codes: Record<string, number> = {};
  for (const name of CODES.hashCodes) {
    const v = own(own(raw, 'hashCodes'), name);
    if (typeof v !== 'number' || !Number.isInteger(v)) throw new LayoutError(`layout.hashCodes.${name} is missing`);
    codes[name] = v;
  }
  out.hashCodes = Object.freeze(codes);
  const calls = own(raw, 'hashCalls');
  if (!Array.isArray(calls) || calls.length === 0 || !calls.every((c) => typeof c === 'string' && c !== '')) {
    throw new LayoutError('layout.hashCalls is missing');
  }
  out.hashCalls = Object.freeze([...calls]);
  const rawLink = own(raw, 'link');
  const link: Record<string, unknown> = {};
  for (const [arr, fields] of Object.entries(LINK_ARRAYS)) {
    const a = own(rawLink, arr);
    const length = own(a, 'length');
    if (!isCount(length)) throw new LayoutError(`layout.link.${arr}.length is missing`);
    const flat: Record<string, number> = { length };
    for (const f of fields) {
      const slot = own(a, f);
      if (!isCount(slot) || slot >= length) throw new LayoutError(`layout.link.${arr}.${f} is missing or past its ${length} doubles`);
      flat[f] = slot;
    }
    link[arr] = Object.freeze(flat);
  }
  for (const codes of ['results', 'steps', 'openChecked']) {
    const c = own(rawLink, codes);
    if (typeof c !== 'object' || c === null || !Object.values(c).every(isCount)) throw new LayoutError(`layout.link.${codes} is missing`);
    link[codes] = Object.freeze({ ...c });
  }
  const tmpLength = own(rawLink, 'tmpLength');
  if (!isCount(tmpLength) || tmpLength === 0) throw new LayoutError('layout.link.tmpLength is missing');
  link.tmpLength = tmpLength;
  out.link = Object.freeze(link);
  for (const name of ['xattrTotalMax', 'zeroBlock', 'hashSecretSize']) {
    const v = own(raw, name);
    if (!isCount(v) || v === 0) throw new LayoutError(`layout.${name} is missing`);
    out[name] = v;
  }
  return Object.freeze(out) as unknown as Layout;
}

/**
 * Check that a TypeScript enum and the addon's codes for it are the same
 * set of names with the same values.
 */
export function checkCodes(what: string, ts: Record<string, string | number>, addon: Readonly<Record<string, number>>): void {
  const names = Object.keys(ts).filter((k) => typeof ts[k] === 'number');
  for (const name of names) {
    if (addon[name] !== ts[name]) throw new LayoutError(`layout.${what}.${name} is ${addon[name]}, not ${ts[name]}`);
  }
  for (const name of Object.keys(addon)) {
    if (!names.includes(name)) throw new LayoutError(`layout.${what}.${name} is unknown here`);
  }
}

export const layout = checkLayout(native.layout);
