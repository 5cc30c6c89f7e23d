/*
 * The embedded analytical engine (DuckDB, through @duckdb/node-api), opened
 * only by the commands that need it: writing a .parquet manifest and the
 * fleet merge. It is imported dynamically so that the nightly unify run and
 * the plain capacity report never load its 70 MB native library.
 *
 * Each session gets an in-memory database with a memory limit and its own
 * spill directory (removed on close), so a join larger than the limit goes
 * out of core instead of growing the process.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DuckDBAppender, DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';

export type Row = Record<string, unknown>;

export interface Engine {
  run(sql: string): Promise<void>;
  rows(sql: string): Promise<Row[]>;
  appender(table: string): Promise<DuckDBAppender>;
  close(): void;
}

export interface EngineOptions {
  /** DuckDB's memory_limit ('1GB'); what does not fit spills to a temporary directory. */
  memoryLimit?: string;
  threads?: number;
}

export const DEFAULT_MEMORY_LIMIT = '1GB';

/** A SQL string literal: DuckDB's standard strings know no escape but the doubled quote. */
export const lit = (s: string): string => `'${s.replaceAll("'", "''")}'`;

export async function openEngine(opts: EngineOptions = {}): Promise<Engine> {
  let duck: typeof import('@duckdb/node-api');
  try {
    duck = await import('@duckdb/node-api');
  } catch (er) {
    throw new Error(`the DuckDB engine (npm package @duckdb/node-api) cannot be loaded: ${(er as Error).message}`);
  }
  const spill = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-duckdb-'));
  let instance: DuckDBInstance | undefined;
  let conn: DuckDBConnection | undefined;
  try {
    instance = await duck.DuckDBInstance.create(':memory:', {
      memory_limit: opts.memoryLimit ?? DEFAULT_MEMORY_LIMIT,
      threads: String(opts.threads ?? os.availableParallelism()),
      temp_directory: spill,
      // Manifests are the only input: no extension may be fetched or loaded behind our back.
      autoinstall_known_extensions: 'false',
      autoload_known_extensions: 'false',
    });
    conn = await instance.connect();
  } catch (er) {
    fs.rmSync(spill, { recursive: true, force: true });
    throw er;
  }
  const c = conn, inst = instance;
  return {
    run: async (sql) => void (await c.run(sql)),
    rows: async (sql) => (await c.runAndReadAll(sql)).getRowObjectsJS() as Row[],
    appender: (table) => c.createAppender(table),
    close: () => {
      c.closeSync();
      inst.closeSync();
      fs.rmSync(spill, { recursive: true, force: true });
    },
  };
}

/** One of the queries in src/report/sql (copied next to this module in dist/ by the build). */
export function loadSql(name: string): string {
  const text = fs.readFileSync(fileURLToPath(new URL(`./sql/${name}.sql`, import.meta.url)), 'utf8');
  return text.replace(/;\s*$/, '');
}

/** A count or byte sum from the engine (BIGINT, HUGEINT) as a JS number, refusing to round. */
export function num(v: unknown): number {
  const n = typeof v === 'bigint' ? Number(v) : typeof v === 'number' ? v : v === null || v === undefined ? 0 : Number.NaN;
  if (!Number.isSafeInteger(n)) throw new Error(`engine returned ${String(v)}, not a safe integer`);
  return n;
}
