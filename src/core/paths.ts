/*
 * Guest paths as bytes, and their one printable form. A guest's names need
 * not be UTF-8 and may hold newlines: every message and report line shows
 * a path through printable(), so a name can never forge a line of output.
 * Pure: loads without the native addon.
 */
import type { FileRec } from './types.js';

const SLASH = Buffer.from('/');

/** Path of a file relative to its root, as bytes. */
export function relPath(f: FileRec): Buffer {
  return f.dir.rel.length ? Buffer.concat([f.dir.rel, SLASH, f.name]) : f.name;
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
