// The fleet merge and placement end to end: vunify writes Parquet manifests
// of real trees, a real DuckDB reads them back, and the merge's numbers are
// checked against sums computed here from the files this test wrote.
import fs from 'node:fs';
import path from 'node:path';
import { xxh3 } from '../../src/core/xxh3.js';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmTree, tempDir, testStateDir, writeFile } from '../helpers/tree.js';
import { KEY_FILE, loadHashKey } from '../../src/state/hash-key.js';
import { runReport } from '../helpers/report.js';
import { mergeFleet, planPlacement } from '../../src/report/fleet.js';
import { UsageError } from '../../src/core/errors.js';

// Two hosts, two guests each. Content "c" is in every guest, but g4's copy
// has another mtime (another policy key); "A" is in g1 and g3, "B" in g2 and
// g4; every guest has one private file; g1 holds "c" under two hardlinked names.
interface Spec { host: string; guest: string; rel: string; fill: string; size: number; mtime?: string; linkTo?: string }
const OTHER_MTIME = '1600000000';
const SPEC: Spec[] = [
  { host: 'h1', guest: 'g1', rel: 'usr/c', fill: 'c', size: 1000 },
  { host: 'h1', guest: 'g1', rel: 'usr/c-link', fill: 'c', size: 1000, linkTo: 'usr/c' },
  { host: 'h1', guest: 'g1', rel: 'usr/A', fill: 'A', size: 4000 },
  { host: 'h1', guest: 'g1', rel: 'usr/p1', fill: '1', size: 100 },
  { host: 'h1', guest: 'g2', rel: 'usr/c', fill: 'c', size: 1000 },
  { host: 'h1', guest: 'g2', rel: 'usr/B', fill: 'B', size: 3000 },
  { host: 'h1', guest: 'g2', rel: 'usr/p2', fill: '2', size: 200 },
  { host: 'h2', guest: 'g3', rel: 'usr/c', fill: 'c', size: 1000 },
  { host: 'h2', guest: 'g3', rel: 'usr/A', fill: 'A', size: 4000 },
  { host: 'h2', guest: 'g3', rel: 'usr/p3', fill: '3', size: 300 },
  { host: 'h2', guest: 'g4', rel: 'usr/c', fill: 'c', size: 1000, mtime: OTHER_MTIME },
  { host: 'h2', guest: 'g4', rel: 'usr/B', fill: 'B', size: 3000 },
  { host: 'h2', guest: 'g4', rel: 'usr/p4', fill: '4', size: 400 },
];

let dir: string;
const guestDir = (s: { host: string; guest: string }) => path.join(dir, s.host, s.guest);
const manifest = (host: string) => path.join(dir, `${host}.parquet`);
let db: DuckDBInstance;
let conn: DuckDBConnection;
const q = async (sql: string) => (await conn.runAndReadAll(sql)).getRowObjectsJS();

beforeAll(async () => {
  dir = tempDir();
  for (const s of SPEC) {
    const file = path.join(guestDir(s), s.rel);
    if (s.linkTo) fs.linkSync(path.join(guestDir(s), s.linkTo), file);
    else writeFile(file, { content: Buffer.alloc(s.size, s.fill), mtime: s.mtime });
  }
  for (const host of ['h1', 'h2']) {
    const roots = [...new Set(SPEC.filter((s) => s.host === host).map(guestDir))];
    const r = runReport(['-q', '--no-default-excludes', '--host', host, '--manifest', manifest(host), ...roots]);
    expect([r.code, r.stderr]).toEqual([0, '']);
  }
  db = await DuckDBInstance.create(':memory:');
  conn = await db.connect();
}, 30_000);
afterAll(() => {
  conn?.closeSync();
  db?.closeSync();
  if (dir) rmTree(dir);
});

// The expected numbers, from the spec alone: a key is what may become one
// inode (content and mtime; owners and modes are all the same here).
const key = (s: Spec) => `${s.fill}:${s.size}:${s.mtime ?? ''}`;
const inodes = (ss: Spec[]) => ss.filter((s) => !s.linkTo);
const distinct = (ss: Spec[]) => [...new Map(ss.map((s) => [key(s), s.size])).values()].reduce((a, b) => a + b, 0);
const of = (host: string) => SPEC.filter((s) => s.host === host);

describe('Parquet manifests', () => {
  it('have exactly the columns and types of the issue, and the metadata, read back by DuckDB', async () => {
    const cols = await q(`DESCRIBE SELECT * FROM read_parquet('${manifest('h1')}')`);
    expect(cols.map((c) => [c.column_name, c.column_type])).toEqual([
      ['host', 'VARCHAR'], ['guest', 'VARCHAR'], ['content_hash', 'UBIGINT'], ['size', 'BIGINT'],
      ['policy_key', 'UBIGINT'], ['inodes', 'INTEGER'], ['paths', 'INTEGER'],
    ]);
    const kv = Object.fromEntries((await q(`SELECT decode(key) k, decode(value) v FROM parquet_kv_metadata('${manifest('h1')}')`)).map((r) => [r.k, r.v]));
    // The hash is XXH3 keyed with the test state directory's key, named by its fingerprint (never the key).
    const { fingerprint } = loadHashKey(path.join(testStateDir(), KEY_FILE), { create: false });
    expect(kv).toMatchObject({ vunify_manifest_version: '1', vunify_hash_key_id: `xxh3-keyed:${fingerprint}`, vunify_policy: 'size,uid,gid,mode,mtime,flags,xattrs', vunify_host: 'h1', vunify_guests: '2' });
    expect(Date.parse(String(kv.vunify_created))).toBeGreaterThan(Date.parse('2020-01-01'));
  });

  it('one row per guest and content, content_hash = XXH3 of the bytes under the key\'s secret, inodes and paths counted', async () => {
    const { secret } = loadHashKey(path.join(testStateDir(), KEY_FILE), { create: false });
    const rows = await q(`SELECT * FROM read_parquet('${manifest('h1')}') ORDER BY guest, size`);
    const h1 = of('h1');
    expect(rows).toHaveLength(new Set(h1.map((s) => `${s.guest}:${key(s)}`)).size);
    for (const s of inodes(h1)) {
      const row = rows.find((r) => r.guest === guestDir(s) && r.size === BigInt(s.size))!;
      expect(row.host).toBe('h1');
      expect(row.content_hash).toBe(xxh3(Buffer.alloc(s.size, s.fill), secret));
      const names = h1.filter((t) => t.guest === s.guest && key(t) === key(s));
      expect([row.inodes, row.paths]).toEqual([1, names.length]);
    }
  });
});

describe('--merge on DuckDB', () => {
  it('totals, per host numbers and the host × host matrix equal the sums over the written files', () => {
    const r = runReport(['--merge', '--json', path.join(dir, '*.parquet')]);
    expect([r.code, r.stderr]).toEqual([0, '']);
    const j = JSON.parse(r.stdout);
    const disk = (ss: Spec[]) => inodes(ss).reduce((t, s) => t + s.size, 0);
    expect(j.hosts.map((h: Record<string, unknown>) => [h.host, h.guests, h.files, h.bytes, h.diskBytes, h.unifiedBytes])).toEqual(['h1', 'h2'].map((h) => [
      h, 2, of(h).length, of(h).reduce((t, s) => t + s.size, 0), disk(of(h)), distinct(of(h)),
    ]));
    const consolidated = distinct(SPEC);
    expect(j.totals).toEqual({
      guests: 4, diskBytes: disk(SPEC), unifiedBytes: distinct(of('h1')) + distinct(of('h2')), consolidatedBytes: consolidated,
      savingBytes: disk(SPEC) - consolidated, extraSavingBytes: distinct(of('h1')) + distinct(of('h2')) - consolidated,
    });
    const common = [...new Set(of('h1').map(key))].filter((k) => of('h2').some((s) => key(s) === k));
    const commonBytes = common.reduce((t, k) => t + SPEC.find((s) => key(s) === k)!.size, 0);
    expect(commonBytes).toBe(1000 + 4000 + 3000); // c (default mtime), A, B
    expect(j.matrix.bytes).toEqual([[distinct(of('h1')), commonBytes], [commonBytes, distinct(of('h2'))]]);
    const text = runReport(['--merge', manifest('h1'), manifest('h2')]);
    expect(text.stdout).toMatch(/Consolidation estimate for 2 hosts, 4 guests/);
    expect(text.stdout).toMatch(/^h1 +2 +7 /m);
  });

  it('reads TSV manifests too, with the same numbers', async () => {
    const tsv = path.join(dir, 'h2.manifest.gz');
    const roots = [...new Set(of('h2').map(guestDir))];
    expect(runReport(['-q', '--no-default-excludes', '--host', 'h2', '--manifest', tsv, ...roots]).code).toBe(0);
    const a = await mergeFleet([manifest('h1'), manifest('h2')]);
    const b = await mergeFleet([manifest('h1'), tsv]);
    expect(b.totals).toEqual(a.totals);
    expect(b.hosts[1]!.file).toBe(tsv);
  });

  it('refuses (exit 2, naming the files) another hash key, another policy, one host twice, a non-manifest', async () => {
    const otherKey = path.join(dir, 'bad', 'k.parquet');
    fs.mkdirSync(path.dirname(otherKey));
    await conn.run(`COPY (SELECT * REPLACE ('h3' AS host) FROM read_parquet('${manifest('h2')}')) TO '${otherKey}'
      (FORMAT parquet, KV_METADATA {vunify_manifest_version: '1', vunify_policy: 'size,uid,gid,mode,mtime,xattrs', vunify_hash_key_id: 'fleet-key-2'})`);
    const r = runReport(['--merge', manifest('h1'), otherKey]);
    expect([r.code, r.stdout]).toEqual([2, '']);
    expect(r.stderr).toContain('hash key');
    expect(r.stderr).toContain(otherKey);
    expect(r.stderr).toContain(manifest('h1'));
    const refused = async (args: string[]) => {
      const er = await mergeFleet(args).then(() => undefined, (e: unknown) => e);
      expect(er).toBeInstanceOf(UsageError);
      return (er as Error).message;
    };

    const noMtime = path.join(dir, 'bad', 'm.parquet');
    expect(runReport(['-q', '--no-default-excludes', '--ignore-mtime', '--host', 'h3', '--manifest', noMtime, guestDir(SPEC[0]!)]).code).toBe(0);
    let msg = await refused([manifest('h1'), noMtime]);
    expect(msg).toMatch(/policy fields/);
    expect(msg).toContain(noMtime);

    const twice = path.join(dir, 'bad', 'twice.parquet');
    fs.copyFileSync(manifest('h1'), twice);
    expect(await refused([manifest('h1'), twice])).toContain(`${manifest('h1')}, ${twice}: both are host 'h1'`);
    expect(await refused([manifest('h1'), '/etc/hostname'])).toMatch(/\/etc\/hostname: not a vunify manifest/);
    expect(await refused([path.join(dir, 'nothing-*.parquet')])).toMatch(/no manifest matches/);
  });
});

describe('--plan-placement', () => {
  // By hand (sizes in the spec): one host would need c, c', A, B and the
  // four private files = 10,000 bytes. With a capacity of 9,000 the best
  // split is {g1, g3} (c + A + 100 + 300 = 5,400) and {g2, g4}
  // (c + c' + B + 200 + 400 = 5,600): 11,000 bytes. Today h1 needs
  // c + A + B + 100 + 200 = 8,300 and h2 c + c' + A + B + 300 + 400 = 9,700.
  it('puts the guests that share most together, within the capacity, and reports the saving', () => {
    const r = runReport(['--plan-placement', '--json', '--hosts', '2', '--capacity', '9000', manifest('h1'), manifest('h2')]);
    expect([r.code, r.stderr]).toEqual([0, '']);
    const j = JSON.parse(r.stdout);
    const groups = j.plan.hosts.map((h: { guests: { guest: string }[] }) => h.guests.map((g) => path.basename(g.guest)).sort()).sort();
    expect(groups).toEqual([['g1', 'g3'], ['g2', 'g4']]);
    expect(j.plan.hosts.map((h: { bytes: number }) => h.bytes).sort()).toEqual([5400, 5600]);
    expect(j.today).toEqual({ hosts: 2, bytes: 8300 + 9700 });
    expect([j.plan.bytes, j.savingBytes]).toEqual([11000, 18000 - 11000]);
  });

  it('one host with room for all needs the fleet consolidated; too small a capacity is exit 2', async () => {
    const j = await planPlacement([manifest('h1'), manifest('h2')], { hosts: 2, capacity: 1 << 20 });
    expect(j.plan.hosts).toHaveLength(1);
    expect(j.plan.bytes).toBe(distinct(SPEC));
    const r = runReport(['--plan-placement', '--hosts', '4', '--capacity', '4000', manifest('h1'), manifest('h2')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/no placement: guest h\d:.*g\d alone needs \d+ bytes/);
    await expect(planPlacement([manifest('h1'), manifest('h2')], { hosts: 1, capacity: 9999 })).rejects.toThrow(/no placement found/);
  });
});
