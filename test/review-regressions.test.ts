// Regressions from a safety review, each first shown failing on real trees:
// recovery after a kill must not undo a guest's later edits (state.ts), a
// private copy carries exactly the source's xattrs and inode flags
// (split.ts), a cached hash the bytes contradict is forgotten (cache.ts via
// the linker), and an undo that cannot finish names what it kept (link.ts).
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { split, type SplitOptions } from '../src/commands/split.js';
import { sys } from '../src/os/sys.js';
import type { FileError } from '../src/core/errors.js';
import { inode, rmTree, runUnify, sh, tempDir, testStateDir, writeFile } from './helpers/tree.js';
import { recover as recoverIn } from '../src/state/recovery.js';
import { closeRoots, openRoots } from '../src/pipeline/roots.js';

/** Recovery as the next run over these guests does it. */
function recover(stateDir: string, onError: (e: FileError) => void): void {
  const roots = openRoots(guests);
  try {
    recoverIn(stateDir, roots, onError);
  } finally {
    closeRoots(roots);
  }
}

let dir: string;
let guests: string[];
const G = (g: number, f = '') => path.join(guests[g]!, f);
const run = (roots: string[], opts: Partial<SplitOptions> = {}) =>
  split({ roots, dryRun: false, rules: [], noDefaultExcludes: true, stateDir: testStateDir(), ...opts });
const temps = (d: string) => sh('find', d, '-name', '.vunify.*').split('\n').filter(Boolean);

beforeEach(() => {
  dir = tempDir();
  guests = ['g1', 'g2'].map((g) => path.join(dir, g));
});
afterEach(() => {
  vi.restoreAllMocks();
  rmTree(dir);
});

/** Make `unlinkAt` of the first temporary name "kill" the run: snapshot the journals as they are at that moment. */
function killAtFirstUnlink(stateDir: string) {
  const saved: [string, Buffer][] = [];
  const real = sys.unlinkAt;
  let killed = false;
  vi.spyOn(sys, 'unlinkAt').mockImplementation((dirFd, name, flags) => {
    if (!killed && name.toString().startsWith('.vunify.')) {
      killed = true;
      for (const n of fs.readdirSync(stateDir)) if (n.startsWith('journal.')) saved.push([n, fs.readFileSync(path.join(stateDir, n))]);
      throw Object.assign(new Error('killed'), { code: 'EKILLED' });
    }
    return real(dirFd, name, flags);
  });
  return () => {
    vi.restoreAllMocks();
    for (const [n, b] of saved) fs.writeFileSync(path.join(stateDir, n.replace(/^journal\.\d+\./, 'journal.1.')), b);
    return killed;
  };
}

describe('split: recovery after a kill after the exchange', () => {
  it('does not revert a guest\'s later in-place edit of its private copy', async () => {
    for (const g of guests) writeFile(path.join(g, 'etc/conf'), { content: 'shared v1\n', mtime: '1700000000' });
    expect((await runUnify(guests, { cache: false })).errors).toEqual([]);
    expect(inode(G(0, 'etc/conf'))).toBe(inode(G(1, 'etc/conf')));
    const stateDir = testStateDir();
    const restore = killAtFirstUnlink(stateDir);
    await run([G(0)]);
    expect(restore()).toBe(true);
    // State as a kill left it: the private copy at the name, the shared inode at .vunify.*
    expect(inode(G(0, 'etc/conf'))).not.toBe(inode(G(1, 'etc/conf')));
    expect(temps(G(0))).toHaveLength(1);
    // The guest, now owning a private file, edits it in place (echo >> / an editor writing in place).
    fs.appendFileSync(G(0, 'etc/conf'), 'guest edit\n');
    // The next linking run (nightly) recovers the killed run's journal first.
    const errors: FileError[] = [];
    recover(stateDir, (e) => errors.push(e));
    console.log('recover errors', errors);
    expect(fs.readFileSync(G(0, 'etc/conf'), 'utf8')).toBe('shared v1\nguest edit\n');
  });

  it('linker: the same kill, the guest edits its path in place before the next run', async () => {
    for (const g of guests) writeFile(path.join(g, 'etc/conf'), { content: 'same\n', mtime: '1700000000' });
    const stateDir = testStateDir();
    const restore = killAtFirstUnlink(stateDir);
    await runUnify(guests, { cache: false });
    expect(restore()).toBe(true);
    expect(inode(G(0, 'etc/conf'))).toBe(inode(G(1, 'etc/conf')));
    fs.appendFileSync(G(1, 'etc/conf'), 'guest edit\n');
    recover(stateDir, () => {});
    console.log('g1:', JSON.stringify(fs.readFileSync(G(0, 'etc/conf'), 'utf8')), 'g2:', JSON.stringify(fs.readFileSync(G(1, 'etc/conf'), 'utf8')));
    expect(fs.readFileSync(G(1, 'etc/conf'), 'utf8')).toBe('same\nguest edit\n');
  });
});

describe('split: attributes of the copy', () => {
  it('a directory with a default ACL: the copy of a file without ACL is still made', async () => {
    for (const g of guests) writeFile(path.join(g, 'srv/data/f'), { content: 'x'.repeat(1000), mtime: '1700000000' });
    expect((await runUnify(guests, { cache: false })).errors).toEqual([]);
    // Default ACL set after the file exists: the file itself has none.
    sh('setfacl', '-d', '-m', 'u:4242:rwx', G(0, 'srv/data'));
    expect(sh('getfacl', '-c', G(0, 'srv/data/f'))).not.toMatch(/4242/);
    const errs: FileError[] = [];
    const r = await run([G(0)], { onError: (e) => errs.push(e) });
    console.log(errs);
    expect(r.summary.errors).toBe(0);
    expect(inode(G(0, 'srv/data/f'))).not.toBe(inode(G(1, 'srv/data/f')));
  });

  it('inode flags (chattr +d nodump, +A noatime) survive the copy', async () => {
    for (const g of guests) writeFile(path.join(g, 'var/f'), { content: 'y'.repeat(1000), mtime: '1700000000' });
    expect((await runUnify(guests, { cache: false })).errors).toEqual([]);
    sh('chattr', '+dA', G(0, 'var/f'));
    const before = sh('lsattr', G(0, 'var/f')).split(' ')[0];
    const r = await run([G(0)]);
    expect(r.summary.pathsSplit).toBe(1);
    expect(sh('lsattr', G(0, 'var/f')).split(' ')[0]).toBe(before);
  });
});

describe('cache: content changed with no stat change', () => {
  it('a write through a shared mapping keeps size, mtime and ctime: the linker refuses, and the cache forgets both', async () => {
    const cache = path.join(dir, 'hashes.cache');
    for (const g of guests) writeFile(path.join(g, 'var/db'), { content: Buffer.alloc(4096, 0x61), mtime: '1700000000' });
    // The guest's database maps its file and writes a page (one write fault: ctime now).
    const { spawn } = await import('node:child_process');
    const py = spawn('python3', ['-u', '-c', `
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR); m = mmap.mmap(fd, 4096)
m[0:1] = b'a'; print('ready', flush=True)
sys.stdin.readline(); m[100:101] = b'Z'; print('wrote', flush=True)
sys.stdin.readline()`, G(1, 'var/db')]);
    const lines: string[] = [];
    py.stdout.on('data', (b) => lines.push(...b.toString().split('\n').filter(Boolean)));
    const waitFor = async (s: string) => { while (!lines.includes(s)) await new Promise((r) => setTimeout(r, 20)); };
    try {
      await waitFor('ready');
      fs.utimesSync(G(1, 'var/db'), 1700000000, 1700000000); // mtime back as in the other guest (ctime: now)
      await new Promise((r) => setTimeout(r, 1500)); // older than RACY_SECONDS
      const first = await runUnify(guests, { dryRun: true, cache });
      expect(first.report.summary.linksPlanned).toBe(1);
      const st = fs.statSync(G(1, 'var/db'), { bigint: true });
      py.stdin.write('\n');
      await waitFor('wrote');
      const st2 = fs.statSync(G(1, 'var/db'), { bigint: true });
      expect([st2.ctimeNs, st2.mtimeNs, st2.size]).toEqual([st.ctimeNs, st.mtimeNs, st.size]);
      expect(fs.readFileSync(G(0, 'var/db')).equals(fs.readFileSync(G(1, 'var/db')))).toBe(false);
      // A dry run cannot tell (it trusts the cache, as the README says); a
      // linking run compares bytes, refuses, and the cache forgets both inodes.
      expect((await runUnify(guests, { dryRun: true, cache })).report.summary.linksPlanned).toBe(1);
      const linking = await runUnify(guests, { cache });
      expect(linking.errors.map((e) => e.code)).toEqual(['EDIFFERENT']);
      expect(fs.readFileSync(G(1, 'var/db'))[100]).toBe(0x5a); // the guest's byte is still there
      expect((await runUnify(guests, { dryRun: true, cache })).report.summary.linksPlanned).toBe(0);
    } finally {
      py.stdin.end('\n');
    }
  });
});

describe('undo when the guest removed the name after the exchange', () => {
  it('the old inode is kept at .vunify.*, and the message says where', async () => {
    for (const g of guests) writeFile(path.join(g, 'f'), { content: 'same\n', mtime: '1700000000' });
    const real = sys.renameAt;
    let done = false;
    vi.spyOn(sys, 'renameAt').mockImplementation((...a) => {
      real(...a);
      if (!done) {
        done = true;
        const t = temps(G(1))[0]!;
        fs.appendFileSync(t, 'guest wrote through an fd it held\n'); // lands in the old inode, now at the temporary name
        fs.unlinkSync(G(1, 'f')); // and the guest deletes its file
      }
    });
    const { errors } = await runUnify(guests, { cache: false });
    console.log(errors, temps(G(1)));
    expect(temps(G(1))).toHaveLength(1);
    expect(errors[0]!.message).toContain('.vunify.');
  });
});
