// A new guest on a unified host (commands/session.ts hashRowGroups): a
// linking run compares a new file with its set's canonical instead of
// hashing it when the hash cache already knows its metadata group as one
// content class; a dry run hashes. Whole CLI runs in a child process
// (bench/io-run.mjs), on real files; what the run read is the kernel's
// count (/proc/self/io rchar), inodes and contents come from stat and
// sha256sum, not from the code under test.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rmTree, sh, sha256File, tempDir, writeFile } from '../helpers/tree.js';

const IO_RUN = path.join(import.meta.dirname, '..', '..', 'bench', 'io-run.mjs');
const SIZE = 1 << 20; // leased (>= 16 KiB): one comparison per pair
const NAMES = ['lib/a.so', 'lib/b.so', 'bin/c', 'bin/d', 'share/e', 'share/f', 'share/g', 'share/h'];
/** Each name its own size, so its own metadata group, as most files of a real guest are. */
const sizeOf = (k: number) => SIZE + 100 * (k + 1);
const BYTES = NAMES.reduce((sum, _, k) => sum + sizeOf(k), 0);
const E = NAMES.indexOf('share/e');

/**
 * The hash cache keeps no entry whose ctime is within a second of the run
 * (state/cache.ts RACY_SECONDS, git's rule): a host's guests changed long
 * before. Wait that second out before a run that should fill it.
 */
const settle = () => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1100);

let dir: string;
let state: string;
const G = (g: string, rel = '') => path.join(dir, g, rel);

/** Two guests with the same eight ~1 MiB files (one carrying an xattr), unified, and the hash cache a rerun leaves. */
beforeEach(() => {
  dir = tempDir();
  state = tempDir('vunify-state-');
  for (const g of ['g1', 'g2']) {
    NAMES.forEach((rel, k) => writeFile(G(g, rel), { content: Buffer.alloc(sizeOf(k), 0x41 + k), mode: 0o755, xattrs: k === 0 ? { 'user.origin': 'debian' } : {} }));
  }
  settle();
  expect(run(['g1', 'g2']).report.summary.linksMade).toBe(NAMES.length);
  settle();
  expect(run(['g1', 'g2']).report.summary.linksPlanned).toBe(0);
});
afterEach(() => {
  rmTree(dir);
  rmTree(state);
});

interface Run {
  code: number | null;
  report: { dryRun: boolean; summary: Record<string, number>; hashed: { files: number; bytes: number; cacheHits: number } };
  rchar: number;
  stderr: string;
}

/** One CLI run over the named guests, as root with the test's state directory; what the whole process read. */
function run(guests: string[], extra: string[] = []): Run {
  const r = spawnSync(process.execPath, [IO_RUN, '--json', '-v', '--no-default-excludes', '--state-dir', state, ...extra, ...guests.map((g) => G(g))], { encoding: 'utf8' });
  const io = r.stderr.split('\n').find((l) => l.startsWith('{"rchar"'));
  if (r.status !== 0 || !io) throw new Error(`vunify exited ${r.status}: ${r.stderr}`);
  return { code: r.status, report: JSON.parse(r.stdout.split('\n').filter((l) => !l.startsWith('linked ')).join('\n')), rchar: JSON.parse(io).rchar, stderr: r.stderr };
}

const ino = (p: string) => fs.statSync(p).ino;

/** The new guest: a copy of g1 as `cp -a` makes it (new inodes, same metadata and xattrs). */
function newGuest(name = 'new'): void {
  sh('cp', '-a', G('g1'), G(name));
}

/** Rewrite a file's bytes, same size, and put its mtime back: only the content tells it apart. */
function rewrite(p: string, byte: number): void {
  const mtime = fs.statSync(p, { bigint: true }).mtimeNs;
  fs.writeFileSync(p, Buffer.alloc(fs.statSync(p).size, byte));
  sh('touch', '-d', `@${mtime / 1_000_000_000n}.${String(mtime % 1_000_000_000n).padStart(9, '0')}`, p);
}

describe('a new guest on a unified host', () => {
  it('is linked after one comparison per file: read about twice its bytes (a hash first made it three times)', () => {
    // What a run reads besides guest files (the program, the cache): a rerun that reads no guest byte.
    const idle = run(['g1', 'g2']);
    expect(idle.report.hashed.files).toBe(0);
    newGuest();
    const r = run(['g1', 'g2', 'new']);
    expect(r.report.summary.errors).toBe(0);
    expect(r.report.hashed.files).toBe(0); // none hashed: every new file's set was known
    expect(r.report.summary.linksMade).toBe(NAMES.length);
    for (const rel of NAMES) {
      expect(ino(G('new', rel))).toBe(ino(G('g1', rel)));
      expect(sha256File(G('new', rel))).toBe(sha256File(G('g2', rel)));
    }
    expect(execFileSync('getfattr', ['--only-values', '-n', 'user.origin', G('new', NAMES[0])], { encoding: 'utf8' })).toBe('debian');
    const ratio = (r.rchar - idle.rchar) / BYTES;
    console.log(`new guest: ${BYTES} bytes; the run read ${r.rchar - idle.rchar} bytes more than a rerun without it (${ratio.toFixed(3)}x)`);
    // The comparison reads the new file and its canonical once each (leases spare the second one).
    expect(ratio).toBeGreaterThanOrEqual(1.9);
    expect(ratio).toBeLessThan(2.5);
    // Linked, the new paths name the cached canonicals: a rerun reads nothing.
    expect(run(['g1', 'g2', 'new']).report.hashed.files).toBe(0);
  });

  it('a dry run hashes the new files (one read each), and plans what the linking run then does', () => {
    newGuest();
    const dry = run(['g1', 'g2', 'new'], ['--dry-run']);
    expect(dry.report.hashed).toMatchObject({ files: NAMES.length, bytes: BYTES });
    const linking = run(['g1', 'g2', 'new']);
    expect(linking.report.hashed.files).toBe(0);
    expect(linking.report.summary.linksMade).toBe(dry.report.summary.linksPlanned);
    expect(linking.report.summary.freedBytes).toBe(dry.report.summary.freeableBytes);
  });

  it('a new file of the same size and metadata but other bytes is kept apart by the dry run and the linking run alike, and never cached with the set hash', () => {
    newGuest();
    const odd = G('new', 'share/e');
    rewrite(odd, 0x7a);
    const before = { ino: ino(odd), sha: sha256File(odd), mtime: fs.statSync(odd, { bigint: true }).mtimeNs };
    // --no-cache: a dry run that saved its hashes would, once the file is older than the cache's
    // one-second rule (a loaded machine), make the odd file known to the linking run, not assumed.
    const dry = run(['g1', 'g2', 'new'], ['--dry-run', '--no-cache']);
    expect(dry.report.summary.linksPlanned).toBe(NAMES.length - 1);
    const r = run(['g1', 'g2', 'new']);
    expect(r.report.summary.errors).toBe(0);
    expect(r.report.hashed.files).toBe(0);
    expect(r.report.summary.linksMade).toBe(dry.report.summary.linksPlanned);
    expect(r.report.summary.freedBytes).toBe(dry.report.summary.freeableBytes);
    expect(ino(odd)).toBe(before.ino);
    expect(sha256File(odd)).toBe(before.sha);
    expect(fs.statSync(odd, { bigint: true }).mtimeNs).toBe(before.mtime);
    for (const rel of NAMES.filter((n) => n !== 'share/e')) expect(ino(G('new', rel))).toBe(ino(G('g1', rel)));
    // No hash was computed, so the message claims none.
    const note = r.stderr.split('\n').filter((l) => l.includes('share/e'));
    expect(note).toHaveLength(1);
    expect(note[0]).toContain('other content than');
    expect(note[0]).toContain('not hashed');
    expect(note[0]).not.toContain('same hash');
    // The canonical's cache entry still stands; the odd file had none written: the next run hashes it (only it) and plans nothing.
    const after = run(['g1', 'g2', 'new'], ['--dry-run']);
    expect(after.report.hashed).toMatchObject({ files: 1, bytes: sizeOf(E) });
    expect(after.report.summary.linksPlanned).toBe(0);
  });

  it('hashes a new file whose group the cache knows as two contents (ambiguous), or whose xattrs put it in no known class', () => {
    // g1 and g2 hold two contents of one size and metadata: both hashed and cached by this run.
    writeFile(G('g1', 'etc/amb'), { content: Buffer.alloc(SIZE, 1) });
    writeFile(G('g2', 'etc/amb'), { content: Buffer.alloc(SIZE, 2) });
    settle();
    expect(run(['g1', 'g2']).report.hashed.files).toBe(2);
    newGuest();
    sh('setfattr', '-n', 'user.extra', '-v', 'x', G('new', 'bin/c'));
    const r = run(['g1', 'g2', 'new']);
    expect(r.report.summary.errors).toBe(0);
    expect(r.report.hashed).toMatchObject({ files: 2, bytes: SIZE + sizeOf(NAMES.indexOf('bin/c')) }); // etc/amb and bin/c
    expect(ino(G('new', 'etc/amb'))).toBe(ino(G('g1', 'etc/amb')));
    expect(ino(G('new', 'etc/amb'))).not.toBe(ino(G('g2', 'etc/amb')));
    expect(ino(G('new', 'bin/c'))).not.toBe(ino(G('g1', 'bin/c'))); // xattrs differ: kept apart by the policy
    expect(r.report.summary.linksMade).toBe(NAMES.length); // the seven others and etc/amb
  });

  it('hashes a group with two new files: which set each joins is for the hash to say', () => {
    newGuest('new1');
    newGuest('new2');
    const r = run(['g1', 'g2', 'new1', 'new2']);
    expect(r.report.hashed).toMatchObject({ files: 2 * NAMES.length, bytes: 2 * BYTES });
    expect(r.report.summary.linksMade).toBe(2 * NAMES.length);
    for (const rel of NAMES) expect(ino(G('new2', rel))).toBe(ino(G('g1', rel)));
  });
});
