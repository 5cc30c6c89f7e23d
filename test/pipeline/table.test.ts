// Record tables built by hand (TableBuilder), and the stages that read rows:
// wide values, paths and stats of rows, inodes and candidate groups found by
// sorting, and the grouping key on rows against policy.ts's string key.
import { describe, expect, it } from 'vitest';
import { FileType, type Stat } from '../../src/core/stat.js';
import type { Root } from '../../src/core/types.js';
import { groupRows, inodeRows } from '../../src/pipeline/group.js';
import { compareMetadataRows, metadataHashRow, metadataKey } from '../../src/pipeline/policy.js';
import { AttrColumn, classesOf, classList, ELF_BIT, flagsOf, hashOf, Materializer, permuteRead, projidOf, READ, readColumns, setRead, relPathRow, statOfRow, type Scan } from '../../src/pipeline/rows.js';
import { blocksOf, BLOCKS_BIAS, ctimeSecOf, inoOf, metaOf, modeOf, mtimeSecOf, nlinkOf, sizeOf, uidOf, WIDE16, WIDE32, WIDE8 } from '../../src/pipeline/table.js';
import { TableBuilder, tablesFromWalk } from '../../src/pipeline/table-builder.js';
import { relPath } from '../../src/core/paths.js';

const roots: Root[] = [0, 1].map((index) => ({ index, path: `/g${index}`, fd: -1, dev: index === 0 ? 7 : 8, ino: 2, mntId: 30 + index }));

const base = { ino: 1, size: 100, blocks: 8, uid: 0, gid: 0, mode: 0o100644, nlink: 1, mtimeSec: 1_700_000_000, mtimeNsec: 5, ctimeSec: 1_700_000_001, ctimeNsec: 6 };

describe('TableBuilder', () => {
  it('keeps values that do not fit the compact columns exactly, in the wide table', () => {
    const b = new TableBuilder();
    b.addRoot(0, 2);
    const small = b.addFile(0, Buffer.from('a'), base);
    const big = b.addFile(0, Buffer.from('b'), { ...base, ino: 2 ** 40 + 3, size: 2 ** 32, blocks: 2 ** 33, nlink: 70_000, mtimeSec: -5, ctimeSec: 2 ** 33 });
    const t = b.build();
    expect(t.wide.count).toBe(1);
    expect([t.files.ino[big], t.files.size[big], t.files.blocks[big], t.files.nlink[big], t.files.mtimeSec[big], t.files.ctimeSec[big]]).toEqual([WIDE32, WIDE32, WIDE8, WIDE8, WIDE32, WIDE32]);
    expect([inoOf(t, big), sizeOf(t, big), blocksOf(t, big), nlinkOf(t, big), mtimeSecOf(t, big), ctimeSecOf(t, big)]).toEqual([2 ** 40 + 3, 2 ** 32, 2 ** 33, 70_000, -5, 2 ** 33]);
    expect([inoOf(t, small), sizeOf(t, small), blocksOf(t, small), nlinkOf(t, small), mtimeSecOf(t, small), ctimeSecOf(t, small)]).toEqual([1, 100, 8, 1, 1_700_000_000, 1_700_000_001]);
    expect(t.metas.count).toBe(1);
  });

  it('stores an allocation near the usual one, and an inode number with its directory\'s upper half, in the compact columns', () => {
    const b = new TableBuilder();
    b.addRoot(0, 2);
    const hi = b.addDir(0, Buffer.from('hi'), 7 * 2 ** 32 + 5);
    const cases = [
      { dir: 0, over: { size: 0, blocks: 0 } }, // compact: usual 0
      { dir: 0, over: { size: 1, blocks: 0 } }, // inline data (btrfs): 8 below usual
      { dir: 0, over: { size: 5000, blocks: 4 } }, // 1 KiB blocks: 12 below usual
      { dir: 0, over: { size: 1, blocks: 8 + 126 } }, // the most above usual that fits
      { dir: 0, over: { size: 1, blocks: 8 + 127 } }, // wide
      { dir: 0, over: { size: 2 ** 20, blocks: 0 } }, // a hole: wide
      { dir: 0, over: { size: 2 ** 32 - 2, blocks: 2 ** 23 } }, // the largest compact size, fully allocated
      { dir: hi, over: { ino: 7 * 2 ** 32 + 9 } }, // the directory's upper half: compact
      { dir: hi, over: { ino: 8 * 2 ** 32 + 9 } }, // another upper half: wide
      { dir: 0, over: { ino: 2 ** 32 - 1 } }, // the sentinel itself: wide
      { dir: 0, over: { nlink: 254 } }, // compact
      { dir: 0, over: { nlink: 255 } }, // wide
    ];
    const rows = cases.map((c, k) => b.addFile(c.dir, Buffer.from(`f${k}`), { ...base, ...c.over }));
    const t = b.build();
    const wideRows = cases.map((_, k) => k).filter((k) => Array.from(t.wide.rows).includes(rows[k]!));
    expect(wideRows).toEqual([4, 5, 8, 9, 11]);
    cases.forEach((c, k) => {
      const v = { ...base, ...c.over };
      expect([inoOf(t, rows[k]!), sizeOf(t, rows[k]!), blocksOf(t, rows[k]!), nlinkOf(t, rows[k]!)], `case ${k}`).toEqual([v.ino, v.size, v.blocks, v.nlink]);
    });
    expect(t.files.blocks[rows[3]!]).toBe(BLOCKS_BIAS + 126);
  });

  it('keeps owner, group and mode of the 65,535th triple and later in the wide table', () => {
    const b = new TableBuilder(70_000);
    b.addRoot(0, 2);
    const n = WIDE16 + 2;
    for (let k = 0; k < n; k++) b.addFile(0, Buffer.from(`f${k}`), { ...base, ino: 10 + k, uid: k });
    const t = b.build();
    expect(t.metas.count).toBe(n);
    expect(t.wide.count).toBe(2);
    expect([t.files.meta[WIDE16 - 1], t.files.meta[WIDE16], t.files.meta[WIDE16 + 1]]).toEqual([WIDE16 - 1, WIDE16, WIDE16]);
    for (const row of [0, WIDE16 - 1, WIDE16, WIDE16 + 1]) {
      expect(metaOf(t, row)).toBe(row);
      expect([uidOf(t, row), modeOf(t, row)]).toEqual([row, base.mode]);
    }
  });

  it('gives a row its path and stat; the adapter keeps what the walk found', () => {
    const b = new TableBuilder();
    b.addRoot(0, 2);
    b.addRoot(1, 2);
    const usr = b.addDir(1, Buffer.from('usr'), 10);
    const bin = b.addDir(usr, Buffer.from([0x62, 0xff, 0x0a]), 11);
    const row = b.addFile(bin, Buffer.from('tool'), { ...base, ino: 99 });
    const scan: Scan = { tables: b.build(), roots };
    expect(relPathRow(scan.tables, row)).toEqual(Buffer.from([0x75, 0x73, 0x72, 0x2f, 0x62, 0xff, 0x0a, 0x2f, 0x74, 0x6f, 0x6f, 0x6c]));
    const stat = statOfRow(scan, row);
    expect(stat).toMatchObject({ type: FileType.Regular, dev: 8, mntId: 31, ino: 99, size: 100, mode: 0o100644 });
    const mat = new Materializer(scan);
    const file = mat.file(row);
    expect(relPath(file)).toEqual(relPathRow(scan.tables, row));
    expect(file.dir.root).toBe(roots[1]);
    // And back through the adapter: the same rows.
    const again = tablesFromWalk(roots, [file]);
    expect(relPathRow(again, 0)).toEqual(relPathRow(scan.tables, row));
    expect(statOfRow({ tables: again, roots }, 0)).toEqual(stat);
  });
});

describe('readColumns', () => {
  it('lays the hash columns over spent sort keys: zeroed, apart, within them', () => {
    const keys = new Float64Array(5).fill(123.456);
    const c = readColumns(4, keys);
    expect([...c.hashHi, ...c.hashLo]).toEqual(new Array(8).fill(0));
    c.hashHi.fill(0xffffffff);
    expect([...c.hashLo]).toEqual([0, 0, 0, 0]);
    expect(c.hashHi.buffer).toBe(keys.buffer);
    // Too small to hold both: columns of their own.
    expect(readColumns(6, keys).hashHi.buffer).not.toBe(keys.buffer);
  });
});

describe('classesOf', () => {
  it('finds exactly the classes of a comparison, however the hash buckets them', () => {
    const values = Array.from({ length: 5000 }, (_, i) => (i * 7919) % 613);
    for (const hash of [(i: number) => values[i]!, () => 0, (i: number) => values[i]! % 3]) {
      const seen: number[][] = [];
      classesOf(values.length, hash, (a, b) => values[a]! - values[b]!, 2, (items, from, to) => seen.push([...items.subarray(from, to)]));
      const expected = new Map<number, number[]>();
      values.forEach((v, i) => expected.set(v, [...(expected.get(v) ?? []), i]));
      const want = [...expected.values()].filter((c) => c.length >= 2).map((c) => c.join()).sort();
      expect(seen.map((c) => c.join()).sort()).toEqual(want);
    }
  });

  it('takes any 32-bit hash (negative int32 too), lists each class in ascending item order, and sorts in a given scratch', () => {
    const values = Array.from({ length: 3000 }, (_, i) => (i * 104729) % 997);
    const scratch = new Float64Array(4000).fill(Math.PI);
    for (const hash of [(i: number) => Math.imul(values[i]!, 0x9e3779b1), (i: number) => -1 - values[i]!, (i: number) => 0xffffffff - (values[i]! & 1)]) {
      const seen: number[][] = [];
      classesOf(values.length, hash, (a, b) => values[a]! - values[b]!, 1, (items, from, to) => seen.push([...items.subarray(from, to)]), scratch);
      const expected = new Map<number, number[]>();
      values.forEach((v, i) => expected.set(v, [...(expected.get(v) ?? []), i]));
      expect(seen.map((c) => c.join()).sort()).toEqual([...expected.values()].map((c) => c.join()).sort());
      expect(seen.flat().length).toBe(values.length);
    }
    // The scratch held the keys: not a number of it is what it was.
    expect(scratch.subarray(0, 3000).some((x) => x === Math.PI)).toBe(false);
  });
});

/** Tables of files given as Stat-like overrides, all in root `root` of `roots`. */
function tablesOf(files: { root?: number; over?: Partial<typeof base> }[]): Scan {
  const b = new TableBuilder();
  b.addRoot(0, 2);
  b.addRoot(1, 2);
  files.forEach((f, k) => b.addFile(f.root ?? 0, Buffer.from(`f${k}`), { ...base, ino: 100 + k, ...f.over }));
  return { tables: b.build(), roots };
}

describe('permuteRead', () => {
  it('moves every column of a range alike: hash, state, flags and project (coded, or widened past 65,536 pairs), xattrs', () => {
    for (const pairs of [5, 70_000]) {
      const n = 80_000;
      const cols = readColumns(n);
      const want = (m: number) => ({ hash: BigInt(m) * 0x1_0000_0001n + 7n, xattrs: m % 7 === 0 ? `x${m}` : '', elf: m % 3 === 0, flags: m % pairs, projid: (m % pairs) * 2 });
      for (let m = 0; m < n; m++) setRead(cols, m, want(m));
      const from = 1000, len = 75_000;
      // A permutation of [from, from + len): reversed in blocks of 10.
      const order = Uint32Array.from({ length: len }, (_, k) => from + (Math.floor(k / 10) * 10 + 9 - (k % 10) < len ? Math.floor(k / 10) * 10 + 9 - (k % 10) : k));
      permuteRead(cols, from, order, len);
      const wrong: number[] = [];
      for (let m = 0; m < n; m++) {
        const w = want(m >= from && m < from + len ? order[m - from]! : m);
        const ok = hashOf(cols, m) === w.hash && cols.state[m] === (READ | (w.elf ? ELF_BIT : 0)) && flagsOf(cols, m) === w.flags && projidOf(cols, m) === w.projid && (cols.xattrs.get(m) ?? '') === w.xattrs;
        if (!ok) wrong.push(m);
      }
      expect(wrong.slice(0, 5), `pairs ${pairs}`).toEqual([]);
      expect(cols.xattrs.size).toBe(Math.ceil(n / 7));
    }
  });
});

describe('classList', () => {
  it('lists the classes classesOf hands over, in its scratch', () => {
    let seed = 11;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
    for (const [n, values, buckets, min] of [[1, 1, 1, 1], [500, 40, 7, 2], [500, 500, 500, 1], [2000, 300, 3, 2], [64, 1, 1, 2]] as const) {
      const v = Array.from({ length: n }, () => rand(values));
      const hash = (i: number) => v[i]! % buckets; // buckets shared by several values: the comparison splits them
      const cmp = (a: number, b: number) => v[a]! - v[b]!;
      const want: number[][] = [];
      classesOf(n, hash, cmp, min, (items, from, to) => want.push([...items.subarray(from, to)]));
      const scratch = new Float64Array(n);
      const { starts, items } = classList(n, hash, cmp, min, scratch);
      expect(items.buffer).toBe(scratch.buffer);
      expect(Array.from({ length: starts.length - 1 }, (_, k) => [...items.subarray(starts[k], starts[k + 1])])).toEqual(want);
    }
  });
});

describe('grouping on rows', () => {
  it('agrees with metadataKey on every pair: equal keys compare 0 and hash alike', () => {
    const variants: { root?: number; over?: Partial<typeof base> }[] = [
      {}, { root: 1 }, { over: { size: 101 } }, { over: { size: 2 ** 40 } }, { over: { size: 2 ** 40 + 2 ** 32 } },
      { over: { uid: 1 } }, { over: { gid: 1 } }, { over: { mode: 0o100755 } }, { over: { mode: 0o104644 } },
      { over: { mode: 0o120644 } }, // type bits differ only: the key ignores them
      { over: { mtimeSec: 1_700_000_001 } }, { over: { mtimeNsec: 6 } }, { over: { mtimeSec: -1 } }, { over: { mtimeSec: 2 ** 32 + 1_700_000_000 } },
      { over: { ctimeSec: 5, nlink: 3, blocks: 0 } }, // not in the key
    ];
    const scan = tablesOf(variants);
    for (const ignoreMtime of [false, true]) {
      const opts = { ignoreMtime };
      const keyOf = (row: number) => metadataKey({ stat: statOfRow(scan, row) as Stat }, opts);
      for (let a = 0; a < variants.length; a++)
        for (let b = 0; b < variants.length; b++) {
          const same = keyOf(a) === keyOf(b);
          const c = compareMetadataRows(scan.tables, roots, a, b, opts);
          expect(c === 0, `rows ${a} ${b} ignoreMtime=${ignoreMtime}`).toBe(same);
          expect(Math.sign(c) + Math.sign(compareMetadataRows(scan.tables, roots, b, a, opts))).toBe(0);
          if (same) expect(metadataHashRow(scan.tables, roots, a, opts)).toBe(metadataHashRow(scan.tables, roots, b, opts));
        }
    }
  });

  it('joins the paths of one inode (dev and ino), and groups inodes of one key, two or more', () => {
    const scan = tablesOf([
      { over: { ino: 1, nlink: 2 } }, { over: { ino: 1, nlink: 2 } }, // one inode, two paths
      { over: { ino: 2 } }, // same key as inode 1
      { root: 1, over: { ino: 1 } }, // same ino on another device: another inode, another group
      { over: { ino: 3, size: 5 } }, // alone in its key
      { over: { ino: 4, nlink: 1 } }, { over: { ino: 4, nlink: 1 } }, // one inode seen twice with nlink 1 (renamed during the walk)
    ]);
    const inodes = inodeRows(scan);
    expect(inodes.count).toBe(5);
    const pathsOf = (k: number) => [...inodes.paths.subarray(inodes.from(k), inodes.to(k))];
    const byFirst = Array.from({ length: inodes.count }, (_, k) => pathsOf(k).join()).sort();
    expect(byFirst).toEqual(['0,1', '2', '3', '4', '5,6']);
    const groups = groupRows(scan, inodes, { ignoreMtime: false });
    const members = Array.from({ length: groups.count }, (_, g) =>
      Array.from({ length: groups.start[g + 1]! - groups.start[g]! }, (_, j) => groups.start[g]! + j).map((k) => pathsOf(k).join('+')).sort().join(' '),
    );
    expect(members).toEqual(['0+1 2 5+6']);
  });

  it('keeps every path of every inode, the first under its earliest root, however many paths and whatever nlink says, and after grouping numbers them anew', () => {
    // Inodes of 1 to 6 paths over two roots of one device, in random row order; nlink true,
    // too low (links made during the walk: the paths' array must grow) or too high (links
    // outside the roots: the room left is cut out).
    let seed = 7;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
    for (const nlinkOf of [(p: number) => p, () => 1, (p: number) => p + 5]) {
      const files: { root?: number; over?: Partial<typeof base> }[] = [];
      const want = new Map<number, number[]>();
      for (let ino = 1; ino <= 400; ino++) {
        const paths = ino % 3 === 0 ? 1 + rand(6) : 1;
        // Sizes of 1000 and more are one inode's alone: no candidate.
        const size = ino % 5 === 0 ? 1000 + ino : 100 + (ino % 4);
        for (let j = 0; j < paths; j++) files.push({ root: rand(2), over: { ino, nlink: nlinkOf(paths), size } });
      }
      for (let k = files.length - 1; k > 0; k--) {
        const j = rand(k + 1);
        [files[k], files[j]] = [files[j]!, files[k]!];
      }
      const scan: Scan = { ...tablesOf(files), roots: [roots[0]!, { ...roots[1]!, dev: roots[0]!.dev }] };
      files.forEach((f, row) => want.set(f.over!.ino!, [...(want.get(f.over!.ino!) ?? []), row]));
      const inodes = inodeRows(scan);
      const check = () => {
        expect(inodes.count).toBe(want.size);
        const got = new Map<number, number[]>();
        for (let k = 0; k < inodes.count; k++) {
          const rows = [...inodes.paths.subarray(inodes.from(k), inodes.to(k))];
          expect(rows[0]).toBe(inodes.head(k));
          expect(inodes.pathCount(k)).toBe(rows.length);
          // The first path is under the earliest root any of them is under.
          expect(Math.min(...rows.map((r) => files[r]!.root ?? 0))).toBe(files[rows[0]!]!.root ?? 0);
          got.set(files[rows[0]!]!.over!.ino!, rows.sort((a, b) => a - b));
        }
        expect(got).toEqual(want);
      };
      check();
      // Grouping numbers the inodes anew, candidates first, group by group: the same paths per inode.
      const groups = groupRows(scan, inodes, { ignoreMtime: false });
      check();
      const sizeOfInode = (k: number) => files[inodes.head(k)]!.over!.size!;
      expect(groups.candidates).toBe([...want.keys()].filter((ino) => ino % 5 !== 0).length);
      expect(groups.start[groups.count]).toBe(groups.candidates);
      for (let g = 0; g < groups.count; g++) {
        expect(groups.start[g + 1]! - groups.start[g]!).toBeGreaterThan(1);
        for (let k = groups.start[g]!; k < groups.start[g + 1]!; k++) expect(sizeOfInode(k)).toBe(sizeOfInode(groups.start[g]!));
      }
      for (let k = groups.candidates; k < inodes.count; k++) expect(sizeOfInode(k)).toBeGreaterThanOrEqual(1000);
    }
  });
});

describe('hash batches from rows', () => {
  it('encode the same input records as from objects (negative times, 64-bit sizes and inode numbers)', async () => {
    const { encodeJobs, encodeRows } = await import('../../src/pipeline/hash.js');
    const b = new TableBuilder();
    b.addRoot(0, 2);
    b.addRoot(1, 2);
    const deep = b.addDir(b.addDir(1, Buffer.from('usr'), 10), Buffer.from('lib\u00e9'), 11);
    const stats = [
      { ...base },
      { ...base, ino: 2 ** 40 + 3, size: 2 ** 45 + 7, mtimeSec: -86_401, mtimeNsec: 999_999_999, ctimeSec: 2 ** 33, ctimeNsec: 1 },
      { ...base, ino: 2 ** 52 + 1, size: 0, mtimeSec: 0, ctimeSec: -1, uid: 4_000_000_000, gid: 7, mode: 0o104755 },
    ];
    stats.forEach((s, k) => b.addFile(k === 1 ? 0 : deep, Buffer.from(`name${k}`), s));
    // Neighbours in one directory with names of other lengths: each takes the one before's directory path.
    b.addFile(deep, Buffer.from('n'), { ...base, ino: 9 });
    b.addFile(deep, Buffer.from('a much longer name, with \n in it'), { ...base, ino: 10 });
    const scan: Scan = { tables: b.build(), roots: roots.map((r) => ({ ...r, fd: 40 + r.index })) };
    const mat = new Materializer(scan);
    const inodes = [0, 1, 2, 3, 4].map((row) => {
      const f = mat.file(row);
      return { dev: f.stat.dev, ino: f.stat.ino, stat: f.stat, paths: [f] };
    });
    const todo = Uint32Array.from([2, 0, 1]);
    expect(encodeRows(scan, todo, 0, 3, (m) => m)).toEqual(encodeJobs([inodes[2]!, inodes[0]!, inodes[1]!], 0, 3));
    const all = Uint32Array.from([3, 4, 0, 2, 1, 4]);
    const want = encodeJobs([...all].map((k) => inodes[k]!), 0, all.length);
    expect(encodeRows(scan, all, 0, all.length, (m) => m)).toEqual(want);
    // Into a buffer too small for them (a larger one is made), and into one large enough (filled in place, stale bytes overwritten).
    expect(encodeRows(scan, all, 0, all.length, (m) => m, Buffer.alloc(16))).toEqual(want);
    const into = Buffer.alloc(want.length + 64, 0xee);
    const out = encodeRows(scan, all, 0, all.length, (m) => m, into);
    expect(out.buffer).toBe(into.buffer);
    expect(out).toEqual(want);
  });
});

describe('AttrColumn', () => {
  // Pairs written in a scrambled order, some candidates rewritten, some never set;
  // read back against a plain array through each width (1 byte, 2 bytes, full columns).
  it.each([[10], [300], [200000]])('reads back every (flags, projid) pair with %i distinct pairs', (pairs) => {
    const n = 100000;
    const col = new AttrColumn(n);
    const want: [number, number][] = Array.from({ length: n }, () => [0, 0]);
    let x = 12345;
    const next = () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0);
    for (let k = 0; k < n + n / 4; k++) {
      const m = next() % n;
      if (m % 7 === 0) continue; // never set: 0, 0
      const p = next() % pairs;
      const flags = p % 2 ? 0x80000 | (p & 0x30) : 0xffffffff - (p & 0xff), projid = p >>> 1;
      col.set(m, flags, projid);
      want[m] = [flags, projid];
    }
    const wrong = want.filter(([flags, projid], m) => col.flags(m) !== flags || col.projid(m) !== projid);
    expect(wrong).toEqual([]);
  });
});
