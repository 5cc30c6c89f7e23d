/*
 * Building record tables (table.ts) in JavaScript: row by row from
 * Stat-like values, for tests, and from today's walk output (FileRec[]) so
 * the stages after the walk run on tables before the native walk fills them
 * itself (tablesFromWalk: swapping it for the native walk's tables is one
 * line in index.ts). Values that do not fit a compact column go to the wide
 * side table, as the native walk puts them.
 *
 * Pure: loads without the addon.
 */
import type { DirNode, FileRec, Root } from '../core/types.js';
import { BLOCKS_BIAS, usualBlocks, WIDE16, WIDE32, WIDE8, type Tables } from './table.js';

/** What a file row is made of: what statx said (Stat has all of it). */
export interface FileValues {
  ino: number;
  size: number;
  blocks: number;
  uid: number;
  gid: number;
  mode: number;
  nlink: number;
  mtimeSec: number;
  mtimeNsec: number;
  ctimeSec: number;
  ctimeNsec: number;
}

const fits32 = (v: number) => Number.isInteger(v) && v >= 0 && v < WIDE32;

/** A copy of `a` with room for `n` elements. */
function grown<T extends Uint8Array | Uint16Array | Uint32Array | Int32Array | Float64Array>(a: T, n: number): T {
  const next = new (a.constructor as new (n: number) => T)(n);
  next.set(a as never);
  return next;
}

export class TableBuilder {
  private dirCount = 0;
  private fileCount = 0;
  private names: Buffer[] = [];
  private nameBytes = 0;
  // Plain typed-array fields, grown all at once: a row is a few monomorphic stores.
  private dParent: Int32Array;
  private dRoot: Uint16Array;
  private dDepth: Uint16Array;
  private dNameOff: Uint32Array;
  private dNameLen: Uint8Array;
  private dIno: Float64Array;
  private fDir: Uint32Array;
  private fNameOff: Uint32Array;
  private fNameLen: Uint8Array;
  private fIno: Uint32Array;
  private fSize: Uint32Array;
  private fBlocks: Uint8Array;
  private fMeta: Uint16Array;
  private fNlink: Uint8Array;
  private fMtimeSec: Uint32Array;
  private fMtimeNsec: Uint32Array;
  private fCtimeSec: Uint32Array;
  private fCtimeNsec: Uint32Array;
  private readonly metaRows = new Map<number, number>();
  private readonly metas: { uid: number; gid: number; mode: number }[] = [];
  private readonly wide: { row: number; ino: number; size: number; blocks: number; meta: number; nlink: number; mtimeSec: number; ctimeSec: number }[] = [];

  /** `files` and `dirs`: expected rows (room is made for more as needed). */
  constructor(files = 64, dirs = 16) {
    const d = Math.max(1, dirs), f = Math.max(1, files);
    this.dParent = new Int32Array(d);
    this.dRoot = new Uint16Array(d);
    this.dDepth = new Uint16Array(d);
    this.dNameOff = new Uint32Array(d);
    this.dNameLen = new Uint8Array(d);
    this.dIno = new Float64Array(d);
    this.fDir = new Uint32Array(f);
    this.fNameOff = new Uint32Array(f);
    this.fNameLen = new Uint8Array(f);
    this.fIno = new Uint32Array(f);
    this.fSize = new Uint32Array(f);
    this.fBlocks = new Uint8Array(f);
    this.fMeta = new Uint16Array(f);
    this.fNlink = new Uint8Array(f);
    this.fMtimeSec = new Uint32Array(f);
    this.fMtimeNsec = new Uint32Array(f);
    this.fCtimeSec = new Uint32Array(f);
    this.fCtimeNsec = new Uint32Array(f);
  }

  private name(bytes: Uint8Array): number {
    if (bytes.length > 255) throw new Error('table: a name longer than 255 bytes');
    const off = this.nameBytes;
    this.names.push(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    this.nameBytes += bytes.length;
    return off;
  }

  /** A root's directory row: add the roots first, in their order (row k is root k). */
  addRoot(rootIndex: number, ino: number): number {
    if (rootIndex !== this.dirCount) throw new Error('table: roots are rows 0.. in order, before any other directory');
    return this.addDirRow(-1, rootIndex, 0, Buffer.alloc(0), ino);
  }

  /** A directory named `name` listed in directory row `parent`. */
  addDir(parent: number, name: Uint8Array, ino: number): number {
    return this.addDirRow(parent, this.dRoot[parent]!, this.dDepth[parent]! + 1, name, ino);
  }

  private addDirRow(parent: number, root: number, depth: number, name: Uint8Array, ino: number): number {
    const row = this.dirCount++;
    if (row === this.dParent.length) {
      const n = row * 2;
      this.dParent = grown(this.dParent, n);
      this.dRoot = grown(this.dRoot, n);
      this.dDepth = grown(this.dDepth, n);
      this.dNameOff = grown(this.dNameOff, n);
      this.dNameLen = grown(this.dNameLen, n);
      this.dIno = grown(this.dIno, n);
    }
    this.dNameOff[row] = this.name(name);
    this.dNameLen[row] = name.length;
    this.dParent[row] = parent;
    this.dRoot[row] = root;
    this.dDepth[row] = depth;
    this.dIno[row] = ino;
    return row;
  }

  private growFiles(): void {
    const n = this.fDir.length * 2;
    this.fDir = grown(this.fDir, n);
    this.fNameOff = grown(this.fNameOff, n);
    this.fNameLen = grown(this.fNameLen, n);
    this.fIno = grown(this.fIno, n);
    this.fSize = grown(this.fSize, n);
    this.fBlocks = grown(this.fBlocks, n);
    this.fMeta = grown(this.fMeta, n);
    this.fNlink = grown(this.fNlink, n);
    this.fMtimeSec = grown(this.fMtimeSec, n);
    this.fMtimeNsec = grown(this.fMtimeNsec, n);
    this.fCtimeSec = grown(this.fCtimeSec, n);
    this.fCtimeNsec = grown(this.fCtimeNsec, n);
  }

  /** A regular file named `name` in directory row `dir`. */
  addFile(dir: number, name: Uint8Array, s: FileValues): number {
    const row = this.fileCount++;
    if (row === this.fDir.length) this.growFiles();
    this.fNameOff[row] = this.name(name);
    this.fNameLen[row] = name.length;
    this.fDir[row] = dir;
    // uid and gid are 32-bit, mode 16: one exact numeric key.
    const mk = (s.uid * 4294967296 + s.gid) * 65536 + s.mode;
    let meta = Number.isSafeInteger(mk) ? this.metaRows.get(mk) : undefined;
    if (meta === undefined) {
      meta = this.metas.findIndex((m) => m.uid === s.uid && m.gid === s.gid && m.mode === s.mode);
      if (meta < 0) {
        meta = this.metas.length;
        this.metas.push({ uid: s.uid, gid: s.gid, mode: s.mode });
      }
      if (Number.isSafeInteger(mk)) this.metaRows.set(mk, meta);
    }
    this.fMtimeNsec[row] = s.mtimeNsec;
    this.fCtimeNsec[row] = s.ctimeNsec;
    // The same decisions as native/walk.c's flush().
    const dirIno = this.dIno[dir]!;
    const inoFits = fits32(s.ino % 4294967296) && Math.floor(s.ino / 4294967296) === Math.floor(dirIno / 4294967296);
    const sizeFits = fits32(s.size);
    const delta = s.blocks - usualBlocks(s.size) + BLOCKS_BIAS;
    const blocksFits = Number.isInteger(delta) && delta >= 0 && delta < WIDE8;
    const metaFits = meta < WIDE16;
    const nlinkFits = Number.isInteger(s.nlink) && s.nlink >= 0 && s.nlink < WIDE8;
    const wide = !inoFits || !sizeFits || !blocksFits || !metaFits || !nlinkFits || !fits32(s.mtimeSec) || !fits32(s.ctimeSec);
    if (wide) this.wide.push({ row, ino: s.ino, size: s.size, blocks: s.blocks, meta, nlink: s.nlink, mtimeSec: s.mtimeSec, ctimeSec: s.ctimeSec });
    this.fIno[row] = inoFits ? s.ino % 4294967296 : WIDE32;
    this.fSize[row] = sizeFits ? s.size : WIDE32;
    this.fBlocks[row] = blocksFits ? delta : WIDE8;
    this.fMeta[row] = metaFits ? meta : WIDE16;
    this.fNlink[row] = nlinkFits ? s.nlink : WIDE8;
    this.fMtimeSec[row] = fits32(s.mtimeSec) ? s.mtimeSec : WIDE32;
    this.fCtimeSec[row] = fits32(s.ctimeSec) ? s.ctimeSec : WIDE32;
    return row;
  }

  build(): Tables {
    const nd = this.dirCount, nf = this.fileCount, nw = this.wide.length;
    const wide = {
      count: nw,
      rows: Uint32Array.from(this.wide, (w) => w.row),
      ino: Float64Array.from(this.wide, (w) => w.ino),
      size: Float64Array.from(this.wide, (w) => w.size),
      meta: Float64Array.from(this.wide, (w) => w.meta),
      blocks: Float64Array.from(this.wide, (w) => w.blocks),
      nlink: Float64Array.from(this.wide, (w) => w.nlink),
      mtimeSec: Float64Array.from(this.wide, (w) => w.mtimeSec),
      ctimeSec: Float64Array.from(this.wide, (w) => w.ctimeSec),
    };
    const cut = <T extends Uint8Array | Uint16Array | Uint32Array | Int32Array | Float64Array>(a: T, n: number): T => (a.length === n ? a : (a.slice(0, n) as T));
    return {
      dirs: {
        count: nd,
        parent: cut(this.dParent, nd),
        root: cut(this.dRoot, nd),
        depth: cut(this.dDepth, nd),
        nameOff: cut(this.dNameOff, nd),
        nameLen: cut(this.dNameLen, nd),
        ino: cut(this.dIno, nd),
      },
      files: {
        count: nf,
        dir: cut(this.fDir, nf),
        nameOff: cut(this.fNameOff, nf),
        nameLen: cut(this.fNameLen, nf),
        ino: cut(this.fIno, nf),
        size: cut(this.fSize, nf),
        blocks: cut(this.fBlocks, nf),
        meta: cut(this.fMeta, nf),
        nlink: cut(this.fNlink, nf),
        mtimeSec: cut(this.fMtimeSec, nf),
        mtimeNsec: cut(this.fMtimeNsec, nf),
        ctimeSec: cut(this.fCtimeSec, nf),
        ctimeNsec: cut(this.fCtimeNsec, nf),
      },
      metas: {
        count: this.metas.length,
        uid: Uint32Array.from(this.metas, (m) => m.uid),
        gid: Uint32Array.from(this.metas, (m) => m.gid),
        mode: Uint16Array.from(this.metas, (m) => m.mode),
      },
      wide,
      names: Buffer.concat(this.names, this.nameBytes),
    };
  }
}

/**
 * Tables of what today's walk returned (the adapter until the native walk
 * fills them): one directory row per DirNode a file names (and its
 * ancestors), one file row per FileRec, in the walk's order.
 */
export function tablesFromWalk(roots: readonly Root[], files: readonly FileRec[]): Tables {
  const b = new TableBuilder(files.length, Math.ceil(files.length / 8));
  for (const r of roots) b.addRoot(r.index, r.ino);
  const rows = new Map<DirNode, number>();
  const dirRow = (dir: DirNode): number => {
    let row = rows.get(dir);
    if (row !== undefined) return row;
    row = dir.parent ? b.addDir(dirRow(dir.parent), dir.name, dir.ino) : dir.root.index;
    rows.set(dir, row);
    return row;
  };
  for (const f of files) b.addFile(dirRow(f.dir), f.name, f.stat);
  return b.build();
}
