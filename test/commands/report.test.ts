// The capacity report on a real tree whose numbers are computed from the
// sizes written (helpers/capacity-tree.ts), and its agreement with the dry run.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scanCapacity, type CapacityOptions } from '../../src/commands/report.js';
import type { FileError } from '../../src/core/errors.js';
import { buildCapacityTree, ELF, EXPECT, SIZES } from '../helpers/capacity-tree.js';
import { rmTree, runUnify, snapshot, tempDir, testStateDir, writeFile } from '../helpers/tree.js';

let dir: string;
const G = (g: string) => path.join(dir, g);
const guests = () => ['g1', 'g2', 'g3'].map(G);

async function scan(opts: Partial<CapacityOptions> = {}) {
  const errors: FileError[] = [];
  const r = await scanCapacity({
    roots: guests(), candidates: [], ignoreMtime: false, minSize: 1, maxSize: Number.MAX_SAFE_INTEGER,
    rules: [], noDefaultExcludes: true, top: 10, cache: false, stateDir: testStateDir(), onError: (e) => errors.push(e), ...opts,
  });
  return { ...r, errors };
}

beforeAll(() => {
  dir = tempDir();
  buildCapacityTree(dir);
  // A candidate: lib and doc as g1 has them (sharable), tool with yet another owner (kept apart), one unique file.
  writeFile(path.join(dir, 'c1/usr/lib/x86_64-linux-gnu/libx.so.1'), { content: ELF(SIZES.lib) });
  writeFile(path.join(dir, 'c1/usr/share/doc/a'), { content: Buffer.alloc(SIZES.doc, 'd') });
  writeFile(path.join(dir, 'c1/usr/bin/tool'), { content: Buffer.alloc(SIZES.tool, 't'), uid: 2000 });
  writeFile(path.join(dir, 'c1/opt/new'), { content: Buffer.alloc(33, 'n') });
});
afterAll(() => rmTree(dir));

const by = <T>(list: { path: string }[], f: (x: any) => T) => Object.fromEntries(list.map((g) => [path.basename(g.path), f(g)]));

describe('capacity report', () => {
  it('splits each guest into shared, freeable, private and other, from sizes known in advance', async () => {
    const before = snapshot(dir, { inodes: true });
    const { report: r, errors } = await scan();
    expect(errors).toEqual([]);
    expect(by(r.guests, (g) => g.freeableBytes)).toEqual(EXPECT.freeable);
    expect(by(r.guests, (g) => g.privateBytes)).toEqual(EXPECT.private);
    expect(by(r.guests, (g) => g.sharedBytes)).toEqual(EXPECT.shared);
    expect(by(r.guests, (g) => g.bytes)).toEqual(EXPECT.bytes);
    for (const g of r.guests) expect(g.otherBytes).toBe(g.bytes - g.sharedBytes - g.freeableBytes - g.privateBytes);
    expect(r.guests[0]!.otherBytes).toBe(SIZES.lib + SIZES.doc + SIZES.tool + SIZES.mode + SIZES.xattr);
    expect(snapshot(dir, { inodes: true })).toEqual(before); // nothing changed
  });

  it('counts identical content kept apart by the first differing attribute', async () => {
    const { report: r } = await scan();
    expect(by(r.guests, (g) => g.keptApart)).toEqual(EXPECT.keptApart);
    expect(r.totals.keptApart).toEqual({ filesystem: 0, mount: 0, project: 0, flags: 0, owner: SIZES.tool, mode: SIZES.mode, mtime: SIZES.doc, xattrs: SIZES.xattr });
  });

  it('--ignore-mtime lets the mtime-only pair share: it moves from kept apart to freeable', async () => {
    const { report: r } = await scan({ ignoreMtime: true });
    expect(r.totals.keptApart.mtime).toBe(0);
    expect(r.totals.freeableBytes).toBe(2 * SIZES.lib + SIZES.doc);
  });

  it('builds the guest x guest matrix of bytes in common', async () => {
    const { report: r } = await scan();
    const m = r.matrix.bytes;
    expect([m[0]![1], m[0]![2], m[1]![2]]).toEqual([EXPECT.common.g1g2, EXPECT.common.g1g3, EXPECT.common.g2g3]);
    expect(m[1]![0]).toBe(m[0]![1]);
    expect(m[0]![0]).toBe(EXPECT.bytes.g1); // g1 holds no internal duplicates
  });

  it('counts links outside the roots, ELF bytes in the memory view, top sets and directories', async () => {
    const { report: r } = await scan();
    expect(by(r.guests, (g) => g.outsideLinks)).toEqual({ g1: { inodes: 1, bytes: SIZES.out }, g2: { inodes: 0, bytes: 0 }, g3: { inodes: 0, bytes: 0 } });
    expect(by(r.guests, (g) => g.memory.sharedElfBytes)).toEqual({ g1: SIZES.lib, g2: SIZES.lib, g3: SIZES.lib });
    expect(by(r.guests, (g) => g.memory.sharedBytes)).toEqual({ g1: SIZES.lib, g2: SIZES.lib + SIZES.linked, g3: SIZES.lib + SIZES.linked });
    expect(r.totals.memory.elfFreeableBytes).toBe(2 * SIZES.lib);
    expect(r.topSets).toEqual([
      { path: '/usr/lib/x86_64-linux-gnu/libx.so.1', size: SIZES.lib, hash: expect.stringMatching(/^[0-9a-f]{16}$/), inodes: 3, paths: 3, guests: 3, freeableBytes: 2 * SIZES.lib, elf: true },
    ]);
    expect(r.topDirectories).toEqual([{ directory: '/usr/lib/x86_64-linux-gnu', inodes: 2, freeableBytes: 2 * SIZES.lib }]);
  });

  it('per-guest freeable bytes add up to the dry run on the same roots, guest by guest', async () => {
    const { report: r } = await scan();
    const { report: dry } = await runUnify(guests(), { dryRun: true });
    expect(r.guests.reduce((t, g) => t + g.freeableBytes, 0)).toBe(dry.summary.freeableBytes);
    expect(r.guests.map((g) => g.freeableBytes)).toEqual(dry.roots.map((x) => x.freeableBytes));
    expect(r.totals.freeableBytes).toBe(dry.summary.freeableBytes);
  });

  it('--candidate estimates a new guest without changing the existing guests\' numbers', async () => {
    const plain = (await scan()).report;
    const { report: r } = await scan({ candidates: [path.join(dir, 'c1')] });
    expect(r.guests).toEqual(plain.guests);
    expect(r.matrix).toEqual(plain.matrix);
    const bytes = SIZES.lib + SIZES.doc + SIZES.tool + 33;
    expect(r.candidates).toEqual([{
      path: fs.realpathSync(path.join(dir, 'c1')), files: 4, bytes,
      sharableFiles: 2, sharableBytes: SIZES.lib + SIZES.doc, sharablePercent: Math.round((1000 * (SIZES.lib + SIZES.doc)) / bytes) / 10,
      freeableBytes: SIZES.lib + SIZES.doc, keptApartBytes: SIZES.tool,
    }]);
  });

  it('holds a candidate out of a guest glob that also matches it', async () => {
    const { report: r } = await scan({ roots: [path.join(dir, '[gc]*')], candidates: [path.join(dir, 'c1')] });
    expect(r.guests.map((g) => path.basename(g.path))).toEqual(['g1', 'g2', 'g3']);
    expect(r.candidates).toHaveLength(1);
  });

  it('a file that vanishes before hashing is an error for that file; the rest is reported', async () => {
    const d = tempDir();
    try {
      writeFile(path.join(d, 'a/f'), { content: 'same\n' });
      writeFile(path.join(d, 'b/f'), { content: 'same\n' });
      writeFile(path.join(d, 'b/g'), { content: 'gone\n' });
      const { sys } = await import('../../src/os/sys.js');
      const real = sys.hashFiles;
      // The file really disappears between the walk and the hashing.
      sys.hashFiles = (jobs, seed) => {
        fs.rmSync(path.join(d, 'b/g'), { force: true });
        return real(jobs, seed);
      };
      try {
        const { report: r, errors } = await scan({ roots: [path.join(d, 'a'), path.join(d, 'b')] });
        expect(errors.map((e) => [path.basename(e.path), e.code])).toEqual([['g', 'ENOENT']]);
        expect(r.errors).toHaveLength(1);
        expect(r.totals.freeableBytes).toBe(5);
        expect(r.guests[1]!.privateBytes).toBe(0); // unread content is not claimed private
      } finally {
        sys.hashFiles = real;
      }
    } finally {
      rmTree(d);
    }
  });
});
