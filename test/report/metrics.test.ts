// --metrics-file: Prometheus text format, checked with a real parser of the
// format, against facts taken from the tree with stat rather than from vunify.
import fs from 'node:fs';
import path from 'node:path';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { escapeLabel } from '../../src/report/metrics.js';
import { rmTree, runCli, sh, tempDir, writeFile } from '../helpers/tree.js';

let dir: string;
let metrics: string;
const G = (g: string, f = '') => path.join(dir, g, f);

beforeEach(() => {
  dir = tempDir();
  metrics = path.join(dir, 'textfile', 'vunify.prom');
  fs.mkdirSync(path.dirname(metrics));
  for (const g of ['g1', 'g2', 'g "3"\\']) {
    writeFile(G(g, 'usr/lib/libc.so.6'), { content: Buffer.alloc(12_345, 9) });
    writeFile(G(g, 'usr/bin/ls'), { content: 'ls' });
  }
});
afterEach(() => rmTree(dir));

/** name -> [labels, value][] from the parser. */
function parse(): Map<string, [Record<string, string>, number][]> {
  const text = fs.readFileSync(metrics, 'utf8');
  return new Map(parsePrometheusTextFormat(text).map((f) => [f.name, f.metrics.map((m) => [m.labels ?? {}, Number(m.value)] as [Record<string, string>, number])]));
}
const value = (m: ReturnType<typeof parse>, name: string) => {
  const samples = m.get(name);
  expect(samples, name).toHaveLength(1);
  return samples![0]![1];
};
const size = (f: string) => Number(sh('stat', '-c', '%s', f).trim());

describe('--metrics-file', () => {
  it('writes every metric a fleet dashboard needs, in a format Prometheus parses', () => {
    const roots = ['g1', 'g2', 'g "3"\\'].map((g) => G(g));
    const before = Date.now() / 1000;
    const r = runCli(['-q', '--no-default-excludes', '--metrics-file', metrics, ...roots]);
    expect([r.code, r.stderr]).toEqual([0, '']);
    const m = parse();
    const perGuest = size(G('g1', 'usr/lib/libc.so.6')) + size(G('g1', 'usr/bin/ls'));
    expect(value(m, 'vunify_links_made')).toBe(4);
    expect(value(m, 'vunify_freed_bytes')).toBe(2 * perGuest);
    expect(value(m, 'vunify_shared_bytes')).toBe(2 * perGuest);
    expect(value(m, 'vunify_files_scanned')).toBe(6);
    expect(value(m, 'vunify_bytes_scanned')).toBe(3 * perGuest);
    expect(value(m, 'vunify_bytes_hashed')).toBe(3 * perGuest);
    expect(value(m, 'vunify_errors')).toBe(0);
    expect(value(m, 'vunify_last_run_success')).toBe(1);
    expect(value(m, 'vunify_dry_run')).toBe(0);
    expect(value(m, 'vunify_duration_seconds')).toBeGreaterThan(0);
    const success = value(m, 'vunify_last_success_timestamp_seconds');
    expect(success).toBeGreaterThanOrEqual(Math.floor(before));
    expect(success).toBeLessThanOrEqual(Date.now() / 1000);
    // One sample per root, labelled with its path (quotes and backslashes survive).
    expect(m.get('vunify_root_freeable_bytes')).toEqual([
      [{ root: roots[0] }, 0],
      [{ root: roots[1] }, perGuest],
      [{ root: roots[2] }, perGuest],
    ]);
    // A rerun frees nothing more; what hardlinks save stays.
    runCli(['-q', '--no-default-excludes', '--metrics-file', metrics, ...roots]);
    const again = parse();
    expect([value(again, 'vunify_freed_bytes'), value(again, 'vunify_shared_bytes')]).toEqual([0, 2 * perGuest]);
    // Written atomically: no temporary file is left beside it.
    expect(fs.readdirSync(path.dirname(metrics))).toEqual(['vunify.prom']);
  });

  it('a failed run says so and keeps the time of the last success', () => {
    runCli(['-q', '--metrics-file', metrics, G('g1'), G('g2')]);
    const success = value(parse(), 'vunify_last_success_timestamp_seconds');
    const r = runCli(['-q', '--metrics-file', metrics, G('g1'), G('missing')]);
    expect(r.code).toBe(2);
    const m = parse();
    expect(value(m, 'vunify_last_run_success')).toBe(0);
    expect(value(m, 'vunify_last_success_timestamp_seconds')).toBe(success);
    expect(m.has('vunify_links_made')).toBe(false);
  });

  it('a metrics file that cannot be written is named on stderr; the run itself stands', () => {
    const r = runCli(['-q', '--metrics-file', path.join(dir, 'no-such-dir', 'vunify.prom'), G('g1'), G('g2')]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/no-such-dir\/vunify\.prom: cannot write metrics: .*ENOENT/);
  });

  it('escapes label values as the format requires', () => {
    expect(escapeLabel('a"b\\c\nd')).toBe('a\\"b\\\\c\\nd');
  });
});
