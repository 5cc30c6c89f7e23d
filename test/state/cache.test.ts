// The hash cache on real trees: what a rerun reads, what invalidates an
// entry, every way a shard can be bad, and that a run touches only its
// roots' shards (strace of the real CLI), survives kill -9 while saving and
// looks entries up without allocating.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CACHE_DIR, HashCache, OLD_CACHE_FILE, rootKey, shardName } from '../../src/state/cache.js';
import { O, sys } from '../../src/os/sys.js';
import type { Root } from '../../src/core/types.js';
import { inode, rmTree, runUnify, setMtime, sh, tempDir, testStateDir, writeFile } from '../helpers/tree.js';
import { deriveKey, KEY_FILE, loadHashKey } from '../../src/state/hash-key.js';
import { randomBytes } from 'node:crypto';
import type { Stat } from '../../src/core/stat.js';

let dir: string;
let cacheDir: string;
let guests: string[];
let warnings: string[];

const FILES = ['usr/lib/libc.so.6', 'usr/bin/ls', 'usr/share/doc/README'];

beforeEach(async () => {
  dir = tempDir();
  cacheDir = path.join(dir, 'state', 'cache');
  guests = ['g1', 'g2', 'g3'].map((g) => path.join(dir, g));
  for (const g of guests) {
    writeFile(path.join(g, FILES[0]!), { content: Buffer.alloc(200_000, 1) });
    writeFile(path.join(g, FILES[1]!), { content: Buffer.alloc(50_000, 2), mode: 0o755 });
    writeFile(path.join(g, FILES[2]!), { content: 'docs\n' });
  }
  warnings = [];
  // Entries for files changed less than a second before they are read are
  // not trusted (see cache.ts): let the clock move past the files' ctimes.
  await new Promise((r) => setTimeout(r, 1100));
});
afterEach(() => rmTree(dir));

/** The fingerprint of the key the test runs hash under (runUnify's state directory). */
const key = () => loadHashKey(path.join(testStateDir(), KEY_FILE), { create: true }).fingerprint;

/** A root as openRoots() names it, from Node's stat (the cache reads no descriptor of it). */
function rootOf(p: string, index = 0): Root {
  const real = fs.realpathSync(p);
  const st = fs.statSync(real);
  return { index, path: real, fd: -1, dev: st.dev, ino: st.ino, mntId: 0 };
}

/** The cache of `roots` as a run over them sees it (their shards in `at`), read under `fingerprint`. */
function openCacheOf(roots: string[], at = cacheDir, fingerprint = key(), msgs: string[] = []): HashCache {
  fs.mkdirSync(at, { recursive: true, mode: 0o700 });
  const c = new HashCache(fingerprint, roots.map(rootOf), { fd: sys.open(at, O.RDONLY | O.DIRECTORY | O.CLOEXEC), path: at });
  c.load((m) => msgs.push(m));
  return c;
}
const shardOf = (root: string, at = cacheDir) => path.join(at, shardName(rootKey(rootOf(root))));
/** The valid entry of `file` in the shards of `roots`, closed after. */
function entryOf(roots: string[], file: string) {
  const c = openCacheOf(roots);
  try {
    return c.lookup(statOf(file));
  } finally {
    c.close();
  }
}

const run = (roots: string[], opts: Parameters<typeof runUnify>[1] = {}) =>
  runUnify(roots, { cache: cacheDir, onWarning: (m) => warnings.push(m), ...opts });

/** Sum of sizes, by stat(1), of the given files. */
const sizes = (files: string[]) => files.reduce((sum, f) => sum + Number(sh('stat', '-c', '%s', f).trim()), 0);

/** Stat of a path as vunify's cache keys it, from Node's bigint stat rather than vunify's own code. */
function statOf(file: string): Stat {
  const s = fs.statSync(file, { bigint: true });
  const split = (ns: bigint) => [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)] as const;
  const [mtimeSec, mtimeNsec] = split(s.mtimeNs);
  const [ctimeSec, ctimeNsec] = split(s.ctimeNs);
  return { type: 1, mode: Number(s.mode), uid: 0, gid: 0, nlink: Number(s.nlink), ino: Number(s.ino), dev: Number(s.dev), size: Number(s.size), blocks: 0, mtimeSec, mtimeNsec, ctimeSec, ctimeNsec, mntId: 0 };
}

describe('hash cache', () => {
  it('a rerun after adding a guest reads only that guest\'s candidate files', async () => {
    const first = await run(guests);
    expect(first.errors).toEqual([]);
    expect(first.report.hashed.files).toBe(9);
    expect(first.report.summary.linksMade).toBe(6);

    // An unchanged, unified fleet: nothing is a candidate, nothing is read.
    const again = await run(guests);
    expect(again.report.hashed).toEqual({ files: 0, bytes: 0, cacheHits: 0 });

    // A new guest with new inodes, same metadata: each of its files is a
    // candidate beside a canonical whose hash the cache still holds. A dry
    // run hashes them; a linking run reads them once, in the linker's
    // comparison with that canonical (commands/session.ts hashRowGroups).
    sh('cp', '-a', guests[0]!, path.join(dir, 'g4'));
    const g4 = path.join(dir, 'g4');
    const dry = await run([...guests, g4], { dryRun: true });
    expect(dry.report.hashed.files).toBe(FILES.length);
    expect(dry.report.hashed.bytes).toBe(sizes(FILES.map((f) => path.join(g4, f))));
    expect(dry.report.hashed.cacheHits).toBe(FILES.length);
    const { report, errors } = await run([...guests, g4]);
    expect(errors).toEqual([]);
    expect(report.hashed).toEqual({ files: 0, bytes: 0, cacheHits: FILES.length });
    expect(report.summary.linksMade).toBe(FILES.length);
    for (const f of FILES) expect(inode(path.join(g4, f))).toBe(inode(path.join(guests[0]!, f)));
  });

  it('a file rewritten in place with its size and mtime restored is read again (ctime changed)', async () => {
    const other = path.join(guests[1]!, 'opt/x');
    writeFile(path.join(guests[0]!, 'opt/x'), { content: 'aaaa' });
    writeFile(other, { content: 'bbbb' });
    await new Promise((r) => setTimeout(r, 1100));
    await run(guests.slice(0, 2), { dryRun: true });
    expect(inode(other)).not.toBe(inode(path.join(guests[0]!, 'opt/x')));
    fs.writeFileSync(other, 'aaaa');
    setMtime(other, '1700000000.123456789');
    // Its old entry (bbbb) would keep it apart: the dry run hashes it, and
    // the linking run compares it with its set's canonical (not hashed).
    const dry = await run(guests.slice(0, 2), { dryRun: true });
    expect(dry.report.hashed.files).toBe(1);
    expect(dry.report.summary.linksPlanned).toBe(FILES.length + 1);
    const { report } = await run(guests.slice(0, 2));
    expect(report.summary.linksMade).toBe(FILES.length + 1);
    expect(inode(other)).toBe(inode(path.join(guests[0]!, 'opt/x')));
  });

  it('never decides alone: a forged entry claiming equal content still meets the byte check', async () => {
    const a = path.join(guests[0]!, 'opt/x');
    const b = path.join(guests[1]!, 'opt/x');
    writeFile(a, { content: 'aaaa' });
    writeFile(b, { content: 'bbbb' });
    await new Promise((r) => setTimeout(r, 1100));
    const forged = openCacheOf(guests.slice(0, 2));
    forged.putStat(0, statOf(a), { hash: 42n, xattrs: '', flags: 0, projid: 0 });
    forged.putStat(1, statOf(b), { hash: 42n, xattrs: '', flags: 0, projid: 0 });
    forged.save();
    forged.close();
    const { report, errors } = await run(guests.slice(0, 2), { noDefaultExcludes: true });
    expect(inode(a)).not.toBe(inode(b));
    expect(fs.readFileSync(b, 'utf8')).toBe('bbbb');
    // The linker found two contents in the set the cache made: it split it, no error.
    expect(errors).toEqual([]);
    expect(report.summary.contentSplits).toEqual({ sets: 1, parts: 1, bytes: 4 });
    expect(report.summary.linksMade).toBe(FILES.length);
  });

  it('a shard written under another hash key is discarded with a warning, and the run is complete', async () => {
    await run(guests, { dryRun: true });
    const other = openCacheOf([guests[1]!], cacheDir, deriveKey(randomBytes(32)).fingerprint);
    other.putStat(0, statOf(path.join(guests[1]!, FILES[0]!)), { hash: 1n, xattrs: '', flags: 0, projid: 0 });
    other.save();
    other.close();
    warnings = [];
    const { report, errors } = await run(guests, { dryRun: true });
    expect(warnings).toEqual([expect.stringMatching(new RegExp(`^${shardOf(guests[1]!)}: hash cache of ${guests[1]} discarded: written under another hash key`))]);
    expect(errors).toEqual([]);
    expect(report.hashed).toMatchObject({ files: 3, cacheHits: 6 });
  });

  it('drops entries of inodes that no longer exist, keeps other roots\' entries', async () => {
    await run(guests, { dryRun: true });
    const gone = statOf(path.join(guests[2]!, FILES[0]!));
    const kept = statOf(path.join(guests[0]!, FILES[0]!));
    expect(entryOf([guests[2]!], path.join(guests[2]!, FILES[0]!))).toBeDefined();
    const count = (root: string) => { const c = openCacheOf([root]); try { return c.size; } finally { c.close(); } };
    const before = count(guests[2]!);
    fs.rmSync(path.join(guests[2]!, FILES[0]!));
    await run(guests.slice(1), { dryRun: true });
    // One entry fewer in g3's shard: the removed file's (its inode number may be reused, so it is counted, not looked up).
    expect(count(guests[2]!)).toBe(before - 1);
    expect(count(guests[2]!)).toBeGreaterThan(0);
    expect(entryOf([guests[0]!], path.join(guests[0]!, FILES[0]!))?.size).toBe(kept.size); // g1 was not scanned this time
  });

  it('drops the entries of a root that is gone, when a run over other roots saves', async () => {
    await run(guests, { dryRun: true });
    const gone = shardOf(guests[2]!);
    expect(fs.existsSync(gone)).toBe(true);
    const kept = shardOf(guests[0]!);
    const keptBytes = fs.readFileSync(kept);
    rmTree(guests[2]!); // the guest is removed from the host
    await run(guests.slice(1, 2), { dryRun: true });
    expect(fs.existsSync(gone)).toBe(false);
    expect(fs.readFileSync(kept).equals(keptBytes)).toBe(true); // g1 still exists, it was only not scanned
  });

  it('refreshes canonicals after linking, so the unified inodes stay cached', async () => {
    await run(guests);
    const canon = statOf(path.join(guests[0]!, FILES[0]!));
    const e = entryOf([guests[0]!], path.join(guests[0]!, FILES[0]!));
    expect(e && [e.ctimeSec, e.ctimeNsec]).toEqual([canon.ctimeSec, canon.ctimeNsec]);
    expect(canon.nlink).toBe(3);
  });

  it('a linking run drops the entries of the inodes it freed: the rerun after it reads and rewrites no shard', async () => {
    const first = await run(guests);
    expect(first.report.summary.linksMade).toBe(6);
    const count = (root: string) => { const c = openCacheOf([root]); try { return c.size; } finally { c.close(); } };
    // Every file of g2 and g3 now names g1's inode: their own inodes are gone, and so are their entries.
    for (const g of guests.slice(1)) for (const f of FILES) expect(inode(path.join(g, f))).toBe(inode(path.join(guests[0]!, f)));
    expect(guests.map(count)).toEqual([FILES.length, 0, 0]);
    const before = guests.map((g) => ({ bytes: fs.readFileSync(shardOf(g)), mtime: fs.statSync(shardOf(g)).mtimeMs }));
    const again = await run(guests);
    expect(again.report.summary.linksMade).toBe(0);
    expect(guests.map((g) => ({ bytes: fs.readFileSync(shardOf(g)), mtime: fs.statSync(shardOf(g)).mtimeMs }))).toEqual(before);
  });

  it('a duplicate with a link outside the roots keeps its entry after linking (the inode still exists)', async () => {
    const outside = path.join(dir, 'outside');
    fs.mkdirSync(outside);
    fs.linkSync(path.join(guests[2]!, FILES[1]!), path.join(outside, 'ls'));
    await new Promise((r) => setTimeout(r, 1100));
    const kept = statOf(path.join(outside, 'ls'));
    expect((await run(guests)).report.summary.linksMade).toBe(6);
    // g3's ls was replaced, but its inode lives on outside: its entry stays until a run finds it under no root.
    const c = openCacheOf([guests[2]!]);
    try {
      expect(c.lookup(statOf(path.join(outside, 'ls')))?.size).toBe(kept.size);
      expect(c.size).toBe(1);
    } finally {
      c.close();
    }
  });

  it('a replaced duplicate (not the canonical) with a link outside the roots keeps its entry; the ones freed lose theirs (review 12: linkRows passes the walk\'s nlink)', async () => {
    // g1's ls has two links outside (nlink 3: the canonical), g3's one (nlink 2): g3's path is
    // replaced, its inode lives on outside, so replaced() must not forget it; g2's is freed.
    const outside = path.join(dir, 'outside');
    fs.mkdirSync(outside);
    for (const n of ['a', 'b']) fs.linkSync(path.join(guests[0]!, FILES[1]!), path.join(outside, `g1-ls-${n}`));
    fs.linkSync(path.join(guests[2]!, FILES[1]!), path.join(outside, 'g3-ls'));
    await new Promise((r) => setTimeout(r, 1100));
    const g3ls = inode(path.join(outside, 'g3-ls'));
    const r = await run(guests);
    expect(r.errors).toEqual([]);
    expect(r.report.summary.linksMade).toBe(6);
    expect(inode(path.join(guests[2]!, FILES[1]!))).toBe(inode(path.join(guests[0]!, FILES[1]!)));
    expect(fs.statSync(path.join(outside, 'g3-ls')).nlink).toBe(1);
    const count = (root: string) => { const c = openCacheOf([root]); try { return c.size; } finally { c.close(); } };
    // g2: everything freed; g3: only the ls entry (its inode, g3ls, outlives the run)
    expect(guests.map(count)).toEqual([FILES.length, 0, 1]);
    expect(g3ls).toBe(inode(path.join(outside, 'g3-ls')));
  });

  it('a temporary file left by a run killed while saving is removed by the next save', async () => {
    await run(guests, { dryRun: true });
    const leftover = `${shardOf(guests[0]!)}.tmp.99999.deadbeef`;
    fs.writeFileSync(leftover, 'half a cache');
    await run(guests, { dryRun: true });
    expect(fs.readdirSync(cacheDir).sort()).toEqual([...guests.map((g) => path.basename(shardOf(g))), 'lock', 'roots'].sort());
  });

  const damages: [string, (buf: Buffer) => Buffer, RegExp][] = [
    ['truncated', (b) => b.subarray(0, b.length - 30), /checksum|truncated/],
    ['cut to nothing', () => Buffer.alloc(0), /not a vunify hash cache/],
    ['cut at the entries', (b) => b.subarray(0, 200), /checksum|truncated/],
    ['one byte flipped', (b) => { const c = Buffer.from(b); c[c.length - 20]! ^= 0xff; return c; }, /checksum/],
    ['from another version', (b) => { const c = Buffer.from(b); c.writeUInt32LE(99, 8); return c; }, /another version/],
    // Found only as the entries are read (their block's checksum), after the header checked out.
    ['with an entry flipped', (b) => { const c = Buffer.from(b); c[c.readUInt32LE(12) + 3]! ^= 0x40; return c; }, /checksum/],
    ['not a cache at all', () => Buffer.from('#!/bin/sh\nrm -rf /\n'), /not a vunify hash cache/],
  ];
  it.each(damages)('a shard %s is discarded with a warning, the run is complete, and the shard rebuilt', async (_, damage, why) => {
    await run(guests, { dryRun: true });
    const shard = shardOf(guests[1]!);
    fs.writeFileSync(shard, damage(fs.readFileSync(shard)));
    warnings = [];
    // A dry run: a linking run would compare g2's files with their sets' canonicals rather than hash them.
    const { report, errors } = await run(guests, { dryRun: true });
    expect(warnings).toEqual([expect.stringMatching(new RegExp(`^${shard}: hash cache of ${guests[1]} discarded: .*${why.source}`))]);
    expect(errors).toEqual([]);
    // g2's three candidates are read again; g1's and g3's come from their shards.
    expect(report.hashed).toMatchObject({ files: 3, cacheHits: 6 });
    expect(report.summary.linksPlanned).toBe(6);
    // And a good shard replaces it: g2's files are in it.
    const msgs: string[] = [];
    const c = openCacheOf([guests[1]!], cacheDir, key(), msgs);
    expect(msgs).toEqual([]);
    expect(c.size).toBeGreaterThan(0);
    c.close();
  });

  it.each([6, 7, 8])('a shard of an earlier format (%i; 7 held XXH64 hashes, 8 a public zero-run marker) is replaced, with a note rather than a warning', async (old) => {
    await run(guests, { dryRun: true });
    const shard = shardOf(guests[1]!);
    const c = Buffer.from(fs.readFileSync(shard));
    c.writeUInt32LE(old, 8);
    fs.writeFileSync(shard, c);
    warnings = [];
    const notes: string[] = [];
    const { report } = await run(guests, { dryRun: true, onNote: (m) => notes.push(m) });
    expect(warnings).toEqual([]);
    expect(notes).toEqual([`${shard}: hash cache of ${guests[1]} written by an older vunify (format ${old}, this one reads 9): not read, replaced at save; its candidate files are read`]);
    expect(report.hashed).toMatchObject({ files: 3, cacheHits: 6 });
    expect(fs.readFileSync(shard).readUInt32LE(8)).toBe(9);
  });

  it('a shard of another root renamed over this root\'s is discarded (the header names the root)', async () => {
    await run(guests, { dryRun: true });
    fs.copyFileSync(shardOf(guests[0]!), shardOf(guests[1]!));
    warnings = [];
    const { report } = await run(guests, { dryRun: true });
    expect(warnings).toEqual([expect.stringMatching(new RegExp(`^${shardOf(guests[1]!)}: hash cache of ${guests[1]} discarded: written for another root`))]);
    expect(report.hashed).toMatchObject({ files: 3, cacheHits: 6 });
  });

  it('a missing cache is a note (the normal first run), and cache: false neither reads nor writes one', async () => {
    const notes: string[] = [];
    await run(guests, { dryRun: true, onNote: (m) => notes.push(m) });
    expect(warnings).toEqual([]);
    expect(notes).toEqual([`${cacheDir}: no hash cache yet for any of the 3 roots (${guests[0]}, ...); their candidate files are read`]);
    // A root added later: one line naming its shard.
    const g4 = path.join(dir, 'g4');
    sh('cp', '-a', guests[0]!, g4);
    notes.length = 0;
    await run([...guests, g4], { dryRun: true, onNote: (m) => notes.push(m) });
    expect(notes).toEqual([`${shardOf(g4)}: no hash cache yet for ${g4}; its candidate files are read`]);
    fs.rmSync(cacheDir, { recursive: true });
    const { report } = await run(guests, { cache: false });
    expect(report.hashed.files).toBe(9);
    expect(fs.existsSync(cacheDir)).toBe(false);
  });
});

const BIN = path.join(import.meta.dirname, '..', '..', 'dist', 'bin.js');
const DIST = path.join(import.meta.dirname, '..', '..', 'dist');

describe('hash cache shards', () => {
  it('a run over roots A and B neither opens nor rewrites the shard of root C (strace of the CLI)', async () => {
    const state = path.join(dir, 'state');
    const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, '-n', '--no-default-excludes', '--state-dir', state, ...args], { encoding: 'utf8' });
    expect(cli(...guests).status).toBe(0);
    const c = shardOf(guests[2]!, path.join(state, CACHE_DIR));
    const before = { bytes: fs.readFileSync(c), mtime: fs.statSync(c).mtimeMs };
    expect(before.bytes.length).toBeGreaterThan(0);
    // A change in A, so its shard is rewritten while C's must not be.
    sh('cp', '-a', path.join(guests[0]!, FILES[2]!), path.join(guests[0]!, 'usr/share/doc/README.copy'));
    await new Promise((r) => setTimeout(r, 1100));
    const log = path.join(dir, 'strace.log');
    const r = spawnSync('strace', ['-f', '-qq', '-e', 'trace=open,openat,openat2,rename,renameat,renameat2,unlink,unlinkat', '-o', log, process.execPath, BIN, '-n', '--no-default-excludes', '--state-dir', state, guests[0]!, guests[1]!], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    const calls = fs.readFileSync(log, 'utf8');
    const name = (g: string) => path.basename(shardOf(g, path.join(state, CACHE_DIR)));
    expect(calls).toContain(name(guests[0]!)); // the check can see a shard being opened
    expect(calls).toMatch(new RegExp(`rename.*${name(guests[0]!)}`)); // and A's rewritten
    expect(calls).not.toContain(name(guests[2]!));
    expect(fs.readFileSync(c).equals(before.bytes)).toBe(true);
    expect(fs.statSync(c).mtimeMs).toBe(before.mtime);
  });

  it('an unchanged rerun rewrites no shard', async () => {
    await run(guests, { dryRun: true });
    const mtimes = guests.map((g) => fs.statSync(shardOf(g)).mtimeMs);
    await run(guests, { dryRun: true });
    expect(guests.map((g) => fs.statSync(shardOf(g)).mtimeMs)).toEqual(mtimes);
  });

  it('match(): an entry is valid only while size, mtime and ctime match to the nanosecond', () => {
    const file = path.join(guests[0]!, FILES[0]!);
    const st = statOf(file);
    const c = openCacheOf([guests[0]!]);
    c.putStat(0, st, { hash: 0x0123456789abcdefn, xattrs: 'ab'.repeat(32), flags: 0x80000, projid: 7, elf: true });
    c.save();
    c.close();
    const d = openCacheOf([guests[0]!]);
    const args = [st.size, st.mtimeSec, st.mtimeNsec, st.ctimeSec, st.ctimeNsec] as const;
    const seen: unknown[] = [];
    const valid: boolean[][] = [];
    expect(d.match(0, 1, () => st.ino, (i, e) => {
      seen.push([i, e.hashHi, e.hashLo, e.xattrs, e.flags, e.projid, e.elf]);
      valid.push([e.valid(...args), ...args.map((_, k) => { const off = [...args]; off[k] = off[k]! + 1; return e.valid(...(off as unknown as typeof args)); })]);
    }, false)).toBe(true);
    expect(seen).toEqual([[0, 0x01234567, 0x89abcdef, 'ab'.repeat(32), 0x80000, 7, 2]]);
    expect(valid).toEqual([[true, false, false, false, false, false]]);
    // Another inode number: no call.
    expect(d.match(0, 1, () => st.ino + 1, () => seen.push('wrong'), false)).toBe(true);
    expect(seen).toHaveLength(1);
    expect(d.lookup({ ...st, ino: st.ino + 1 })).toBeUndefined();
    expect(d.lookup(st)?.hash).toBe(0x0123456789abcdefn);
    d.close();
  });

  it('a save merges the run\'s entries into the shard in order: new, replaced, forgotten, xattrs kept', () => {
    const dev = rootOf(guests[0]!).dev;
    const open = () => {
      const c = openCacheOf([guests[0]!]);
      c.readAtSec = Number.MAX_SAFE_INTEGER;
      return c;
    };
    const X = (ch: string) => ch.repeat(64);
    const put = (c: HashCache, ino: number, hash: bigint, x: string) => c.put(0, dev, ino, 100, 1700000000, 5, 1700000001, 6, hash, x, 0, 0, 1);
    const get = (c: HashCache, ino: number) => {
      const e = c.lookup({ dev, ino, size: 100, mtimeSec: 1700000000, mtimeNsec: 5, ctimeSec: 1700000001, ctimeNsec: 6 });
      return e && [e.hash, e.xattrs];
    };
    const a = open();
    for (const ino of [50, 10, 30]) put(a, ino, BigInt(ino), X(String(ino % 7)));
    put(a, 2 ** 40 + 1, 1n, ''); // an inode number above 32 bits
    a.save();
    a.close();
    const b = open();
    put(b, 20, 20n, X('b'));
    put(b, 30, 31n, X('c')); // replaces the file's entry
    put(b, 60, 60n, X('3')); // same digest as 10's: one class for both
    b.forget({ dev, ino: 50 });
    b.save();
    b.close();
    const c = open();
    expect([10, 20, 30, 50, 60, 2 ** 40 + 1].map((ino) => get(c, ino))).toEqual([[10n, X('3')], [20n, X('b')], [31n, X('c')], undefined, [60n, X('3')], [1n, '']]);
    expect(c.size).toBe(5);
    c.close();
    // The header (48 bytes, the root key padded to 8, its checksum), 5 entries of
    // 40 bytes in one block and its checksum, and four classes (three digests and
    // none; 12 bytes each besides the digest) and their checksum: nothing more.
    const bytes = fs.statSync(shardOf(guests[0]!)).size;
    const keyLen = Buffer.byteLength(rootKey(rootOf(guests[0]!)));
    expect(bytes).toBe(((48 + keyLen + 7) & ~7) + 8 + 5 * 40 + 8 + 4 * 12 + 3 * 64 + 8);
  });

  it('a shard damaged between the lookups and the save: a warning, and the run\'s entries are written alone', () => {
    const dev = rootOf(guests[0]!).dev;
    const msgs: string[] = [];
    const put = (c: HashCache, ino: number) => c.put(0, dev, ino, 100, 1700000000, 5, 1700000001, 6, BigInt(ino), '', 0, 0, 1);
    const get = (c: HashCache, ino: number) => c.lookup({ dev, ino, size: 100, mtimeSec: 1700000000, mtimeNsec: 5, ctimeSec: 1700000001, ctimeNsec: 6 })?.hash;
    const a = openCacheOf([guests[0]!]);
    a.readAtSec = Number.MAX_SAFE_INTEGER;
    for (let ino = 1; ino <= 3000; ino++) put(a, ino); // three blocks
    a.save();
    a.close();
    const b = openCacheOf([guests[0]!], cacheDir, key(), msgs);
    b.readAtSec = Number.MAX_SAFE_INTEGER;
    let hits = 0;
    expect(b.match(0, 3000, (i) => i + 1, () => hits++, true)).toBe(true);
    expect(hits).toBe(3000);
    put(b, 5000);
    // Another writer's damage in the last block, after this run read the shard.
    const file = shardOf(guests[0]!);
    const bytes = fs.readFileSync(file);
    const headLen = bytes.readUInt32LE(12);
    bytes[headLen + 2 * (1024 * 40 + 8) + 40 * 10]! ^= 1;
    fs.writeFileSync(file, bytes);
    b.save();
    b.close();
    expect(msgs).toEqual([expect.stringMatching(new RegExp(`^${file}: hash cache of ${guests[0]} discarded: checksum mismatch`))]);
    const c = openCacheOf([guests[0]!], cacheDir, key(), msgs);
    expect(msgs).toHaveLength(1);
    expect([get(c, 1), get(c, 2500), get(c, 5000)]).toEqual([undefined, undefined, 5000n]);
    expect(c.size).toBe(1);
    c.close();
  });

  it('a new root\'s shard is byte for byte what the merge of session 8 wrote for the same puts', () => {
    // The shards a first save writes come from the run's puts alone
    // (writeDelta), no longer through the merge with a file. The digests
    // below are of the files the build of commit ca28d53 (the merge for
    // every shard) wrote for exactly these puts, made by the same loop run
    // against that build's dist/; sha256sum reads the files here.
    const at = path.join(dir, 'fixed');
    fs.mkdirSync(at, { mode: 0o700 });
    const roots = [0, 1].map((index): Root => ({ index, path: `/vservers/web${index + 1}`, fd: -1, dev: 2049, ino: 1234 + index, mntId: 0 }));
    const c = new HashCache('0123456789abcdef', roots, { fd: sys.open(at, O.RDONLY | O.DIRECTORY | O.CLOEXEC), path: at });
    c.load(() => {});
    c.readAtSec = Number.MAX_SAFE_INTEGER;
    let probe: { ino: number; size: number; mtimeSec: number; mtimeNsec: number; ctimeSec: number; ctimeNsec: number; hash: bigint } | undefined;
    for (const r of [0, 1]) {
      let x = 7;
      const next = (n: number) => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) % n);
      const X = ['', 'a'.repeat(64), 'b'.repeat(64)];
      // 3,000 puts (three blocks): inodes above 32 bits and inodes put twice
      // (the last put counts), sizes up to 2^48 - 1, times before 1970, 24
      // classes (flags, project, ELF, xattrs), then two that are not kept.
      for (let i = 0; i < 3000; i++) {
        const ino = i % 7 === 0 ? 2 ** 40 + next(1e6) : 1000 + next(50000);
        const size = i % 97 === 0 ? 2 ** 48 - 1 - i : next(1 << 20);
        const ms = i % 50 === 0 ? -5 - i : 1_600_000_000 + next(1e8);
        const cs = 1_600_000_000 + next(1e8);
        const [mns, cns] = [next(1e9), next(1e9)];
        const hash = (BigInt(next(2 ** 30)) << 34n) | BigInt(next(2 ** 30));
        c.put(r, 2049, ino, size, ms, mns, cs, cns, hash, X[next(3)]!, next(3) === 0 ? 0x80000 : 0, next(4) === 0 ? 7 : 0, 1 + next(2));
        if (r === 0 && i === 2999) probe = { ino, size, mtimeSec: ms, mtimeNsec: mns, ctimeSec: cs, ctimeNsec: cns, hash };
      }
      c.put(r, 2049, 5, 2 ** 48, 0, 0, 1_600_000_000, 0, 1n, '', 0, 0, 1);
      c.put(r, 2049, 6, 1, 2 ** 33, 0, 1_600_000_000, 0, 1n, '', 0, 0, 1);
      // An inode number that leaves no room for the row beside it in a double: sorted by comparison.
      if (r === 1) c.put(r, 2049, 2 ** 50, 1, 0, 0, 1_600_000_000, 0, 1n, '', 0, 0, 1);
    }
    // The object API reads what the save will write (the same pass, no file yet).
    expect(c.lookup({ dev: 2049, ...probe! }, 0)?.hash).toBe(probe!.hash);
    const live = c.size;
    c.save();
    c.close();
    const digests = roots.map((r) => sh('sha256sum', path.join(at, shardName(rootKey(r)))).split(' ')[0]);
    expect(digests).toEqual(['6fcdea5d3dc21c1f69aa6d7457e11198b4cba8f0f4f07425d9a8738ee7155397', '4f54ba1ce3aa0fdb5d910a9a6f32a38861c3d40d831c49793e47601a6a2881e2']);
    // Entries in the headers, as the object API counted them before the save.
    expect(roots.reduce((n, r) => n + fs.readFileSync(path.join(at, shardName(rootKey(r)))).readUInt32LE(24), 0)).toBe(live);
  });

  it('times far from now, and sizes of 2^48 bytes or more, are not cached; times before 1970 are', () => {
    const dev = rootOf(guests[0]!).dev;
    const c = openCacheOf([guests[0]!]);
    c.readAtSec = Number.MAX_SAFE_INTEGER;
    const cases = [
      [1, 100, -5, 999_999_999, 1_700_000_000, 0], // mtime before 1970: kept
      [2, 2 ** 48 - 1, 0, 0, 1_700_000_000, 0],
      [3, 2 ** 48, 0, 0, 1_700_000_000, 0], // too large
      [4, 1, 2 ** 33, 0, 1_700_000_000, 0], // mtime in the year 2242: not kept
      [5, 1, -(2 ** 33), 0, 1_700_000_000, 0],
      [6, 1, -(2 ** 33) - 1, 0, 1_700_000_000, 0],
    ] as const;
    for (const [ino, size, ms, mns, cs, cns] of cases) c.put(0, dev, ino, size, ms, mns, cs, cns, BigInt(ino), '', 0, 0, 0);
    c.save();
    c.close();
    const d = openCacheOf([guests[0]!]);
    expect(cases.map(([ino, size, mtimeSec, mtimeNsec, ctimeSec, ctimeNsec]) => d.lookup({ dev, ino, size, mtimeSec, mtimeNsec, ctimeSec, ctimeNsec })?.hash)).toEqual([1n, 2n, undefined, undefined, 5n, undefined]);
    d.close();
  });

  it('does not keep a file changed within a second of the hashing', () => {
    const file = path.join(guests[0]!, 'fresh');
    fs.writeFileSync(file, 'new');
    const c = openCacheOf([guests[0]!]);
    c.readAtSec = Date.now() / 1000;
    c.putStat(0, statOf(file), { hash: 1n, xattrs: '', flags: 0, projid: 0 });
    expect(c.lookup(statOf(file))).toBeUndefined();
    c.close();
  });

  it('two roots sharing an inode after linking: each shard is right or misses, never wrong', async () => {
    const F = FILES[0]!;
    const at = (g: number) => path.join(guests[g]!, F);
    const g4 = path.join(dir, 'g4');
    sh('cp', '-a', guests[0]!, g4);
    await new Promise((r) => setTimeout(r, 1100));
    // g1 and g2 share an inode X; g1's shard holds it, refreshed after the link.
    expect((await run(guests.slice(0, 2))).report.summary.linksMade).toBe(3);
    const x = statOf(at(0));
    expect(statOf(at(1)).ino).toBe(x.ino);
    expect(entryOf([guests[0]!], at(0))?.ctimeSec).toBe(x.ctimeSec);
    await new Promise((r) => setTimeout(r, 1100));
    // A run over g2 and g4: X is found under g2 first, read, and kept in g2's shard too.
    await run([guests[1]!, g4], { dryRun: true });
    expect(entryOf([guests[1]!], at(1))).toBeDefined();
    const hash = entryOf([guests[1]!], at(1))!.hash;
    expect(entryOf([guests[0]!], at(0))!.hash).toBe(hash);
    // Linking g3 to X moves X's ctime: g1's shard (loaded) follows, g2's (not loaded) is now stale.
    await new Promise((r) => setTimeout(r, 50));
    expect((await run([guests[0]!, guests[2]!])).report.summary.linksMade).toBe(3);
    const x2 = statOf(at(0));
    expect([x2.ino, x2.nlink]).toEqual([x.ino, 3]);
    expect(x2.ctimeSec * 1e9 + x2.ctimeNsec).not.toBe(x.ctimeSec * 1e9 + x.ctimeNsec);
    const e1 = entryOf([guests[0]!], at(0));
    expect(e1 && [e1.ctimeSec, e1.ctimeNsec, e1.hash]).toEqual([x2.ctimeSec, x2.ctimeNsec, hash]);
    expect(entryOf([guests[1]!], at(1))).toBeUndefined(); // stale: a miss, not a wrong answer
    // Both shards loaded: the valid one answers.
    expect(entryOf([guests[1]!, guests[0]!], at(1))?.hash).toBe(hash);
    // g2 with g4 again: X is read (the miss), the plan is right.
    const again = await run([guests[1]!, g4], { dryRun: true });
    expect(again.report.summary.linksPlanned).toBe(3);
    expect(again.errors).toEqual([]);
  });

  it('a kill -9 while saving leaves every shard loadable (old or new), and the next save cleans up', async () => {
    const root = path.join(dir, 'big');
    fs.mkdirSync(root);
    const r = rootOf(root);
    const script = path.join(dir, 'saver.mjs');
    fs.writeFileSync(script, `
import fs from 'node:fs';
import { HashCache } from ${JSON.stringify(path.join(DIST, 'state/cache.js'))};
import { O, sys } from ${JSON.stringify(path.join(DIST, 'os/sys.js'))};
const [at, root] = [process.argv[2], JSON.parse(process.argv[3])];
for (let round = 1; ; round++) {
  const c = new HashCache('00112233aabbccdd', [root], { fd: sys.open(at, O.RDONLY | O.DIRECTORY), path: at });
  c.load((m) => { console.log('warning ' + m); }, () => {});
  c.readAtSec = Number.MAX_SAFE_INTEGER;
  for (let i = 0; i < 100000; i++) c.put(0, 2049, round * 100000 + i, i, 1700000000, i, 1700000000, i, BigInt(i), i % 3 ? '' : 'x'.repeat(64), 0, 0, 1);
  c.save();
  c.close();
  console.log('saved ' + round);
}
`);
    fs.mkdirSync(cacheDir, { recursive: true, mode: 0o700 });
    let midSave = 0; // kills that hit a save: a temporary file was left
    for (let k = 0; k < 6; k++) {
      const child = spawn(process.execPath, [script, cacheDir, JSON.stringify(r)]);
      let out = '';
      child.stdout.on('data', (b) => (out += b));
      while (!/saved \d+/.test(out)) await new Promise((res) => setTimeout(res, 10));
      if (k % 2 === 0) {
        // Kill the moment a temporary shard appears: in the middle of a save.
        const until = Date.now() + 20_000;
        while (!fs.readdirSync(cacheDir).some((n) => n.includes('.tmp.')) && Date.now() < until) await new Promise((res) => setImmediate(res));
      } else await new Promise((res) => setTimeout(res, 30 + 50 * k)); // anywhere
      child.kill('SIGKILL');
      await new Promise((res) => child.once('exit', res));
      expect(out).not.toMatch(/warning/);
      if (fs.readdirSync(cacheDir).some((n) => n.includes('.tmp.'))) midSave++;
      const msgs: string[] = [];
      const c = new HashCache('00112233aabbccdd', [r], { fd: sys.open(cacheDir, O.RDONLY | O.DIRECTORY), path: cacheDir });
      c.load((m) => msgs.push(m));
      expect(msgs).toEqual([]);
      const saved = Number(/saved (\d+)/.exec(out.trim().split('\n').pop()!)![1]);
      expect(c.size).toBeGreaterThanOrEqual(saved * 100000);
      c.save(); // nothing changed: no shard written, but the killed run's temporary file goes
      c.close();
      expect(fs.readdirSync(cacheDir).filter((n) => n.includes('.tmp.'))).toEqual([]);
    }
    expect(midSave).toBeGreaterThanOrEqual(3);
  }, 90_000);

  it('1,000,000 lookups in one pass over a 1,000,000-entry shard make no object per entry and hold no shard', () => {
    const root = path.join(dir, 'big');
    fs.mkdirSync(root);
    const script = path.join(dir, 'lookups.mjs');
    fs.writeFileSync(script, `
import { PerformanceObserver } from 'node:perf_hooks';
import { HashCache } from ${JSON.stringify(path.join(DIST, 'state/cache.js'))};
import { O, sys } from ${JSON.stringify(path.join(DIST, 'os/sys.js'))};
const [at, root] = [process.argv[2], JSON.parse(process.argv[3])];
const N = 1000000;
const open = () => new HashCache('00112233aabbccdd', [root], { fd: sys.open(at, O.RDONLY | O.DIRECTORY), path: at });
const w = open();
w.readAtSec = Number.MAX_SAFE_INTEGER;
for (let i = 0; i < N; i++) w.put(0, root.dev, 3 * i + 11, i, 1700000000 + i, i, 1700000100 + i, 999, BigInt(i) * 7n, '', 0, 0, 1);
w.save();
w.close();
const c = open();
const msgs = [];
c.load((m) => msgs.push(m));
let gcs = 0;
new PerformanceObserver((l) => { gcs += l.getEntries().length; }).observe({ entryTypes: ['gc'] });
// The run's inodes, in order: every entry's, and one more after each (no entry: a miss);
// every third entry's ctime is a nanosecond off (found, not valid).
const inos = new Float64Array(2 * N);
for (let i = 0; i < N; i++) (inos[2 * i] = 3 * i + 11), (inos[2 * i + 1] = 3 * i + 12);
const pass = () => {
  let hits = 0, calls = 0, sum = 0;
  const ok = c.match(0, inos.length, (k) => inos[k], (k, e) => {
    calls++;
    const i = (inos[k] - 11) / 3;
    if (e.valid(i, 1700000000 + i, i, 1700000100 + i, i % 3 === 2 ? 1000 : 999)) { hits++; sum += (e.hashLo & 0xffff) + e.flags + e.elf; }
  }, false);
  return { ok, hits, calls, sum };
};
const mem = () => { const m = process.memoryUsage(); return { heap: m.heapUsed, outside: m.external + m.arrayBuffers }; };
pass(); // warm up: the first pass compiles
pass();
globalThis.gc(); await new Promise((r) => setTimeout(r, 50));
gcs = 0;
const m0 = mem();
const probe = setInterval(() => {}, 1000);
const res = pass();
const m1 = mem();
clearInterval(probe);
const passGcs = gcs;
globalThis.gc(); await new Promise((r) => setTimeout(r, 50));
const m2 = mem();
console.log(JSON.stringify({ msgs, size: c.size, ...res, heapGrowth: m1.heap - m0.heap, kept: m2.heap - m0.heap, outsideGrowth: m1.outside - m0.outside, outsideKept: m2.outside - m0.outside, gcs: passGcs }));
`);
    fs.mkdirSync(cacheDir, { recursive: true, mode: 0o700 });
    const res = spawnSync(process.execPath, ['--expose-gc', script, cacheDir, JSON.stringify(rootOf(root))], { encoding: 'utf8', maxBuffer: 1 << 24 });
    expect(res.stderr).toBe('');
    const out = JSON.parse(res.stdout) as { msgs: string[]; size: number; ok: boolean; hits: number; calls: number; sum: number; heapGrowth: number; kept: number; outsideGrowth: number; outsideKept: number; gcs: number };
    expect(out.msgs).toEqual([]);
    expect(out.size).toBe(1_000_000);
    expect(out.ok).toBe(true);
    expect(out.calls).toBe(1_000_000);
    expect(out.hits).toBe(666_667);
    expect(out.sum).toBeGreaterThan(0);
    expect(fs.statSync(shardOf(root)).size).toBeGreaterThan(40_000_000);
    // The 40 MB shard went through a 40 KiB block: nothing of it stays, and no
    // object is made per entry (one would be 50 bytes or more; what the pass
    // does allocate is numbers boxed on the way between functions V8 did not
    // inline, a few bytes per entry, young garbage).
    expect(out.heapGrowth).toBeLessThan(16 * 1_000_000);
    expect(out.kept).toBeLessThan(256 * 1024);
    expect(out.outsideGrowth).toBeLessThan(1024 * 1024);
    expect(out.outsideKept).toBeLessThan(256 * 1024);
  }, 120_000);

  it('the old single-file cache is not read, and the first save removes it with a note', async () => {
    const state = path.join(dir, 'state2');
    fs.mkdirSync(state, { mode: 0o700 });
    fs.writeFileSync(path.join(state, OLD_CACHE_FILE), Buffer.concat([Buffer.from('VUNIFYHC'), Buffer.alloc(100, 7)]));
    fs.writeFileSync(path.join(state, `${OLD_CACHE_FILE}.lock`), '');
    const notes: string[] = [];
    const { report } = await runUnify(guests, { stateDir: state, dryRun: true, onWarning: (m) => warnings.push(m), onNote: (m) => notes.push(m) });
    expect(warnings).toEqual([]);
    expect(report.hashed.files).toBe(9);
    expect(notes.filter((n) => n.includes(OLD_CACHE_FILE))).toEqual([expect.stringMatching(new RegExp(`^${path.join(state, OLD_CACHE_FILE)}: removed the single-file hash cache`))]);
    expect(fs.readdirSync(state).sort()).toEqual([CACHE_DIR, 'hash.key']);
  });
});

// A regression from the safety review: a cached hash the bytes contradict is
// forgotten (the linker compares every byte; the cache never decides alone).
describe('hash cache: content changed with no stat change', () => {
  let mnt: string | undefined;
  afterEach(() => {
    if (mnt) sh('umount', mnt);
    mnt = undefined;
  });

  // On tmpfs, because there a write through a shared mapping can change the
  // bytes and no time at all, for certain: the first write to a mapped page
  // faults and updates mtime and ctime, later writes to that page do not,
  // and tmpfs pages are never written back (on ext4 a writeback, or any
  // sync by another process, write-protects the page again, so the next
  // write faults and moves the ctime: the test could not rely on it there).
  it('a write through a shared mapping keeps size, mtime and ctime: the linker refuses, and the cache forgets both', async () => {
    mnt = path.join(dir, 'tmpfs');
    fs.mkdirSync(mnt);
    sh('mount', '-t', 'tmpfs', '-o', 'size=16m', 'none', mnt);
    const pair = ['g1', 'g2'].map((g) => path.join(mnt!, g));
    const db = (g: number) => path.join(pair[g]!, 'var/db');
    const cache = path.join(dir, 'mmap-cache');
    const unify = (opts: Parameters<typeof runUnify>[1] = {}) => runUnify(pair, { cache, ...opts });
    for (const g of pair) writeFile(path.join(g, 'var/db'), { content: Buffer.alloc(4096, 0x61), mtime: '1700000000' });
    // The guest's database maps its file and writes a page (one write fault: ctime now).
    const py = spawn('python3', ['-u', '-c', `
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR); m = mmap.mmap(fd, 4096)
m[0:1] = b'a'; print('ready', flush=True)
sys.stdin.readline(); m[100:101] = b'Z'; print('wrote', flush=True)
sys.stdin.readline()`, db(1)]);
    const lines: string[] = [];
    py.stdout.on('data', (b) => lines.push(...b.toString().split('\n').filter(Boolean)));
    const waitFor = async (s: string) => { while (!lines.includes(s)) await new Promise((r) => setTimeout(r, 20)); };
    try {
      await waitFor('ready');
      fs.utimesSync(db(1), 1700000000, 1700000000); // mtime back as in the other guest (ctime: now)
      await new Promise((r) => setTimeout(r, 1500)); // older than RACY_SECONDS
      const first = await unify({ dryRun: true });
      expect(first.report.summary.linksPlanned).toBe(1);
      const st = fs.statSync(db(1), { bigint: true });
      py.stdin.write('\n');
      await waitFor('wrote');
      const st2 = fs.statSync(db(1), { bigint: true });
      expect([st2.ctimeNs, st2.mtimeNs, st2.size]).toEqual([st.ctimeNs, st.mtimeNs, st.size]);
      expect(fs.readFileSync(db(0)).equals(fs.readFileSync(db(1)))).toBe(false);
      // A dry run cannot tell (it trusts the cache, as the README says); a
      // linking run compares bytes, keeps the copy apart (its own part of the
      // set: no error), and the cache forgets both inodes.
      expect((await unify({ dryRun: true })).report.summary.linksPlanned).toBe(1);
      const linking = await unify();
      expect(linking.errors).toEqual([]);
      expect(linking.report.summary.linksMade).toBe(0);
      expect(linking.report.summary.contentSplits).toMatchObject({ sets: 1, parts: 1 });
      expect(fs.readFileSync(db(1))[100]).toBe(0x5a); // the guest's byte is still there
      expect((await unify({ dryRun: true })).report.summary.linksPlanned).toBe(0);
    } finally {
      py.stdin.end('\n');
      await new Promise((r) => (py.exitCode !== null ? r(undefined) : py.once('exit', r)));
    }
  });
});
