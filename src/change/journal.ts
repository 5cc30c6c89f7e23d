/*
 * The journal of temporary names: what a run killed at any moment leaves
 * for the next one to put right (state/recovery.ts finds journals of dead
 * runs; change/recover.ts acts on their entries).
 *
 * One line of JSON per event, appended, never rewritten:
 *   - an entry, written before a temporary name is created: where (root,
 *     directory, temporary name, the guest's name) and which inodes (the one
 *     linked in, the one it replaces);
 *   - a settled mark, written after the exchange once the full comparison
 *     passed, just before the old inode's temporary name is unlinked.
 * Byte strings are hex so any name survives JSON. A line cut short by a kill
 * is ignored: its name was never created.
 *
 * Directories are named compactly: an entry says `at`, the number of its
 * directory, and each directory is declared once per journal, before its
 * first entry, by its parent's number and its own name (a root by its path,
 * dev and ino). An entry that spelled out its directory's full path cost a
 * journal quadratic in a guest's depth (254 MB for 1,000 links at depth
 * 1,000). Journals of earlier versions, whose entries carry `root` and `dir`
 * themselves, are read as before.
 */
import fs from 'node:fs';
import { codedError } from '../core/errors.js';
import type { Stat } from '../core/stat.js';
import { dirRel } from '../core/paths.js';
import type { DirNode, FileRec } from '../core/types.js';

/** One temporary name in flight. */
export interface JournalEntry {
  root: string;
  rootDev: number;
  rootIno: number;
  dir: string;
  tmp: string;
  name: string;
  /** The inode linked in; its metadata as linked (absent in journals of older versions). */
  canon: { dev: number; ino: number } & Partial<Meta>;
  dup: { dev: number; ino: number; size: number; mtimeSec: number; mtimeNsec: number };
}

interface Meta {
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  mode: number;
  uid: number;
  gid: number;
}

/**
 * From here the old inode is known to have been identical to the one now at
 * the name, and the ctime it had then tells whether anyone wrote to it since.
 */
export interface SettledMark {
  settled: string;
  ctimeSec: number;
  ctimeNsec: number;
}

/** A directory's number in this journal: a root by its path and identity, any other by its parent's number and its name (hex). */
export type DirDecl = { node: number; root: string; rootDev: number; rootIno: number } | { node: number; parent: number; name: string };

/** An entry as written: its directory by number. */
export type CompactEntry = Omit<JournalEntry, 'root' | 'rootDev' | 'rootIno' | 'dir'> & { at: number };

export type JournalLine = JournalEntry | SettledMark;

/** The directory an entry made by journalEntry() is in, for the writer to name compactly. */
const DIR = Symbol('dir');
type WithDir = JournalEntry & { [DIR]?: DirNode };

/** Where journal lines go; the caller owns the file (state/run-state.ts). */
export interface Journal {
  record(line: JournalLine): void;
  /** A write failed: nothing more was written, and the journal must outlive the run (see journalWriter). */
  readonly failed?: boolean;
  /**
   * For entries the addon writes itself (native/link.c, the same lines):
   * the journal's descriptor, `at()` declares a directory (when not yet
   * declared) and returns its number, `flush()` writes the declarations
   * `at()` made since the last write (before the addon writes entries that
   * name them; a JS line writes them first too), `fail()` records that a
   * write failed. So declarations are written only where this thread
   * writes: linkBatched prepares batches while the addon's threads write.
   */
  readonly native?: { fd: number; at(dir: DirNode): number; flush(): void; fail(): void };
}

/** The entry for putting the inode `into` at `file`'s name by way of `tmp`, replacing the inode `out`. */
export function journalEntry(file: FileRec, tmp: Buffer, into: Stat, out: Stat): JournalEntry {
  const root = file.dir.root;
  const entry: WithDir = {
    root: root.path,
    rootDev: root.dev,
    rootIno: root.ino,
    dir: '', // replaced by a getter below: built only if someone asks
    tmp: tmp.toString('hex'),
    name: file.name.toString('hex'),
    canon: { dev: into.dev, ino: into.ino, size: into.size, mtimeSec: into.mtimeSec, mtimeNsec: into.mtimeNsec, mode: into.mode, uid: into.uid, gid: into.gid },
    dup: { dev: out.dev, ino: out.ino, size: out.size, mtimeSec: out.mtimeSec, mtimeNsec: out.mtimeNsec },
  };
  Object.defineProperty(entry, 'dir', { get: () => dirRel(file.dir).toString('hex'), enumerable: true });
  Object.defineProperty(entry, DIR, { value: file.dir });
  return entry;
}

export function settledMark(tmp: Buffer, old: Stat): SettledMark {
  return { settled: tmp.toString('hex'), ctimeSec: old.ctimeSec, ctimeNsec: old.ctimeNsec };
}

/** A journal writing to the open file `fd`. */
export function journalWriter(fd: number): Journal {
  const numbers = new WeakMap<DirNode, number>();
  let next = 1;
  /** The lines declaring `dir` and those of its ancestors not declared yet, shallowest first. */
  const declare = (dir: DirNode): string => {
    const missing: DirNode[] = [];
    for (let d: DirNode | null = dir; d && !numbers.has(d); d = d.parent) missing.push(d);
    let out = '';
    for (let k = missing.length - 1; k >= 0; k--) {
      const d = missing[k]!;
      const node = next++;
      numbers.set(d, node);
      const decl: DirDecl = d.parent
        ? { node, parent: numbers.get(d.parent)!, name: d.name.toString('hex') }
        : { node, root: d.root.path, rootDev: d.root.dev, rootIno: d.root.ino };
      out += JSON.stringify(decl) + '\n';
    }
    return out;
  };
  const write = (text: string) => {
    if (journal.failed) throw codedError('ENOSPC', 'the journal could not be written earlier in this run; nothing was changed');
    const bytes = Buffer.from(text);
    let n: number;
    try {
      n = fs.writeSync(fd, bytes);
    } catch (er) {
      journal.failed = true;
      throw er;
    }
    if (n !== bytes.length) {
      journal.failed = true;
      throw codedError('ENOSPC', `journal write cut short (${n} of ${bytes.length} bytes; is the state directory's filesystem full?); nothing was changed`);
    }
  };
  /** Declarations at() made, not written yet. */
  let pending = '';
  const journal: Journal & { failed: boolean } = {
    failed: false,
    native: {
      fd,
      at(dir) {
        pending += declare(dir);
        return numbers.get(dir)!;
      },
      flush() {
        const text = pending;
        pending = '';
        if (text) write(text);
      },
      fail() {
        journal.failed = true;
      },
    },
    record(line) {
      let text = pending;
      pending = '';
      const dir = (line as WithDir)[DIR];
      if (dir) {
        const e = line as JournalEntry;
        const compact: CompactEntry = { at: 0, tmp: e.tmp, name: e.name, canon: e.canon, dup: e.dup };
        text += declare(dir);
        compact.at = numbers.get(dir)!;
        text += JSON.stringify(compact) + '\n';
      } else {
        text += JSON.stringify(line) + '\n';
      }
      // One write per event, declarations first: a kill between the two
      // could leave a declaration without its entry, never the reverse.
      // No fsync: a killed process loses nothing it wrote; only a power
      // failure could, and then the page cache's temporary names go too.
      // A short write (the state directory's filesystem full) leaves a line
      // recovery takes for a kill's, never acted on: nothing may follow it.
      // After a failed write nothing is appended (it would join the cut
      // line into one recovery cannot read), so no further swap starts; and
      // the journal is kept when the run ends, for the next run's recovery
      // to put right what it records (a settled mark that could not be
      // written leaves a temporary name behind).
      write(text);
    },
  };
  return journal;
}

/**
 * A journal's entries, the settled marks by temporary name, and the numbers
 * of malformed lines. A last line cut short (no newline) is a kill's, not
 * malformed. A line is malformed unless it has every field with its type, a
 * temporary name of ours (`.vunify.*`, no slash) and a plain guest name:
 * what is not recognized is never acted on.
 */
export function parseJournal(text: string): { entries: JournalEntry[]; settled: Map<string, SettledMark>; malformed: number[] } {
  const entries: JournalEntry[] = [];
  const settled = new Map<string, SettledMark>();
  const malformed: number[] = [];
  const dirs = new Map<number, Decl>();
  const lines = text.split('\n');
  for (const [i, line] of lines.entries()) {
    if (!line) continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      if (i === lines.length - 1) continue; // cut short by the kill: its name was never created
      malformed.push(i + 1);
      continue;
    }
    if (isMark(parsed)) settled.set(parsed.settled, parsed);
    else if (isDecl(parsed, dirs)) dirs.set(parsed.node, 'root' in parsed ? { root: parsed } : { parent: dirs.get(parsed.parent), name: parsed.name });
    else if (isCompact(parsed, dirs)) {
      const entry = expand(parsed, dirs.get(parsed.at));
      if (entry) entries.push(entry);
      else malformed.push(i + 1);
    } else if (isEntry(parsed)) entries.push(parsed);
    else malformed.push(i + 1);
  }
  return { entries, settled, malformed };
}

const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
const isInt = (x: unknown): x is number => Number.isSafeInteger(x);
const isHex = (x: unknown): x is string => typeof x === 'string' && x.length % 2 === 0 && /^[0-9a-f]*$/.test(x);
const TEMP = Buffer.from('.vunify.');

function isMark(x: unknown): x is SettledMark {
  return isObj(x) && isHex(x.settled) && isInt(x.ctimeSec) && isInt(x.ctimeNsec);
}

/** A plain guest name (hex): not empty, no slash or NUL, not . or .. */
function isName(x: unknown): x is string {
  if (!isHex(x)) return false;
  const name = Buffer.from(x, 'hex');
  return name.length > 0 && !name.includes(0x2f) && !name.includes(0) && !name.equals(Buffer.from('.')) && !name.equals(Buffer.from('..'));
}

/** Our temporary name (hex): `.vunify.*`, no slash or NUL. */
function isTemp(x: unknown): x is string {
  if (!isHex(x)) return false;
  const tmp = Buffer.from(x, 'hex');
  return tmp.length > TEMP.length && tmp.subarray(0, TEMP.length).equals(TEMP) && !tmp.includes(0x2f) && !tmp.includes(0);
}

/**
 * An mtime's seconds: any integer. A guest can give a file one past 2^53
 * (tmpfs and btrfs take any 64-bit time); both writers put the exact value
 * of the double stat gave, which JSON.parse gives back, and recovery only
 * compares it with stat's double of the same time. Refused as a safe
 * integer, such an entry was malformed: a run killed while linking that
 * file left its temporary name in the guest for good.
 */
const isTime = (x: unknown): x is number => Number.isInteger(x);
const fieldOk = (k: string, v: unknown) => (k === 'mtimeSec' ? isTime(v) : isInt(v));

/** The two inodes of an entry, each field of its type. */
function hasInodes(x: Record<string, unknown>): boolean {
  const c = x.canon, d = x.dup;
  if (!isObj(c) || !isInt(c.dev) || !isInt(c.ino)) return false;
  for (const k of ['size', 'mtimeSec', 'mtimeNsec', 'mode', 'uid', 'gid']) if (c[k] !== undefined && !fieldOk(k, c[k])) return false;
  return isObj(d) && ['dev', 'ino', 'size', 'mtimeSec', 'mtimeNsec'].every((k) => fieldOk(k, d[k]));
}

/** A directory declaration: a root by path and identity, or a plain name under an already declared directory. */
function isDecl(x: unknown, dirs: ReadonlyMap<number, Decl>): x is DirDecl {
  if (!isObj(x) || !isInt(x.node) || dirs.has(x.node)) return false;
  if ('root' in x) return typeof x.root === 'string' && isInt(x.rootDev) && isInt(x.rootIno);
  return isInt(x.parent) && dirs.has(x.parent) && isName(x.name);
}

/** An entry as written today: its directory by a declared number. */
function isCompact(x: unknown, dirs: ReadonlyMap<number, Decl>): x is CompactEntry {
  return isObj(x) && isInt(x.at) && dirs.has(x.at) && isTemp(x.tmp) && isName(x.name) && hasInodes(x);
}

/** An entry of an earlier version, which spelled out its root and directory. */
function isEntry(x: unknown): x is JournalEntry {
  if (!isObj(x) || typeof x.root !== 'string' || !isInt(x.rootDev) || !isInt(x.rootIno) || !isHex(x.dir)) return false;
  const dir = Buffer.from(x.dir, 'hex');
  if (dir.includes(0) || dir.toString('latin1').split('/').some((c) => c === '..')) return false;
  return isTemp(x.tmp) && isName(x.name) && hasInodes(x);
}

/** A declared directory while reading: its parent's declaration and name, up to a root's. */
type Decl = { root: Extract<DirDecl, { root: string }> } | { parent: Decl | undefined; name: string };

/** A compact entry as the full entry recovery acts on; its `dir` is spelled out only when read. */
function expand(e: CompactEntry, at: Decl | undefined): JournalEntry | undefined {
  let d = at;
  while (d && !('root' in d)) d = d.parent;
  if (!at || !d) return undefined; // never declared: not written by vunify
  const { root } = d;
  const entry = { root: root.root, rootDev: root.rootDev, rootIno: root.rootIno, dir: '', tmp: e.tmp, name: e.name, canon: e.canon, dup: e.dup };
  Object.defineProperty(entry, 'dir', { get: () => declPath(at), enumerable: true });
  return entry;
}

/** The hex path, relative to its root, of a declared directory. */
function declPath(at: Decl): string {
  const names: string[] = [];
  for (let d: Decl | undefined = at; d && !('root' in d); d = d.parent) names.push(d.name);
  return names.reverse().join('2f'); // '/' in hex
}
