// Read leases on a linker's pair (src/change/lease.ts, native/lease.c), on
// real ext4 files, with real guest processes (python3) opening, truncating
// and chmodding them; the leases are read back from /proc/locks, the kernel's
// own list, not from the code under test. And the linker with them: each
// byte of a linked pair read once, twice when leases are refused.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LEASE_MIN_SIZE, PairLease } from '../../src/change/lease.js';
import { sys } from '../../src/os/sys.js';
import { exited } from '../helpers/hostile.js';
import { rmTree, runUnify, tempDir, writeFile } from '../helpers/tree.js';

const SIZE = 64 << 10;
let dir: string;
let fds: number[] = [];
const children: ChildProcess[] = [];
const F = (n: string) => path.join(dir, n);

beforeEach(() => {
  dir = tempDir();
  for (const n of ['a', 'b', 'small1', 'small2']) fs.writeFileSync(F(n), Buffer.alloc(n.startsWith('small') ? LEASE_MIN_SIZE - 1 : SIZE, n.startsWith('small') ? 's' : 'x'));
});
// The linker's addon batches back on, the fault hook cleared, after tests that turned to the JS path.
afterEach(() => {
  sys.nativeLinker = true;
  sys.setLinkFault();
});

afterEach(async () => {
  vi.restoreAllMocks();
  for (const fd of fds.splice(0)) fs.closeSync(fd);
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
  rmTree(dir);
});

const openRO = (n: string) => {
  const fd = fs.openSync(F(n), 'r');
  fds.push(fd);
  return fd;
};

/** Read leases on `file`'s inode in /proc/locks: the holders' pids. */
function leasesOn(file: string): number[] {
  const ino = fs.statSync(file).ino;
  return fs
    .readFileSync('/proc/locks', 'utf8')
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f[1] === 'LEASE' && f[3] === 'READ' && Number(f[5]?.split(':')[2]) === ino)
    .map((f) => Number(f[4]));
}

/** A guest process running `code` (python3, `path` set); resolves once it printed "ready". */
async function guest(code: string, file: string): Promise<{ child: ChildProcess; out: () => string }> {
  const child = spawn('python3', ['-c', `import os, sys, time\npath = sys.argv[1]\n${code}`, file], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', () => out.includes('ready') && resolve());
    child.once('exit', () => reject(new Error(`guest exited: ${out}`)));
  });
  return { child, out: () => out };
}

const until = async (cond: () => boolean) => {
  for (let i = 0; i < 5000 && !cond(); i++) await new Promise((r) => setTimeout(r, 2));
  return cond();
};

describe('PairLease', () => {
  it('holds a read lease on both inodes, as /proc/locks shows, until released', () => {
    const lease = PairLease.take(openRO('a'), openRO('b'), SIZE)!;
    expect(lease).toBeDefined();
    expect(leasesOn(F('a'))).toEqual([process.pid]);
    expect(leasesOn(F('b'))).toEqual([process.pid]);
    expect(lease.broken()).toBeUndefined();
    lease.release();
    expect(leasesOn(F('a'))).toEqual([]);
    expect(leasesOn(F('b'))).toEqual([]);
  });

  it('takes none below LEASE_MIN_SIZE, nor when the seam refuses one', () => {
    const pair = vi.spyOn(sys, 'leasePair');
    expect(PairLease.take(openRO('small1'), openRO('small2'), LEASE_MIN_SIZE - 1)).toBeUndefined();
    expect(pair).not.toHaveBeenCalled();
    pair.mockReturnValue(11);
    expect(PairLease.take(openRO('a'), openRO('b'), SIZE)).toBeUndefined();
    expect(leasesOn(F('a'))).toEqual([]);
  });

  it('is refused (EOPNOTSUPP) on overlayfs, whose layers can be written behind its back', () => {
    const o = F('ovl');
    for (const d of ['lower', 'upper', 'work', 'merged']) fs.mkdirSync(path.join(o, d), { recursive: true });
    for (const n of ['a', 'b']) fs.writeFileSync(path.join(o, 'lower', n), Buffer.alloc(SIZE, 'o'));
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${o}/lower,upperdir=${o}/upper,workdir=${o}/work`, `${o}/merged`]);
    try {
      const a = fs.openSync(`${o}/merged/a`, 'r');
      const b = fs.openSync(`${o}/merged/b`, 'r');
      try {
        expect(sys.leasePair(a, b)).toBe(95);
        expect(PairLease.take(a, b, SIZE)).toBeUndefined();
      } finally {
        fs.closeSync(a);
        fs.closeSync(b);
      }
    } finally {
      execFileSync('umount', [`${o}/merged`]);
    }
  });

  it.each([
    ['a descriptor open for writing', `fd = os.open(path, os.O_RDWR)\nprint('ready', flush=True)\ntime.sleep(60)`],
    ['a writable shared mapping (its descriptor closed)', `import mmap\nfd = os.open(path, os.O_RDWR)\nm = mmap.mmap(fd, 0)\nos.close(fd)\nprint('ready', flush=True)\ntime.sleep(60)`],
  ])('is refused (EAGAIN) while a guest holds %s, and leaves neither inode leased', async (_what, code) => {
    await guest(code, F('b'));
    expect(sys.leasePair(openRO('a'), openRO('b'))).toBe(11);
    expect(leasesOn(F('a'))).toEqual([]);
    expect(leasesOn(F('b'))).toEqual([]);
  });

  it('is broken by a guest opening the file for writing, which waits until it is released: nothing is written before', async () => {
    const lease = PairLease.take(openRO('a'), openRO('b'), SIZE)!;
    const g = await guest(`print('ready', flush=True)\nfd = os.open(path, os.O_WRONLY)\nos.pwrite(fd, b'GUEST', 0)\nprint('wrote', flush=True)`, F('b'));
    expect(await until(() => lease.broken() !== undefined)).toBe(true);
    expect(lease.broken()).toEqual({ canonical: false, duplicate: true });
    expect(lease.unwritten()).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    expect(g.out()).not.toContain('wrote');
    expect(fs.readFileSync(F('b')).subarray(0, 5).toString()).toBe('xxxxx');
    lease.release();
    expect(lease.unwritten()).toBe(false);
    expect((await exited(g.child)).code).toBe(0);
    expect(fs.readFileSync(F('b')).subarray(0, 5).toString()).toBe('GUEST');
  });

  it('is broken by a truncate, and by an O_NONBLOCK open that fails with EWOULDBLOCK; this process is not killed by the break', async () => {
    const lease = PairLease.take(openRO('a'), openRO('b'), SIZE)!;
    const nb = await guest(`print('ready', flush=True)\ntry:\n  os.open(path, os.O_WRONLY | os.O_NONBLOCK)\n  print('opened')\nexcept BlockingIOError:\n  print('EWOULDBLOCK')`, F('a'));
    expect((await exited(nb.child)).code).toBe(0);
    expect(nb.out()).toContain('EWOULDBLOCK');
    expect(lease.broken()).toEqual({ canonical: true, duplicate: false });
    lease.release();
    const lease2 = PairLease.take(openRO('a'), openRO('b'), SIZE)!;
    expect(lease2).toBeDefined();
    const tr = await guest(`print('ready', flush=True)\nos.truncate(path, 10)`, F('b'));
    expect(await until(() => lease2.broken()?.duplicate === true)).toBe(true);
    expect(fs.statSync(F('b')).size).toBe(SIZE);
    lease2.release();
    expect((await exited(tr.child)).code).toBe(0);
    expect(fs.statSync(F('b')).size).toBe(10);
  });

  it('is not broken by chmod, chown, utime or setxattr (the linker compares metadata itself)', async () => {
    const lease = PairLease.take(openRO('a'), openRO('b'), SIZE)!;
    const g = await guest(`print('ready', flush=True)\nos.chmod(path, 0o600)\nos.chown(path, 1, 1)\nos.utime(path, (1, 1))\nos.setxattr(path, 'user.x', b'1')`, F('b'));
    expect((await exited(g.child)).code).toBe(0);
    expect(lease.broken()).toBeUndefined();
    lease.release();
  });
});

describe('the linker with leases', () => {
  /** Bytes the linker read through sys.readSync (its comparisons; hashing reads natively). */
  async function bytesCompared(): Promise<number> {
    for (const g of ['g1', 'g2']) writeFile(path.join(dir, g, 'usr/f'), { content: Buffer.alloc(SIZE, 'same') });
    let read = 0;
    const real = sys.readSync;
    vi.spyOn(sys, 'readSync').mockImplementation((fd, buf, len, pos) => {
      const n = real(fd, buf, len, pos);
      read += n;
      return n;
    });
    const { errors } = await runUnify([path.join(dir, 'g1'), path.join(dir, 'g2')]);
    expect(errors).toEqual([]);
    expect(fs.statSync(path.join(dir, 'g1/usr/f')).ino).toBe(fs.statSync(path.join(dir, 'g2/usr/f')).ino);
    return read;
  }

  it('reads each byte of a linked pair once', async () => {
    sys.nativeLinker = false; // the JS path: counts its comparison's reads
    expect(await bytesCompared()).toBe(2 * SIZE);
  });

  it('reads them twice when the pair cannot be leased', async () => {
    sys.nativeLinker = false; // the JS path: its seam refuses the leases
    vi.spyOn(sys, 'leasePair').mockReturnValue(22);
    expect(await bytesCompared()).toBe(4 * SIZE);
  });

  // F1 with leases: a chmod does not break them, so a chmod of the old inode
  // (through its temporary name) while the metadata is compared after the
  // exchange shows only in its ctime, checked after that comparison.
  it('keeps the old inode when it is chmodded through its temporary name during the check after the exchange', async () => {
    sys.nativeLinker = false; // the JS path: the guest acts at its seam
    for (const g of ['g1', 'g2']) writeFile(path.join(dir, g, 'usr/f'), { content: Buffer.alloc(SIZE, 'same') });
    const w = path.join(dir, 'g2/usr/f');
    const renameAt = sys.renameAt;
    const getXattrs = sys.getXattrs;
    let tmp: string | undefined;
    let acted = false;
    vi.spyOn(sys, 'renameAt').mockImplementation((...a) => {
      renameAt(...a);
      if (a[4] === 2 && !tmp) tmp = path.join(path.dirname(w), a[1].toString());
    });
    vi.spyOn(sys, 'getXattrs').mockImplementation((fd) => {
      if (tmp && !acted) {
        acted = true;
        fs.chmodSync(tmp, 0o600);
      }
      return getXattrs(fd);
    });
    const read = vi.spyOn(sys, 'readSync');
    const { errors } = await runUnify([path.join(dir, 'g1'), path.join(dir, 'g2')]);
    expect(acted).toBe(true);
    expect(errors.map((e) => e.code)).toEqual(['ECHANGED']);
    expect(fs.statSync(w).mode & 0o777).toBe(0o600);
    expect(fs.statSync(w).ino).not.toBe(fs.statSync(path.join(dir, 'g1/usr/f')).ino);
    expect(fs.readFileSync(w).equals(Buffer.alloc(SIZE, 'same'))).toBe(true);
    expect(fs.readdirSync(path.dirname(w))).toEqual(['f']);
    // The leases held: the bytes were read once, before the exchange.
    expect(read.mock.calls.reduce((n, c) => n + (c[2] as number), 0)).toBe(2 * SIZE);
  });

  it('the addon reads each byte of a linked pair once: the process read (/proc/self/io rchar) the pair twice, to hash it and to compare it', async () => {
    const rchar = () => Number(/^rchar: (\d+)$/m.exec(fs.readFileSync('/proc/self/io', 'utf8'))![1]);
    for (const g of ['g1', 'g2']) writeFile(path.join(dir, g, 'usr/f'), { content: Buffer.alloc(SIZE, 'same') });
    const before = rchar();
    const { errors } = await runUnify([path.join(dir, 'g1'), path.join(dir, 'g2')], { cache: false });
    const read = rchar() - before;
    expect(errors).toEqual([]);
    expect(fs.statSync(path.join(dir, 'g1/usr/f')).ino).toBe(fs.statSync(path.join(dir, 'g2/usr/f')).ino);
    // Hashing reads 2 x SIZE, the comparison 2 x SIZE; a second comparison would make it 6 x SIZE.
    expect(read).toBeGreaterThanOrEqual(4 * SIZE);
    expect(read).toBeLessThan(5 * SIZE);
    expect(leasesOn(path.join(dir, 'g1/usr/f'))).toEqual([]);
    expect(leasesOn(path.join(dir, 'g2/usr/f'))).toEqual([]);
  });

  it('releases both leases once the swap is settled', async () => {
    sys.nativeLinker = false; // the JS path: watches its seam
    const release = vi.spyOn(sys, 'leaseRelease');
    await bytesCompared();
    expect(release).toHaveBeenCalled();
    expect(leasesOn(path.join(dir, 'g1/usr/f'))).toEqual([]);
  });
});
