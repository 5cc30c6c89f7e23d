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
import { WIDE16, WIDE32, type Tables } from './table.js';

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

type Ctor<T> = { new (n: number): T };
type Typed = Uint8Array | Uint16Array | Uint32Array | Int32Array | Float64Array;

/** A typed array that doubles when full. */
class Column<T extends Typed> {
  data: T;
  constructor(private readonly ctor: Ctor<T>) {
    this.data = new ctor(64);
  }
  set(row: number, v: number): void {
    if (row >= this.data.length) {
      const next = new this.ctor(Math.max(row + 1, this.data.length * 2));
      next.set(this.data as never);
      this.data = next;
    }
    this.data[row] = v;
  }
  done(count: number): T {
    return this.data.slice(0, count) as T;
  }
}

const fits32 = (v: number) => Number.isInteger(v) && v >= 0 && v < WIDE32;

export class TableBuilder {
  private dirCount = 0;
  private fileCount = 0;
  private names: Buffer[] = [];
  private nameBytes = 0;
  private readonly d = {
    parent: new Column(Int32Array),
    root: new Column(Uint16Array),
    depth: new Column(Uint16Array),
    nameOff: new Column(Uint32Array),
    nameLen: new Column(Uint8Array),
    ino: new Column(Float64Array),
  };
  private readonly f = {
    dir: new Column(Uint32Array),
    nameOff: new Column(Uint32Array),
    nameLen: new Column(Uint8Array),
    ino: new Column(Float64Array),
    size: new Column(Float64Array),
    blocks: new Column(Uint32Array),
    meta: new Column(Uint32Array),
    nlink: new Column(Uint16Array),
    mtimeSec: new Column(Uint32Array),
    mtimeNsec: new Column(Uint32Array),
    ctimeSec: new Column(Uint32Array),
    ctimeNsec: new Column(Uint32Array),
  };
  private readonly metaRows = new Map<string, number>();
  private readonly metas: { uid: number; gid: number; mode: number }[] = [];
  private readonly wide: { row: number; blocks: number; nlink: number; mtimeSec: number; ctimeSec: number }[] = [];

  private name(bytes: Uint8Array): [number, number] {
    if (bytes.length > 255) throw new Error('table: a name longer than 255 bytes');
    const off = this.nameBytes;
    this.names.push(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    this.nameBytes += bytes.length;
    return [off, bytes.length];
  }

  /** A root's directory row: add the roots first, in their order (row k is root k). */
  addRoot(rootIndex: number, ino: number): number {
    if (rootIndex !== this.dirCount) throw new Error('table: roots are rows 0.. in order, before any other directory');
    return this.addDirRow(-1, rootIndex, 0, Buffer.alloc(0), ino);
  }

  /** A directory named `name` listed in directory row `parent`. */
  addDir(parent: number, name: Uint8Array, ino: number): number {
    return this.addDirRow(parent, this.d.root.data[parent]!, this.d.depth.data[parent]! + 1, name, ino);
  }

  private addDirRow(parent: number, root: number, depth: number, name: Uint8Array, ino: number): number {
    const row = this.dirCount++;
    const [off, len] = this.name(name);
    this.d.parent.set(row, parent);
    this.d.root.set(row, root);
    this.d.depth.set(row, depth);
    this.d.nameOff.set(row, off);
    this.d.nameLen.set(row, len);
    this.d.ino.set(row, ino);
    return row;
  }

  /** A regular file named `name` in directory row `dir`. */
  addFile(dir: number, name: Uint8Array, s: FileValues): number {
    const row = this.fileCount++;
    const [off, len] = this.name(name);
    const f = this.f;
    f.dir.set(row, dir);
    f.nameOff.set(row, off);
    f.nameLen.set(row, len);
    f.ino.set(row, s.ino);
    f.size.set(row, s.size);
    const mk = `${s.uid}:${s.gid}:${s.mode}`;
    let meta = this.metaRows.get(mk);
    if (meta === undefined) {
      this.metaRows.set(mk, (meta = this.metas.length));
      this.metas.push({ uid: s.uid, gid: s.gid, mode: s.mode });
    }
    f.meta.set(row, meta);
    f.mtimeNsec.set(row, s.mtimeNsec);
    f.ctimeNsec.set(row, s.ctimeNsec);
    const wide = !fits32(s.blocks) || !(Number.isInteger(s.nlink) && s.nlink >= 0 && s.nlink < WIDE16) || !fits32(s.mtimeSec) || !fits32(s.ctimeSec);
    if (wide) this.wide.push({ row, blocks: s.blocks, nlink: s.nlink, mtimeSec: s.mtimeSec, ctimeSec: s.ctimeSec });
    f.blocks.set(row, wide && !fits32(s.blocks) ? WIDE32 : s.blocks);
    f.nlink.set(row, wide && !(s.nlink >= 0 && s.nlink < WIDE16) ? WIDE16 : s.nlink);
    f.mtimeSec.set(row, wide && !fits32(s.mtimeSec) ? WIDE32 : s.mtimeSec);
    f.ctimeSec.set(row, wide && !fits32(s.ctimeSec) ? WIDE32 : s.ctimeSec);
    return row;
  }

  build(): Tables {
    const nd = this.dirCount, nf = this.fileCount, nw = this.wide.length;
    const d = this.d, f = this.f;
    const wide = {
      count: nw,
      rows: Uint32Array.from(this.wide, (w) => w.row),
      blocks: Float64Array.from(this.wide, (w) => w.blocks),
      nlink: Float64Array.from(this.wide, (w) => w.nlink),
      mtimeSec: Float64Array.from(this.wide, (w) => w.mtimeSec),
      ctimeSec: Float64Array.from(this.wide, (w) => w.ctimeSec),
    };
    return {
      dirs: { count: nd, parent: d.parent.done(nd), root: d.root.done(nd), depth: d.depth.done(nd), nameOff: d.nameOff.done(nd), nameLen: d.nameLen.done(nd), ino: d.ino.done(nd) },
      files: {
        count: nf,
        dir: f.dir.done(nf),
        nameOff: f.nameOff.done(nf),
        nameLen: f.nameLen.done(nf),
        ino: f.ino.done(nf),
        size: f.size.done(nf),
        blocks: f.blocks.done(nf),
        meta: f.meta.done(nf),
        nlink: f.nlink.done(nf),
        mtimeSec: f.mtimeSec.done(nf),
        mtimeNsec: f.mtimeNsec.done(nf),
        ctimeSec: f.ctimeSec.done(nf),
        ctimeNsec: f.ctimeNsec.done(nf),
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
  const b = new TableBuilder();
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
