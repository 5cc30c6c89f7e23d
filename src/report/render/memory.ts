/*
 * The memory section of the capacity report (`vunify report --memory`), for
 * the terminal and for the HTML page: per guest, what its processes map from
 * files and how much of it is stale; the processes to restart, with what a
 * restart reclaims; and the duplicate sets' bytes in the page cache now.
 * Command lines and paths come from guests: printed only through
 * confine.printable (already applied by the model) and, in HTML, esc().
 */
import type { MemoryReport } from '../memory.js';
import { formatBytes as b, formatCount as num } from './text.js';
import { table } from './table.js';

/** Most processes listed in full; the rest are counted (JSON has them all). */
const LIST = 30;
const clip = (s: string, n = 60) => (s.length > n ? s.slice(0, n - 1) + '…' : s);

export function formatMemoryText(m: MemoryReport): string {
  const t = m.totals;
  const c = m.pageCache;
  const out = [
    '',
    'Memory (running guest processes, from /proc; nothing changed)',
    `${num(t.processes)} guest processes map ${b(t.fileRssBytes)} from files (PSS ${b(t.filePssBytes)}); stale copies: RSS ${b(t.staleRssBytes)}, PSS ${b(t.stalePssBytes)}`,
    `restarting ${num(t.processesToRestart)} processes would reclaim about ${b(t.reclaimableAfterRestartBytes)}`,
    `page cache now: the ${num(c.sets)} duplicate sets have ${b(c.residentBytes)} resident, ${b(c.duplicateResidentBytes)} of it in more than one copy (unifying frees that)`,
    '',
    ...table(
      ['guest', 'processes', 'file RSS', 'file PSS', 'stale RSS', 'stale PSS', 'reclaimable', 'restart', 'dup. cached'],
      m.guests.map((g) => [g.path, num(g.processes), b(g.fileRssBytes), b(g.filePssBytes), b(g.staleRssBytes), b(g.stalePssBytes), b(g.reclaimableAfterRestartBytes), num(g.processesToRestart), b(g.duplicateResidentBytes)]),
    ),
  ];
  if (m.restart.length) {
    out.push(
      '',
      'Processes to restart (they map copies a restart would replace)',
      ...table(
        ['pid', 'guest', 'reclaimable', 'stale PSS', 'stale files', 'command'],
        m.restart.slice(0, LIST).map((p) => [String(p.pid), p.guest, b(p.reclaimableAfterRestartBytes), b(p.stalePssBytes), staleSummary(p.staleFiles), clip(p.command)]),
      ),
    );
    if (m.restart.length > LIST) out.push(`… and ${num(m.restart.length - LIST)} more (see --json)`);
  }
  for (const u of m.unreadable) out.push(`cannot read process ${u.pid} of ${u.guest}: ${u.reason}`);
  return out.join('\n') + '\n';
}

/** "libc.so.6 +3 (replaced)": the largest stale file, how many more, and why. */
function staleSummary(files: MemoryReport['restart'][number]['staleFiles']): string {
  if (!files.length) return '';
  const first = files[0]!;
  const base = first.path.split('/').pop() || first.path;
  const reasons = [...new Set(files.map((f) => f.reason))].join(', ');
  return `${clip(base, 28)}${files.length > 1 ? ` +${files.length - 1}` : ''} (${reasons})`;
}

const esc = (s: string | number): string =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

function htmlTable(id: string, head: string[], rows: (string | number)[][]): string {
  const th = head.map((h) => `<th>${esc(h)}</th>`).join('');
  const body = rows.map((r) => `<tr>${r.map((c, k) => `<td${k ? ' class="n"' : ''}>${esc(c)}</td>`).join('')}</tr>`).join('\n');
  return `<table id="${id}"><thead><tr>${th}</tr></thead><tbody>\n${body}\n</tbody></table>`;
}

export function formatMemoryHtml(m: MemoryReport): string {
  const t = m.totals;
  const c = m.pageCache;
  return [
    `<h2 id="memory">Memory: running guest processes</h2>`,
    `<p>${num(t.processes)} guest processes map ${esc(b(t.fileRssBytes))} from files (PSS ${esc(b(t.filePssBytes))}); stale copies: RSS ${esc(b(t.staleRssBytes))}, PSS ${esc(b(t.stalePssBytes))}.`,
    ` <b>Restarting ${num(t.processesToRestart)} processes would reclaim about ${esc(b(t.reclaimableAfterRestartBytes))}.</b>`,
    ` Page cache now: the ${num(c.sets)} duplicate sets have ${esc(b(c.residentBytes))} resident, ${esc(b(c.duplicateResidentBytes))} of it in more than one copy.</p>`,
    htmlTable(
      'memory-guests',
      ['guest', 'processes', 'file RSS', 'file PSS', 'stale RSS', 'stale PSS', 'reclaimable', 'to restart', 'duplicate cached'],
      m.guests.map((g) => [g.path, g.processes, b(g.fileRssBytes), b(g.filePssBytes), b(g.staleRssBytes), b(g.stalePssBytes), b(g.reclaimableAfterRestartBytes), g.processesToRestart, b(g.duplicateResidentBytes)]),
    ),
    `<h2>Processes to restart</h2>`,
    htmlTable(
      'memory-restart',
      ['pid', 'guest', 'reclaimable', 'stale PSS', 'stale files', 'command'],
      m.restart.map((p) => [p.pid, p.guest, b(p.reclaimableAfterRestartBytes), b(p.stalePssBytes), staleSummary(p.staleFiles), p.command]),
    ),
    ...m.unreadable.map((u) => `<p>Cannot read process ${u.pid} of ${esc(u.guest)}: ${esc(u.reason)}</p>`),
  ].join('\n');
}
