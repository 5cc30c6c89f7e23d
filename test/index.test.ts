// The whole pipeline on a small fleet of real guest trees.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { inode, rmTree, runUnify, sh, snapshot, tempDir, writeFile } from './helpers/tree.js';

let dir: string;
let guests: string[];

/** Three guests sharing most files, with the usual ways real guests differ. */
function makeFleet() {
  guests = ['g1', 'g2', 'g3'].map((g) => path.join(dir, g));
  for (const [i, g] of guests.entries()) {
    writeFile(path.join(g, 'usr/lib/libc.so.6'), { content: Buffer.alloc(300_000, 7), mode: 0o755 });
    writeFile(path.join(g, 'usr/bin/ping'), { content: 'ping', mode: 0o755 });
    sh('setcap', 'cap_net_raw+ep', path.join(g, 'usr/bin/ping'));
    sh('touch', '-d', '@1700000000.5', path.join(g, 'usr/bin/ping'));
    writeFile(path.join(g, 'usr/bin/sudo'), { content: 'sudo', mode: 0o4755, xattrs: { 'user.origin': 'debian' } });
    writeFile(path.join(g, 'usr/share/doc/README'), { content: 'docs', uid: 1000, gid: 1000 });
    writeFile(path.join(g, 'etc/hostname'), { content: `guest${i}\n` });
    writeFile(path.join(g, 'srv/big-sparse'), { content: '' });
    sh('truncate', '-s', '10M', path.join(g, 'srv/big-sparse'));
    sh('touch', '-d', '@1700000000', path.join(g, 'srv/big-sparse'));
  }
}

beforeEach(() => {
  dir = tempDir();
  makeFleet();
});
afterEach(() => rmTree(dir));

const distinct = (rel: string) => new Set(guests.map((g) => inode(path.join(g, rel)))).size;

describe('unify', () => {
  it('links every identical file, and every path keeps its content and metadata', async () => {
    const before = snapshot(dir, { dirTimes: false });
    const { report, errors } = await runUnify(guests);
    expect(errors).toEqual([]);
    for (const f of ['usr/lib/libc.so.6', 'usr/bin/ping', 'usr/bin/sudo', 'usr/share/doc/README', 'srv/big-sparse']) {
      expect(distinct(f)).toBe(1);
    }
    expect(distinct('etc/hostname')).toBe(3);
    expect(snapshot(dir, { dirTimes: false })).toEqual(before);
    expect(report.summary.linksMade).toBe(10);
    expect(report.summary.freedBytes).toBe(report.summary.freeableBytes);
  });

  it('a dry run changes nothing at all', async () => {
    const before = snapshot(dir, { inodes: true });
    const atime = fs.statSync(path.join(guests[1]!, 'usr/lib/libc.so.6')).atimeMs;
    const { report } = await runUnify(guests, { dryRun: true });
    expect(report.dryRun).toBe(true);
    expect(report.summary.linksPlanned).toBe(10);
    expect(report.summary.linksMade).toBe(0);
    expect(snapshot(dir, { inodes: true })).toEqual(before);
    // O_NOATIME: reading for the hash leaves access times alone.
    expect(fs.statSync(path.join(guests[1]!, 'usr/lib/libc.so.6')).atimeMs).toBe(atime);
  });

  it('is idempotent: a second run plans and links nothing', async () => {
    await runUnify(guests);
    const after = snapshot(dir, { inodes: true });
    const { report, errors } = await runUnify(guests);
    expect(errors).toEqual([]);
    expect(report.summary).toMatchObject({ duplicateSets: 0, linksPlanned: 0, linksMade: 0 });
    expect(report.summary.alreadySharedBytes).toBeGreaterThan(0);
    expect(snapshot(dir, { inodes: true })).toEqual(after);
  });

  it('keeps an already-linked set whole and links the stragglers to it', async () => {
    // In g3, libc has a second name: that inode has the most links and wins.
    const g3 = guests[2]!;
    fs.linkSync(path.join(g3, 'usr/lib/libc.so.6'), path.join(g3, 'usr/lib/libc-2.36.so'));
    const winner = inode(path.join(g3, 'usr/lib/libc.so.6'));
    const { report } = await runUnify(guests);
    expect(distinct('usr/lib/libc.so.6')).toBe(1);
    expect(inode(path.join(guests[0]!, 'usr/lib/libc.so.6'))).toBe(winner);
    expect(fs.statSync(path.join(g3, 'usr/lib/libc-2.36.so')).nlink).toBe(4);
    expect(report.summary.alreadySharedBytes).toBe(300_000);
  });

  it('an inode with links outside the roots is canonical and is not counted as freeable', async () => {
    const outside = path.join(dir, 'outside-copy');
    fs.linkSync(path.join(guests[2]!, 'usr/bin/ping'), outside);
    const pinned = inode(outside);
    const { report } = await runUnify(guests, { dryRun: true });
    const { report: done } = await runUnify(guests);
    expect(inode(path.join(guests[0]!, 'usr/bin/ping'))).toBe(pinned);
    expect(fs.statSync(outside).nlink).toBe(4);
    // ping: two inodes freed (g1, g2), g3's is kept alive by the outside link.
    const ping = 4;
    expect(done.summary.freedBytes).toBe(report.summary.freeableBytes);
    expect(report.summary.freeableBytes).toBe(2 * 300_000 + 2 * ping + 2 * 4 + 2 * 4 + 2 * 10 * 2 ** 20);
  });

  it('counts the allocated size of sparse files, not their length, as disk bytes', async () => {
    const { report } = await runUnify(guests, { dryRun: true });
    const allocated = (rel: string) => Number(sh('stat', '-c', '%b', path.join(guests[1]!, rel)).trim()) * 512;
    const expectDisk = 2 * ['usr/lib/libc.so.6', 'usr/bin/ping', 'usr/bin/sudo', 'usr/share/doc/README', 'srv/big-sparse']
      .reduce((sum, f) => sum + allocated(f), 0);
    expect(report.summary.freeableDiskBytes).toBe(expectDisk);
    expect(report.summary.freeableDiskBytes).toBeLessThan(report.summary.freeableBytes);
  });
});
