/*
 * Records as tables: what the walk found, as columns (struct of arrays).
 *
 * One JavaScript object per file (with its name Buffer, stat object, inode
 * object and map entries) cost ~1,000 bytes per file and most of the walk's
 * and grouping's time. Here a file is a row number: its fields are typed
 * array elements, its name a slice of one byte heap, its directory a row of
 * the directory table. Later stages work on row numbers (Uint32Array lists
 * of rows); an object is built only for the file being linked or a line
 * being printed.
 *
 * The columns are compact (37 bytes per file besides its name): fields
 * that almost always fit 8, 16 or 32 bits are stored so, and a row whose
 * value does not fit (a file of 4 GiB or more, 255 links or more, more than
 * 65,534 owner/group/mode triples, an inode number whose upper 32 bits are
 * not its directory's, a time before 1970 or after 2106, an allocation far
 * from its size's usual one) holds the column's sentinel there and has its
 * exact values in `wide`, a short side table: use the accessors below for
 * those columns (sizeOf, inoOf, blocksOf, metaOf, nlinkOf, mtimeSecOf,
 * ctimeSecOf), never the raw column.
 *
 * Rows are in no particular order (the walk runs on several threads): any
 * order a stage reports in must come from the data (root index, then path
 * bytes), never from row numbers.
 *
 * This module is pure (loads without the addon): tests and the planner build
 * tables with `TableBuilder`.
 */

/** Sentinel in a 32-bit column: the exact value is in `wide`. */
export const WIDE32 = 0xffffffff;
/** Sentinel in a 16-bit column: the exact value is in `wide`. */
export const WIDE16 = 0xffff;
/** Sentinel in an 8-bit column: the exact value is in `wide`. */
export const WIDE8 = 0xff;
/** `blocks` stores the allocation as usualBlocks(size) + (value - BLOCKS_BIAS), for values below WIDE8. */
export const BLOCKS_BIAS = 128;
/** The 512-byte blocks a file of `size` bytes usually has: whole 4 KiB blocks. */
export const usualBlocks = (size: number): number => Math.ceil(size / 4096) * 8;
const TWO32 = 4294967296;

/** One row per directory the walk listed (or tried to list). Row 0.. are the roots, in `roots` order. */
export interface DirTable {
  count: number;
  /** Parent directory row; -1 for a root. */
  parent: Int32Array;
  /** Index of the root in the run's roots. */
  root: Uint16Array;
  /** Levels below the root (0 for the root; the walk stops at MAX_DEPTH). */
  depth: Uint16Array;
  /** Its name in the parent: bytes nameOff..nameOff+nameLen of `names`; empty for a root. */
  nameOff: Uint32Array;
  nameLen: Uint8Array;
  ino: Float64Array;
}

/** The owner, group and mode bits a set of files share: one row per distinct triple. */
export interface MetaTable {
  count: number;
  uid: Uint32Array;
  gid: Uint32Array;
  /** st_mode (type and permission bits). */
  mode: Uint16Array;
}

/** Exact values of rows that did not fit the compact columns, sorted by row. */
export interface WideTable {
  count: number;
  rows: Uint32Array;
  ino: Float64Array;
  size: Float64Array;
  blocks: Float64Array;
  meta: Float64Array;
  nlink: Float64Array;
  mtimeSec: Float64Array;
  ctimeSec: Float64Array;
}

/** One row per path of a regular file the walk kept (within --min-size/--max-size, not excluded). */
export interface FileTable {
  count: number;
  /** Directory row. The file's st_dev and mount are its root's: the walk never crosses either. */
  dir: Uint32Array;
  nameOff: Uint32Array;
  nameLen: Uint8Array;
  /** The inode number's low 32 bits; its high bits are its directory's (dirs.ino). WIDE32: see wide. */
  ino: Uint32Array;
  /** Bytes; WIDE32: see wide. */
  size: Uint32Array;
  /** 512-byte blocks allocated, as usualBlocks(size) + value - BLOCKS_BIAS; WIDE8: see wide. */
  blocks: Uint8Array;
  /** Row of `metas`: uid, gid, mode; WIDE16: see wide. */
  meta: Uint16Array;
  /** WIDE8: see wide. */
  nlink: Uint8Array;
  /** Seconds since the epoch, unsigned; WIDE32: see wide. */
  mtimeSec: Uint32Array;
  mtimeNsec: Uint32Array;
  ctimeSec: Uint32Array;
  ctimeNsec: Uint32Array;
}

/** Everything the walk produced. */
export interface Tables {
  dirs: DirTable;
  files: FileTable;
  metas: MetaTable;
  wide: WideTable;
  /** Name bytes of directories and files. */
  names: Buffer;
}

function wideIndex(t: Tables, row: number): number {
  const rows = t.wide.rows;
  let lo = 0;
  let hi = t.wide.count - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const r = rows[mid]!;
    if (r === row) return mid;
    if (r < row) lo = mid + 1;
    else hi = mid - 1;
  }
  throw new Error(`table: row ${row} has a sentinel but no wide entry`);
}

export const sizeOf = (t: Tables, row: number): number => {
  const v = t.files.size[row]!;
  return v !== WIDE32 ? v : t.wide.size[wideIndex(t, row)]!;
};
export const inoOf = (t: Tables, row: number): number => {
  const v = t.files.ino[row]!;
  if (v === WIDE32) return t.wide.ino[wideIndex(t, row)]!;
  const d = t.dirs.ino[t.files.dir[row]!]!;
  return d < TWO32 ? v : Math.floor(d / TWO32) * TWO32 + v;
};
export const blocksOf = (t: Tables, row: number): number => {
  const v = t.files.blocks[row]!;
  return v !== WIDE8 ? usualBlocks(sizeOf(t, row)) + v - BLOCKS_BIAS : t.wide.blocks[wideIndex(t, row)]!;
};
export const metaOf = (t: Tables, row: number): number => {
  const v = t.files.meta[row]!;
  return v !== WIDE16 ? v : t.wide.meta[wideIndex(t, row)]!;
};
export const nlinkOf = (t: Tables, row: number): number => {
  const v = t.files.nlink[row]!;
  return v !== WIDE8 ? v : t.wide.nlink[wideIndex(t, row)]!;
};
export const mtimeSecOf = (t: Tables, row: number): number => {
  const v = t.files.mtimeSec[row]!;
  return v !== WIDE32 ? v : t.wide.mtimeSec[wideIndex(t, row)]!;
};
export const ctimeSecOf = (t: Tables, row: number): number => {
  const v = t.files.ctimeSec[row]!;
  return v !== WIDE32 ? v : t.wide.ctimeSec[wideIndex(t, row)]!;
};
export const uidOf = (t: Tables, row: number): number => t.metas.uid[metaOf(t, row)]!;
export const gidOf = (t: Tables, row: number): number => t.metas.gid[metaOf(t, row)]!;
export const modeOf = (t: Tables, row: number): number => t.metas.mode[metaOf(t, row)]!;
/** A file's name bytes (a view into the heap: copy it to keep it past the tables). */
export const fileName = (t: Tables, row: number): Buffer => t.names.subarray(t.files.nameOff[row]!, t.files.nameOff[row]! + t.files.nameLen[row]!);
export const dirName = (t: Tables, dir: number): Buffer => t.names.subarray(t.dirs.nameOff[dir]!, t.dirs.nameOff[dir]! + t.dirs.nameLen[dir]!);
/** Bytes the tables hold (for the memory budget and the README's per-file figure). */
export function tableBytes(t: Tables): number {
  let n = t.names.byteLength;
  for (const part of [t.dirs, t.files, t.metas, t.wide] as object[])
    for (const v of Object.values(part)) if (ArrayBuffer.isView(v)) n += v.byteLength;
  return n;
}
