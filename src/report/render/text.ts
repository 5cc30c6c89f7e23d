/*
 * Every report for people: the summary of a unify run (a table on a
 * terminal, one journal-friendly line elsewhere), split's summary, and the
 * capacity report and merge estimate (aligned tables, sizes in IEC units,
 * one section per question an operator asks: where do the savings come
 * from, what keeps copies apart, what would a new guest share, which guests
 * have most in common).
 */
import type { CapacityReport } from '../capacity-model.js';
import { REASONS } from '../capacity-model.js';
import type { MergeReport } from '../manifest.js';
import type { Report, SplitReport } from '../report.js';
import { percent, shortName, table } from './table.js';


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
    ...(r.keptApartPairs.length
      ? [
          '',
          'What keeps identical content apart, per pair of guests (a guest with itself: inside it)',
          ...table(
            ['guest', 'guest', ...REASONS],
            r.keptApartPairs.map((p) => [shortName(p.guests[0]), shortName(p.guests[1]), ...REASONS.map((k) => b(p.bytes[k]))]),
          ),
        ]
      : []),
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
    `Consolidation estimate for ${m.hosts.length} hosts, ${t.guests} guests (from manifests; content matched by keyed XXH3, not compared byte by byte)`,
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

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** Sizes in IEC units: 1536 -> "1.50 KiB". */
export function formatBytes(n: number): string {
  let i = 0;
  let v = n;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(2)} ${UNITS[i]}`;
}

/**
 * Counts with thousands separators: 1234567 -> "1,234,567", as
 * toLocaleString('en-US') writes them; but its first call loads ICU's
 * number formatting, ~20 ms of every run that prints a summary.
 */
export function formatCount(n: number): string {
  if (!Number.isSafeInteger(n)) return n.toLocaleString('en-US');
  const s = String(Math.abs(n));
  let out = s.slice(0, s.length % 3 || 3);
  for (let i = out.length; i < s.length; i += 3) out += ',' + s.slice(i, i + 3);
  return n < 0 || Object.is(n, -0) ? '-' + out : out;
}

const num = formatCount;
const b = formatBytes;

export function formatHuman(report: Report): string {
  const s = report.summary;
  const lines = [
    `${report.dryRun ? 'Dry run (nothing changed): ' : ''}${num(s.filesScanned)} files, ${formatBytes(s.bytesScanned)} in ${report.roots.length} roots; ${num(s.inodes)} inodes`,
    `already shared by hardlinks: ${formatBytes(s.alreadySharedBytes)}`,
    `duplicate sets: ${num(s.duplicateSets)}; links planned: ${num(s.linksPlanned)}`,
    `freeable: ${num(s.freeableInodes)} inodes, ${formatBytes(s.freeableBytes)} (${formatBytes(s.freeableDiskBytes)} on disk)`,
  ];
  if (!report.dryRun) lines.push(`linked: ${num(s.linksMade)} paths; freed: ${formatBytes(s.freedBytes)} (${formatBytes(s.freedDiskBytes)} on disk)`);
  const apart = keptApartText(report);
  if (apart) lines.push(apart.slice(2));
  if (s.errors) lines.push(`errors: ${num(s.errors)} (${num(s.skipped)} files or links skipped; see messages above)`);
  const w = Math.max(4, ...report.roots.map((r) => r.path.length));
  lines.push('', `${'root'.padEnd(w)}  ${'files'.padStart(9)}  ${'bytes'.padStart(11)}  ${'freeable'.padStart(11)}`);
  for (const r of report.roots) {
    lines.push(`${r.path.padEnd(w)}  ${num(r.files).padStart(9)}  ${formatBytes(r.bytes).padStart(11)}  ${formatBytes(r.freeableBytes).padStart(11)}`);
  }
  return lines.join('\n') + '\n';
}

/**
 * The whole run on one line, for logs (journalctl) and pipes: files and
 * bytes scanned, bytes read to hash, links made, bytes freed, errors, time.
 */
export function formatLine(report: Report): string {
  const s = report.summary;
  const secs = ((report.durations.total ?? 0) / 1000).toFixed(1);
  const done = report.dryRun
    ? `dry run: ${num(s.linksPlanned)} links planned, ${formatBytes(s.freeableBytes)} freeable`
    : `${num(s.linksMade)} links made, ${formatBytes(s.freedBytes)} freed`;
  return (
    `vunify: ${num(s.filesScanned)} files, ${formatBytes(s.bytesScanned)} scanned in ${report.roots.length} roots, ` +
    `${formatBytes(report.hashed.bytes)} read; ${done}${keptApartText(report)}; ${num(s.errors)} errors; ${secs} s\n`
  );
}

/** "; kept apart: project 1.00 MiB, flags 4.00 KiB" for the reasons that kept anything apart, and content splits; "" when none. */
function keptApartText(report: Report): string {
  const k = report.summary.keptApart;
  const reasons = k ? REASONS.filter((r) => k[r] > 0).map((r) => `${r} ${formatBytes(k[r])}`) : [];
  const c = report.summary.contentSplits;
  return (
    (reasons.length ? `; kept apart: ${reasons.join(', ')}` : '') +
    (c && c.parts ? `; ${num(c.parts)} other contents in ${num(c.sets)} hash sets (${formatBytes(c.bytes)} not freed)` : '')
  );
}

export function formatSplit(r: SplitReport): string {
  const s = r.summary;
  const lines = [
    `${r.dryRun ? 'Dry run (nothing changed): ' : ''}${s.filesScanned} files scanned; ${s.pathsShared} paths share an inode with something outside the named roots`,
    `private copies ${r.dryRun ? 'needed' : 'planned'}: ${s.copiesPlanned}, ${formatBytes(s.bytesNeeded)} on disk`,
  ];
  for (const f of r.filesystems) {
    lines.push(`  filesystem of ${f.root}: needs ${formatBytes(f.bytesNeeded)}, ${f.inodesNeeded} inodes; free ${formatBytes(f.bytesAvailable)}, ${f.inodesAvailable} inodes${f.enough ? '' : ' - NOT ENOUGH'}`);
  }
  if (!r.dryRun) lines.push(`copied: ${s.copiesMade}; paths split: ${s.pathsSplit}`);
  if (s.errors) lines.push(`errors: ${s.errors} (${s.skipped} paths skipped; see messages above)`);
  return lines.join('\n') + '\n';
}
