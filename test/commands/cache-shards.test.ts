// The hash cache's join on a real fleet (commands/session.ts fromCacheRows):
// after unifying, every root's shard but the one each inode is filed under
// is empty and is not joined; new files under such a root are still hashed,
// and a shard whose second block turns out corrupt after its first block's
// hits were taken gives nothing (a warning; the run says and does what a
// run without the cache says and does). Checked with stat and sha256sum.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { inode, rmTree, runUnify, snapshot, tempDir, writeFile } from '../helpers/tree.js';

let dir: string;
beforeEach(() => {
  dir = tempDir();
});
afterEach(() => rmTree(dir));

const body = (i: number, tag = '') => Buffer.from(`${tag}file ${i} `.padEnd(200, '.'));

describe('hash cache shards after unifying', () => {
  it('empty shards are skipped, new files under their roots are hashed, and a shard bad half-way gives no hit', async () => {
    const roots = ['g0', 'g1', 'g2'].map((g) => path.join(dir, g));
    const state = path.join(dir, 'state');
    // 1,500 files alike in g0 and g1 (two blocks of entries in g0's shard), 50 of them in g2 too.
    for (let i = 0; i < 1500; i++) {
      writeFile(path.join(roots[0]!, `d${i % 7}`, `f${i}`), { content: body(i) });
      writeFile(path.join(roots[1]!, `d${i % 7}`, `f${i}`), { content: body(i) });
      if (i < 50) writeFile(path.join(roots[2]!, `f${i}`), { content: body(i) });
    }
    const run = async (o: { dryRun?: boolean; cache?: false }) => {
      const warnings: string[] = [];
      const r = await runUnify(roots, { stateDir: state, onWarning: (m: string) => warnings.push(m), ...o } as never);
      return { ...r, warnings };
    };
    const first = await run({});
    expect(first.report.summary.linksMade).toBe(1500 + 50);
    const shards = fs.readdirSync(path.join(state, 'cache')).filter((n) => n.endsWith('.shard'));
    expect(shards.length).toBeGreaterThan(0);

    // New files: a pair only in g1 and g2 (roots whose shards hold nothing now), of the same
    // size and metadata as the unified ones but another content.
    writeFile(path.join(roots[1]!, 'new'), { content: body(1, 'n') });
    writeFile(path.join(roots[2]!, 'new'), { content: body(1, 'n') });
    const warm = await run({ dryRun: true });
    const cold = await run({ dryRun: true, cache: false });
    expect(warm.errors).toEqual([]);
    expect(warm.report.summary.linksPlanned).toBe(1);
    expect(cold.report.summary.linksPlanned).toBe(1);
    expect(warm.report.summary.freeableBytes).toBe(cold.report.summary.freeableBytes);

    // g0's shard: the largest. Corrupt the first entry of its second block (the hash field),
    // so the first block's 1,024 entries were matched before the bad one is found.
    const g0 = shards.map((n) => path.join(state, 'cache', n)).sort((a, b) => fs.statSync(b).size - fs.statSync(a).size)[0]!;
    const buf = fs.readFileSync(g0);
    const headerLen = buf.readUInt32LE(12);
    const perBlock = buf.readUInt32LE(40); // the header's entries per block
    expect(perBlock).toBe(1024);
    const second = headerLen + perBlock * 40 + 8;
    buf[second + 32]! ^= 0xff;
    fs.writeFileSync(g0, buf);
    const before = snapshot(dir, { dirTimes: false });
    const bad = await run({ dryRun: true });
    expect(bad.warnings.join('\n')).toMatch(/discarded|corrupt|checksum/);
    expect(bad.report.summary.linksPlanned).toBe(cold.report.summary.linksPlanned);
    expect(bad.report.summary.freeableBytes).toBe(cold.report.summary.freeableBytes);
    const linked = await run({});
    expect(linked.report.summary.linksMade).toBe(1);
    expect(inode(path.join(roots[1]!, 'new'))).toBe(inode(path.join(roots[2]!, 'new')));
    // Not a byte or an attribute changed on any path.
    const after = snapshot(dir, { dirTimes: false });
    for (const [p, v] of before) if (!p.startsWith('state')) expect(after.get(p), p).toBe(v);
  }, 300_000);
});
