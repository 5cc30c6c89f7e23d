/*
 * The fleet merge and placement, on the embedded engine: the hosts' Parquet
 * manifests are read where they lie by DuckDB, out of core within a memory
 * limit, by the queries in ./sql (the same text documented in docs/fleet.md
 * for Spark SQL and Trino). JavaScript only checks the inputs and shapes
 * the results.
 *
 * Before any sum, every file is checked: a vunify manifest of version 1,
 * the exact columns and types, one host per file and one file per host,
 * no negative counts or nulls, and the same hash key and policy fields in
 * all of them (mixing keys or policies would match contents that are not
 * the same, or miss ones that are). A refusal is a UsageError naming the
 * files, which the command line turns into exit status 2.
 *
 * TSV manifests (manifest.ts) are still accepted: each is converted to a
 * temporary Parquet file first, so there is one merge, in SQL.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import type fgT from 'fast-glob';
import { UsageError } from '../core/errors.js';
import { readManifest, type HostEstimate, type MergeReport } from './manifest.js';
import { lit, loadSql, num, openEngine, type Engine } from './engine.js';
import { COLUMNS, KV_KEYS, PARQUET_VERSION, looksLikeParquet, writeParquetManifest } from './parquet.js';
import { placeGuests } from './placement.js';

export interface FleetOptions {
  /** DuckDB's memory_limit, e.g. '1GB'. */
  memoryLimit?: string;
}

interface Session {
  db: Engine;
  /** What the user named each file read, by the absolute path the engine saw. */
  names: Map<string, string>;
  close(): void;
}

/** Manifest arguments: literal files or glob patterns, each file once (by real path). */
export function expandManifestArgs(args: readonly string[]): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  let fg: typeof fgT | undefined;
  for (const arg of args) {
    let files = [arg];
    if (/[*?[\]{}]/.test(arg)) {
      fg ??= createRequire(import.meta.url)('fast-glob') as typeof fgT;
      files = fg.sync(arg, { onlyFiles: true, dot: true, unique: true }).sort();
      if (!files.length && !fs.existsSync(arg)) throw new UsageError(`${arg}: no manifest matches`);
      if (!files.length) files = [arg];
    }
    for (const f of files) {
      let real: string;
      try {
        real = fs.realpathSync(f);
        if (!fs.statSync(real).isFile()) throw new Error('not a regular file');
      } catch (er) {
        throw new UsageError(`${f}: cannot read manifest: ${(er as Error).message}`);
      }
      if (!seen.has(real)) out.push(f);
      seen.add(real);
    }
  }
  return out;
}

async function open(args: readonly string[], opts: FleetOptions): Promise<Session> {
  const files = expandManifestArgs(args);
  if (!files.length) throw new UsageError('no manifests given');
  const names = new Map<string, string>();
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-merge-'));
  let db: Engine | undefined;
  try {
    const paths: string[] = [];
    for (const [k, f] of files.entries()) {
      let p = path.resolve(f);
      // DuckDB would take these characters in a file name for a glob of its own.
      if (/[*?[\]{}]/.test(p)) throw new UsageError(`${f}: a manifest name with glob characters (*?[]{}) cannot be read; rename it`);
      if (!looksLikeParquet(p)) {
        p = path.join(work, `${k}.parquet`);
        await writeParquetManifest(p, readManifest(f));
      }
      names.set(p, f);
      paths.push(p);
    }
    db = await openEngine({ memoryLimit: opts.memoryLimit });
    await check(db, paths, names);
    await db.run(`CREATE VIEW manifest AS SELECT ${COLUMNS.map(([c]) => c).join(', ')} FROM read_parquet([${paths.map(lit).join(', ')}])`);
  } catch (er) {
    db?.close();
    fs.rmSync(work, { recursive: true, force: true });
    throw er instanceof UsageError ? er : new UsageError(`cannot read manifests: ${(er as Error).message}`);
  }
  const d = db;
  return { db: d, names, close: () => (d.close(), fs.rmSync(work, { recursive: true, force: true })) };
}

const listOf = (files: readonly string[]) => files.join(', ');

/** Refuse, naming the files, anything the sums could not be trusted on. */
async function check(db: Engine, paths: readonly string[], names: Map<string, string>): Promise<void> {
  const name = (p: string) => names.get(p) ?? p;
  const meta = new Map<string, Map<string, string>>(paths.map((p) => [p, new Map()]));
  const wanted = Object.values(KV_KEYS).map((k) => `${lit(k)}::BLOB`).join(', ');
  let kv: Record<string, unknown>[];
  try {
    kv = await db.rows(`SELECT file_name, decode(key) AS k, decode(value) AS v FROM parquet_kv_metadata([${paths.map(lit).join(', ')}]) WHERE key IN (${wanted})`);
  } catch (er) {
    throw new UsageError(`${listOf(paths.map(name))}: not readable as Parquet: ${(er as Error).message}`);
  }
  for (const r of kv) meta.get(String(r.file_name))?.set(String(r.k), String(r.v));
  for (const p of paths) {
    const v = meta.get(p)!.get(KV_KEYS.version);
    if (v === undefined) throw new UsageError(`${name(p)}: not a vunify manifest (no ${KV_KEYS.version} in its Parquet metadata)`);
    if (v !== PARQUET_VERSION) throw new UsageError(`${name(p)}: vunify manifest version ${v}; this vunify reads version ${PARQUET_VERSION}`);
    const cols = new Map((await db.rows(`DESCRIBE SELECT * FROM read_parquet(${lit(p)})`)).map((r) => [String(r.column_name), String(r.column_type)]));
    for (const [c, t] of COLUMNS) {
      if (cols.get(c) !== t) throw new UsageError(`${name(p)}: column ${c} is ${cols.get(c) ?? 'missing'}, expected ${t}`);
    }
  }
  for (const [key, what] of [[KV_KEYS.hashKey, 'content hash key (hash_key_id)'], [KV_KEYS.policy, 'policy fields']] as const) {
    const by = new Map<string, string[]>();
    for (const p of paths) {
      const v = meta.get(p)!.get(key) ?? '(none)';
      by.set(v, [...(by.get(v) ?? []), name(p)]);
    }
    if (by.size > 1) {
      const parts = [...by].map(([v, fs]) => `${listOf(fs)} use ${v}`);
      throw new UsageError(`manifests disagree on the ${what}: ${parts.join('; ')}; write them with the same ${key === KV_KEYS.hashKey ? 'key and the same content hash (xxh64-keyed: written before vunify hashed with XXH3; write those again)' : 'options'}`);
    }
  }
  const per = await db.rows(`
    SELECT filename AS f, COUNT(DISTINCT host) AS hosts, MIN(host) AS host,
           COUNT(*) FILTER (WHERE host IS NULL OR guest IS NULL OR content_hash IS NULL OR size IS NULL
                            OR policy_key IS NULL OR inodes IS NULL OR paths IS NULL
                            OR size < 0 OR inodes < 0 OR paths < 0) AS bad
    FROM read_parquet([${paths.map(lit).join(', ')}], filename = true) GROUP BY filename`);
  const fileOfHost = new Map<string, string>();
  // In argument order, so a refusal names the files as the user gave them.
  per.sort((a, b) => paths.indexOf(String(a.f)) - paths.indexOf(String(b.f)));
  for (const r of per) {
    const f = name(String(r.f));
    if (num(r.bad)) throw new UsageError(`${f}: ${num(r.bad)} rows with an empty field or a negative size or count`);
    if (num(r.hosts) !== 1) throw new UsageError(`${f}: holds ${num(r.hosts)} hosts; a manifest is one host's`);
    const h = String(r.host);
    const other = fileOfHost.get(h);
    if (other !== undefined) throw new UsageError(`${other}, ${f}: both are host '${h}'; merge one manifest per host (write them with distinct --host names)`);
    fileOfHost.set(h, f);
  }
}

/** Estimate consolidating the hosts of these manifests onto one (same report as before, from SQL). */
export async function mergeFleet(args: readonly string[], opts: FleetOptions = {}): Promise<MergeReport> {
  const s = await open(args, opts);
  try {
    const { db } = s;
    await db.run(`CREATE TEMP TABLE hosts AS ${loadSql('hosts')}`);
    await db.run(`CREATE TEMP TABLE host_sets AS ${loadSql('host-sets')}`);
    const fileOf = new Map((await db.rows(`SELECT DISTINCT host, filename AS f FROM read_parquet([${[...s.names.keys()].map(lit).join(', ')}], filename = true)`)).map((r) => [String(r.host), s.names.get(String(r.f)) ?? String(r.f)]));
    const hostRows = await db.rows('SELECT * FROM hosts ORDER BY hid');
    const hosts = hostRows.map((r): HostEstimate => ({
      host: String(r.host),
      file: fileOf.get(String(r.host)) ?? '',
      guests: num(r.guests),
      files: num(r.files),
      bytes: num(r.bytes),
      diskBytes: num(r.disk_bytes),
      unifiedBytes: num(r.unified_bytes),
    }));
    const n = hosts.length;
    const matrix = Array.from({ length: n }, () => new Array<number>(n).fill(0));
    for (const r of await db.rows(loadSql('host-matrix'))) matrix[num(r.a)]![num(r.b)] = num(r.bytes);
    const consolidated = num((await db.rows('SELECT SUM(bytes) AS b FROM host_sets'))[0]!.b);
    const disk = hosts.reduce((t, h) => t + h.diskBytes, 0);
    const unified = hosts.reduce((t, h) => t + h.unifiedBytes, 0);
    return {
      kind: 'vunify-merge',
      version: 1,
      hosts,
      totals: {
        guests: hosts.reduce((t, h) => t + h.guests, 0),
        diskBytes: disk,
        unifiedBytes: unified,
        consolidatedBytes: consolidated,
        savingBytes: disk - consolidated,
        extraSavingBytes: unified - consolidated,
      },
      matrix: { hosts: hosts.map((h) => h.host), bytes: matrix },
    };
  } finally {
    s.close();
  }
}

export interface PlacementReport {
  kind: 'vunify-placement';
  version: 1;
  /** N and the capacity asked for. */
  hosts: number;
  capacityBytes: number;
  /** Today's placement, each host unified alone: Σ unified bytes per host. */
  today: { hosts: number; bytes: number };
  /** The suggested placement: for each target host, its guests and the bytes it needs unified. */
  plan: { hosts: { guests: { host: string; guest: string }[]; bytes: number }[]; bytes: number };
  savingBytes: number;
  /** Guests that change host, matching each target to the today's host it keeps most guests of. */
  movedGuests: number;
}

export interface PlacementOptions extends FleetOptions {
  hosts: number;
  capacity: number;
}

/** Suggest which guests to put together on N hosts of a given capacity. */
export async function planPlacement(args: readonly string[], opts: PlacementOptions): Promise<PlacementReport> {
  const s = await open(args, opts);
  let guests: { host: string; guest: string; size: number }[];
  let sets: { members: number[]; bytes: number }[];
  let overlap: [number, number, number][];
  try {
    const { db } = s;
    await db.run(`CREATE TEMP TABLE guests AS ${loadSql('guests')}`);
    await db.run(`CREATE TEMP TABLE guest_sets AS ${loadSql('guest-sets')}`);
    guests = (await db.rows('SELECT * FROM guests ORDER BY gid')).map((r) => ({ host: String(r.host), guest: String(r.guest), size: num(r.unified_bytes) }));
    sets = (await db.rows('SELECT gids, bytes FROM guest_sets')).map((r) => ({ members: (r.gids as unknown[]).map(num), bytes: num(r.bytes) }));
    overlap = guests.length <= 4000 ? (await db.rows(loadSql('guest-overlap'))).map((r) => [num(r.a), num(r.b), num(r.bytes)]) : [];
  } finally {
    s.close();
  }
  const todayHosts = [...new Set(guests.map((g) => g.host))];
  const today = guests.map((g) => todayHosts.indexOf(g.host));
  const placed = placeGuests({ sizes: guests.map((g) => g.size), sets, overlap, hosts: opts.hosts, capacity: opts.capacity, today });
  if (!placed) {
    const big = guests.filter((g) => g.size > opts.capacity);
    throw new UsageError(big.length
      ? `no placement: guest ${big[0]!.host}:${big[0]!.guest} alone needs ${big[0]!.size} bytes, more than --capacity ${opts.capacity}`
      : `no placement found for ${guests.length} guests on ${opts.hosts} hosts of ${opts.capacity} bytes (the heuristic may miss a tight fit; try more hosts or capacity)`);
  }
  const plan = Array.from({ length: opts.hosts }, (_, h) => ({ guests: guests.filter((_, g) => placed.assign[g] === h).map(({ host, guest }) => ({ host, guest })), bytes: placed.hostBytes[h]! }));
  const todayBytes = placed.todayBytes;
  // A guest stays when its target is the today's host that sends the most guests there.
  let moved = 0;
  for (const p of plan) {
    const from = new Map<string, number>();
    for (const g of p.guests) from.set(g.host, (from.get(g.host) ?? 0) + 1);
    moved += p.guests.length - Math.max(0, ...from.values());
  }
  return {
    kind: 'vunify-placement',
    version: 1,
    hosts: opts.hosts,
    capacityBytes: opts.capacity,
    today: { hosts: todayHosts.length, bytes: todayBytes },
    plan: { hosts: plan.filter((p) => p.guests.length), bytes: placed.bytes },
    savingBytes: todayBytes - placed.bytes,
    movedGuests: moved,
  };
}
