// Linking where a change in the same clock tick keeps the ctime (ext2 here,
// and every filesystem on kernels before 6.13: no multigrain timestamps).
// The addon may take a canonical's flags, project and xattr list from the
// previous pair's settle "while its ctime proves them" (native/link.c
// canon_cache). The exchange has just stamped that ctime, so on such a
// filesystem a guest's change within the same tick leaves it as it was:
// these tests change the canonical in-process (microseconds, well inside
// one tick) after the first pair's unlink and look at the third copy. It
// stays apart because settle reads the canonical's flags, project and
// xattrs afresh after the exchange (the cached values only decide whether
// to go on to it): found there, the swap is undone.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { sys } from '../../src/os/sys.js';
import { type LoopFs, loopFs } from '../helpers/loopfs.js';
import { inode, runUnify, sh, writeFile } from '../helpers/tree.js';

let lfs: LoopFs;
let dir: string;
let n = 0;
beforeAll(() => {
  lfs = loopFs('ext2', 64 << 20);
});
afterAll(() => lfs.unmount());
beforeEach(() => {
  dir = path.join(lfs.dir, `t${n++}`);
  fs.mkdirSync(dir);
});
afterEach(() => sys.setLinkHook(null));

const ctimeNs = (f: string) => fs.statSync(f, { bigint: true }).ctimeNs;
const FS_NODUMP_FL = 0x40;

/** The change, made through a descriptor of the canonical's path (as its guest would). */
const ACTIONS: Record<string, { act: (fd: number) => void; shows: (file: string) => string }> = {
  'setxattr user.late': {
    act: (fd) => sys.setXattr(fd, Buffer.from('user.late'), Buffer.from('x')),
    shows: (f) => sh('getfattr', '-d', '-m', '-', f).split('\n').slice(1).join(','),
  },
  'chattr +d': {
    act: (fd) => sys.setFlags(fd, sys.getFlags(fd) | FS_NODUMP_FL),
    shows: (f) => sh('lsattr', '-d', f).split(' ')[0]!,
  },
};

describe('coarse ctime: a guest changing the canonical in the tick of the first pair’s exchange', () => {
  it('this filesystem keeps the ctime of a change made in the same tick (the premise)', () => {
    const f = path.join(dir, 'probe');
    fs.writeFileSync(f, 'x');
    let kept = 0;
    for (let i = 0; i < 200; i++) {
      const before = ctimeNs(f);
      fs.chmodSync(f, i & 1 ? 0o600 : 0o644);
      if (ctimeNs(f) === before) kept++;
    }
    expect(kept).toBeGreaterThan(100);
  });

  const cases: [string, number][] = [];
  for (const action of Object.keys(ACTIONS)) for (const size of [4096, 64 << 10]) cases.push([action, size]);

  it.each(cases)('%s on the canonical after the first unlink (%d bytes): the third copy kept apart, as its guest left it', async (action, size) => {
    const [a, b, c] = ['a', 'b', 'c'].map((g) => path.join(dir, g, 'f')) as [string, string, string];
    for (const f of [a, b, c]) writeFile(f, { content: Buffer.alloc(size, 'q') });
    const inoC = inode(c);
    const showsC = ACTIONS[action]!.shows(c);
    let acted = 0;
    let sameTick = false;
    sys.setLinkHook((s, when) => {
      if (s !== 'unlink' || when !== 'after' || acted++) return;
      const before = ctimeNs(a);
      const fd = fs.openSync(a, 'r');
      try {
        ACTIONS[action]!.act(fd);
      } finally {
        fs.closeSync(fd);
      }
      sameTick = ctimeNs(a) === before;
    });
    const { report } = await runUnify([path.join(dir, 'a'), path.join(dir, 'b'), path.join(dir, 'c')], { cache: false });
    sys.setLinkHook(null);
    expect(acted).toBeGreaterThan(0);
    // Only meaningful when the change kept the ctime (nearly always: microseconds after the exchange).
    if (!sameTick) return;
    expect(inode(b)).toBe(inode(a));
    expect(ACTIONS[action]!.shows(a)).not.toBe(showsC);
    expect(inode(c)).toBe(inoC);
    expect(ACTIONS[action]!.shows(c)).toBe(showsC);
    expect(report.summary.linksMade).toBe(1);
    expect(sh('find', dir, '-name', '.vunify.*')).toBe('');
  });
});
