// The native seam, tested directly on a real filesystem.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOCK_EX, LOCK_NB, O, RENAME_EXCHANGE, sys } from '../../src/os/sys.js';
import { fdsUnder, rmTree, sh, tempDir, writeFile } from '../helpers/tree.js';
import { FileType } from '../../src/core/stat.js';

let dir: string;
let rootFd: number;
const B = (s: string) => Buffer.from(s);

beforeAll(() => {
  dir = tempDir();
  fs.mkdirSync(path.join(dir, 'root/sub/deeper'), { recursive: true });
  writeFile(path.join(dir, 'root/sub/file'), { content: 'inside' });
  writeFile(path.join(dir, 'outside'), { content: 'host secret' });
  fs.symlinkSync(path.join(dir, 'outside'), path.join(dir, 'root/abs-link'));
  fs.symlinkSync('../outside', path.join(dir, 'root/rel-link'));
  fs.symlinkSync(dir, path.join(dir, 'root/dir-link'));
  rootFd = sys.open(path.join(dir, 'root'), O.RDONLY | O.DIRECTORY);
});
afterAll(() => {
  sys.close(rootFd);
  rmTree(dir);
});

function refusals() {
  const codes = (p: string) => {
    try {
      sys.close(sys.openBeneath(rootFd, B(p), O.RDONLY));
      return 'opened';
    } catch (er) {
      return (er as NodeJS.ErrnoException).code;
    }
  };
  return {
    inside: codes('sub/file'),
    absLink: codes('abs-link'),
    relLink: codes('rel-link'),
    throughDirLink: codes('dir-link/outside'),
    dotdot: codes('../outside'),
    absolute: codes(path.join(dir, 'outside')),
  };
}

describe('openBeneath', () => {
  it('opens paths inside the root and refuses every way out', () => {
    const r = refusals();
    expect(r.inside).toBe('opened');
    expect(r.absLink).toBe('ELOOP');
    expect(r.relLink).toBe('ELOOP');
    expect(r.throughDirLink).toBe('ELOOP');
    expect(r.dotdot).toBe('EXDEV');
    expect(r.absolute).toBe('EXDEV');
  });

  it('refuses the same things without openat2 (component-by-component fallback)', () => {
    sys.forceLegacyLookup(true);
    try {
      const r = refusals();
      expect(r.inside).toBe('opened');
      for (const code of [r.absLink, r.relLink, r.throughDirLink]) expect(['ELOOP', 'ENOTDIR']).toContain(code);
      expect(r.dotdot).toBe('EXDEV');
      expect(r.absolute).toBe('EXDEV');
    } finally {
      sys.forceLegacyLookup(false);
    }
  });

  it('does not cross a mount point, with or without openat2', () => {
    const mnt = path.join(dir, 'root/mnt');
    fs.mkdirSync(mnt);
    sh('mount', '-t', 'tmpfs', 'none', mnt);
    try {
      fs.writeFileSync(path.join(mnt, 'f'), 'on tmpfs');
      for (const legacy of [false, true]) {
        sys.forceLegacyLookup(legacy);
        expect(() => sys.openBeneath(rootFd, B('mnt/f'), O.RDONLY)).toThrow(/EXDEV/);
      }
    } finally {
      sys.forceLegacyLookup(false);
      sh('umount', mnt);
    }
  });

  it('resolves paths longer than PATH_MAX in slices', () => {
    const parts = Array.from({ length: 40 }, (_, i) => `${String(i).padStart(3, '0')}${'x'.repeat(150)}`);
    let fd = rootFd;
    // Create the tree with relative mkdirs: the full path is too long for one call.
    const made: number[] = [];
    for (const p of parts) {
      fs.mkdirSync(`/proc/self/fd/${fd}/${p}`);
      fd = sys.openBeneath(fd, B(p), O.RDONLY | O.DIRECTORY);
      made.push(fd);
    }
    fs.writeFileSync(`/proc/self/fd/${fd}/leaf`, 'deep');
    made.forEach((f) => sys.close(f));
    const rel = parts.join('/') + '/leaf';
    expect(rel.length).toBeGreaterThan(4096);
    const leaf = sys.openBeneath(rootFd, B(rel), O.RDONLY);
    expect(fs.readFileSync(leaf, 'utf8')).toBe('deep');
    sys.close(leaf);
    sh('rm', '-rf', path.join(dir, 'root', parts[0]!));
  });
});

describe('stat records', () => {
  it('decodes times before 1970 and past 2038, and 64-bit sizes, exactly', () => {
    const f = path.join(dir, 'root/sub/deeper/times');
    writeFile(f, { content: 'x' });
    fs.truncateSync(f, 2 ** 33 + 5); // sparse
    const dirFd = sys.openBeneath(rootFd, B('sub/deeper'), O.RDONLY | O.DIRECTORY);
    for (const [when, sec] of [['1960-01-01 00:00:00.25 UTC', -315619200], ['2100-01-01 00:00:00.5 UTC', 4102444800]] as const) {
      sh('touch', '-d', when, f);
      const e = sys.statAt(dirFd, B('times'));
      expect([e.mtimeSec, e.mtimeNsec, e.size]).toEqual([sec, when.includes('.25') ? 250000000 : 500000000, 2 ** 33 + 5]);
      expect(e.ctimeSec).toBe(Number(fs.statSync(f, { bigint: true }).ctimeNs / 1_000_000_000n));
    }
    sys.close(dirFd);
    fs.unlinkSync(f);
  });
});

describe('xattrs, links, renames, flags, locks', () => {
  it('reads every xattr namespace through a descriptor, O_PATH included', () => {
    const f = path.join(dir, 'root/attrs');
    writeFile(f, { xattrs: { 'user.b': 'two', 'user.a': 'one', 'trusted.t': 'tee' } });
    sh('setfacl', '-m', 'u:1234:r', f);
    sh('setcap', 'cap_net_raw+ep', f);
    for (const flags of [O.RDONLY, O.PATH]) {
      const fd = sys.openBeneath(rootFd, B('attrs'), flags);
      const names = sys.getXattrs(fd).map(([k]) => k.toString());
      sys.close(fd);
      expect(names).toEqual(['security.capability', 'system.posix_acl_access', 'trusted.t', 'user.a', 'user.b']);
    }
  });

  it('links an open file by descriptor and exchanges two names atomically', () => {
    writeFile(path.join(dir, 'root/x1'), { content: 'one' });
    writeFile(path.join(dir, 'root/x2'), { content: 'two' });
    const fd = sys.openBeneath(rootFd, B('x1'), O.RDONLY);
    sys.linkAt(fd, rootFd, B('x1-link'));
    expect(fs.statSync(path.join(dir, 'root/x1')).nlink).toBe(2);
    sys.renameAt(rootFd, B('x1-link'), rootFd, B('x2'), RENAME_EXCHANGE);
    expect(fs.readFileSync(path.join(dir, 'root/x2'), 'utf8')).toBe('one');
    expect(fs.readFileSync(path.join(dir, 'root/x1-link'), 'utf8')).toBe('two');
    sys.unlinkAt(rootFd, B('x1-link'));
    expect(fs.existsSync(path.join(dir, 'root/x1-link'))).toBe(false);
    expect(sys.statAt(rootFd, B('x2')).ino).toBe(sys.fstat(fd).ino);
    sys.close(fd);
  });

  it('closes descriptors later, on another thread, and drains them all, also past its queue (1,024: native/lookup.c CLOSE_QUEUE)', async () => {
    const d = path.join(dir, 'root/later');
    fs.mkdirSync(d);
    const fds: number[] = [];
    for (let i = 0; i < 1200; i++) {
      writeFile(path.join(d, `f${i}`), { content: 'x'.repeat(4096) });
      fds.push(sys.openBeneath(rootFd, B(`later/f${i}`), O.RDONLY));
      fs.unlinkSync(path.join(d, `f${i}`));
    }
    const heldDeleted = () => fdsUnder(d).length;
    expect(heldDeleted()).toBe(1200);
    for (const fd of fds) sys.closeLater(fd);
    await sys.closeLaterDrain();
    expect(heldDeleted()).toBe(0);
    await sys.closeLaterDrain(); // nothing queued: resolves at once
  });

  it('reads and sets inode flags, and takes an exclusive lock once', () => {
    const f = path.join(dir, 'root/flags');
    writeFile(f);
    sh('chattr', '+a', f);
    const fd = sys.openBeneath(rootFd, B('flags'), O.RDONLY);
    expect(sys.getFlags(fd) & 0x20).toBe(0x20);
    sys.setFlags(fd, sys.getFlags(fd) & ~0x20);
    expect(sh('lsattr', f)).not.toMatch(/^\S*a/);
    sys.close(fd);

    const a = fs.openSync(f, 'r');
    const b = fs.openSync(f, 'r');
    expect(sys.flock(a, LOCK_EX | LOCK_NB)).toBe(true);
    expect(sys.flock(b, LOCK_EX | LOCK_NB)).toBe(false);
    fs.closeSync(a);
    expect(sys.flock(b, LOCK_EX | LOCK_NB)).toBe(true);
    fs.closeSync(b);
  });
});
