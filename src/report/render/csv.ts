/*
 * CSV for spreadsheets (RFC 4180 quoting, bytes as plain integers). One
 * stream holds several tables, each preceded by a blank line and starting
 * with a header row whose first column names the table ("guest",
 * "guest_a", "set_path", ...): spreadsheets import it as stacked tables,
 * and a script can split on blank lines.
 */
import { REASONS, type CapacityReport } from '../capacity-model.js';

const cell = (v: string | number | boolean): string => {
  const s = String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};
const rows = (head: string[], body: (string | number | boolean)[][]) => [head, ...body].map((r) => r.map(cell).join(',')).join('\r\n');

export function formatCapacityCsv(r: CapacityReport): string {
  const tables = [
    rows(
      ['guest', 'files', 'bytes', 'shared_bytes', 'freeable_bytes', 'private_bytes', 'other_bytes', ...REASONS.map((k) => `kept_apart_${k}_bytes`), 'outside_link_inodes', 'outside_link_bytes', 'shared_memory_bytes', 'shared_elf_bytes'],
      r.guests.map((g) => [g.path, g.files, g.bytes, g.sharedBytes, g.freeableBytes, g.privateBytes, g.otherBytes, ...REASONS.map((k) => g.keptApart[k]), g.outsideLinks.inodes, g.outsideLinks.bytes, g.memory.sharedBytes, g.memory.sharedElfBytes]),
    ),
    rows(['guest_a', 'guest_b', 'common_bytes'], r.matrix.guests.flatMap((a, i) => r.matrix.guests.map((bb, j) => [a, bb, r.matrix.bytes[i]![j]!]))),
    rows(['set_path', 'size', 'hash', 'inodes', 'paths', 'guests', 'freeable_bytes', 'elf'], r.topSets.map((s) => [s.path, s.size, s.hash, s.inodes, s.paths, s.guests, s.freeableBytes, s.elf])),
    rows(['directory', 'inodes', 'freeable_bytes'], r.topDirectories.map((d) => [d.directory, d.inodes, d.freeableBytes])),
  ];
  if (r.candidates.length) {
    tables.push(rows(
      ['candidate', 'files', 'bytes', 'sharable_files', 'sharable_bytes', 'sharable_percent', 'freeable_bytes', 'kept_apart_bytes'],
      r.candidates.map((c) => [c.path, c.files, c.bytes, c.sharableFiles, c.sharableBytes, c.sharablePercent, c.freeableBytes, c.keptApartBytes]),
    ));
  }
  return tables.join('\r\n\r\n') + '\r\n';
}
