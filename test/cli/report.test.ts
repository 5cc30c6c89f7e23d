// `vunify report` as an operator meets it: help, exit codes, each format,
// and manifest + merge end to end, on the tree of helpers/capacity-tree.ts.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCapacityTree, EXPECT } from '../helpers/capacity-tree.js';
import { runReport } from '../helpers/report.js';
import { rmTree, runCli, tempDir } from '../helpers/tree.js';

let dir: string;
let roots: string[];
beforeAll(() => {
  dir = tempDir();
  buildCapacityTree(dir);
  roots = ['g1', 'g2', 'g3'].map((g) => path.join(dir, g));
});
afterAll(() => rmTree(dir));
const report = (...args: string[]) => runReport(['--no-default-excludes', ...args]);

describe('vunify report', () => {
  it('--help explains the extra reading, the formats, examples and exit codes', () => {
    const r = runReport(['--help']);
    expect(r.code).toBe(0);
    for (const re of [/Usage: vunify report \[options\] ROOT\.\.\./, /--candidate/, /--merge/, /--html/, /more reading\s+than --dry-run/, /Examples:/, /Exit status/]) expect(r.stdout).toMatch(re);
  });

  it.each([
    [['--json', '--csv', '/tmp'], /--json and --csv: choose one/],
    [['--top', '0', '/tmp'], /invalid --top '0'/],
    [['/nonexistent-root'], /\/nonexistent-root: no such file or directory/],
    [['--merge', '--csv', 'x'], /--merge reads manifests only/],
    [['--merge', '/etc/hostname'], /\/etc\/hostname: not a vunify manifest/],
    [[], /missing required argument/],
  ])('bad usage %j exits 2 with a message on stderr', (args, message) => {
    const r = runReport(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toBe('');
  });

  it('prints aligned tables with IEC sizes', () => {
    const r = report(...roots);
    expect([r.code, r.stderr]).toEqual([0, '']);
    const lines = r.stdout.split('\n');
    const head = lines.findIndex((l) => l.startsWith('guest ') && l.includes('freeable%'));
    const table = lines.slice(head, head + 4);
    expect(new Set(table.map((l) => l.length)).size).toBe(1); // right-aligned to one width
    expect(table[2]).toMatch(new RegExp(`g2\\s+5\\s+1\\.94 KiB\\s+400 B\\s+1000 B\\s+88 B`));
    expect(r.stdout).toMatch(/mode 200 B, mtime 300 B/);
  });

  it('--json carries the documented schema and version', () => {
    const r = report('--json', ...roots);
    const j = JSON.parse(r.stdout);
    expect([j.kind, j.version]).toEqual(['vunify-capacity', 1]);
    expect(Object.keys(j).sort()).toEqual(['candidates', 'durations', 'errors', 'guests', 'keptApartPairs', 'kind', 'matrix', 'options', 'topDirectories', 'topSets', 'totals', 'version']);
    expect(j.guests.map((g: { freeableBytes: number }) => g.freeableBytes)).toEqual(Object.values(EXPECT.freeable));
  });

  it('--csv holds the same numbers as --json, one table per blank-line-separated block', () => {
    const j = JSON.parse(report('--json', ...roots).stdout);
    const csv = report('--csv', ...roots).stdout;
    const blocks = csv.trim().split('\r\n\r\n').map((b) => b.split('\r\n').map((l) => l.split(',')));
    expect(blocks.map((b) => b[0]![0])).toEqual(['guest', 'guest_a', 'set_path', 'directory']);
    const guests = blocks[0]!;
    expect(guests).toHaveLength(4);
    const col = (name: string) => guests[0]!.indexOf(name);
    expect(guests.slice(1).map((row) => Number(row[col('freeable_bytes')]))).toEqual(j.guests.map((g: { freeableBytes: number }) => g.freeableBytes));
    expect(guests.slice(1).map((row) => Number(row[col('kept_apart_mtime_bytes')]))).toEqual([0, 300, 0]);
    expect(blocks[1]).toHaveLength(1 + 9);
  });

  it('--manifest writes a manifest that --merge reads; a manifest named twice counts once', () => {
    const m = path.join(dir, 'host.manifest.gz');
    const r = report('-q', '--manifest', m, ...roots);
    expect([r.code, r.stdout, r.stderr]).toEqual([0, '', '']);
    const merged = runReport(['--merge', '--json', m, m]);
    expect(merged.code).toBe(0);
    const j = JSON.parse(merged.stdout);
    expect(j.kind).toBe('vunify-merge');
    expect(j.hosts).toHaveLength(1);
    expect([j.totals.extraSavingBytes, j.totals.consolidatedBytes]).toEqual([0, j.hosts[0].unifiedBytes]);
    const text = runReport(['--merge', m, m]).stdout;
    expect(text).toMatch(/Consolidation estimate for 1 hosts, 3 guests/);
  });
});

describe('vunify report --config and --state-dir, as vunify takes them', () => {
  it('reads the same config file as vunify and adds up to vunify --dry-run with it', () => {
    const state = tempDir('vunify-report-state-');
    const conf = path.join(dir, 'vunify.conf');
    try {
      // Settings of vunify the report has (selection, excludes) and some it
      // has not (verbose, metrics-file): the report takes its own and
      // ignores the rest, as split does; ROOTs come from the file's roots.
      fs.writeFileSync(conf, [
        'no-default-excludes', 'min-size 2', 'exclude /usr/bin', 'verbose', `metrics-file ${path.join(state, 'm.prom')}`,
        ...roots.map((r) => `root ${r}`), '',
      ].join('\n'));
      const r = runReport(['--config', conf, '--state-dir', state, '--json']);
      expect([r.code, r.stderr]).toEqual([0, '']);
      const totals = JSON.parse(r.stdout).totals;
      const dry = runCli(['--config', conf, '--state-dir', state, '--dry-run', '--json']);
      expect([dry.code, dry.stderr]).toEqual([0, '']);
      const summary = JSON.parse(dry.stdout).summary;
      expect(totals.freeableBytes).toBe(summary.freeableBytes);
      expect(totals.freeableInodes).toBe(summary.freeableInodes);
      expect(totals.files).toBe(summary.filesScanned);
      // The config's exclude took effect in both: nothing under /usr/bin was counted.
      const all = runReport(['--no-default-excludes', '--min-size', '2', '--state-dir', state, '--json', ...roots]);
      expect(JSON.parse(all.stdout).totals.files).toBeGreaterThan(totals.files);
    } finally {
      rmTree(state);
      fs.rmSync(conf, { force: true });
    }
  });

  it('an unknown setting in the config file is a usage error naming the line', () => {
    const conf = path.join(dir, 'bad.conf');
    fs.writeFileSync(conf, 'no-default-excludes\nfrobnicate yes\n');
    try {
      const r = runReport(['--config', conf, ...roots]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/bad\.conf:2: unknown setting 'frobnicate'/);
    } finally {
      fs.rmSync(conf, { force: true });
    }
  });

  it('keeps its hash cache in --state-dir, the same cache vunify --dry-run uses', async () => {
    const state = tempDir('vunify-report-state-');
    try {
      // Files younger than a second are not cached (their ctime could hide a
      // change in the same clock tick): let the tree age first.
      await new Promise((r) => setTimeout(r, 1100));
      const first = runReport(['--no-default-excludes', '--state-dir', state, '--json', ...roots]);
      expect([first.code, first.stderr]).toEqual([0, '']);
      // One shard per root in STATE_DIR/cache, each with entries (more than a header).
      const shards = fs.readdirSync(path.join(state, 'cache')).filter((n) => n.endsWith('.shard'));
      expect(shards).toHaveLength(roots.length);
      for (const n of shards) expect(fs.statSync(path.join(state, 'cache', n)).size).toBeGreaterThan(200);
      const dry = runCli(['--no-default-excludes', '--state-dir', state, '--dry-run', '--json', ...roots]);
      const hashed = JSON.parse(dry.stdout).hashed;
      // Everything the dry run needed, the report had read and cached.
      expect(hashed.cacheHits).toBeGreaterThan(0);
      expect(hashed.files).toBe(0);
      // --no-cache reads and writes none.
      const none = tempDir('vunify-report-state-');
      expect(runReport(['--no-default-excludes', '--state-dir', none, '--no-cache', '-q', ...roots]).code).toBe(0);
      expect(fs.existsSync(path.join(none, 'cache'))).toBe(false);
      rmTree(none);
    } finally {
      rmTree(state);
    }
  });
});
