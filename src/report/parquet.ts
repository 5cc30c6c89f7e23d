/*
 * Manifests as Parquet: the same entries as the TSV manifest (manifest.ts),
 * one row per (guest, content, policy), in a file that DuckDB, Spark and
 * Trino read as they are. Columns, exactly:
 *
 *   host VARCHAR, guest VARCHAR, content_hash UBIGINT, size BIGINT,
 *   policy_key UBIGINT, inodes INTEGER, paths INTEGER
 *
 * and file-level facts in the Parquet key-value metadata (KV_KEYS below):
 * the format version, the policy fields, which hash key produced
 * content_hash (the merge refuses to mix keys or policies), the host and
 * the creation time. DuckDB writes the file: rows go through its appender
 * into an in-memory table, then COPY ... TO a temporary name in the target's
 * directory, renamed over the target so a reader never sees half a file.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { hashKeyIdOf, policyFields, type Manifest } from './manifest.js';
import { lit, openEngine } from './engine.js';

export const PARQUET_VERSION = '1';
/** What a manifest written before hash keys (XXH64 with the public seed 0) says it was hashed with. */
export const HASH_KEY_ID = 'xxh64-seed0';

export const KV_KEYS = {
  version: 'vunify_manifest_version',
  policy: 'vunify_policy',
  hashKey: 'vunify_hash_key_id',
  host: 'vunify_host',
  created: 'vunify_created',
  guests: 'vunify_guests',
} as const;

export const COLUMNS = [
  ['host', 'VARCHAR'],
  ['guest', 'VARCHAR'],
  ['content_hash', 'UBIGINT'],
  ['size', 'BIGINT'],
  ['policy_key', 'UBIGINT'],
  ['inodes', 'INTEGER'],
  ['paths', 'INTEGER'],
] as const;

export const isParquetName = (file: string): boolean => /\.parquet$/i.test(file);

/** Parquet files open and end with the magic "PAR1". */
export function looksLikeParquet(file: string): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(4);
    return fs.readSync(fd, b, 0, 4, 0) === 4 && b.toString('latin1') === 'PAR1';
  } finally {
    fs.closeSync(fd);
  }
}

export async function writeParquetManifest(file: string, m: Manifest, hashKeyId = hashKeyIdOf(m)): Promise<void> {
  const db = await openEngine({ threads: 1 });
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${crypto.randomBytes(6).toString('hex')}.tmp`);
  try {
    await db.run(`CREATE TABLE manifest (${COLUMNS.map(([n, t]) => `${n} ${t}`).join(', ')})`);
    const app = await db.appender('manifest');
    for (const e of m.entries) {
      app.appendVarchar(m.host);
      app.appendVarchar(m.guests[e.guest]!);
      app.appendUBigInt(BigInt(`0x${e.hash}`));
      app.appendBigInt(BigInt(e.size));
      app.appendUBigInt(BigInt(`0x${e.policy}`));
      app.appendInteger(e.inodes);
      app.appendInteger(e.paths);
      app.endRow();
    }
    app.closeSync();
    const kv: Record<string, string> = {
      [KV_KEYS.version]: PARQUET_VERSION,
      [KV_KEYS.policy]: policyFields(m.ignoreMtime),
      [KV_KEYS.hashKey]: hashKeyId,
      [KV_KEYS.host]: m.host,
      [KV_KEYS.created]: m.created,
      [KV_KEYS.guests]: String(m.guests.length),
    };
    const meta = Object.entries(kv).map(([k, v]) => `${k}: ${lit(v)}`).join(', ');
    await db.run(`COPY manifest TO ${lit(tmp)} (FORMAT parquet, COMPRESSION zstd, KV_METADATA {${meta}})`);
    fs.renameSync(tmp, file);
  } catch (er) {
    fs.rmSync(tmp, { force: true });
    throw er;
  } finally {
    db.close();
  }
}
