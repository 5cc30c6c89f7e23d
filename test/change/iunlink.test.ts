// --iunlink: refused on this (vanilla) kernel before anything changes; the
// vserver side is simulated through the sys seam, since no Linux-VServer
// kernel is at hand.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { IATTR_IMMUTABLE, IATTR_IUNLINK, VCMD_FGET_IATTR, VCMD_FSET_IATTR, VCMD_GET_VERSION } from '../../src/change/iunlink.js';
import { sys } from '../../src/os/sys.js';
import { inode, rmTree, runCli, runUnify, snapshot, tempDir, writeFile } from '../helpers/tree.js';

let dir: string;
let guests: string[];
beforeEach(() => {
  dir = tempDir();
  guests = ['g1', 'g2', 'g3'].map((g) => path.join(dir, 'vservers', g));
  for (const g of guests) {
    writeFile(path.join(g, 'usr/bin/a'), { content: 'aaa' });
    writeFile(path.join(g, 'usr/bin/b'), { content: 'bbb' });
  }
});
afterEach(() => {
  vi.restoreAllMocks();
  rmTree(dir);
});

const BOTH = IATTR_IMMUTABLE | IATTR_IUNLINK;

describe('--iunlink', () => {
  it.each([[['-n']], [[]]])('on a kernel without the vserver call, %j exits 2 naming the reason and changes nothing', (extra) => {
    const before = snapshot(dir, { inodes: true });
    const r = runCli([...extra, '--iunlink', ...guests]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--iunlink needs a Linux-VServer kernel.*ENOSYS.*nothing was changed/);
    expect(snapshot(dir, { inodes: true })).toEqual(before);
  });

  /** A pretend vserver kernel: attributes kept per inode, calls logged. */
  function fakeVserver(opts: { keeps?: boolean } = {}) {
    const attrs = new Map<number, number>();
    const log: string[] = [];
    vi.spyOn(sys, 'vserver').mockImplementation((cmd, fd, data) => {
      if (cmd === VCMD_GET_VERSION) return 0x00020305;
      const ino = sys.fstat(fd).ino;
      if (cmd === VCMD_FSET_IATTR) {
        const flags = data!.readUInt32LE(4), mask = data!.readUInt32LE(8);
        attrs.set(ino, ((attrs.get(ino) ?? 0) & ~mask) | (flags & mask));
        log.push(`set ${ino} ${flags ? 'on' : 'off'}`);
        return 0;
      }
      if (cmd === VCMD_FGET_IATTR) {
        data!.writeUInt32LE(opts.keeps === false ? 0 : attrs.get(ino) ?? 0, 4);
        return 0;
      }
      throw Object.assign(new Error('ENOSYS'), { code: 'ENOSYS' });
    });
    const { linkAt } = sys;
    vi.spyOn(sys, 'linkAt').mockImplementation((fd, dirFd, name) => {
      log.push(`link ${sys.fstat(fd).ino}`);
      linkAt(fd, dirFd, name);
    });
    return { attrs, log };
  }

  it('marks each canonical before its first link, probes beside the roots, and leaves no scratch file', async () => {
    const { attrs, log } = fakeVserver();
    const { report, errors } = await runUnify(guests, { iunlink: true });
    expect(errors).toEqual([]);
    expect(report.summary.linksMade).toBe(4);
    const canonA = inode(path.join(guests[0]!, 'usr/bin/a'));
    const canonB = inode(path.join(guests[0]!, 'usr/bin/b'));
    expect(attrs.get(canonA)).toBe(BOTH);
    expect(attrs.get(canonB)).toBe(BOTH);
    // The probe sets and clears its scratch file first; each canonical is marked before it is linked.
    expect(log[0]).toMatch(/^set \d+ on$/);
    expect(log[1]).toMatch(/^set \d+ off$/);
    for (const ino of [canonA, canonB]) {
      expect(log.indexOf(`set ${ino} on`)).toBeGreaterThan(1);
      expect(log.indexOf(`set ${ino} on`)).toBeLessThan(log.indexOf(`link ${ino}`));
    }
    expect(fs.readdirSync(path.join(dir, 'vservers')).sort()).toEqual(['g1', 'g2', 'g3']);

    // A later run adds a new guest's copy to the marked inode without marking it again.
    const g4 = path.join(dir, 'vservers', 'g4');
    writeFile(path.join(g4, 'usr/bin/a'), { content: 'aaa' });
    log.length = 0;
    await runUnify([...guests, g4], { iunlink: true });
    expect(inode(path.join(g4, 'usr/bin/a'))).toBe(canonA);
    expect(log.filter((l) => l === `set ${canonA} on`)).toEqual([]);
  });

  it('refuses before changing anything when the filesystem does not keep the attributes', async () => {
    fakeVserver({ keeps: false });
    // The probe's scratch file comes and goes beside the roots, so only that directory's mtime may change.
    const before = snapshot(dir, { inodes: true, dirTimes: false });
    await expect(runUnify(guests, { iunlink: true })).rejects.toThrow(/does not keep the immutable-unlink attributes.*nothing was changed/);
    expect(snapshot(dir, { inodes: true, dirTimes: false })).toEqual(before);
  });
});
