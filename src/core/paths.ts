/*
 * Guest paths as bytes, and their one printable form. A guest's names need
 * not be UTF-8 and may hold newlines: every message and report line shows
 * a path through printable(), so a name can never forge a line of output.
 * Pure: loads without the native addon.
 */
import type { DirNode, FileRec, Root } from './types.js';

const SLASH = 0x2f;
const EMPTY = Buffer.alloc(0);

/** The node of a root directory itself. */
export function rootNode(root: Root): DirNode {
  // project: present from the start, so every DirNode has one shape (the plan reads it per path).
  return { root, parent: null, name: EMPTY, depth: 0, relLength: 0, dev: root.dev, ino: root.ino, project: undefined };
}

/** The node of the directory `name` listed in `parent`. */
export function childNode(parent: DirNode, name: Buffer, dev: number, ino: number): DirNode {
  const relLength = parent.relLength ? parent.relLength + 1 + name.length : name.length;
  return { root: parent.root, parent, name, depth: parent.depth + 1, relLength, dev, ino, project: undefined };
}

/**
 * Write the path of `dir` relative to `from` (an ancestor, or null for the
 * root), ending at `buf[end]`; returns where it starts. Components are
 * copied from the leaf up, so nothing but `buf` is allocated.
 */
function writeDir(dir: DirNode, from: DirNode | null, buf: Buffer, end: number): number {
  for (let d: DirNode | null = dir; d && d !== from && d.parent; d = d.parent) {
    end -= d.name.length;
    buf.set(d.name, end);
    if (d.parent !== from && d.parent.parent) buf[--end] = SLASH;
  }
  return end;
}

/** Path of a directory relative to its root, as bytes (empty for the root). */
export function dirRel(dir: DirNode): Buffer {
  if (!dir.relLength) return EMPTY;
  const buf = Buffer.allocUnsafe(dir.relLength);
  writeDir(dir, null, buf, buf.length);
  return buf;
}

/** Write the path of a directory relative to its root at `buf[at]` (dir.relLength bytes): many paths, one buffer. */
export function writeDirRel(dir: DirNode, buf: Buffer, at: number): void {
  writeDir(dir, null, buf, at + dir.relLength);
}

/** Path of `dir` relative to its ancestor `from` (at most dir.depth - from.depth names). */
export function dirRelFrom(dir: DirNode, from: DirNode): Buffer {
  if (dir === from) return Buffer.from('.');
  let len = -1;
  for (let d: DirNode | null = dir; d && d !== from; d = d.parent) len += d.name.length + 1;
  const buf = Buffer.allocUnsafe(len);
  writeDir(dir, from, buf, len);
  return buf;
}

/** Path of a file relative to its root, as bytes. */
export function relPath(f: FileRec): Buffer {
  if (!f.dir.relLength) return f.name;
  const buf = Buffer.allocUnsafe(f.dir.relLength + 1 + f.name.length);
  f.name.copy(buf, f.dir.relLength + 1);
  buf[f.dir.relLength] = SLASH;
  writeDir(f.dir, null, buf, f.dir.relLength);
  return buf;
}

/** Bytes of a file's path relative to its root. */
export function relPathLength(f: FileRec): number {
  return f.dir.relLength ? f.dir.relLength + 1 + f.name.length : f.name.length;
}

/** Printable absolute path of a directory, for messages. */
export function displayDir(dir: DirNode): string {
  return dir.root.path.replace(/\/$/, '') + '/' + printable(dirRel(dir));
}

/**
 * Order of two files under one root: by directory path (bytewise, as if
 * written out), then by name; without writing the paths out: only the
 * parts below the deepest common directory are compared.
 */
export function compareRelPaths(a: FileRec, b: FileRec): number {
  if (a.dir !== b.dir) {
    let x: DirNode = a.dir;
    let y: DirNode = b.dir;
    while (x.depth > y.depth) x = x.parent!;
    while (y.depth > x.depth) y = y.parent!;
    while (x !== y && x.parent && y.parent) {
      x = x.parent;
      y = y.parent;
    }
    // Nodes of one root built apart (tests) have no common node: full paths.
    const by = x === y ? compareBelow(a.dir, b.dir, x) : Buffer.compare(dirRel(a.dir), dirRel(b.dir));
    if (by) return by;
  }
  return Buffer.compare(a.name, b.name);
}

/**
 * Buffer.compare(below(a, from), below(b, from)) for two different
 * directories whose deepest common ancestor is `from`, without writing
 * either path out (the plan compares paths in every sort): the two paths
 * part in their first names below `from`, so those names decide, or, when
 * one name is a prefix of the other, the byte after it (a slash, or the end
 * of the path) against the longer name's next byte. Siblings of one name
 * (never from one walk) fall back to the written-out paths.
 */
function compareBelow(a: DirNode, b: DirNode, from: DirNode): number {
  if (a === from) return -1; // "" sorts before any name
  if (b === from) return 1;
  let xa = a;
  while (xa.parent !== from) xa = xa.parent!;
  let xb = b;
  while (xb.parent !== from) xb = xb.parent!;
  const na = xa.name, nb = xb.name;
  const n = Math.min(na.length, nb.length);
  for (let i = 0; i < n; i++) if (na[i] !== nb[i]) return na[i]! < nb[i]! ? -1 : 1;
  if (na.length < nb.length) return xa === a || SLASH < nb[n]! ? -1 : 1;
  if (nb.length < na.length) return xb === b || SLASH < na[n]! ? 1 : -1;
  return Buffer.compare(below(a, from), below(b, from));
}

function below(dir: DirNode, from: DirNode): Buffer {
  return dir === from ? EMPTY : dirRelFrom(dir, from);
}

/** Printable absolute path (invalid UTF-8 bytes shown as \xNN). */
export function displayPath(f: FileRec): string {
  return f.dir.root.path.replace(/\/$/, '') + '/' + printable(relPath(f));
}

export function printable(bytes: Buffer): string {
  const s = bytes.toString('utf8');
  if (!s.includes('\ufffd') && Buffer.from(s, 'utf8').equals(bytes)) return escapeControls(s);
  let out = '';
  for (let i = 0; i < bytes.length; ) {
    // Decode valid UTF-8 runs, escape the rest byte by byte.
    let j = i + 1;
    while (j <= bytes.length && j - i <= 4) {
      const chunk = bytes.subarray(i, j).toString('utf8');
      if (!chunk.includes('\ufffd') && Buffer.from(chunk, 'utf8').equals(bytes.subarray(i, j))) break;
      j++;
    }
    if (j <= bytes.length && j - i <= 4) {
      out += escapeControls(bytes.subarray(i, j).toString('utf8'));
      i = j;
    } else {
      out += '\\x' + bytes[i]!.toString(16).padStart(2, '0');
      i++;
    }
  }
  return out;
}

function escapeControls(s: string): string {
  // A newline in a name must not forge a second line in the report.
  return s.replace(/[\x00-\x1f\x7f\\]/g, (c) => (c === '\\' ? '\\\\' : '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0')));
}
