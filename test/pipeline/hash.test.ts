// The hash stage: the addon's batches against the TypeScript XXH3 reference in this thread (core/xxh3.ts); same hashes, same errors.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { FileError } from '../../src/core/errors.js';
import { groupFiles } from '../../src/pipeline/group.js';
import { CHUNK, decodeResults, encodeJobs, hashJob, inRowOrder, splitByContent, type HashResult } from '../../src/pipeline/hash.js';
import { relPath } from '../../src/core/paths.js';
import { FS_FILE_FLAGS } from '../../src/core/stat.js';
import { sys } from '../../src/os/sys.js';
import { closeRoots, openRoots } from '../../src/pipeline/roots.js';
import { walk } from '../../src/pipeline/walk.js';
import { rmTree, sh, tempDir, writeFile } from '../helpers/tree.js';
import { DEFAULT_SECRET, xxh3 } from '../../src/core/xxh3.js';
import { getHasher } from '../../src/core/xxhash.js';

let dir: string;
beforeEach(() => {
  dir = tempDir();
  for (const g of ['a', 'b', 'c']) {
    writeFile(path.join(dir, g, 'small'), { content: 'x'.repeat(200) });
    writeFile(path.join(dir, g, 'big'), { content: Buffer.alloc(3 * 2 ** 20 + 17, g === 'c' ? 2 : 1) });
    writeFile(path.join(dir, g, 'gone'), { content: 'vanishes' });
  }
});
afterEach(() => rmTree(dir));

async function hashAll(inFlight: number) {
  writeFile(path.join(dir, 'b', 'gone'), { content: 'vanishes' });
  const roots = openRoots(['a', 'b', 'c'].map((g) => path.join(dir, g)));
  const errors: FileError[] = [];
  try {
    const walked = await walk(roots, { rules: [], minSize: 1, maxSize: Infinity, onError: () => {} });
    const { groups } = groupFiles(walked.files, { ignoreMtime: false });
    fs.unlinkSync(path.join(dir, 'b', 'gone')); // after the scan, before hashing
    const sets = await splitByContent(groups, { inFlight, secret: SECRET, policy: { ignoreMtime: false }, onError: (e) => errors.push(e) });
    const hashes = Object.fromEntries(groups.flat().map((i) => [`${i.paths[0]!.dir.root.path}/${i.paths[0]!.name}`, i.hash]));
    return { sets: sets.map((s) => s.length).sort(), hashes, errors };
  } finally {
    closeRoots(roots);
  }
}

/** A secret with every byte set and none alike in a row, so a secret dropped or misread anywhere shows. */
const SECRET = Buffer.from(Array.from({ length: 192 }, (_, i) => (i * 131 + 7) & 0xff | 1));
const DEFAULT = Buffer.from(DEFAULT_SECRET);

describe('splitByContent', () => {
  it('gives the same hashes and errors in native batches as in this thread', async () => {
    const here = await hashAll(0);
    const threads = await hashAll(2);
    expect(threads).toEqual(here);
    // Independent check of one value: XXH3 of 200 'x' bytes under the secret, by the TypeScript XXH3 directly.
    expect(here.hashes[path.join(dir, 'a') + '/small']).toBe(xxh3(Buffer.alloc(200, 'x'), SECRET));
    expect(here.hashes[path.join(dir, 'a') + '/small']).not.toBe(xxh3(Buffer.alloc(200, 'x')));
    // small: 3 alike; big: a and b alike (c differs); gone: a and c alike, b vanished.
    expect(here.sets).toEqual([2, 2, 3]);
    expect(here.errors.map((e) => [e.path, e.code])).toEqual([[path.join(dir, 'b', 'gone'), 'ENOENT']]);
  });
});

describe('the native XXH64 (the hash cache checksums)', () => {
  it('matches the published vectors and xxhash-wasm at every tail length and across chunks', async () => {
    expect(sys.xxh64(Buffer.alloc(0))).toBe(0xef46db3751d8e999n);
    expect(sys.xxh64(Buffer.from('a'))).toBe(0xd24ec4f1a98c6e5bn);
    const h = await getHasher();
    const data = Buffer.from(Array.from({ length: 3 * 2 ** 20 + 71 }, (_, i) => (i * 2654435761) >>> 24));
    for (let len = 0; len <= 100; len++) expect(sys.xxh64(data.subarray(0, len))).toBe(h.h64Raw(data.subarray(0, len)));
    expect(sys.xxh64(data)).toBe(h.h64Raw(data));
  });
});

describe('hashFiles', () => {
  async function hashOne(file: string, change?: () => void, secret = DEFAULT, attrsOnly = false) {
    const roots = openRoots([path.join(dir, 'a')]);
    try {
      const walked = await walk(roots, { rules: [], minSize: 0, maxSize: Infinity, onError: () => {} });
      const inodes = groupFiles(walked.files, { ignoreMtime: true }).inodes.filter((i) => i.paths[0]!.name.toString() === file);
      change?.();
      const jobs = encodeJobs(inodes, 0, inodes.length);
      return decodeResults(await (attrsOnly ? sys.fileAttrsBatch(jobs) : sys.hashFiles(jobs, secret)));
    } finally {
      closeRoots(roots);
    }
  }

  it('reads xattrs through the descriptor it hashes, as the documented SHA-256 digest of the set', async () => {
    sh('setfattr', '-n', 'user.b', '-v', '0x00ff', path.join(dir, 'a', 'small'));
    sh('setfattr', '-n', 'user.a', '-v', 'x', path.join(dir, 'a', 'small'));
    const [r] = await hashOne('small');
    // u32 LE name length, u32 LE value length, name, value; sorted by name.
    const encoding = Buffer.concat([
      Buffer.from([6, 0, 0, 0, 1, 0, 0, 0]), Buffer.from('user.a'), Buffer.from('x'),
      Buffer.from([6, 0, 0, 0, 2, 0, 0, 0]), Buffer.from('user.b'), Buffer.from([0, 0xff]),
    ]);
    expect(r).toMatchObject({ hash: xxh3(Buffer.alloc(200, 'x')), xattrs: createHash('sha256').update(encoding).digest('hex'), elf: false, projid: 0 });
  });

  it('hashes under the secret it is given, as the TypeScript XXH3 does in each of its forms', async () => {
    for (const [name, content] of [['s', 'x'.repeat(3)], ['m', 'y'.repeat(33)], ['n', 'z'.repeat(200)], ['l', Buffer.alloc(2 ** 20 + 3, 7)]] as const) {
      writeFile(path.join(dir, 'a', name), { content });
      const [r] = await hashOne(name, undefined, SECRET);
      expect(r).toMatchObject({ hash: xxh3(Buffer.from(content), SECRET) });
      expect(r).not.toMatchObject({ hash: xxh3(Buffer.from(content)) });
    }
  });

  it('reads the inode flags (chattr) through the descriptor it hashes', async () => {
    const [before] = await hashOne('small');
    sh('chattr', '+d', path.join(dir, 'a', 'small'));
    const [after] = await hashOne('small');
    const flags = (r: typeof before) => (r && 'flags' in r ? r.flags : -1);
    expect(flags(before) & FS_FILE_FLAGS).toBe(0);
    expect(flags(after) & FS_FILE_FLAGS).toBe(0x40); // FS_NODUMP_FL, as lsattr shows 'd'
    expect(sh('lsattr', path.join(dir, 'a', 'small'))).toMatch(/^-*d/);
  });

  it('tells files that start with the ELF magic, as the capacity report needs, small and large', async () => {
    const elf = (n: number) => Buffer.concat([Buffer.from('\x7fELF', 'latin1'), Buffer.alloc(n - 4, 1)]);
    writeFile(path.join(dir, 'a', 'elf-small'), { content: elf(100) });
    writeFile(path.join(dir, 'a', 'elf-large'), { content: elf(3 * 2 ** 20 + 5) });
    writeFile(path.join(dir, 'a', 'almost'), { content: Buffer.from('\x7fELG and more', 'latin1') });
    const results = await Promise.all(['elf-small', 'elf-large', 'almost', 'small'].map(async (n) => (await hashOne(n))[0]));
    expect(results.map((r) => r && 'elf' in r && r.elf)).toEqual([true, true, false, false]);
  });

  it('refuses a file swapped for a FIFO or rewritten after the scan, without opening it for reading', async () => {
    const fifo = path.join(dir, 'a', 'big');
    const [swapped] = await hashOne('big', () => {
      fs.unlinkSync(fifo);
      sh('mkfifo', fifo); // opening it for reading without O_NONBLOCK would hang
    });
    expect(swapped).toEqual({ error: { code: 'ECHANGED', message: 'file changed since it was scanned' } });
    const [written] = await hashOne('small', () => fs.appendFileSync(path.join(dir, 'a', 'small'), 'y'));
    expect(written).toMatchObject({ error: { code: 'ECHANGED' } });
  });

  it('names the failing call for a path that no longer resolves', async () => {
    const [r] = await hashOne('gone', () => fs.unlinkSync(path.join(dir, 'a', 'gone')));
    expect(r).toEqual({ error: { code: 'ENOENT', syscall: 'openat2', message: 'ENOENT, openat2' } });
  });

  it('attributes only: the same xattrs, flags and project through the same checks, and no byte of content read', async () => {
    const big = path.join(dir, 'a', 'big');
    sh('setfattr', '-n', 'user.origin', '-v', 'debian', big);
    sh('chattr', '+d', big);
    const rchar = () => Number(/^rchar: (\d+)$/m.exec(fs.readFileSync('/proc/self/io', 'latin1'))![1]);
    const [hashed] = await hashOne('big');
    const before = rchar();
    const [attrs] = await hashOne('big', undefined, DEFAULT, true);
    const read = rchar() - before;
    expect(hashed).toMatchObject({ hash: xxh3(fs.readFileSync(big)) });
    expect(attrs).toEqual({ hash: 0n, elf: false, xattrs: (hashed as { xattrs: string }).xattrs, flags: (hashed as { flags: number }).flags, projid: 0 });
    expect((attrs as { xattrs: string }).xattrs).toMatch(/^[0-9a-f]{64}$/);
    // The walk's getdents and /proc reads, not the 3 MiB file.
    expect(read).toBeLessThan(1 << 20);
    const [written] = await hashOne('small', () => fs.appendFileSync(path.join(dir, 'a', 'small'), 'y'), DEFAULT, true);
    expect(written).toMatchObject({ error: { code: 'ECHANGED' } });
  });
});

describe('hashFiles looks each file up from its directory, opened once for the files after it', () => {
  it('gives what a lookup from the root gives, in any order, across roots and directories, and follows no symlink swapped in for a directory', async () => {
    // Over openat2's 4096 bytes, and deeper than the directory descriptors hashFiles keeps (32): the two share 40 components.
    const deep = Array.from({ length: 48 }, (_, i) => `${i}`.padEnd(150, 'd')).join('/');
    const deep2 = deep.split('/').slice(0, 40).join('/') + '/other';
    const files: [string, string][] = [
      ['a/d/e/f1', 'one'], ['a/d/e/f2', 'two'], ['a/d/f3', 'three'], ['a/de/f4', 'four'], ['a/d/e/sub/f5', 'five'],
      ['b/d/e/f1', 'other one'], ['b/d/e/f2', 'two'], ['a/d/e/gone', 'gone'],
    ];
    for (const [rel, content] of files) writeFile(path.join(dir, rel), { content });
    // Too long for one path (ENAMETOOLONG): made a directory at a time.
    for (const [d, name, content] of [[deep, 'f6', 'six'], [deep2, 'f7', 'seven']]) {
      sh('bash', '-c', `cd "$1" && for d in \${2//\\// }; do mkdir -p "$d" && cd "$d"; done && printf "$4" > "$3"`, '-', path.join(dir, 'a'), d!, name!, content!);
    }
    const roots = openRoots(['a', 'b'].map((g) => path.join(dir, g)));
    try {
      const walked = await walk(roots, { rules: [], minSize: 0, maxSize: Infinity, onError: () => {} });
      const all = groupFiles(walked.files, { ignoreMtime: true }).inodes;
      const named = (rel: string) => all.find((i) => `${path.basename(i.paths[0]!.dir.root.path)}/${relPath(i.paths[0]!).toString()}` === rel)!;
      // Interleaved: the cached directory changes root, depth and prefix ("d" against "de") between neighbours, and comes back.
      const order = ['a/d/e/f1', 'b/d/e/f1', 'a/d/e/f2', 'a/d/e/sub/f5', 'a/d/f3', 'a/de/f4', 'a/d/e/gone', 'b/d/e/f2', `a/${deep}/f6`, `a/${deep2}/f7`, `a/${deep}/f6`, 'a/d/e/f1', 'a/small'];
      const inodes = order.map(named);
      // After the scan: the file in d/e goes, and de becomes a symlink to a directory holding the very inode the scan saw.
      fs.unlinkSync(path.join(dir, 'a/d/e/gone'));
      fs.renameSync(path.join(dir, 'a/de'), path.join(dir, 'a/de.real'));
      fs.symlinkSync('de.real', path.join(dir, 'a/de'));
      const buf = Buffer.allocUnsafe(CHUNK);
      const outcome = (r: HashResult) => ('hash' in r ? r.hash : r.error.code);
      // openat2, and the lookup a component at a time of kernels before 5.6.
      for (const legacy of [false, true]) {
        sys.forceLegacyLookup(legacy);
        const native = decodeResults(await sys.hashFiles(encodeJobs(inodes, 0, inodes.length), SECRET));
        const reference = inodes.map((i) => hashJob({ rootFd: i.paths[0]!.dir.root.fd, rel: relPath(i.paths[0]!), stat: i.stat }, buf, SECRET));
        expect(native.map(outcome)).toEqual(reference.map(outcome));
        // Independently: each hashed file's bytes as read by fs, and the two refusals.
        const expected = order.map((rel) =>
          rel === 'a/d/e/gone' ? 'ENOENT' : rel === 'a/de/f4' ? (legacy ? 'ENOTDIR' : 'ELOOP') : xxh3(rel.endsWith('f6') ? Buffer.from('six') : rel.endsWith('f7') ? Buffer.from('seven') : fs.readFileSync(path.join(dir, rel)), SECRET),
        );
        expect(native.map(outcome)).toEqual(expected);
        expect(native[5]).toMatchObject({ error: { syscall: 'openat2' } });
      }
    } finally {
      sys.forceLegacyLookup(false);
      closeRoots(roots);
    }
  });

  it('inRowOrder sorts candidates in place by the row they are opened by, window by window, keeping every candidate once', () => {
    const rows = new Map<number, number>();
    const todo = Uint32Array.from({ length: 70000 }, (_, k) => k * 3);
    todo.forEach((m, k) => rows.set(m, (k * 7919) % 70001));
    const before = todo.slice();
    const out = inRowOrder(todo, (m) => rows.get(m)!);
    expect(out).toBe(todo); // in place
    expect([...out].sort((x, y) => x - y)).toEqual([...before]);
    for (const [a, b] of [[0, 1 << 16], [1 << 16, 70000]]) {
      // Each window: the same candidates, in row order.
      const window = [...out.subarray(a, b)].map((m) => rows.get(m)!);
      expect(window).toEqual([...window].sort((x, y) => x - y));
      expect(new Set(out.subarray(a, b))).toEqual(new Set(before.subarray(a, b)));
    }
  });

  it('inRowOrder orders rows of any width (up to 2^32 - 1) and keeps candidates of one row in their order', () => {
    // Rows from a seeded generator: small, near 2^22 and 2^32, and repeats (two candidates, one row).
    let seed = 12345;
    const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0), seed);
    const widths = [0xff, 0x3fffff, 0x400000, 0xffffffff];
    const todo = Uint32Array.from({ length: 1000 }, (_, k) => k);
    const rowOf = new Uint32Array(1000).map((_, k) => (k % 10 === 9 ? 0 : rand() % widths[k % 4]!) + (k % 7 === 0 ? 0xffffffff - widths[k % 4]! : 0));
    rowOf[1] = 0xffffffff;
    rowOf[2] = 0xffffffff;
    // The reference: a comparison sort by (row, position).
    const want = [...todo].sort((x, y) => rowOf[x]! - rowOf[y]! || x - y);
    expect([...inRowOrder(todo, (m) => rowOf[m]!)]).toEqual(want);
  });
});

describe('hashFiles read buffers', () => {
  it('are kept between batches and given back by mallocTrim without changing a hash: a small file after a large one hashes its own bytes only', async () => {
    writeFile(path.join(dir, 'a', 'tiny'), { content: 'xy' });
    const roots = openRoots([path.join(dir, 'a')]);
    try {
      const walked = await walk(roots, { rules: [], minSize: 0, maxSize: Infinity, onError: () => {} });
      const byName = (n: string) => groupFiles(walked.files, { ignoreMtime: true }).inodes.find((i) => i.paths[0]!.name.toString() === n)!;
      // big (3 MiB of 1s) fills the buffer; tiny then small read over its first bytes.
      const inodes = ['big', 'tiny', 'small', 'big', 'tiny'].map(byName);
      const want = ['big', 'tiny', 'small', 'big', 'tiny'].map((n) => xxh3(fs.readFileSync(path.join(dir, 'a', n)), SECRET));
      const jobs = encodeJobs(inodes, 0, inodes.length);
      for (let round = 0; round < 3; round++) {
        // More batches at once than buffers are kept, then all of them given back.
        const all = await Promise.all(Array.from({ length: 12 }, () => sys.hashFiles(jobs, SECRET)));
        for (const out of all) expect(decodeResults(out).map((r) => ('hash' in r ? r.hash : r.error.code))).toEqual(want);
        expect(typeof sys.mallocTrim()).toBe('boolean');
      }
    } finally {
      closeRoots(roots);
    }
  });
});
