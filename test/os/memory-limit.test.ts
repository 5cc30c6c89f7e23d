/*
 * The memory limit's parts on their own: --max-memory parsing, where the
 * cgroup limit is read from (fake cgroup trees, v2 and v1), and the
 * budget's checks and messages. Whole runs against real limits are in
 * test/scenarios/memory-limit.test.ts.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { UsageError } from '../../src/core/errors.js';
import { TableBuilder } from '../../src/pipeline/table-builder.js';
import {
  cgroupLimit,
  cgroupMargin,
  collectGarbage,
  FILE_BYTES,
  GC_MIN_FILES,
  FILE_ROW_BYTES,
  LINK_BYTES,
  linkerBytes,
  MemoryBudget,
  MemoryLimitError,
  memoryLimit,
  parseMemory,
  PLAN_BYTES,
  SET_BYTES,
} from '../../src/os/memory-limit.js';

const M = 2 ** 20;
const G = 2 ** 30;

describe('parseMemory', () => {
  it.each([
    ['512M', 512 * M],
    ['2G', 2 * G],
    ['1.5G', 1.5 * G],
    ['768MiB', 768 * M],
    ['100000000', 100000000],
    ['65536k', 64 * M],
  ])('%s is %d bytes', (text, bytes) => expect(parseMemory(text)).toBe(bytes));

  it.each(['', 'lots', '-1G', '2X', '1e9'])('refuses %j as a usage error', (text) => {
    expect(() => parseMemory(text)).toThrow(UsageError);
  });

  it('refuses a limit Node could not even start in', () => {
    expect(() => parseMemory('10M')).toThrow(/too small/);
  });
});

describe('cgroupLimit', () => {
  let dir: string;
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const tree = (self: string, files: Record<string, string>) => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'vunify-cg-'));
    writeFileSync(path.join(dir, 'self'), self);
    for (const [f, text] of Object.entries(files)) {
      mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
      writeFileSync(path.join(dir, f), text + '\n');
    }
    return { self: path.join(dir, 'self'), v2: path.join(dir, 'v2'), v1: path.join(dir, 'v1') };
  };

  it('takes the tightest of memory.max and memory.high from the cgroup up to the root (v2)', () => {
    const p = tree('0::/system.slice/vunify.service\n', {
      'v2/system.slice/vunify.service/memory.max': String(3 * G),
      'v2/system.slice/vunify.service/memory.high': 'max',
      'v2/system.slice/memory.max': 'max',
      'v2/system.slice/memory.high': String(2 * G),
      'v2/memory.max': String(G / 2), // (the root has none on a real host; a limit above still counts)
    });
    expect(cgroupLimit(p)).toEqual({ bytes: G / 2, file: `${p.v2}/memory.max` });
  });

  it('reads memory.high when it is the tighter one', () => {
    const p = tree('0::/a/b\n', { 'v2/a/b/memory.max': String(4 * G), 'v2/a/b/memory.high': String(3 * G) });
    expect(cgroupLimit(p)).toEqual({ bytes: 3 * G, file: `${p.v2}/a/b/memory.high` });
  });

  it('says none when every level is "max" or the files are missing', () => {
    const p = tree('0::/a\n', { 'v2/a/memory.max': 'max' });
    expect(cgroupLimit(p)).toBeUndefined();
    expect(memoryLimit(undefined, p)).toBeUndefined();
  });

  it('reads memory.limit_in_bytes on a cgroup v1 host, ignoring the "unlimited" value', () => {
    const p = tree('5:devices:/x\n4:memory:/process_api/abc\n0::/\n', {
      'v1/process_api/abc/memory.limit_in_bytes': '9223372036854771712',
      'v1/process_api/memory.limit_in_bytes': String(6 * G),
      'v1/memory.limit_in_bytes': '9223372036854771712',
    });
    expect(cgroupLimit(p)).toEqual({ bytes: 6 * G, file: `${p.v1}/process_api/memory.limit_in_bytes` });
  });

  it('gives the budget as the limit less the margin; the tighter of it and --max-memory wins', () => {
    const p = tree('0::/u\n', { 'v2/u/memory.max': String(G) });
    const l = memoryLimit(undefined, p)!;
    expect(l.bytes).toBe(G - cgroupMargin(G));
    expect(cgroupMargin(G)).toBeGreaterThan(G / 20);
    expect(l.source).toContain(`${p.v2}/u/memory.max`);
    expect(l.fromOption).toBe(false);
    expect(memoryLimit('512M', p)).toEqual({ bytes: G / 2, source: '--max-memory 512M', fromOption: true });
    // Above the cgroup's: the kernel would OOM-kill the run before --max-memory is reached.
    const over = memoryLimit('3G', p)!;
    expect(over.bytes).toBe(G - cgroupMargin(G));
    expect(over.source).toContain('tighter than --max-memory 3G');
    expect(memoryLimit('3G', { ...p, self: path.join(dir, 'none') })).toEqual({ bytes: 3 * G, source: '--max-memory 3G', fromOption: true });
  });
});

describe('MemoryBudget', () => {
  const fixed = (rss: number) => () => rss;
  const limit = { bytes: 200 * M, source: '--max-memory 200M', fromOption: true };

  it('lets a run go on while its estimate fits, and stops it with exit-2 error naming limit, source, count and remedy', () => {
    const b = new MemoryBudget(limit, fixed(60 * M));
    const fits = Math.floor((140 * M - linkerBytes()) / LINK_BYTES) - 10;
    expect(() => b.beforePlan(fits, 0)).not.toThrow();
    let er: unknown;
    try {
      b.beforePlan(fits + 1000, 0);
    } catch (e) {
      er = e;
    }
    expect(er).toBeInstanceOf(MemoryLimitError);
    expect(er).toBeInstanceOf(UsageError);
    const msg = (er as Error).message;
    expect(msg).toContain('200 MiB');
    expect(msg).toContain('--max-memory 200M');
    expect(msg).toContain((fits + 1000).toLocaleString('en-US') + ' files');
    expect(msg).toMatch(/before changing anything/);
    expect(msg).toMatch(/larger --max-memory/);
    expect(msg).toMatch(/fewer roots/);
    expect(msg).toMatch(/exclude the guest/);
  });

  it('checks the plan against what is resident now', () => {
    let rss = 60 * M;
    const b = new MemoryBudget(limit, () => rss);
    expect(() => b.beforePlan(100_000, 10)).not.toThrow();
    rss = 199 * M;
    expect(() => b.beforePlan(100_000, 10)).toThrow(/the link plan for 100,000 files/);
    expect(100_000 * PLAN_BYTES).toBeGreaterThan(M);
  });

  it('counts the largest set only when there is a limit, and charges what the count says', () => {
    let calls = 0;
    const count = (n: number) => () => (calls++, n);
    new MemoryBudget(undefined, fixed(60 * M)).beforePlan(10, count(1_000_000), true);
    expect(calls).toBe(0);
    // 140 MiB left for a dry run's plan: a largest set of a tenth of `paths` fits in it, one of `paths` does not.
    const b = new MemoryBudget(limit, fixed(60 * M));
    const paths = Math.ceil((140 * M) / SET_BYTES);
    expect(() => b.beforePlan(0, count(Math.floor(paths / 10)), false)).not.toThrow();
    expect(() => b.beforePlan(0, count(paths), false)).toThrow(MemoryLimitError);
    expect(() => b.beforePlan(0, paths, false)).toThrow(MemoryLimitError);
    expect(calls).toBe(2);
  });

  it('charges a dry run the plan only, a linking run the plan and the linker', () => {
    const b = new MemoryBudget(limit, fixed(60 * M));
    // 140 MiB left: candidates a dry run can plan but a linking run cannot.
    const n = Math.floor((140 * M) / LINK_BYTES) * 2;
    expect(n * PLAN_BYTES).toBeLessThan(140 * M);
    expect(() => b.beforePlan(n, 0, false)).not.toThrow();
    expect(() => b.beforePlan(n, 0, true)).toThrow(MemoryLimitError);
    expect(() => b.beforePlan(Math.floor((140 * M) / PLAN_BYTES) + 1000, 0, false)).toThrow(MemoryLimitError);
    // The linker's own buffers, whatever the count: 1 MiB short of them stops a linking run of no candidates.
    const short = new MemoryBudget(limit, fixed(200 * M - linkerBytes() + M));
    expect(() => short.beforePlan(0, 0, false)).not.toThrow();
    expect(() => short.beforePlan(0, 0, true)).toThrow(MemoryLimitError);
    expect(linkerBytes()).toBeGreaterThanOrEqual(24 * M);
  });

  it('passes everything without a limit, and hands the native walk what is left', () => {
    const none = new MemoryBudget(undefined, fixed(60 * M));
    expect(() => none.beforePlan(1e9, 1e9)).not.toThrow();
    expect(none.tableBytes()).toBeUndefined();
    expect(new MemoryBudget(limit, fixed(60 * M)).tableBytes()).toBe(140 * M);
    expect(none.fileBytes()).toBeUndefined();
    // The walk charges each row's fixed bytes itself: with them, FILE_BYTES per file.
    expect(new MemoryBudget(limit, fixed(60 * M)).fileBytes()).toBe(FILE_BYTES - FILE_ROW_BYTES);
  });

  it("charges the walk's fixed row bytes as the tables hold them", () => {
    const b = new TableBuilder();
    b.addRoot(0, 2);
    b.addFile(0, Buffer.from('f'), { ino: 3, size: 1, blocks: 8, uid: 0, gid: 0, mode: 0o100644, nlink: 1, mtimeSec: 1, mtimeNsec: 0, ctimeSec: 1, ctimeNsec: 0 });
    const t = b.build();
    const row = Object.values(t.files).reduce((n: number, v) => n + (ArrayBuffer.isView(v) ? (v as Uint8Array).BYTES_PER_ELEMENT : 0), 0);
    expect(row).toBe(FILE_ROW_BYTES);
  });

  it('hands the native walk a budget of at least 1 byte when Node alone already holds more than the limit', () => {
    // 0 would be refused by the addon as a bad argument (a TypeError, not the exit-2 message).
    expect(new MemoryBudget(limit, fixed(300 * M)).tableBytes()).toBe(1);
  });

  it("names the files and the bytes of the native walk's EBUDGET, counting what Node held at the start", () => {
    const b = new MemoryBudget(limit, fixed(60 * M));
    const er = Object.assign(new Error('the walk stopped'), { code: 'EBUDGET', files: 123_456, need: 150 * M, listed: 130_000 });
    const msg = (b.fromWalk(er) as Error).message;
    expect(msg).toMatch(/^memory limit: listing the guest roots for 123,456 files would need about 210 MiB \(after 130,000 entries listed\), more than the limit of 200 MiB/);
  });

  it("turns the native walk's EBUDGET into the exit-2 error and leaves other errors alone", () => {
    const b = new MemoryBudget(limit, fixed(60 * M));
    const budget = Object.assign(new Error('walk: 1,234,567 entries listed, tables would pass 140 MiB'), { code: 'EBUDGET' });
    const mapped = b.fromWalk(budget);
    expect(mapped).toBeInstanceOf(MemoryLimitError);
    expect((mapped as Error).message).toContain('1,234,567 entries');
    expect((mapped as Error).message).toContain('--max-memory 200M');
    const other = Object.assign(new Error('x'), { code: 'EIO' });
    expect(b.fromWalk(other)).toBe(other);
  });
});

describe('collectGarbage', () => {
  it('from GC_MIN_FILES files on, runs a full collection (the collector loaded on first use): an unreachable object is gone', async () => {
    const ref = (() => new WeakRef({ payload: new Array(1000).fill(7) }))();
    await new Promise((r) => setTimeout(r, 0)); // a WeakRef's target is kept to the end of the job that made it
    collectGarbage(GC_MIN_FILES);
    await new Promise((r) => setTimeout(r, 0));
    expect(ref.deref()).toBeUndefined();
  });
});
