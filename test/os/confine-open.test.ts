// src/os/confine.ts openRegular()/openInode() (since 4bf28d4 one addon call,
// native/link.c OpenChecked) against the five JavaScript calls they were
// before (kept below as `oldOpen`, from 4bf28d4^): for each name (a regular
// file as scanned, one changed in each way the checks look at, a FIFO, a
// device node, a symlink, a directory, a missing name, a name escaping
// the directory), the same outcome: the same descriptor flags and stat, or
// the same error (code, errno, syscall, message); no descriptor left open
// either way; a FIFO never blocks and a device is never opened.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codedError, errorCode } from '../../src/core/errors.js';
import { FileType, sameFile, sameInode, type InodeId, type Stat } from '../../src/core/stat.js';
import { openInode, openRegular } from '../../src/os/confine.js';
import { O, sys } from '../../src/os/sys.js';
import { rmTree, tempDir } from '../helpers/tree.js';

let top: string, dirFd: number;
beforeAll(() => {
  top = tempDir('vunify-confine-open-');
  dirFd = sys.open(top, O.RDONLY | O.DIRECTORY | O.CLOEXEC);
  // The addon keeps one descriptor of /proc/self/fd for its reopens (hash.c), opened at its first: not a leak.
  sys.close(openRegular(dirFd, Buffer.from('warm'), file('warm')).fd);
});
afterAll(() => {
  sys.close(dirFd);
  rmTree(top);
});

// ---- 4bf28d4^:src/os/confine.ts openChecked(), verbatim but for names ----
let noatime = true;
function oldOpenChecked(dirFd: number, name: Buffer, ok: (st: Stat) => boolean, why: string) {
  const pathFd = sys.openBeneath(dirFd, name, O.PATH);
  try {
    const st = sys.fstat(pathFd);
    if (st.type !== FileType.Regular || !ok(st)) throw codedError('ECHANGED', why);
    return { fd: oldReopen(pathFd), stat: st };
  } finally {
    sys.close(pathFd);
  }
}
function oldReopen(pathFd: number): number {
  const proc = `/proc/self/fd/${pathFd}`;
  const flags = O.RDONLY | O.NONBLOCK | O.CLOEXEC;
  if (noatime) {
    try {
      return sys.open(proc, flags | O.NOATIME);
    } catch (er) {
      if (errorCode(er) !== 'EPERM') throw er;
      noatime = false;
    }
  }
  return sys.open(proc, flags);
}
const oldRegular = (dirFd: number, name: Buffer, expect: Stat, opts = { ctime: true, nlink: false }) =>
  oldOpenChecked(dirFd, name, (st) => sameFile(st, expect, opts), 'file changed since it was scanned');
const oldInode = (dirFd: number, name: Buffer, id: InodeId) =>
  oldOpenChecked(dirFd, name, (st) => sameInode(st, id), 'name no longer holds the inode vunify put there');

const openFds = () => fs.readdirSync('/proc/self/fd').length;
/** What one open came to, descriptor closed: its flags (fdinfo) and stat, or the error's shape. */
function outcome(open: () => { fd: number; stat: Stat }) {
  const before = openFds();
  let r: unknown;
  try {
    const { fd, stat } = open();
    const flags = parseInt(/flags:\s+(\d+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!, 8);
    const target = fs.readlinkSync(`/proc/self/fd/${fd}`);
    sys.close(fd);
    r = { flags, target, stat };
  } catch (er) {
    const e = er as Error & { code?: string; errno?: number; syscall?: string };
    r = { error: { name: e.name, code: e.code, errno: e.errno, syscall: e.syscall, message: e.message } };
  }
  expect(openFds(), 'a descriptor left open').toBe(before);
  return r;
}

const MTIME = 1_700_000_000;
function file(name: string, content = 'scanned'): Stat {
  const p = path.join(top, name);
  fs.writeFileSync(p, content);
  fs.utimesSync(p, MTIME, MTIME);
  const fd = sys.open(p, O.RDONLY | O.CLOEXEC);
  const st = sys.fstat(fd);
  sys.close(fd);
  return st;
}

describe('openRegular/openInode (native since 4bf28d4) as the JavaScript they replaced', () => {
  it('the same outcome for every kind of name', () => {
    const scanned = file('regular');
    const cases: [string, Buffer, Stat, { ctime: boolean; nlink: boolean } | undefined][] = [];
    const add = (label: string, name: string, st: Stat, opts?: { ctime: boolean; nlink: boolean }) => cases.push([label, Buffer.from(name), st, opts]);
    add('as scanned', 'regular', scanned);
    add('as scanned, nlink asked', 'regular', scanned, { ctime: true, nlink: true });
    // changed since the scan, one field at a time
    const m = file('mtime');
    fs.utimesSync(path.join(top, 'mtime'), MTIME, MTIME + 1);
    add('mtime changed', 'mtime', m);
    const c = file('ctime');
    fs.chmodSync(path.join(top, 'ctime'), fs.statSync(path.join(top, 'ctime')).mode & 0o7777); // same mode, a later ctime
    execFileSync('sleep', ['0.01']);
    fs.chmodSync(path.join(top, 'ctime'), 0o600);
    fs.chmodSync(path.join(top, 'ctime'), c.mode & 0o7777);
    add('ctime changed, ctime asked', 'ctime', c);
    add('ctime changed, ctime not asked', 'ctime', c, { ctime: false, nlink: false });
    const n = file('nlink');
    fs.linkSync(path.join(top, 'nlink'), path.join(top, 'nlink2'));
    add('nlink changed, nlink asked', 'nlink', n, { ctime: false, nlink: true });
    add('nlink changed, nlink not asked', 'nlink', n, { ctime: false, nlink: false });
    const s = file('size');
    fs.appendFileSync(path.join(top, 'size'), 'more');
    fs.utimesSync(path.join(top, 'size'), MTIME, MTIME);
    add('size changed', 'size', s, { ctime: false, nlink: false });
    const r = file('replaced');
    file('replacement');
    fs.renameSync(path.join(top, 'replacement'), path.join(top, 'replaced'));
    add('another inode at the name', 'replaced', r, { ctime: false, nlink: false });
    // not regular files: never opened for reading (a FIFO would block, a device's open routine would run)
    execFileSync('mkfifo', [path.join(top, 'fifo')]);
    add('a FIFO', 'fifo', { ...scanned, ...pick(path.join(top, 'fifo')) });
    execFileSync('mknod', [path.join(top, 'null'), 'c', '1', '3']);
    add('a device node', 'null', { ...scanned, ...pick(path.join(top, 'null')) });
    fs.mkdirSync(path.join(top, 'dir'));
    add('a directory', 'dir', { ...scanned, ...pick(path.join(top, 'dir')) });
    fs.symlinkSync('regular', path.join(top, 'symlink'));
    add('a symlink to the file', 'symlink', scanned);
    fs.mkdirSync(path.join(top, 'sub'));
    fs.symlinkSync('..', path.join(top, 'sub', 'up'));
    add('through a symlinked directory', 'sub/up/regular', scanned);
    add('a missing name', 'missing', scanned);
    add('.. out of the directory', '../x', scanned);
    add('an absolute name', '/etc/passwd', scanned);
    add('a component that is a file', 'regular/x', scanned);

    for (const [label, name, st, opts] of cases) {
      const now = outcome(() => (opts ? openRegular(dirFd, name, st, opts) : openRegular(dirFd, name, st)));
      const then = outcome(() => (opts ? oldRegular(dirFd, name, st, opts) : oldRegular(dirFd, name, st)));
      expect({ label, now }).toEqual({ label, now: then });
      // openInode: the inode the name held at the scan
      const nowI = outcome(() => openInode(dirFd, name, { dev: st.dev, ino: st.ino }));
      const thenI = outcome(() => oldInode(dirFd, name, { dev: st.dev, ino: st.ino }));
      expect({ label, inode: nowI }).toEqual({ label, inode: thenI });
    }
    // Not vacuous: some opened, some refused as changed, some failed in a system call.
    const kinds = cases.map(([, name, st, opts]) => Object.keys(outcome(() => (opts ? openRegular(dirFd, name, st, opts) : openRegular(dirFd, name, st))) as object)[0]);
    expect(new Set(kinds)).toEqual(new Set(['flags', 'error']));
  });

  it('a descriptor that names no directory, and a name with a NUL byte: the same errors', () => {
    const st = file('plain');
    const bad = sys.open('/dev/null', O.RDONLY | O.CLOEXEC);
    try {
      for (const [label, fd, name] of [
        ['not a directory', bad, Buffer.from('plain')],
        ['closed descriptor', 99_999, Buffer.from('plain')],
        ['NUL in the name', dirFd, Buffer.from('pl\0ain')],
      ] as const) {
        const now = outcome(() => openRegular(fd, name, st));
        const then = outcome(() => oldRegular(fd, name, st));
        expect({ label, now }).toEqual({ label, now: then });
      }
    } finally {
      sys.close(bad);
    }
  });
});

/** The fields of a non-regular file's stat that a scan would have recorded. */
function pick(p: string): Partial<Stat> {
  const fd = sys.openBeneath(dirFd, Buffer.from(path.relative(top, p)), O.PATH);
  try {
    const st = sys.fstat(fd);
    return { type: st.type, dev: st.dev, ino: st.ino, mode: st.mode, size: st.size, mtimeSec: st.mtimeSec, mtimeNsec: st.mtimeNsec, ctimeSec: st.ctimeSec, ctimeNsec: st.ctimeNsec, nlink: st.nlink, uid: st.uid, gid: st.gid };
  } finally {
    sys.close(fd);
  }
}
