// vunify split on real trees: private copies that keep every byte and
// attribute, the space check, excludes, and guests racing the copy.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { parseRule } from '../../src/pipeline/excludes.js';
import { split, type SplitOptions } from '../../src/commands/split.js';
import { O, sys } from '../../src/os/sys.js';
import type { FileError } from '../../src/core/errors.js';
import { killAtFirstUnlink } from '../helpers/killed-run.js';
import { buildSplitGuests, FILES } from '../helpers/split-tree.js';
import { inode, rmTree, runCli, runUnify, sh, snapshot, tempDir, testStateDir, writeFile } from '../helpers/tree.js';
import { recover } from '../../src/state/recovery.js';
import { closeRoots, openRoots } from '../../src/pipeline/roots.js';

let dir: string;
let guests: string[];
const G = (g: number, f = '') => path.join(guests[g]!, f);

const run = (roots: string[], opts: Partial<SplitOptions> = {}) =>
  split({ roots, dryRun: false, rules: [], noDefaultExcludes: true, stateDir: testStateDir(), ...opts });

const blocks = (f: string) => Number(sh('stat', '-c', '%b', f).trim()) * 512;

describe('vunify split', () => {
  beforeEach(async () => {
    ({ dir, guests } = await buildSplitGuests());
  });
  afterEach(() => {
    vi.restoreAllMocks();
    rmTree(dir);
  });

  it('gives a guest private copies with every byte and attribute, keeping its own hardlinks', async () => {
    for (const f of FILES) expect(inode(G(0, f))).toBe(inode(G(1, f)));
    const before = snapshot(dir, { dirTimes: false });
    const othersBefore = [snapshot(G(1), { dirTimes: false }), snapshot(G(2), { dirTimes: false })];
    const { summary } = await run([G(0)]);
    expect(summary).toMatchObject({ copiesMade: 6, pathsSplit: 7, errors: 0 });
    // Same content, mode, owner, mtime (ns), xattrs (capability, ACL) everywhere.
    expect(snapshot(dir, { dirTimes: false })).toEqual(before);
    for (const f of FILES) expect(inode(G(0, f))).not.toBe(inode(G(1, f)));
    expect(inode(G(0, 'usr/bin/perl'))).toBe(inode(G(0, 'usr/bin/perl5')));
    expect(fs.statSync(G(0, 'usr/bin/perl')).nlink).toBe(2);
    expect(sh('getcap', G(0, 'usr/bin/ping'))).toMatch(/cap_net_raw[=+]ep/);
    expect(sh('getfacl', '-c', G(0, 'usr/share/doc/acl'))).toMatch(/user:1234:rw-/);
    expect(blocks(G(0, 'usr/lib/sparse'))).toBeLessThanOrEqual(blocks(G(1, 'usr/lib/sparse')));
    // The other guests still share their inodes (one link fewer each), and see nothing new.
    for (const f of FILES) expect(inode(G(1, f))).toBe(inode(G(2, f)));
    expect(snapshot(G(1), { dirTimes: false })).toEqual(othersBefore[0]);
    expect(snapshot(G(2), { dirTimes: false })).toEqual(othersBefore[1]);
    expect(sh('find', G(0), '-name', '.vunify.*')).toBe('');
    // Nothing shared outside any more: a second split has nothing to do.
    expect((await run([G(0)])).summary.copiesPlanned).toBe(0);
  });

  it('on a filesystem without O_TMPFILE the copy is a named O_EXCL file, with the same result', async () => {
    const real = sys.openBeneath;
    vi.spyOn(sys, 'openBeneath').mockImplementation((dirFd, p, flags, mode) => {
      if ((flags & O.TMPFILE) === O.TMPFILE) throw Object.assign(new Error('EOPNOTSUPP'), { code: 'EOPNOTSUPP' });
      return real(dirFd, p, flags, mode);
    });
    const before = snapshot(dir, { dirTimes: false });
    const { summary } = await run([G(0)]);
    expect(summary).toMatchObject({ copiesMade: 6, pathsSplit: 7, errors: 0 });
    expect(snapshot(dir, { dirTimes: false })).toEqual(before);
    for (const f of FILES) expect(inode(G(0, f))).not.toBe(inode(G(1, f)));
    expect(sh('find', G(0), '-name', '.vunify.*')).toBe('');
  });

  it('--dry-run shows the bytes it would need, measured by stat, and changes nothing', async () => {
    const before = snapshot(dir, { inodes: true });
    const r = await run([G(0)], { dryRun: true });
    const need = FILES.filter((f) => f !== 'usr/bin/perl5').reduce((n, f) => n + blocks(G(0, f)), 0);
    expect(r.summary.bytesNeeded).toBe(need);
    expect(r.filesystems).toEqual([expect.objectContaining({ root: G(0), bytesNeeded: need, inodesNeeded: 6, enough: true })]);
    expect(r.summary.copiesMade).toBe(0);
    expect(snapshot(dir, { inodes: true })).toEqual(before);
  });

  it('refuses before copying anything when the filesystem lacks the space', async () => {
    vi.spyOn(sys, 'statvfs').mockReturnValue({ bytes: 4096, inodes: 1_000_000 });
    const copy = vi.spyOn(sys, 'copyData');
    const before = snapshot(dir, { inodes: true });
    await expect(run([G(0)])).rejects.toThrow(/not enough free space to split: needs .* has 4.00 KiB/);
    expect(copy).not.toHaveBeenCalled();
    expect(snapshot(dir, { inodes: true })).toEqual(before);
  });

  it('respects excludes: an excluded path keeps sharing', async () => {
    await run([G(0)], { rules: [parseRule('/usr/lib')] });
    expect(inode(G(0, 'usr/lib/sparse'))).toBe(inode(G(1, 'usr/lib/sparse')));
    expect(inode(G(0, 'usr/bin/sudo'))).not.toBe(inode(G(1, 'usr/bin/sudo')));
  });

  it('a guest writing the shared file while it is copied: that path is skipped, the write kept', async () => {
    const real = sys.copyData;
    vi.spyOn(sys, 'copyData').mockImplementation((src, dst, size) => {
      if (size === 70_000) fs.appendFileSync(G(1, 'usr/bin/sudo'), 'written by g2');
      real(src, dst, size);
    });
    const { errors } = await run([G(0)], { onError: () => {} });
    expect(errors.map((e) => [e.path, e.code])).toEqual([[G(0, 'usr/bin/sudo'), 'ECHANGED']]);
    expect(inode(G(0, 'usr/bin/sudo'))).toBe(inode(G(1, 'usr/bin/sudo')));
    expect(fs.readFileSync(G(0, 'usr/bin/sudo'), 'latin1').endsWith('written by g2')).toBe(true);
    expect(sh('find', G(0), '-name', '.vunify.*')).toBe('');
  });

  it('a guest replacing the file\'s name just before the swap: its new file stays, the copy goes', async () => {
    const real = sys.renameAt;
    let raced = false;
    vi.spyOn(sys, 'renameAt').mockImplementation((a, from, b, to, flags) => {
      if (!raced && to.toString() === 'sudo') {
        raced = true;
        fs.writeFileSync(G(0, 'usr/bin/new'), 'guest file');
        fs.renameSync(G(0, 'usr/bin/new'), G(0, 'usr/bin/sudo'));
      }
      real(a, from, b, to, flags);
    });
    const { errors } = await run([G(0)], { onError: () => {} });
    expect(errors.map((e) => [e.path, e.code])).toEqual([[G(0, 'usr/bin/sudo'), 'ECHANGED']]);
    expect(fs.readFileSync(G(0, 'usr/bin/sudo'), 'utf8')).toBe('guest file');
    expect(sh('find', G(0), '-name', '.vunify.*')).toBe('');
  });

  // A chmod, or a rewrite with the mtime put back, leaves no trace in size
  // or mtime: only the full comparison after the exchange (link.ts, settle())
  // sees that the copy no longer matches what the guest has.
  it.each([
    ['a chmod', (p: string) => fs.chmodSync(p, 0o700), (p: string) => expect(fs.statSync(p).mode & 0o777).toBe(0o700)],
    ['a same-size rewrite with the mtime put back', (p: string) => {
      const st = fs.statSync(p, { bigint: true });
      const bytes = fs.readFileSync(p);
      bytes[0] = bytes[0]! ^ 0xff;
      fs.writeFileSync(p, bytes);
      sh('touch', '-m', '-d', `@${st.mtimeNs / 1_000_000_000n}.${String(st.mtimeNs % 1_000_000_000n).padStart(9, '0')}`, p);
    }, (p: string, before: Buffer) => expect(fs.readFileSync(p).equals(before)).toBe(false)],
  ])('%s of the shared file just before the swap: the guest keeps it, the path is skipped', async (_what, act, check) => {
    const sudo = G(0, 'usr/bin/sudo');
    const before = fs.readFileSync(sudo);
    const real = sys.renameAt;
    let raced = false;
    vi.spyOn(sys, 'renameAt').mockImplementation((a, from, b, to, flags) => {
      if (!raced && to.toString() === 'sudo') {
        raced = true;
        act(sudo);
      }
      real(a, from, b, to, flags);
    });
    const { errors } = await run([G(0)], { onError: () => {} });
    expect(raced).toBe(true);
    expect(errors.map((e) => [e.path, e.code])).toEqual([[sudo, expect.stringMatching(/ECHANGED|EDIFFERENT/)]]);
    check(sudo, before);
    // Still the inode the other guest has: nothing was split away from under the change.
    expect(inode(sudo)).toBe(inode(G(1, 'usr/bin/sudo')));
    expect(sh('find', G(0), '-name', '.vunify.*')).toBe('');
  });

  it('the command: -n prints the need, exit 0; a real run exits 0 and splits', () => {
    const dry = runCli(['split', '-n', '--no-default-excludes', G(0)]);
    expect([dry.code, dry.stderr]).toEqual([0, '']);
    expect(dry.stdout).toMatch(/private copies needed: 6/);
    const r = runCli(['split', '-q', G(0)]);
    expect([r.code, r.stdout, r.stderr]).toEqual([0, '', '']);
    // Default excludes apply: /etc stays shared.
    expect(inode(G(0, 'usr/bin/sudo'))).not.toBe(inode(G(1, 'usr/bin/sudo')));
    expect(inode(G(0, 'etc/motd'))).toBe(inode(G(1, 'etc/motd')));
  });
});

// Two guests sharing one file, made by each test.
describe('vunify split: regressions from the safety review', () => {
  beforeEach(() => {
    dir = tempDir();
    guests = ['g1', 'g2'].map((g) => path.join(dir, g));
  });
  afterEach(() => {
    vi.restoreAllMocks();
    rmTree(dir);
  });
  const temps = (d: string) => sh('find', d, '-name', '.vunify.*').split('\n').filter(Boolean);

  // Recovery after a kill must not undo a guest's later edits (run-state.ts).
  it('recovery after a kill after the exchange does not revert a guest\'s later in-place edit of its private copy', async () => {
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
    const roots = openRoots(guests);
    try {
      recover(stateDir, roots, (e) => errors.push(e));
    } finally {
      closeRoots(roots);
    }
    expect(fs.readFileSync(G(0, 'etc/conf'), 'utf8'), `recovery reported ${JSON.stringify(errors)}`).toBe('shared v1\nguest edit\n');
  });

  // A private copy carries exactly the source's xattrs and inode flags.
  it('a directory with a default ACL: the copy of a file without ACL is still made', async () => {
    for (const g of guests) writeFile(path.join(g, 'srv/data/f'), { content: 'x'.repeat(1000), mtime: '1700000000' });
    expect((await runUnify(guests, { cache: false })).errors).toEqual([]);
    // Default ACL set after the file exists: the file itself has none.
    sh('setfacl', '-d', '-m', 'u:4242:rwx', G(0, 'srv/data'));
    expect(sh('getfacl', '-c', G(0, 'srv/data/f'))).not.toMatch(/4242/);
    const errs: FileError[] = [];
    const r = await run([G(0)], { onError: (e) => errs.push(e) });
    expect(r.summary.errors, JSON.stringify(errs)).toBe(0);
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
