// Review of Batch.add's NAME_BYTES rule (session 14, b306950): a pair whose
// own directory path and name pass NAME_BYTES (128 KiB) takes the JS path,
// as the batch's first pair too. prepare()/prepareRows() then have nothing
// to run: linkRows hands its set over at that pair (the set's objects
// built), linkSet's prepare() is false and linkOne links it. What must hold
// wherever that pair sits in its set (its first, middle or last op, or its
// only one): every pair linked once, none skipped, the report's counts and
// freed bytes those of the JS path alone and of the dry run's plan, no
// descriptor left open, and each level's files one inode (find, not the
// report). Deep paths pass PATH_MAX, so the files are made and read by
// descriptor (helpers/deep.ts, Python's fwalk). And with many such pairs
// (the last test): no call is given more names than a call may hold.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { sys } from '../../src/os/sys.js';
import { RowSet } from '../../src/pipeline/plan-rows.js';
import { makeChain } from '../helpers/deep.js';
import { fds, linkerTestDir, put } from '../helpers/link-ways.js';
import { runUnify, sh } from '../helpers/tree.js';

const testDir = linkerTestDir();

/** 530 levels of 255-byte names: the deepest directory's path alone is ~133 KiB, more than NAME_BYTES. */
const DEPTH = 530;
const content = (k: string) => `content ${k}\n`.repeat(400);

/**
 * Roots g0, g1, g2 (plan order): each set's canonical is its g0 file (first
 * path), its ops g0's other copies, then g1's deep one, then g2's copies.
 *   a: deep copy first, then 100 in g2;  b: 50 in g0, deep, 50 in g2;
 *   c: 100 in g0, deep last;             d: the deep copy its only op.
 */
function build(top: string): void {
  const copies = (root: string, set: string, from: number, to: number) => {
    for (let k = from; k < to; k++) put(path.join(top, root, set, `f${String(k).padStart(3, '0')}`), content(set));
  };
  for (const set of ['a', 'b', 'c', 'd']) put(path.join(top, 'g0', set, 'c'), content(set));
  copies('g2', 'a', 0, 100);
  copies('g0', 'b', 0, 50);
  copies('g2', 'b', 50, 100);
  copies('g0', 'c', 0, 100);
  sh('mkdir', '-p', path.join(top, 'g1'));
  makeChain(path.join(top, 'g1'), DEPTH, { every: 0, bottom: { a: content('a'), b: content('b'), c: content('c'), d: content('d') } });
}

/** Each content's files (by sha256) and their link counts, read by descriptor (os.fwalk: deep paths pass PATH_MAX). */
function linkCounts(top: string): Map<string, string[]> {
  const script = `
import os, sys, hashlib
for _, _, files, dfd in os.fwalk(sys.argv[1]):
  for name in files:
    fd = os.open(name, os.O_RDONLY, dir_fd=dfd)
    data = b''
    while True:
      chunk = os.read(fd, 1 << 16)
      if not chunk: break
      data += chunk
    print(os.fstat(fd).st_nlink, hashlib.sha256(data).hexdigest())
    os.close(fd)
`;
  const out = new Map<string, string[]>();
  for (const line of execFileSync('python3', ['-c', script, top], { encoding: 'utf8' }).trim().split('\n')) {
    const [n, sum] = line.split(' ');
    out.set(sum!, [...(out.get(sum!) ?? []), n!]);
  }
  return out;
}

describe('Batch.add: a pair whose own path passes NAME_BYTES (review 14)', () => {
  it('first, middle, last or only op of its set: linked once by the JS path, counts as the JS path and the dry run say', async () => {
    const roots = (top: string) => ['g0', 'g1', 'g2'].map((g) => path.join(top, g));
    // the dry run's plan
    build(path.join(testDir(), 'dry'));
    const dry = await runUnify(roots(path.join(testDir(), 'dry')), { cache: false, dryRun: true });
    expect(dry.errors).toEqual([]);
    // the JS path for every pair
    build(path.join(testDir(), 'js'));
    sys.nativeLinker = false;
    const js = await runUnify(roots(path.join(testDir(), 'js')), { cache: false });
    sys.nativeLinker = true;
    // the addon on rows: each of the four sets handed over at its deep op
    build(path.join(testDir(), 'rows'));
    const objects = vi.spyOn(RowSet.prototype, 'objects');
    const names: number[] = [];
    const start = sys.linkBatchStart.bind(sys);
    vi.spyOn(sys, 'linkBatchStart').mockImplementation((...args: Parameters<typeof sys.linkBatchStart>) => {
      // each pair's `dir NUL name NUL`: the longest of this call
      const buf = args[6];
      let longest = 0;
      for (let at = 0; at < buf.length; ) {
        const end = buf.indexOf(0, buf.indexOf(0, at) + 1) + 1;
        longest = Math.max(longest, end - at);
        at = end;
      }
      names.push(longest);
      return start(...args);
    });
    const open = fds();
    const rows = await runUnify(roots(path.join(testDir(), 'rows')), { cache: false });
    expect(fds()).toBe(open);
    expect(objects.mock.calls.length).toBe(4);
    vi.restoreAllMocks();
    expect(js.errors).toEqual([]);
    expect(rows.errors).toEqual([]);
    const s = rows.report.summary;
    expect(s.linksMade).toBe(304);
    expect(s.skipped).toBe(0);
    // the same summary as the JS path's, and as the dry run's plan
    expect(s).toEqual(js.report.summary);
    expect({ ...s, linksMade: 0, freedBytes: 0, freedDiskBytes: 0, contentSplits: undefined }).toEqual({ ...dry.report.summary, linksMade: 0, freedBytes: 0, freedDiskBytes: 0, contentSplits: undefined });
    expect([s.linksMade, s.freedBytes, s.freedDiskBytes]).toEqual([dry.report.summary.linksPlanned, dry.report.summary.freeableBytes, dry.report.summary.freeableDiskBytes]);
    // no call was given a deep pair: every pair's names within NAME_BYTES (and the 100 copies went through calls)
    expect(names.length).toBeGreaterThan(0);
    expect(Math.max(...names)).toBeLessThanOrEqual(1 << 17);
    // every copy of each content one inode, in both runs
    for (const top of ['js', 'rows']) {
      const counts = linkCounts(path.join(testDir(), top));
      expect([...counts.values()].map((c) => new Set(c).size)).toEqual([1, 1, 1, 1]);
      expect([...counts.values()].map((c) => c.length).sort((x, y) => x - y)).toEqual([2, 102, 102, 102]);
    }
  }, 120_000);

  it('many of them (2,000-deep chains): no call holds more than ACTIVE x NAME_BYTES of names, and every pair is linked', async () => {
    // Two guests with the same chain of 2,000 directories of 255-byte names,
    // a file at every level (each level its own content: 2,000 sets of one
    // pair). From level ~512 on a pair's path alone is more than NAME_BYTES
    // (128 KiB). Admitted as a batch's first pair, the deeper three quarters
    // of the sets (which the plan's order mixes with the others) filled a
    // call with ~48 x 320 KiB, more than the 8 MiB a call's names may take
    // (ACTIVE x NAME_BYTES; LINK_FIXED counts 16 MiB for both groups).
    const top = path.join(testDir(), 'chains');
    for (const g of ['g0', 'g1']) {
      fs.mkdirSync(path.join(top, g), { recursive: true });
      makeChain(path.join(top, g), 2000);
    }
    // The names each call is given (its 7th argument; the buffer it is cut
    // from is at most what a call takes, or ACTIVE x NAME_BYTES).
    const sizes: number[] = [];
    const start = sys.linkBatchStart.bind(sys);
    vi.spyOn(sys, 'linkBatchStart').mockImplementation((...args: Parameters<typeof sys.linkBatchStart>) => {
      sizes.push(args[6].length);
      return start(...args);
    });
    const { report, errors } = await runUnify([path.join(top, 'g0'), path.join(top, 'g1')], { cache: false });
    vi.restoreAllMocks();
    expect(errors).toEqual([]);
    expect(report.summary.linksMade).toBe(2000);
    // not vacuous: the addon linked pairs, calls of more than 1 MiB of names among them
    expect(Math.max(...sizes)).toBeGreaterThan(1 << 20);
    for (const n of sizes) expect(n).toBeLessThanOrEqual(64 << 17);
    // every level's two files one inode (checked by stat, not by the report)
    const out = sh('find', top, '-name', 'f', '-printf', '%n\\n');
    const counts = out.trim().split('\n');
    expect(counts).toHaveLength(4000);
    expect(counts.every((c) => c === '2')).toBe(true);
  }, 300_000);
});
