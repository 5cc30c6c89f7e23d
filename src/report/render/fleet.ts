/*
 * The placement suggestion for people: the saving first, then one table
 * row per target host with the guests it takes. Host and guest names come
 * from manifests written elsewhere, so control characters are escaped
 * before they reach a terminal.
 */
import type { MergeReport } from '../manifest.js';
import { formatBytes as b } from './text.js';
import { percent, table } from './table.js';
import type { PlacementReport } from '../fleet.js';

/** Control characters (and DEL, C1) as \xNN, so a name cannot forge a line of output. */
export const safe = (s: string): string =>
  s.replace(/[\x00-\x1f\x7f-\x9f\\]/g, (c) => (c === '\\' ? '\\\\' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`));

/** The merge with its host names made safe for the text renderer. */
export const safeMerge = (m: MergeReport): MergeReport => ({
  ...m,
  hosts: m.hosts.map((h) => ({ ...h, host: safe(h.host), file: safe(h.file) })),
  matrix: { ...m.matrix, hosts: m.matrix.hosts.map(safe) },
});

export function formatPlacement(r: PlacementReport): string {
  return [
    `Placement suggestion for ${r.plan.hosts.reduce((t, h) => t + h.guests.length, 0)} guests on at most ${r.hosts} hosts of ${b(r.capacityBytes)} (from manifests; a heuristic, each host unified)`,
    `today: ${r.today.hosts} hosts need ${b(r.today.bytes)}; suggested: ${r.plan.hosts.length} hosts need ${b(r.plan.bytes)}`,
    `saving vs today's placement ${b(r.savingBytes)} (${percent(r.savingBytes, r.today.bytes)}); ${r.movedGuests} guests change host`,
    '',
    ...table(
      ['target', 'guests', 'bytes', 'of capacity', 'guests (today\'s host:guest)'],
      r.plan.hosts.map((h, i) => [`${i + 1}`, `${h.guests.length}`, b(h.bytes), percent(h.bytes, r.capacityBytes), h.guests.map((g) => `${safe(g.host)}:${safe(g.guest)}`).join(' ')]),
    ),
  ].join('\n') + '\n';
}
