/*
 * The capacity report and the merge estimate for people: aligned tables,
 * sizes in IEC units, one section per question an operator asks (where do
 * the savings come from, what keeps copies apart, what would a new guest
 * share, which guests have most in common).
 */
import type { CapacityReport } from '../capacity-model.js';
import { REASONS } from '../capacity-model.js';
import type { MergeReport } from '../manifest.js';
import { formatBytes as b } from '../report.js';
import { percent, shortName, table } from './table.js';

const num = (n: number) => n.toLocaleString('en-US');

export function formatCapacity(r: CapacityReport): string {
  const t = r.totals;
  const out = [
    `Capacity report (nothing changed): ${t.guests} guests, ${num(t.files)} files, ${b(t.bytes)}; ${num(t.inodes)} inodes`,
    `freeable now: ${b(t.freeableBytes)} in ${num(t.freeableInodes)} inodes (${b(t.freeableDiskBytes)} on disk), ${num(t.duplicateSets)} duplicate sets`,
    `already shared by hardlinks: ${b(t.alreadySharedBytes)}; private (content in one guest only): ${b(t.privateBytes)}`,
    `identical content kept apart by policy: ${REASONS.map((k) => `${k} ${b(t.keptApart[k])}`).join(', ')}`,
    `links outside the roots: ${num(t.outsideLinks.inodes)} inodes, ${b(t.outsideLinks.bytes)} (not freeable; ${b(t.outsideLinks.notFreeableBytes)} of duplicates kept for it)`,
    `page cache shared across guests after unifying: ${b(t.memory.sharedBytes)}, of which ELF executables/libraries ${b(t.memory.sharedElfBytes)}; ELF freeable ${b(t.memory.elfFreeableBytes)}`,
    `hashed ${num(t.hashedInodes)} inodes, ${b(t.hashedBytes)}`,
    '',
    'Per guest',
    ...table(
      ['guest', 'files', 'bytes', 'shared', 'freeable', 'private', 'other', 'freeable%'],
      r.guests.map((g) => [g.path, num(g.files), b(g.bytes), b(g.sharedBytes), b(g.freeableBytes), b(g.privateBytes), b(g.otherBytes), percent(g.freeableBytes, g.bytes)]),
    ),
    '',
    'What keeps identical content apart (first differing attribute), links outside, memory',
    ...table(
      ['guest', ...REASONS, 'outside links', 'shared mem', 'shared ELF'],
      r.guests.map((g) => [g.path, ...REASONS.map((k) => b(g.keptApart[k])), b(g.outsideLinks.bytes), b(g.memory.sharedBytes), b(g.memory.sharedElfBytes)]),
    ),
    '',
    'Bytes in common (identical content, policy-compatible); the diagonal is each guest after unifying itself',
    ...table(
      ['', ...r.matrix.guests.map(shortName)],
      r.matrix.guests.map((g, i) => [shortName(g), ...r.matrix.bytes[i]!.map((v) => b(v))]),
    ),
    '',
    `Top ${r.topSets.length} duplicate sets by bytes freeable`,
    ...table(
      ['path', 'size', 'inodes', 'paths', 'guests', 'freeable', 'ELF'],
      r.topSets.map((s) => [s.path, b(s.size), num(s.inodes), num(s.paths), num(s.guests), b(s.freeableBytes), s.elf ? 'yes' : '']),
    ),
    '',
    `Top ${r.topDirectories.length} directories by bytes freeable`,
    ...table(['directory', 'inodes', 'freeable', 'share'], r.topDirectories.map((d) => [d.directory, num(d.inodes), b(d.freeableBytes), percent(d.freeableBytes, t.freeableBytes)])),
  ];
  if (r.candidates.length) {
    out.push(
      '',
      'Candidates (estimated, nothing counted above)',
      ...table(
        ['candidate', 'files', 'bytes', 'sharable', 'sharable%', 'would free', 'kept apart'],
        r.candidates.map((c) => [c.path, num(c.files), b(c.bytes), b(c.sharableBytes), `${c.sharablePercent.toFixed(1)}%`, b(c.freeableBytes), b(c.keptApartBytes)]),
      ),
    );
  }
  if (r.errors.length) out.push('', `errors: ${num(r.errors.length)} (files skipped; see messages above)`);
  return out.join('\n') + '\n';
}

export function formatMerge(m: MergeReport): string {
  const t = m.totals;
  return [
    `Consolidation estimate for ${m.hosts.length} hosts, ${t.guests} guests (from manifests; content matched by XXH64, not compared byte by byte)`,
    `disk today ${b(t.diskBytes)}; unified per host ${b(t.unifiedBytes)}; consolidated on one host ${b(t.consolidatedBytes)}`,
    `saving vs today ${b(t.savingBytes)} (${percent(t.savingBytes, t.diskBytes)}); beyond unifying each host alone ${b(t.extraSavingBytes)}`,
    '',
    ...table(
      ['host', 'guests', 'files', 'bytes', 'disk today', 'unified'],
      m.hosts.map((h) => [h.host, num(h.guests), num(h.files), b(h.bytes), b(h.diskBytes), b(h.unifiedBytes)]),
    ),
    '',
    'Bytes in common between hosts (the diagonal is the host unified)',
    ...table(['', ...m.matrix.hosts], m.matrix.hosts.map((h, i) => [h, ...m.matrix.bytes[i]!.map((v) => b(v))])),
  ].join('\n') + '\n';
}
