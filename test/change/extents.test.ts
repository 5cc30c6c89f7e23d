// Holes and link counts must not multiply work: the content hash and the
// byte comparison go by data extents (holes are known zeros, never read,
// and still equal written zeros), and a duplicate inode with many paths is
// compared with its canonical once, not once per path. Reads are counted
// with the kernel's own counter (/proc/self/io rchar, which the addon's
// thread pool adds to) and with the `sys.readSync` seam the linker reads
// through.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { sameBytes } from '../../src/change/compare.js';
import { DEFAULT_SECRET, xxh3 } from '../../src/core/xxh3.js';
import { sys } from '../../src/os/sys.js';
import { collectInodes } from '../../src/pipeline/group.js';
import { decodeResults, encodeJobs, hashFd } from '../../src/pipeline/hash.js';
import { closeRoots, openRoots } from '../../src/pipeline/roots.js';
import { walk } from '../../src/pipeline/walk.js';
import { BIN } from '../helpers/hostile.js';
import { loopFs, type LoopFs } from '../helpers/loopfs.js';
import { rmTree, runUnify, setMtime, tempDir, testStateDir, writeFile } from '../helpers/tree.js';

const MiB = 2 ** 20;
const TiB = 2 ** 40;
const PiB = 2 ** 50;

/** Bytes this process has read so far, as the kernel counts them (every thread). */
const rchar = () => Number(/^rchar: (\d+)$/m.exec(fs.readFileSync('/proc/self/io', 'utf8'))![1]);

/** A sparse file of `size` bytes with `parts` written at their offsets (everything else a hole). */
function sparse(file: string, size: number, parts: [number, Buffer][]): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const fd = fs.openSync(file, 'w');
  try {
    fs.ftruncateSync(fd, size);
    for (const [at, data] of parts) fs.writeSync(fd, data, 0, data.length, at);
  } finally {
    fs.closeSync(fd);
  }
  setMtime(file, '1700000000.5');
}

let dir: string;
beforeEach(() => {
  dir = tempDir('vunify-extents-');
});
afterEach(() => rmTree(dir));

/** The addon's hash of each file (paths relative to `dir`), by its name. */
async function nativeHashes(): Promise<Map<string, bigint>> {
  const roots = openRoots([dir]);
  try {
    const walked = await walk(roots, { rules: [], minSize: 0, maxSize: Infinity, onError: () => {} });
    const inodes = collectInodes(walked.files);
    const results = decodeResults(await sys.hashFiles(encodeJobs(inodes, 0, inodes.length), Buffer.from(DEFAULT_SECRET)));
    return new Map(inodes.map((i, k) => {
      const r = results[k]!;
      if (!('hash' in r)) throw new Error(r.error.message);
      return [i.paths[0]!.name.toString(), r.hash];
    }));
  } finally {
    closeRoots(roots);
  }
}

/** The reference hash (hash.ts hashFd: reads every byte) of a file. */
async function referenceHash(file: string): Promise<bigint> {
  const fd = fs.openSync(file, 'r');
  try {
    return hashFd(fd, fs.fstatSync(fd).size, Buffer.alloc(MiB), Buffer.from(DEFAULT_SECRET));
  } finally {
    fs.closeSync(fd);
  }
}

describe('the content hash by data extents', () => {
  it('equals the reference read of every byte; a hole and written zeros hash alike; files without a zero MiB keep plain XXH3', async () => {
    const x = Buffer.alloc(100, 'x');
    const y = Buffer.from('y at 3 MiB + 7');
    sparse(path.join(dir, 'holes'), 5 * MiB + 3, [[0, x], [3 * MiB + 7, y]]);
    const full = Buffer.alloc(5 * MiB + 3);
    x.copy(full, 0);
    y.copy(full, 3 * MiB + 7);
    writeFile(path.join(dir, 'zeros'), { content: full });
    writeFile(path.join(dir, 'one-zero-mib'), { content: Buffer.alloc(MiB) });
    sparse(path.join(dir, 'all-hole'), 3 * MiB, []);
    const dense = Buffer.from(Array.from({ length: 2 * MiB + 5 }, (_, i) => (i * 2654435761) >>> 24 || 1));
    writeFile(path.join(dir, 'dense'), { content: dense });
    const got = await nativeHashes();
    for (const [name, hash] of got) expect([name, hash]).toEqual([name, await referenceHash(path.join(dir, name))]);
    expect(got.get('holes')).toBe(got.get('zeros'));
    expect(got.get('holes')).not.toBe(got.get('all-hole'));
    expect(got.get('dense')).toBe(xxh3(dense));
    // The memory report's hash of a mapped file (sys.hashFd: the same C, in this thread) is the same function.
    for (const [name, hash] of got) {
      const fd = fs.openSync(path.join(dir, name), 'r');
      try {
        expect([name, sys.hashFd(fd, fs.fstatSync(fd).size, Buffer.from(DEFAULT_SECRET))]).toEqual([name, hash]);
        // A file that ends before the size it was taken for is no hash of it.
        expect(() => sys.hashFd(fd, fs.fstatSync(fd).size + 1, Buffer.from(DEFAULT_SECRET))).toThrow(expect.objectContaining({ code: 'ECHANGED' }));
      } finally {
        fs.closeSync(fd);
      }
    }
  });

  it('reads no hole: a 1 TiB sparse file with two data blocks costs a few MiB of reads', async () => {
    sparse(path.join(dir, 'tera'), TiB, [[0, Buffer.from('start')], [TiB / 2, Buffer.from('middle')]]);
    const before = rchar();
    const got = await nativeHashes();
    // The 1 MiB block around each of the two data extents, and the walk's own reads.
    expect(rchar() - before).toBeLessThan(3 * MiB);
    expect(got.get('tera')).toBeTypeOf('bigint');
  });
});

describe('sameBytes', () => {
  it('compares by extents: hole = written zeros; a byte in a hole or at the end differs; holes are not read', () => {
    const a = path.join(dir, 'a');
    const b = path.join(dir, 'b');
    const open = (f: string) => fs.openSync(f, 'r');
    const same = (size: number) => {
      const [fa, fb] = [open(a), open(b)];
      try {
        return [sameBytes(fa, fb, size), sameBytes(fb, fa, size)];
      } finally {
        fs.closeSync(fa);
        fs.closeSync(fb);
      }
    };
    sparse(a, 9 * MiB, [[0, Buffer.from('head')], [4 * MiB, Buffer.alloc(2 * MiB)]]);
    sparse(b, 9 * MiB, [[0, Buffer.from('head')]]);
    expect(same(9 * MiB)).toEqual([true, true]);
    sparse(b, 9 * MiB, [[0, Buffer.from('head')], [5 * MiB + 1, Buffer.from([1])]]);
    expect(same(9 * MiB)).toEqual([false, false]);
    sparse(b, 9 * MiB, [[0, Buffer.from('head')], [9 * MiB - 1, Buffer.from([1])]]);
    expect(same(9 * MiB)).toEqual([false, false]);
    sparse(a, TiB, [[0, Buffer.from('head')], [TiB - 5, Buffer.from('tail')]]);
    sparse(b, TiB, [[0, Buffer.from('head')], [TiB - 5, Buffer.from('tail')]]);
    const reads = vi.spyOn(sys, 'readSync');
    try {
      expect(same(TiB)).toEqual([true, true]);
      const bytes = reads.mock.calls.reduce((n, c) => n + c[2], 0);
      expect(bytes).toBeLessThan(MiB);
    } finally {
      reads.mockRestore();
    }
  });
});

describe('a duplicate inode with 1,000 paths', () => {
  it('is compared with its canonical once, then its other paths are linked after the cheaper checks', async () => {
    const size = 256 * 1024;
    const content = Buffer.alloc(size, 'q');
    const g1 = path.join(dir, 'g1');
    const g2 = path.join(dir, 'g2');
    writeFile(path.join(g1, 'canonical'), { content });
    // A link outside the roots makes g1's inode the canonical (it cannot be freed anyway).
    fs.linkSync(path.join(g1, 'canonical'), path.join(dir, 'outside'));
    writeFile(path.join(g2, 'd', 'p0000'), { content });
    for (let k = 1; k < 1000; k++) fs.linkSync(path.join(g2, 'd', 'p0000'), path.join(g2, 'd', `p${String(k).padStart(4, '0')}`));
    // Everything this process reads (the linker's comparisons are made in the addon, not through the seam).
    const rchar = () => Number(/^rchar: (\d+)$/m.exec(fs.readFileSync('/proc/self/io', 'latin1'))![1]);
    const before = rchar();
    const result = await runUnify([g1, g2], { cache: false });
    const bytes = rchar() - before;
    expect(result.errors).toEqual([]);
    expect(result.report.summary.linksMade).toBe(1000);
    const ino = fs.statSync(path.join(g1, 'canonical')).ino;
    const names = fs.readdirSync(path.join(g2, 'd'));
    expect(names.length).toBe(1000);
    expect(names.every((n) => fs.statSync(path.join(g2, 'd', n)).ino === ino)).toBe(true);
    expect(fs.statSync(path.join(g1, 'canonical')).nlink).toBe(1002);
    // Both inodes hashed once, then one full comparison before the exchange (and at most one after
    // it, each reading both files), whatever the number of paths: 1,000 comparisons would read 500 MiB.
    expect(bytes).toBeGreaterThanOrEqual(4 * size);
    expect(bytes).toBeLessThanOrEqual(6 * size + 256 * 1024);
  });

  it.each(['the addon', 'the JS path'])('its other paths are not linked on the strength of that comparison once the inode changed (%s)', async (linker) => {
    sys.nativeLinker = linker === 'the addon';
    const size = 64 * 1024;
    const g1 = path.join(dir, 'g1');
    const g2 = path.join(dir, 'g2');
    writeFile(path.join(g1, 'canonical'), { content: Buffer.alloc(size, 'q') });
    fs.linkSync(path.join(g1, 'canonical'), path.join(dir, 'outside'));
    writeFile(path.join(g2, 'p0'), { content: Buffer.alloc(size, 'q') });
    for (let k = 1; k < 4; k++) fs.linkSync(path.join(g2, 'p0'), path.join(g2, `p${k}`));
    // After the first path is linked, the guest rewrites the inode (through p3) and puts the
    // mtime back: in the addon's sequence (the production path), just before the second path's
    // temporary link, and in the JS path once the first link is reported.
    let changed = false;
    const rewrite = () => {
      if (changed) return;
      changed = true;
      fs.writeFileSync(path.join(g2, 'p3'), Buffer.alloc(size, 'Q'));
      setMtime(path.join(g2, 'p3'), '1700000000.123456789');
    };
    let links = 0;
    sys.setLinkHook((step, when) => {
      if (step === 'link' && when === 'before' && ++links === 2) rewrite();
    });
    let result;
    try {
      result = await runUnify([g1, g2], { cache: false, onLink: rewrite });
    } finally {
      sys.setLinkHook(null);
      sys.nativeLinker = true;
    }
    const { report, errors } = result;
    expect(changed).toBe(true);
    expect(report.summary.linksMade).toBe(1);
    expect(errors.map((e) => [path.basename(e.path), e.code])).toEqual([['p1', 'ECHANGED'], ['p2', 'ECHANGED'], ['p3', 'ECHANGED']]);
    expect(fs.readFileSync(path.join(g2, 'p3')).equals(Buffer.alloc(size, 'Q'))).toBe(true);
    expect(fs.statSync(path.join(g2, 'p1')).ino).toBe(fs.statSync(path.join(g2, 'p3')).ino);
  });
});

describe('two 1 PiB sparse files on XFS', () => {
  let xfs: LoopFs;
  beforeAll(() => {
    xfs = loopFs('xfs', 1 << 30);
  });
  afterAll(() => xfs.unmount());

  function run(args: string[]) {
    // 60 s: a hang detector (reading a pebibyte would take days), not a timing assertion.
    const r = spawnSync(process.execPath, [BIN, '--state-dir', testStateDir(), '--no-cache', ...args], { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' });
    return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
  }

  it('are hashed, compared and linked without reading their holes; one that differs far out is not linked', () => {
    const far = PiB / 2 + 12345;
    const file = (g: string) => path.join(xfs.dir, g, 'usr', 'lib', 'huge');
    sparse(file('g1'), PiB, [[0, Buffer.from('head')], [8 * MiB, Buffer.alloc(MiB)], [far, Buffer.from('far data')]]);
    sparse(file('g2'), PiB, [[0, Buffer.from('head')], [far, Buffer.from('far data')]]);
    sparse(file('g3'), PiB, [[0, Buffer.from('head')], [far, Buffer.from('far dat4')]]);
    const roots = ['g1', 'g2', 'g3'].map((g) => path.join(xfs.dir, g));

    const dry = run(['-n', '--json', ...roots]);
    expect([dry.signal, dry.code, dry.stderr]).toEqual([null, 0, '']);
    expect(JSON.parse(dry.stdout).summary.linksPlanned).toBe(1);

    const real = run(['--json', ...roots]);
    expect([real.signal, real.code, real.stderr]).toEqual([null, 0, '']);
    expect(JSON.parse(real.stdout).summary.linksMade).toBe(1);
    const st = ['g1', 'g2', 'g3'].map((g) => fs.statSync(file(g)));
    expect(st[1]!.ino).toBe(st[0]!.ino);
    expect(st[2]!.ino).not.toBe(st[0]!.ino);
    expect(st.map((s) => s.size)).toEqual([PiB, PiB, PiB]);
    // Still sparse: a few blocks, not a pebibyte (du, an independent tool).
    expect(Number(spawnSync('du', ['-B1', file('g2')], { encoding: 'utf8' }).stdout.split('\t')[0])).toBeLessThan(16 * MiB);
  }, 150_000);
});
