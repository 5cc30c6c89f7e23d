// The hash cache on real trees: what a rerun reads, what invalidates an
// entry, and every way a cache file can be bad.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HashCache, readCache as readCacheUnder, saveCache } from '../../src/state/cache.js';
import { inode, rmTree, runUnify, setMtime, sh, tempDir, testStateDir, writeFile } from '../helpers/tree.js';
import { deriveKey, KEY_FILE, loadHashKey } from '../../src/state/hash-key.js';
import { randomBytes } from 'node:crypto';
import type { Stat } from '../../src/core/stat.js';

let dir: string;
let cacheFile: string;
let guests: string[];
let warnings: string[];

const FILES = ['usr/lib/libc.so.6', 'usr/bin/ls', 'usr/share/doc/README'];

beforeEach(async () => {
  dir = tempDir();
  cacheFile = path.join(dir, 'state', 'hashes.cache');
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
const readCache = (file: string) => readCacheUnder(file, key());

const run = (roots: string[], opts: Parameters<typeof runUnify>[1] = {}) =>
  runUnify(roots, { cache: cacheFile, onWarning: (m) => warnings.push(m), ...opts });

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
    // candidate beside a canonical whose hash the cache still holds.
    sh('cp', '-a', guests[0]!, path.join(dir, 'g4'));
    const g4 = path.join(dir, 'g4');
    const { report, errors } = await run([...guests, g4]);
    expect(errors).toEqual([]);
    expect(report.hashed.files).toBe(FILES.length);
    expect(report.hashed.bytes).toBe(sizes(FILES.map((f) => path.join(g4, f))));
    expect(report.hashed.cacheHits).toBe(FILES.length);
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
    const { report } = await run(guests.slice(0, 2));
    expect(report.hashed.files).toBe(1);
    expect(inode(other)).toBe(inode(path.join(guests[0]!, 'opt/x')));
  });

  it('never decides alone: a forged entry claiming equal content still meets the byte check', async () => {
    const a = path.join(guests[0]!, 'opt/x');
    const b = path.join(guests[1]!, 'opt/x');
    writeFile(a, { content: 'aaaa' });
    writeFile(b, { content: 'bbbb' });
    await new Promise((r) => setTimeout(r, 1100));
    const forged = new HashCache(key());
    // Named as coming from g1's root (dev:ino:path, as cache.ts documents), which exists, so a save keeps them.
    const g1 = fs.statSync(guests[0]!);
    for (const f of [a, b]) forged.put(statOf(f), { hash: 42n, xattrs: '', flags: 0, projid: 0 }, `${g1.dev}:${g1.ino}:${guests[0]}`, Date.now() / 1000);
    await saveCache(cacheFile, forged, []);
    const { report, errors } = await run(guests.slice(0, 2), { noDefaultExcludes: true });
    expect(inode(a)).not.toBe(inode(b));
    expect(fs.readFileSync(b, 'utf8')).toBe('bbbb');
    // The linker found two contents in the set the cache made: it split it, no error.
    expect(errors).toEqual([]);
    expect(report.summary.contentSplits).toEqual({ sets: 1, parts: 1, bytes: 4 });
    expect(report.summary.linksMade).toBe(FILES.length);
  });

  it('a cache written under another hash key is discarded with a warning, and the run is complete', async () => {
    await run(guests, { dryRun: true });
    const other = new HashCache(deriveKey(randomBytes(32)).fingerprint);
    await saveCache(cacheFile, other, []);
    warnings = [];
    const { report, errors } = await run(guests, { dryRun: true });
    expect(warnings).toEqual([expect.stringMatching(new RegExp(`^${cacheFile}: hash cache discarded: written under another hash key`))]);
    expect(errors).toEqual([]);
    expect(report.hashed.files).toBe(9);
  });

  it('drops entries of inodes that no longer exist, keeps other roots\' entries', async () => {
    await run(guests, { dryRun: true });
    const gone = statOf(path.join(guests[2]!, FILES[0]!));
    const kept = statOf(path.join(guests[0]!, FILES[0]!));
    expect((await readCache(cacheFile)).entries.has(`${gone.dev}:${gone.ino}`)).toBe(true);
    fs.rmSync(path.join(guests[2]!, FILES[0]!));
    await run(guests.slice(1), { dryRun: true });
    const entries = (await readCache(cacheFile)).entries;
    expect(entries.has(`${gone.dev}:${gone.ino}`)).toBe(false);
    expect(entries.has(`${kept.dev}:${kept.ino}`)).toBe(true); // g1 was not scanned this time
  });

  it('drops the entries of a root that is gone, when a run over other roots saves', async () => {
    await run(guests, { dryRun: true });
    const ofGone = statOf(path.join(guests[2]!, FILES[0]!));
    const ofKept = statOf(path.join(guests[0]!, FILES[0]!));
    expect((await readCache(cacheFile)).entries.has(`${ofGone.dev}:${ofGone.ino}`)).toBe(true);
    rmTree(guests[2]!); // the guest is removed from the host
    await run(guests.slice(1, 2), { dryRun: true });
    const entries = (await readCache(cacheFile)).entries;
    expect(entries.has(`${ofGone.dev}:${ofGone.ino}`)).toBe(false);
    expect(entries.has(`${ofKept.dev}:${ofKept.ino}`)).toBe(true); // g1 still exists, it was only not scanned
  });

  it('refreshes canonicals after linking, so the unified inodes stay cached', async () => {
    await run(guests);
    const canon = statOf(path.join(guests[0]!, FILES[0]!));
    const e = (await readCache(cacheFile)).entries.get(`${canon.dev}:${canon.ino}`);
    expect(e && [e.ctimeSec, e.ctimeNsec]).toEqual([canon.ctimeSec, canon.ctimeNsec]);
  });

  it('a temporary file left by a run killed while saving is removed by the next save', async () => {
    await run(guests, { dryRun: true });
    const leftover = `${cacheFile}.tmp.99999.deadbeef`;
    fs.writeFileSync(leftover, 'half a cache');
    await run(guests, { dryRun: true });
    expect(fs.readdirSync(path.dirname(cacheFile)).sort()).toEqual(['hashes.cache', 'hashes.cache.lock']);
  });

  const damages: [string, (buf: Buffer) => Buffer, RegExp][] = [
    ['truncated', (b) => b.subarray(0, b.length - 30), /checksum|truncated/],
    ['cut to nothing', () => Buffer.alloc(0), /not a vunify hash cache/],
    ['one byte flipped', (b) => { const c = Buffer.from(b); c[c.length - 20]! ^= 0xff; return c; }, /checksum/],
    ['from another version', (b) => { const c = Buffer.from(b); c.writeUInt32LE(99, 8); return c; }, /another version/],
    ['not a cache at all', () => Buffer.from('#!/bin/sh\nrm -rf /\n'), /not a vunify hash cache/],
  ];
  it.each(damages)('a cache file %s is discarded with a warning, and the run is complete', async (_, damage, why) => {
    await run(guests, { dryRun: true });
    fs.writeFileSync(cacheFile, damage(fs.readFileSync(cacheFile)));
    warnings = [];
    const { report, errors } = await run(guests);
    expect(warnings).toEqual([expect.stringMatching(new RegExp(`^${cacheFile}: hash cache discarded: .*${why.source}`))]);
    expect(errors).toEqual([]);
    expect(report.hashed.files).toBe(9);
    expect(report.summary.linksMade).toBe(6);
    // And a good cache replaces it.
    expect((await readCache(cacheFile)).entries.size).toBeGreaterThan(0);
  });

  it('a missing cache is a note (the normal first run), and cache: false neither reads nor writes one', async () => {
    const notes: string[] = [];
    await run(guests, { dryRun: true, onNote: (m) => notes.push(m) });
    expect(warnings).toEqual([]);
    expect(notes).toEqual([`${cacheFile}: no hash cache yet; every candidate file is read`]);
    fs.rmSync(cacheFile);
    const { report } = await run(guests, { cache: false });
    expect(report.hashed.files).toBe(9);
    expect(fs.existsSync(cacheFile)).toBe(false);
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
    const cache = path.join(dir, 'mmap.cache');
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
