/*
 * The capacity report as one self-contained HTML page: inline CSS and inline
 * SVG drawn here, no script and no network fetch, so it opens from a mail
 * attachment or an air-gapped host and renders the same in any browser.
 *
 *   - a stacked bar per guest: shared / freeable / private / other bytes,
 *     on one scale so guests compare by length;
 *   - the guest x guest heatmap of bytes in common (colour scaled to the
 *     largest off-diagonal cell; the diagonal, a guest with itself, is grey);
 *   - the top duplicate sets, top directories and candidates as tables.
 * Every name a guest controls reaches the page only through esc().
 */
import { REASONS, type CapacityReport } from '../capacity-model.js';
import { percent, shortName } from './table.js';
import { formatBytes, formatCount } from './text.js';

const esc = (s: string | number): string =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

export const SEGMENTS = [
  { key: 'sharedBytes', label: 'already shared', color: '#4e79a7' },
  { key: 'freeableBytes', label: 'freeable now', color: '#59a14f' },
  { key: 'privateBytes', label: 'private (unique content)', color: '#f28e2b' },
  { key: 'otherBytes', label: 'other (copies that stay)', color: '#bab0ac' },
] as const;

function barChart(r: CapacityReport): string {
  const label = 150, width = 560, row = 26, top = 10;
  const max = Math.max(1, ...r.guests.map((g) => g.bytes));
  const bars = r.guests.map((g, i) => {
    let x = label;
    const y = top + i * row;
    const rects = SEGMENTS.map((s) => {
      const w = (g[s.key] / max) * width;
      const rect = `<rect class="seg" x="${x.toFixed(1)}" y="${y}" width="${w.toFixed(1)}" height="${row - 6}" fill="${s.color}"><title>${esc(`${g.path}: ${s.label} ${formatBytes(g[s.key])}`)}</title></rect>`;
      x += w;
      return rect;
    });
    return `<g class="bar" data-guest="${esc(g.path)}"><text x="${label - 6}" y="${y + row / 2}" text-anchor="end">${esc(shortName(g.path))}</text>${rects.join('')}<text x="${(x + 6).toFixed(1)}" y="${y + row / 2}">${esc(formatBytes(g.bytes))}</text></g>`;
  });
  const h = top + r.guests.length * row + 10;
  return `<svg id="bars" xmlns="http://www.w3.org/2000/svg" width="${label + width + 90}" height="${h}" viewBox="0 0 ${label + width + 90} ${h}">${bars.join('')}</svg>`;
}

function heatmap(r: CapacityReport): string {
  const n = r.matrix.guests.length, cell = Math.max(22, Math.min(48, Math.floor(560 / Math.max(1, n)))), left = 150, top = 110;
  let max = 1;
  r.matrix.bytes.forEach((row, i) => row.forEach((v, j) => i !== j && (max = Math.max(max, v))));
  const names = r.matrix.guests.map(shortName);
  const cells: string[] = [];
  r.matrix.bytes.forEach((row, i) =>
    row.forEach((v, j) => {
      const t = v / max;
      // white -> dark blue
      const fill = i === j ? '#dddddd' : `rgb(${Math.round(255 - 222 * t)},${Math.round(255 - 180 * t)},${Math.round(255 - 95 * t)})`;
      cells.push(
        `<rect class="cell" x="${left + j * cell}" y="${top + i * cell}" width="${cell - 1}" height="${cell - 1}" fill="${fill}"><title>${esc(`${names[i]} / ${names[j]}: ${formatBytes(v)}`)}</title></rect>`,
      );
    }),
  );
  const rowLabels = names.map((s, i) => `<text x="${left - 6}" y="${top + i * cell + cell / 2 + 4}" text-anchor="end">${esc(s)}</text>`);
  const colLabels = names.map((s, j) => {
    const x = left + j * cell + cell / 2, y = top - 6;
    return `<text x="${x}" y="${y}" transform="rotate(-60 ${x} ${y})">${esc(s)}</text>`;
  });
  const w = left + n * cell + 20, h = top + n * cell + 20;
  return `<svg id="heatmap" xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}">${rowLabels.join('')}${colLabels.join('')}${cells.join('')}</svg>`;
}

function htmlTable(id: string, head: string[], rows: (string | number)[][]): string {
  const th = head.map((h) => `<th>${esc(h)}</th>`).join('');
  const body = rows.map((r) => `<tr>${r.map((c, k) => `<td${k ? ' class="n"' : ''}>${esc(c)}</td>`).join('')}</tr>`).join('\n');
  return `<table id="${id}"><thead><tr>${th}</tr></thead><tbody>\n${body}\n</tbody></table>`;
}

/** `extra`: further sections (already HTML, escaped), placed after the tables (the memory section). */
export function formatCapacityHtml(r: CapacityReport, generated = new Date(), extra = ''): string {
  const t = r.totals;
  const b = formatBytes;
  const legend = SEGMENTS.map((s) => `<span><i style="background:${s.color}"></i>${esc(s.label)}</span>`).join(' ');
  const parts = [
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>vunify capacity report</title>`,
    `<style>body{font:14px system-ui,sans-serif;margin:2em;color:#222}h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em}`,
    `table{border-collapse:collapse}td,th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}`,
    `svg text{font:12px system-ui,sans-serif}.legend i{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}</style></head><body>`,
    `<h1>vunify capacity report</h1>`,
    `<p>${t.guests} guests, ${formatCount(t.files)} files, ${b(t.bytes)}. <b>Freeable now: ${b(t.freeableBytes)}</b> (${b(t.freeableDiskBytes)} on disk) in ${formatCount(t.freeableInodes)} inodes; already shared by hardlinks ${b(t.alreadySharedBytes)}.`,
    ` Identical content kept apart by policy: ${REASONS.map((k) => `${k} ${b(t.keptApart[k])}`).join(', ')}.`,
    ` Links outside the roots: ${t.outsideLinks.inodes} inodes, ${b(t.outsideLinks.bytes)}. Page cache shared after unifying: ${b(t.memory.sharedBytes)}, ELF ${b(t.memory.sharedElfBytes)}.</p>`,
    `<p class="meta">Generated ${esc(generated.toISOString())}. Nothing was changed.</p>`,
    `<h2>Bytes per guest</h2><p class="legend">${legend}</p>`,
    barChart(r),
    `<h2>Bytes in common, guest × guest</h2><p>Identical content a hardlink could share (same owner, mode, mtime, xattrs, filesystem); darker is more.</p>`,
    heatmap(r),
    `<h2>Top duplicate sets by bytes freeable</h2>`,
    htmlTable('top-sets', ['path', 'size', 'inodes', 'paths', 'guests', 'freeable', 'ELF'], r.topSets.map((s) => [s.path, b(s.size), s.inodes, s.paths, s.guests, b(s.freeableBytes), s.elf ? 'yes' : ''])),
    `<h2>Top directories by bytes freeable</h2>`,
    htmlTable('top-dirs', ['directory', 'inodes', 'freeable', 'share'], r.topDirectories.map((d) => [d.directory, d.inodes, b(d.freeableBytes), percent(d.freeableBytes, t.freeableBytes)])),
  ];
  if (r.candidates.length) {
    parts.push(
      `<h2>Candidates (estimated)</h2>`,
      htmlTable('candidates', ['candidate', 'files', 'bytes', 'sharable', 'sharable %', 'would free', 'kept apart'], r.candidates.map((c) => [c.path, c.files, b(c.bytes), b(c.sharableBytes), `${c.sharablePercent.toFixed(1)}%`, b(c.freeableBytes), b(c.keptApartBytes)])),
    );
  }
  if (extra) parts.push(extra);
  parts.push('</body></html>\n');
  return parts.join('\n');
}
