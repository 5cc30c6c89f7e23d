/*
 * Helpers for the scenario tests that run the built CLI against guests that
 * fight back (race, crash, writers): iteration counts, child processes that
 * are always reaped (stdout and stderr arrive as strings), runs of
 * `node dist/bin.js` with a hang timeout (optionally with cli-hook.mjs
 * preloaded, to put a kill or a guest's action at an exact call), a search
 * for leftover temporary names, a seeded PRNG (a fixed seed by default,
 * VUNIFY_SEED to vary or replay), and an in-process snapshot fast enough for
 * loops of hundreds.
 *
 * Every child started here is registered, and killChildren() (called from
 * each scenario's afterAll/afterEach) SIGKILLs whatever is still alive, so a
 * failed assertion never leaves a hostile loop running.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/** VUNIFY_STRESS=1 lengthens every scenario for local runs. */
export const STRESS = !!process.env.VUNIFY_STRESS && process.env.VUNIFY_STRESS !== '0';

/** Pick the default or the stress value (iteration counts, never time). */
export const budget = <T>(normal: T, stressed: T): T => (STRESS ? stressed : normal);

/**
 * The CLI under test. VUNIFY_BIN points the scenarios at another build, e.g.
 * a copy of dist/ with a check removed, to see that they notice.
 */
export const BIN = process.env.VUNIFY_BIN ?? path.join(import.meta.dirname, '..', '..', 'dist', 'bin.js');

/** What cli-hook.mjs can do to a run (see there). */
export interface HookConfig {
  count?: string;
  kill?: { n: number; when: 'before' | 'after' };
  exchange?: { under: string; match?: string } & ({ action: 'symlink'; decoy: string; strip?: number } | { action: 'request'; request: string; ack: string; resume?: string });
  done?: string;
}

/** `node` arguments that run the CLI under test, with cli-hook.mjs preloaded when `hook` is given. */
export function cliArgs(args: string[], hook?: HookConfig): { argv: string[]; env: NodeJS.ProcessEnv } {
  if (!hook) return { argv: [BIN, ...args], env: process.env };
  const sys = path.join(path.dirname(BIN), 'os', 'sys.js');
  return {
    argv: ['--import', path.join(import.meta.dirname, 'cli-hook.mjs'), BIN, ...args],
    env: { ...process.env, VUNIFY_TEST_HOOK: JSON.stringify({ sys, ...hook }) },
  };
}

const children = new Set<ChildProcess>();

export interface Exited {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Resolves when the child has exited (immediately if it already has). */
export function exited(child: ChildProcess): Promise<Exited> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

/** Spawn a registered child (stdio: ignore stdin, pipe stdout and stderr into strings). */
export function startChild(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): { child: ChildProcess; out: () => string; err: () => string } {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  children.add(child);
  child.once('exit', () => children.delete(child));
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  return { child, out: () => out, err: () => err };
}

/** Run an ES module given as source text in a registered `node` child; `config` arrives as process.argv[1] (JSON). */
/**
 * The start of every script run by startScript: its config (argv[1], JSON),
 * a seeded rand() and pick(), and a synchronous sleep(ms), so a hostile step
 * never yields to anything but the kernel.
 */
export const SCRIPT_PRELUDE = String.raw`import fs from 'node:fs';
import path from 'node:path';
const cfg = JSON.parse(process.argv[1]);
let s = cfg.seed >>> 0;
const rand = () => { s = (s + 0x6d2b79f5) >>> 0; let t = s; t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0) / 4294967296; };
const pick = (a) => a[Math.floor(rand() * a.length)];
const sab = new Int32Array(new SharedArrayBuffer(4));
const sleep = (ms) => Atomics.wait(sab, 0, 0, ms);
`;

export function startScript(source: string, config: unknown) {
  return startChild(process.execPath, ['--input-type=module', '-e', source, JSON.stringify(config)]);
}

/** SIGKILL every child still alive and wait for each to go. */
export async function killChildren(): Promise<void> {
  const alive = [...children];
  for (const c of alive) c.kill('SIGKILL');
  await Promise.all(alive.map((c) => exited(c)));
}

export interface VunifyRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when the run did not end within the timeout and was killed. */
  hung: boolean;
}

/** Run the built CLI to its end, killing it (and saying so) if it takes longer than `timeoutMs`. */
export async function runVunify(stateDir: string, args: string[], timeoutMs = 30_000, hook?: HookConfig): Promise<VunifyRun> {
  const cli = cliArgs(['--state-dir', stateDir, ...args], hook);
  const { child, out, err } = startChild(process.execPath, cli.argv, cli.env);
  let hung = false;
  const timer = setTimeout(() => {
    hung = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  const { code, signal } = await exited(child);
  clearTimeout(timer);
  // 'exit' can come before the pipes are drained.
  await Promise.all([child.stdout, child.stderr].map((s) => (s!.readableEnded ? undefined : new Promise((r) => s!.once('close', r)))));
  return { code, signal, stdout: out(), stderr: err(), hung };
}

/** Every path below `dir` whose name starts with `.vunify.` (vunify's temporary names), relative to `dir`. */
export function findTemps(dir: string): string[] {
  const found: string[] = [];
  const visit = (rel: string) => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.name.startsWith('.vunify.')) found.push(r);
      if (e.isDirectory()) visit(r);
    }
  };
  visit('');
  return found;
}

/** Journals of vunify runs left in a state directory. */
export function journals(stateDir: string): string[] {
  if (!fs.existsSync(stateDir)) return [];
  return fs.readdirSync(stateDir).filter((n) => n.startsWith('journal.'));
}

/** A small seeded PRNG (mulberry32), so a failing seed can be replayed with VUNIFY_SEED. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The seed of every scenario's PRNG: fixed, so a run does the same things
 * every time; VUNIFY_SEED=n to try others (each scenario prints the seed
 * it used, so a failure can be replayed).
 */
export const DEFAULT_SEED = 20240611;
export const SEED = (() => {
  const v = process.env.VUNIFY_SEED;
  if (v === undefined || v === '') return DEFAULT_SEED;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`VUNIFY_SEED must be a non-negative integer, not ${JSON.stringify(v)}`);
  return n >>> 0;
})();

export interface FastEntry {
  /** Everything compared: type, mode, owner, group, and for files size, mtime (ns), sha256; xattrs for all. */
  value: string;
  ino: number;
  nlink: number;
}

/**
 * A snapshot like tree.ts's snapshot() (without inodes or directory times)
 * but taken in-process, for loops that take hundreds: lstat for metadata,
 * sha256 of the content (cached by dev, inode, ctime, size and mtime, which
 * content cannot change without changing ctime; pass a fresh `cache` to
 * hash everything), and one getfattr call for every xattr. Inode numbers
 * and link counts are returned beside the compared value.
 */
export function fastSnapshot(dir: string, cache = new Map<string, string>()): Map<string, FastEntry> {
  const out = new Map<string, FastEntry>();
  const visit = (rel: string) => {
    for (const name of fs.readdirSync(path.join(dir, rel))) {
      const r = rel ? `${rel}/${name}` : name;
      const p = path.join(dir, r);
      const st = fs.lstatSync(p, { bigint: true });
      const type = st.isFile() ? 'f' : st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : st.isFIFO() ? 'p' : st.isCharacterDevice() ? 'c' : st.isBlockDevice() ? 'b' : 's';
      let value = `${type}|${(st.mode & 0o7777n).toString(8)}|${st.uid}|${st.gid}`;
      if (type === 'f') {
        const key = `${st.dev}:${st.ino}:${st.ctimeNs}:${st.size}:${st.mtimeNs}`;
        let sum = cache.get(key);
        if (sum === undefined) {
          sum = createHash('sha256').update(fs.readFileSync(p)).digest('hex');
          cache.set(key, sum);
        }
        value += `|${st.size}|${st.mtimeNs}|${sum}`;
      } else if (type === 'l') {
        value += `|${fs.readlinkSync(p)}`;
      } else if (type === 'c' || type === 'b') {
        value += `|${st.rdev}`;
      }
      out.set(r, { value, ino: Number(st.ino), nlink: Number(st.nlink) });
      if (type === 'd') visit(r);
    }
  };
  visit('');
  const attrs = spawnSync('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', dir], { maxBuffer: 1 << 30 });
  for (const block of attrs.stdout.toString('latin1').split('\n\n').filter((b) => b.trim())) {
    const lines = block.trim().split('\n');
    const name = unescapeOctal(lines[0]!.replace(/^# file: /, '')).slice(dir.length + 1);
    const e = out.get(name);
    if (e) e.value += '|' + lines.slice(1).sort().join(',');
  }
  return out;
}

/** getfattr prints unusual bytes as \ooo octal escapes (names here are read as UTF-8; the scenario trees use ASCII). */
function unescapeOctal(s: string): string {
  return s.replace(/\\([0-7]{3})|\\\\/g, (m, o: string | undefined) => (o ? String.fromCharCode(parseInt(o, 8)) : '\\'));
}

/** Just the compared values of a fast snapshot. */
export const values = (snap: Map<string, FastEntry>): Map<string, string> => new Map([...snap].map(([k, e]) => [k, e.value]));
