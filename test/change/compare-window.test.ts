// The addon's comparison (native/link.c) takes the stats and the
// duplicate's inode flags it read before the comparison, and compares no
// xattr lists when neither file had any: a guest process that changes an
// attribute of either file in a window from there to the exchange (just
// before the comparison, before the temporary link, before the exchange)
// must still keep the pair apart, with and without read leases. Each
// action is a real process (chattr, chmod, chown, setfattr, dd) on the
// path the guest sees; the result is read back with stat, lsattr and
// getfattr.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sys } from '../../src/os/sys.js';
import { inode, rmTree, runUnify, sh, tempDir, writeFile } from '../helpers/tree.js';

let dir: string;
beforeEach(() => {
  dir = tempDir();
});
afterEach(() => {
  sys.setLinkHook(null);
  rmTree(dir);
});

type Who = 'canon' | 'dup';
/** What the guest does, and how to see it afterwards (the two files must then differ in it). */
const ACTIONS: Record<string, { act: (file: string) => void; shows: (file: string) => string; small?: true }> = {
  'chattr +d': { act: (f) => sh('chattr', '+d', f), shows: (f) => sh('lsattr', '-d', f).split(' ')[0]! },
  'chmod 600': { act: (f) => fs.chmodSync(f, 0o600), shows: (f) => (fs.statSync(f).mode & 0o7777).toString(8) },
  'chown 1:1': { act: (f) => sh('chown', '1:1', f), shows: (f) => `${fs.statSync(f).uid}:${fs.statSync(f).gid}` },
  'setfattr user.late': { act: (f) => sh('setfattr', '-n', 'user.late', '-v', 'x', f), shows: (f) => sh('getfattr', '-d', '-m', '-', f).split('\n').slice(1).join(',') },
  // A write breaks a read lease, and would wait for it here on the linker's own thread: small files only (no lease).
  'one byte rewritten': {
    act: (f) => sh('sh', '-c', `printf Z | dd of="${f}" bs=1 seek=100 conv=notrunc status=none`),
    shows: (f) => fs.readFileSync(f).subarray(100, 101).toString(),
    small: true,
  },
};

describe("the addon's comparison: a guest changing either file in each window before the exchange", () => {
  const cases: [string, string, Who, number][] = [];
  for (const step of ['compare', 'link', 'exchange'])
    for (const who of ['canon', 'dup'] as Who[])
      for (const [name, a] of Object.entries(ACTIONS))
        for (const size of a.small ? [4096] : [4096, 64 << 10]) cases.push([step, name, who, size]);

  it.each(cases)('before the %s: %s on the %s (%d bytes): kept apart, both as the guest left them', async (step, action, who, size) => {
    const a = path.join(dir, 'a', 'f'), b = path.join(dir, 'b', 'f');
    for (const f of [a, b]) writeFile(f, { content: Buffer.alloc(size, 'q') });
    // 'a' is the earlier root: its copy is the canonical, b's the duplicate.
    const target = who === 'canon' ? a : b;
    const other = who === 'canon' ? b : a;
    const [inoA, inoB] = [inode(a), inode(b)];
    let acted = 0;
    const later: string[] = [];
    sys.setLinkHook((s, when, _dirFd, name) => {
      if (acted) later.push(`${s} ${when}`);
      if (s !== step || when !== 'before' || acted) return;
      // 'link' names the temporary name; the others the duplicate's
      if (s !== 'link' && name.toString() !== 'f') return;
      acted++;
      ACTIONS[action]!.act(target);
    });
    const { report } = await runUnify([path.join(dir, 'a'), path.join(dir, 'b')], { cache: false });
    sys.setLinkHook(null);
    expect(acted).toBe(1);
    // Changed before the comparison: the addon must find out before it changes anything (no link, no exchange).
    if (step === 'compare') expect(later).toEqual([]);
    const shows = ACTIONS[action]!.shows;
    // The guest's change is there, on its file only, and the two were not made one.
    expect(shows(target)).not.toBe(shows(other));
    expect(inode(a)).toBe(inoA);
    expect(inode(b)).toBe(inoB);
    expect(report.summary.linksMade).toBe(0);
    expect(sh('find', dir, '-name', '.vunify.*')).toBe('');
  });
});

// A linker may be tempted to take the canonical's project, flags and xattr
// list for a pair from the previous pair's settle while the canonical's
// ctime proves them (tried in session 9, not kept). A guest changing the canonical between two
// pairs of one set (after the first pair's unlink, or once the second's
// leases are taken, just before its comparison) must keep the second pair
// apart all the same.
describe("the addon's comparison: a guest changing the canonical between two pairs of one set", () => {
  const cases: [string, string, number][] = [];
  for (const step of ['unlink', 'compare'])
    for (const action of ['chattr +d', 'chmod 600', 'chown 1:1', 'setfattr user.late'])
      for (const size of [4096, 64 << 10]) cases.push([step, action, size]);

  it.each(cases)('before the second %s: %s on the canonical (%d bytes): the third copy kept apart, as its guest left it', async (step, action, size) => {
    const [a, b, c] = ['a', 'b', 'c'].map((g) => path.join(dir, g, 'f'));
    for (const f of [a!, b!, c!]) writeFile(f, { content: Buffer.alloc(size, 'q') });
    const inoC = inode(c!);
    const showsC = ACTIONS[action]!.shows(c!);
    // 'unlink after' fires once per pair: the first pair's (b's); 'compare before' of the second pair (c's).
    const want = step === 'unlink' ? ['unlink', 'after', 1] : ['compare', 'before', 2];
    const seen: Record<string, number> = {};
    let acted = 0;
    sys.setLinkHook((s, when) => {
      const k = `${s} ${when}`;
      seen[k] = (seen[k] ?? 0) + 1;
      if (s !== want[0] || when !== want[1] || seen[k] !== want[2] || acted) return;
      acted++;
      ACTIONS[action]!.act(a!);
    });
    const { report } = await runUnify([path.join(dir, 'a'), path.join(dir, 'b'), path.join(dir, 'c')], { cache: false });
    sys.setLinkHook(null);
    expect(acted).toBe(1);
    // b was linked before the change; c not after it: its inode, and what it showed, are its own.
    expect(inode(b!)).toBe(inode(a!));
    expect(inode(c!)).toBe(inoC);
    expect(ACTIONS[action]!.shows(c!)).toBe(showsC);
    expect(ACTIONS[action]!.shows(a!)).not.toBe(showsC);
    expect(report.summary.linksMade).toBe(1);
    expect(sh('find', dir, '-name', '.vunify.*')).toBe('');
  });
});
