// closeLater's closer threads (native/lookup.c, up to 8, a queue of 1024):
// closeLaterDrain resolves only once every descriptor handed over is closed
// and its inode's space is free (the run reports freed space after it), also
// when closes are slow (large unlinked files on a tmpfs: their pages are
// freed by the close) and when more are handed over than the queue holds;
// and no close lands on a descriptor number opened meanwhile (a number is
// reused only once its close happened, so a close of the wrong one would
// show as a descriptor of ours gone). Checked with statfs and /proc/self/fd.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tmpFs, type LoopFs } from '../helpers/loopfs.js';
import { O, sys } from '../../src/os/sys.js';
import { fdsUnder, inode, runUnify, writeFile } from '../helpers/tree.js';

let tmp: LoopFs, base: string, mnt: string;
beforeEach(() => {
  tmp = tmpFs('size=1g');
  mnt = tmp.dir;
  base = path.dirname(mnt);
});
afterEach(() => tmp.unmount());

const used = () => {
  const s = fs.statfsSync(mnt);
  return (s.blocks - s.bfree) * s.bsize;
};

/** Descriptors of this process that name a file under the tmpfs. */
const held = () => fdsUnder(mnt);

describe('closeLater and closeLaterDrain', () => {
  it('drain waits for every close, slow ones and more than the queue holds; no close hits a descriptor opened meanwhile', async () => {
    const empty = used();
    const big = Buffer.alloc(64 << 20, 'b');
    const handed: number[] = [];
    const keep: { fd: number; file: string }[] = [];
    // 3,000 small files, then 8 large ones last (their close frees 64 MiB of pages each), so
    // that the queue drains while several closers are still in their slow closes.
    for (let i = 0; i < 3008; i++) {
      const f = path.join(mnt, `f${i}`);
      fs.writeFileSync(f, i >= 3000 ? big : 'x');
      handed.push(sys.open(f, O.RDONLY | O.CLOEXEC));
      fs.unlinkSync(f);
    }
    expect(used() - empty).toBeGreaterThanOrEqual(8 * (64 << 20));
    for (const [i, fd] of handed.entries()) {
      sys.closeLater(fd);
      // Opened while the closers run: numbers freed by the closes are taken again.
      if (i % 10 === 0) {
        const file = path.join(mnt, `keep${i}`);
        fs.writeFileSync(file, String(i));
        keep.push({ fd: sys.open(file, O.RDONLY | O.CLOEXEC), file });
      }
    }
    await sys.closeLaterDrain();
    try {
      // Every handed-over descriptor closed and its space free, at once after the drain.
      const still = held().filter((n) => !keep.some((k) => String(k.fd) === n));
      expect(still).toEqual([]);
      const keptBytes = keep.length * 4096;
      expect(used() - empty).toBeLessThanOrEqual(keptBytes);
      // The descriptors opened meanwhile are all open, each on its own file.
      for (const k of keep) expect(fs.readlinkSync(`/proc/self/fd/${k.fd}`)).toBe(k.file);
    } finally {
      // Closed whatever the outcome, so that the tmpfs can be unmounted; the drain again for a failed one.
      for (const k of keep) sys.close(k.fd);
      await sys.closeLaterDrain();
    }
  }, 120_000);

  it('a linking run returns only once the space of every inode it freed is free (statfs right after it)', async () => {
    // 12 pairs of 16 MiB files on the tmpfs: each replaced inode's last close frees its pages.
    for (let i = 0; i < 12; i++)
      for (const g of ['a', 'b']) writeFile(path.join(mnt, g, `f${i}`), { content: Buffer.alloc(16 << 20, `pair ${i} `) });
    const before = used();
    const { report, errors } = await runUnify([path.join(mnt, 'a'), path.join(mnt, 'b')], { cache: false, stateDir: path.join(base, 'state') });
    const after = used();
    expect(errors).toEqual([]);
    expect(report.summary.linksMade).toBe(12);
    for (let i = 0; i < 12; i++) expect(inode(path.join(mnt, 'a', `f${i}`))).toBe(inode(path.join(mnt, 'b', `f${i}`)));
    expect(before - after).toBeGreaterThanOrEqual(12 * (16 << 20));
    expect(held()).toEqual([]);
  }, 120_000);
});
