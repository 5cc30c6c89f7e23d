/*
 * The hash cache's shards as the README and cache.ts's header describe them,
 * computed here without cache.ts: a model of what a save must write after a
 * run's puts, refreshes, forgets and pruned inodes (last put of an inode
 * wins, a refresh keeps an entry only with the same size and mtime, racy
 * and unstorable entries left out, classes in order of first use, at most
 * 65,536), encoded byte for byte (header, checksummed blocks of 1,024
 * records, class table). And a driver that plays one script of runs
 * through any HashCache class (this branch's, or another build's) against a
 * real cache directory, for tests that compare the bytes.
 */
import fs from 'node:fs';
import path from 'node:path';
import { sys, O } from '../../src/os/sys.js';
import type { Root } from '../../src/core/types.js';
import { rng } from './hostile.js';

export interface Entry {
  ino: number;
  size: number;
  ms: number;
  mns: number;
  cs: number;
  cns: number;
  hi: number;
  lo: number;
  flags: number;
  projid: number;
  elf: number;
  x: string;
}

export type Op =
  | { k: 'match'; root: number; inos: number[] }
  | { k: 'put'; root: number; e: Entry }
  | { k: 'refresh'; dev: number; ino: number; size: number; ms: number; mns: number; cs: number; cns: number }
  | { k: 'forget'; dev: number; ino: number }
  | { k: 'replaced'; dev: number; ino: number; nlink: number };

/** The subset of HashCache a script uses (any build's). */
export interface CacheLike {
  readAtSec: number;
  load(warn: (m: string) => void, note?: (m: string) => void): void;
  match(rootIndex: number, n: number, inoAt: (i: number) => number, hit: (i: number, e: unknown) => void, complete: boolean): boolean;
  put(rootIndex: number, dev: number, ino: number, size: number, ms: number, mns: number, cs: number, cns: number, hash: bigint, xattrs: string, flags: number, projid: number, elf: number): void;
  refreshRow(dev: number, ino: number, size: number, ms: number, mns: number, cs: number, cns: number): void;
  forget(id: { dev: number; ino: number }): void;
  replaced(stat: { dev: number; ino: number; nlink: number }): void;
  save(note?: (m: string) => void): void;
  close(): void;
}
export type CacheClass = new (key: string, roots: readonly Root[], dir?: { fd: number; path: string }) => CacheLike;

export const FINGERPRINT = '0123456789abcdef';
export const READ_AT = 1_800_000_000;
const MAX_SEC = 2 ** 33;
const TWO32 = 2 ** 32;

const storable = (s: number, ns: number) => Number.isInteger(s) && s >= -MAX_SEC && s < MAX_SEC && Number.isInteger(ns) && ns >= 0 && ns < 1e9;

/** A root as the cache names it, from Node's stat of a real directory. */
export function rootOf(p: string, index: number): Root {
  const st = fs.statSync(p);
  return { index, path: p, fd: -1, dev: st.dev, ino: st.ino, mntId: 0 };
}

/** Play `runs` (each: its ops, then a save) through `Cache` on `cacheDir`; the shard files' bytes after each run, by root. */
export function drive(Cache: CacheClass, cacheDir: string, roots: Root[], runs: Op[][], shardPath: (r: Root) => string): Buffer[][] {
  fs.mkdirSync(cacheDir, { recursive: true, mode: 0o700 });
  const out: Buffer[][] = [];
  for (const ops of runs) {
    const c = new Cache(FINGERPRINT, roots, { fd: sys.open(cacheDir, O.RDONLY | O.DIRECTORY | O.CLOEXEC), path: cacheDir });
    const warnings: string[] = [];
    c.load((m) => warnings.push(m), () => {});
    c.readAtSec = READ_AT;
    try {
      for (const op of ops) {
        if (op.k === 'match') {
          const inos = Float64Array.from(op.inos).sort();
          c.match(op.root, inos.length, (i) => inos[i]!, () => {}, true);
        } else if (op.k === 'put') {
          const e = op.e;
          c.put(op.root, roots[op.root]!.dev, e.ino, e.size, e.ms, e.mns, e.cs, e.cns, (BigInt(e.hi) << 32n) | BigInt(e.lo), e.x, e.flags, e.projid, e.elf);
        } else if (op.k === 'refresh') c.refreshRow(op.dev, op.ino, op.size, op.ms, op.mns, op.cs, op.cns);
        else if (op.k === 'forget') c.forget({ dev: op.dev, ino: op.ino });
        else c.replaced({ dev: op.dev, ino: op.ino, nlink: op.nlink });
      }
      c.save();
    } finally {
      c.close();
    }
    if (warnings.length) throw new Error(`cache warned: ${warnings.join('; ')}`);
    out.push(roots.map((r) => fs.readFileSync(shardPath(r))));
  }
  return out;
}

/** What each run's save must leave in each root's shard, by the README's rules, encoded. */
export function model(roots: Root[], runs: Op[][], xxh64: (b: Buffer) => bigint): Buffer[][] {
  // What each shard holds, by ino (the file as written after the last run).
  const files: Map<number, Entry>[] = roots.map(() => new Map());
  const out: Buffer[][] = [];
  for (const ops of runs) {
    const deltas: Map<number, Entry>[] = roots.map(() => new Map());
    const dead: Set<number>[] = roots.map(() => new Set());
    // Edits in the order made; the cache keeps one of a run of the same kind on one inode (the last).
    const edits: Op[] = [];
    const replacedLinks = new Map<string, number>();
    const edit = (op: Op & { dev: number; ino: number }) => {
      const last = edits[edits.length - 1] as (Op & { dev: number; ino: number }) | undefined;
      if (last && last.k === op.k && last.dev === op.dev && last.ino === op.ino) edits[edits.length - 1] = op;
      else edits.push(op);
    };
    for (const op of ops) {
      if (op.k === 'match') {
        const seen = new Set(op.inos);
        for (const ino of files[op.root]!.keys()) if (!seen.has(ino)) dead[op.root]!.add(ino);
      } else if (op.k === 'put') {
        const e = op.e;
        if (e.cs + e.cns / 1e9 > READ_AT - 1) continue; // racy
        if (e.x.length > 0xffff || !(e.size >= 0 && e.size < 2 ** 48) || !storable(e.ms, e.mns) || !storable(e.cs, e.cns)) continue;
        deltas[op.root]!.set(e.ino, { ...e, flags: e.flags >>> 0, projid: e.projid >>> 0, elf: e.elf === 1 || e.elf === 2 ? e.elf : 0 });
      } else if (op.k === 'replaced') {
        const key = `${op.dev}:${op.ino}`;
        const n = (replacedLinks.get(key) ?? 0) + 1;
        if (n < op.nlink) replacedLinks.set(key, n);
        else (replacedLinks.delete(key), edit({ k: 'forget', dev: op.dev, ino: op.ino }));
      } else edit(op);
    }
    out.push(
      roots.map((root, r) => {
        const m = new Map<number, Entry>();
        for (const [ino, e] of files[r]!) if (!dead[r]!.has(ino)) m.set(ino, { ...e });
        for (const [ino, e] of deltas[r]!) m.set(ino, { ...e });
        for (const ed of edits) {
          if (ed.k !== 'refresh' && ed.k !== 'forget') continue;
          if (ed.dev !== root.dev) continue;
          const e = m.get(ed.ino);
          if (!e) continue;
          if (ed.k === 'refresh' && ed.size === e.size && ed.ms === e.ms && ed.mns === e.mns) {
            e.cs = ed.cs;
            e.cns = ed.cns;
          } else m.delete(ed.ino);
        }
        const kept = new Map<number, Entry>();
        const classes: string[] = [];
        const classIx = new Map<string, number>();
        const entries: [Entry, number][] = [];
        for (const ino of [...m.keys()].sort((a, b) => a - b)) {
          const e = m.get(ino)!;
          if (!storable(e.cs, e.cns)) continue;
          const k = JSON.stringify([e.flags, e.projid, e.elf, e.x]);
          let c = classIx.get(k);
          if (c === undefined) {
            if (classes.length >= 0x10000) continue;
            classIx.set(k, (c = classes.length));
            classes.push(k);
          }
          entries.push([e, c]);
          kept.set(ino, e);
        }
        files[r] = kept;
        return encode(root, entries, classes, xxh64);
      }),
    );
  }
  return out;
}

/** A shard of format 9, written from the README's description. */
function encode(root: Root, entries: [Entry, number][], classes: string[], xxh64: (b: Buffer) => bigint): Buffer {
  const key = Buffer.from(`${root.dev}:${root.ino}:${root.path}`);
  const headLen = ((48 + key.length + 7) & ~7) + 8;
  const parts: Buffer[] = [];
  const head = Buffer.alloc(headLen);
  head.write('VUNIFYHS', 0, 'latin1');
  head.writeUInt32LE(9, 8);
  head.writeUInt32LE(headLen, 12);
  Buffer.from(FINGERPRINT, 'hex').copy(head, 16);
  head.writeUInt32LE(entries.length, 24);
  head.writeUInt32LE(classes.length, 28);
  const table = Buffer.concat(
    classes.map((k) => {
      const [flags, projid, elf, x] = JSON.parse(k) as [number, number, number, string];
      const xb = Buffer.from(x, 'latin1');
      const b = Buffer.alloc(12 + xb.length);
      b.writeUInt32LE(flags, 0);
      b.writeUInt32LE(projid, 4);
      b[8] = elf;
      b.writeUInt16LE(xb.length, 10);
      xb.copy(b, 12);
      return b;
    }),
  );
  head.writeUInt32LE(table.length, 32);
  head.writeUInt32LE(key.length, 36);
  head.writeUInt32LE(1024, 40);
  key.copy(head, 48);
  head.writeBigUInt64LE(xxh64(head.subarray(0, headLen - 8)), headLen - 8);
  parts.push(head);
  for (let b = 0; b < entries.length; b += 1024) {
    const blk = entries.slice(b, b + 1024);
    const buf = Buffer.alloc(blk.length * 40);
    blk.forEach(([e, c], i) => {
      const o = i * 40;
      buf.writeBigUInt64LE(BigInt(e.ino), o); // exact: every ino here is a double's exact integer
      buf.writeUInt32LE(e.size % TWO32, o + 8);
      buf.writeUInt16LE(Math.floor(e.size / TWO32), o + 12);
      buf.writeUInt16LE(c, o + 14);
      buf.writeBigInt64LE((BigInt(e.ms) << 30n) | BigInt(e.mns), o + 16);
      buf.writeBigInt64LE((BigInt(e.cs) << 30n) | BigInt(e.cns), o + 24);
      buf.writeUInt32LE(e.lo, o + 32);
      buf.writeUInt32LE(e.hi, o + 36);
    });
    const sum = Buffer.alloc(8);
    sum.writeBigUInt64LE(xxh64(buf));
    parts.push(buf, sum);
  }
  const sum = Buffer.alloc(8);
  sum.writeBigUInt64LE(xxh64(table));
  parts.push(table, sum);
  return Buffer.concat(parts);
}

/** Inode numbers a guest's filesystem can give, and the edges of their encoding: below 2^32, across it, past 2^53 (doubles' exact integers). */
const INOS = [
  ...Array.from({ length: 200 }, (_, i) => i + 2),
  ...Array.from({ length: 12 }, (_, i) => TWO32 - 6 + i),
  2 ** 53 - 3,
  2 ** 53 - 1,
  2 ** 53,
  2 ** 53 + 2,
  2 ** 53 + 8,
  2 ** 60,
  2 ** 60 + 2 ** 10,
  2 ** 63,
  2 ** 64 - 2 ** 11,
];

/** A script of `nRuns` runs over `roots` (their devices), each with puts, refreshes, forgets, replaced links and pruning. */
export function script(seed: number, roots: Root[], nRuns: number, opsPerRun: number): Op[][] {
  const rand = rng(seed);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rand() * a.length)]!;
  const devs = [...new Set(roots.map((r) => r.dev)), 12345];
  const sec = () => pick([0, 1, 1_700_000_000, -1, -(2 ** 33), 2 ** 33 - 1, 2 ** 33, READ_AT - 2, 1_600_000_000 + Math.floor(rand() * 1000)]);
  const nsec = () => pick([0, 999_999_999, 1, Math.floor(rand() * 1e9), 1e9]);
  const csec = (): [number, number] =>
    pick<() => [number, number]>([
      () => [1_700_000_000 + Math.floor(rand() * 3), nsec()],
      () => [READ_AT - 1, 0], // the racy rule's edge: kept
      () => [READ_AT - 1, 1], // just past it: racy
      () => [READ_AT + 5, 0], // racy
      () => [-(2 ** 33), 0],
      () => [-(2 ** 33) - 1, 0], // not storable
      () => [-5, 999_999_999],
    ])();
  const size = () => pick([0, 1, 4096, TWO32 - 1, TWO32, TWO32 + 17, 2 ** 48 - 1, 2 ** 48, Math.floor(rand() * 1e6)]);
  const X = ['', 'a'.repeat(64), 'b'.repeat(64), 'ÿ\u0080x', '\n'];
  const runs: Op[][] = [];
  // What the runs put, so refreshes often match an entry's size and mtime.
  const known: Entry[] = [];
  for (let run = 0; run < nRuns; run++) {
    const ops: Op[] = [];
    for (let r = 0; r < roots.length; r++) {
      if (run > 0 && rand() < 0.6) {
        const inos = INOS.filter(() => rand() < 0.85);
        ops.push({ k: 'match', root: r, inos });
      }
    }
    for (let i = 0; i < opsPerRun; i++) {
      const p = rand();
      if (p < 0.55 && !(run === 1 && rand() < 0.7)) {
        const [cs, cns] = csec();
        // Runs of one class, then a change: the class lookups' cache across rows.
        const e: Entry = {
          ino: pick(INOS),
          size: size(),
          ms: sec(),
          mns: nsec(),
          cs,
          cns,
          hi: Math.floor(rand() * TWO32),
          lo: Math.floor(rand() * TWO32),
          flags: pick([0, 0, 0, 0x80000, 0x10, 0xffffffff, -1]),
          projid: pick([0, 0, 0, 7, 0xffffffff]),
          elf: pick([0, 1, 2, 2, 7]),
          x: pick(X),
        };
        ops.push({ k: 'put', root: Math.floor(rand() * roots.length), e });
        known.push(e);
      } else if (p < 0.8 && known.length) {
        const e = pick(known);
        const same = rand() < 0.7;
        const [cs, cns] = rand() < 0.2 ? [pick([2 ** 33 - 1, 2 ** 33, -(2 ** 33) - 1]), 0] : [1_750_000_000 + Math.floor(rand() * 5), nsec() % 1e9];
        ops.push({ k: 'refresh', dev: pick(devs), ino: e.ino, size: same ? e.size : e.size + 1, ms: e.ms, mns: same || rand() < 0.5 ? e.mns : (e.mns + 1) % 1e9, cs, cns });
        if (rand() < 0.3) ops.push({ ...(ops[ops.length - 1] as Op & { k: 'refresh' }), cs: cs + 1 }); // the linker refreshes once per link
      } else if (p < 0.9) ops.push({ k: 'forget', dev: pick(devs), ino: pick(INOS) });
      else ops.push({ k: 'replaced', dev: pick(devs), ino: pick(INOS), nlink: pick([1, 2, 3]) });
    }
    runs.push(ops);
  }
  return runs;
}

/** The path of a root's shard in `cacheDir` (the name: sha256 of the root key, as the README says). */
export function shardPathIn(cacheDir: string, sha256hex: (s: string) => string): (r: Root) => string {
  return (r) => path.join(cacheDir, `${sha256hex(`${r.dev}:${r.ino}:${r.path}`).slice(0, 32)}.shard`);
}
