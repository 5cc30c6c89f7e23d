/*
 * Real trees for tests: temp directories on the real filesystem, files with
 * real owners, modes, xattrs and ACLs, and snapshots taken with independent
 * tools (find, stat, getfattr, sha256sum) rather than with vunify's own code.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export function tempDir(prefix = 'vunify-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function rmTree(dir: string): void {
  // Immutable flags left by a failed test would make rm fail.
  spawnSync('chattr', ['-R', '-i', '-a', dir], { stdio: 'ignore' });
  // rm copes with trees deeper than PATH_MAX, which fs.rmSync does not.
  execFileSync('rm', ['-rf', '--one-file-system', dir]);
}

export interface FileSpec {
  content?: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  /** mtime in seconds since the epoch: a decimal string keeps every nanosecond. */
  mtime?: string;
  xattrs?: Record<string, string>;
}

const FIXED_MTIME = '1700000000.123456789';

/** Write a file with exactly the given metadata (defaults: 0644 root:root, a fixed mtime). */
export function writeFile(file: string, spec: FileSpec = {}): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, spec.content ?? 'same content\n');
  fs.chownSync(file, spec.uid ?? 0, spec.gid ?? 0);
  fs.chmodSync(file, spec.mode ?? 0o644);
  for (const [k, v] of Object.entries(spec.xattrs ?? {})) sh('setfattr', '-n', k, '-v', v, file);
  setMtime(file, spec.mtime ?? FIXED_MTIME);
}

export function setMtime(file: string, seconds: string): void {
  // touch takes nanoseconds exactly; a double cannot hold them at this scale.
  sh('touch', '-h', '-d', `@${seconds}`, file);
}

export function sh(cmd: string, ...args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** The sha256 of a file's bytes, by sha256sum (not vunify's code nor Node's). */
export function sha256File(file: string): string {
  return sh('sha256sum', '--', file).split(' ')[0]!;
}

export function inode(file: string | Buffer): number {
  return fs.lstatSync(file).ino;
}

/**
 * Everything observable about every path below `dir`, keyed by the path
 * relative to `dir` (a latin1 string: one char per byte, so non-UTF-8 names
 * survive): type, links, mode, owner, group, size, mtime (ns), xattrs and a
 * sha256 of the content, from find, getfattr and sha256sum. Inode numbers
 * are included only when asked for, and directory mtimes can be left out,
 * so a snapshot can be compared across a linking run. Names reach the tools through find itself, never through
 * argv strings that would mangle invalid UTF-8.
 */
export function snapshot(dir: string, opts: { inodes?: boolean; dirTimes?: boolean } = {}): Map<string, string> {
  const out = new Map<string, string>();
  const meta = execFileSync('find', [dir, '-mindepth', '1', '-printf', '%y|%i|%n|%m|%U|%G|%s|%T@|%P\\0'], { maxBuffer: 1 << 30 });
  for (const rec of meta.toString('latin1').split('\0').filter(Boolean)) {
    const parts = rec.split('|');
    const name = parts.slice(8).join('|');
    const [type, ino, nlink, ...rest] = parts.slice(0, 8);
    // Replacing a name changes its directory's mtime, and may grow it by a
    // block, as any link or rename does: dirTimes: false leaves both out.
    if (type === 'd' && opts.dirTimes === false) rest.splice(3, 2);
    out.set(name, [type, ...(opts.inodes ? [ino, nlink] : []), ...rest].join('|'));
  }
  const sums = execFileSync('find', [dir, '-mindepth', '1', '-type', 'f', '-exec', 'sha256sum', '-z', '{}', '+'], { maxBuffer: 1 << 30 });
  for (const rec of sums.toString('latin1').split('\0').filter(Boolean)) {
    const name = rec.slice(66 + dir.length + 1);
    out.set(name, out.get(name) + '|sha256=' + rec.slice(0, 64));
  }
  const attrs = spawnSync('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', dir], {
    maxBuffer: 1 << 30,
  }).stdout.toString('latin1');
  for (const block of attrs.split('\n\n').filter((b) => b.trim())) {
    const lines = block.trim().split('\n');
    const name = unescapeOctal(lines[0]!.replace(/^# file: /, '')).slice(dir.length + 1);
    if (out.has(name)) out.set(name, out.get(name) + '|' + lines.slice(1).sort().join(','));
  }
  return out;
}

/** getfattr prints unusual bytes as \ooo octal escapes. */
function unescapeOctal(s: string): string {
  return s.replace(/\\([0-7]{3})|\\\\/g, (m, o: string | undefined) => (o ? String.fromCharCode(parseInt(o, 8)) : '\\'));
}

let stateDir: string | undefined;
/** This process's descriptors (their numbers, as /proc/self/fd names them) that name a file under `dir`. */
export function fdsUnder(dir: string): string[] {
  return fs.readdirSync('/proc/self/fd').filter((n) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${n}`).startsWith(dir + '/');
    } catch {
      return false;
    }
  });
}

/** One state directory per test process, so tests never touch /var/lib/vunify. */
export function testStateDir(): string {
  const parent = process.env.VUNIFY_TEST_STATES;
  if (!parent) return (stateDir ??= tempDir('vunify-state-'));
  fs.mkdirSync(parent, { recursive: true });
  return (stateDir ??= fs.mkdtempSync(path.join(parent, 'state-')));
}

/** Run the built CLI (dist/bin.js) with a test state directory, and capture everything. */
export function runCli(args: string[], opts: { input?: string } = {}) {
  const bin = path.join(import.meta.dirname, '..', '..', 'dist', 'bin.js');
  // A subcommand comes first, then the test state directory.
  const sub = args[0] === 'split' ? args.splice(0, 1) : [];
  const r = spawnSync(process.execPath, [bin, ...sub, '--state-dir', testStateDir(), ...args], { encoding: 'utf8', input: opts.input ?? '' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

import { unify, type UnifyOptions } from '../../src/index.js';
import type { FileError } from '../../src/core/errors.js';

/** Run the whole pipeline in-process with test-friendly defaults (no default excludes). */
/** The regular files under `top` grouped by inode: each inode's paths relative to `top`, joined by spaces, sorted. */
export function sharedPaths(top: string): string[] {
  const byIno = new Map<number, string[]>();
  for (const p of sh('find', top, '-type', 'f').split('\n').filter(Boolean).sort()) {
    const i = inode(p);
    byIno.set(i, [...(byIno.get(i) ?? []), path.relative(top, p)]);
  }
  return [...byIno.values()].map((v) => v.join(' ')).sort();
}

export async function runUnify(roots: string[], opts: Partial<UnifyOptions> = {}) {
  const errors: FileError[] = [];
  const report = await unify({
    roots,
    stateDir: testStateDir(),
    dryRun: false,
    ignoreMtime: false,
    minSize: 1,
    maxSize: Number.MAX_SAFE_INTEGER,
    rules: [],
    noDefaultExcludes: true,
    onError: (e) => errors.push(e),
    ...opts,
  });
  return { report, errors };
}

/** Every regular file under `d`, with its bytes (to check that no write was lost, whatever its name now). */
export function fileContents(d: string): Buffer[] {
  const out: Buffer[] = [];
  for (const e of fs.readdirSync(d, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(fs.readFileSync(path.join(e.parentPath, e.name)));
  }
  return out;
}

/**
 * The same grid of files under every base: DIR/FILE for each of `dirs` x
 * `files`, with content(d, f) (indices into both) and mtime 1700000000, so
 * the bases' files are duplicates of each other name by name.
 */
export function writeGrid(bases: string[], dirs: string[], files: string[], content: (d: number, f: number) => Buffer): void {
  for (const base of bases)
    for (const [d, dn] of dirs.entries())
      for (const [f, fn] of files.entries()) {
        const file = path.join(base, dn, fn);
        fs.mkdirSync(path.dirname(file), { recursive: true });
        fs.writeFileSync(file, content(d, f));
        fs.utimesSync(file, 1700000000, 1700000000);
      }
}
