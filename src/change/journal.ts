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
 */
import fs from 'node:fs';
import type { Stat } from '../core/stat.js';
import type { FileRec } from '../core/types.js';

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

export type JournalLine = JournalEntry | SettledMark;

/** Where journal lines go; the caller owns the file (state/run-state.ts). */
export interface Journal {
  record(line: JournalLine): void;
}

/** The entry for putting the inode `into` at `file`'s name by way of `tmp`, replacing the inode `out`. */
export function journalEntry(file: FileRec, tmp: Buffer, into: Stat, out: Stat): JournalEntry {
  const root = file.dir.root;
  return {
    root: root.path,
    rootDev: root.dev,
    rootIno: root.ino,
    dir: file.dir.rel.toString('hex'),
    tmp: tmp.toString('hex'),
    name: file.name.toString('hex'),
    canon: { dev: into.dev, ino: into.ino, size: into.size, mtimeSec: into.mtimeSec, mtimeNsec: into.mtimeNsec, mode: into.mode, uid: into.uid, gid: into.gid },
    dup: { dev: out.dev, ino: out.ino, size: out.size, mtimeSec: out.mtimeSec, mtimeNsec: out.mtimeNsec },
  };
}

export function settledMark(tmp: Buffer, old: Stat): SettledMark {
  return { settled: tmp.toString('hex'), ctimeSec: old.ctimeSec, ctimeNsec: old.ctimeNsec };
}

/** A journal writing to the open file `fd`. */
export function journalWriter(fd: number): Journal {
  return {
    record(line) {
      // No fsync: a killed process loses nothing it wrote; only a power
      // failure could, and then the page cache's temporary names go too.
      fs.writeSync(fd, JSON.stringify(line) + '\n');
    },
  };
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
    else if (isEntry(parsed)) entries.push(parsed);
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

function isEntry(x: unknown): x is JournalEntry {
  if (!isObj(x) || typeof x.root !== 'string' || !isInt(x.rootDev) || !isInt(x.rootIno)) return false;
  if (!isHex(x.dir) || !isHex(x.tmp) || !isHex(x.name)) return false;
  const dir = Buffer.from(x.dir, 'hex'), tmp = Buffer.from(x.tmp, 'hex'), name = Buffer.from(x.name, 'hex');
  if (dir.includes(0) || dir.toString('latin1').split('/').some((c) => c === '..')) return false;
  if (tmp.length <= TEMP.length || !tmp.subarray(0, TEMP.length).equals(TEMP) || tmp.includes(0x2f) || tmp.includes(0)) return false;
  if (!name.length || name.includes(0x2f) || name.includes(0) || name.equals(Buffer.from('.')) || name.equals(Buffer.from('..'))) return false;
  const c = x.canon, d = x.dup;
  if (!isObj(c) || !isInt(c.dev) || !isInt(c.ino)) return false;
  for (const k of ['size', 'mtimeSec', 'mtimeNsec', 'mode', 'uid', 'gid']) if (c[k] !== undefined && !isInt(c[k])) return false;
  return isObj(d) && ['dev', 'ino', 'size', 'mtimeSec', 'mtimeNsec'].every((k) => isInt(d[k]));
}
