// Bad input, each on a real tree: a clear message naming the path and
// reason, the right exit code, and nothing lost.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { inode, rmTree, runCli, sh, snapshot, tempDir, testStateDir, writeFile } from '../helpers/tree.js';

let dir: string;
beforeEach(() => {
  dir = tempDir();
});
afterEach(() => rmTree(dir));

const G = (...p: string[]) => path.join(dir, ...p);
const distinct = (paths: string[]) => new Set(paths.map((p) => inode(p))).size;

describe('bad input', () => {
  it('roots on two filesystems: each is unified on its own, never across', () => {
    fs.mkdirSync(G('tmpfs'));
    sh('mount', '-t', 'tmpfs', 'none', G('tmpfs'));
    try {
      for (const g of ['ext4/a', 'ext4/b', 'tmpfs/c', 'tmpfs/d']) writeFile(G(g, 'lib.so'), { content: 'same everywhere' });
      const r = runCli(['--json', G('ext4/a'), G('tmpfs/c'), G('ext4/b'), G('tmpfs/d')]);
      expect([r.code, r.stderr]).toEqual([0, '']);
      expect(JSON.parse(r.stdout).summary).toMatchObject({ linksMade: 2, errors: 0 });
      expect(inode(G('ext4/a/lib.so'))).toBe(inode(G('ext4/b/lib.so')));
      expect(inode(G('tmpfs/c/lib.so'))).toBe(inode(G('tmpfs/d/lib.so')));
      expect(fs.statSync(G('ext4/a/lib.so')).dev).not.toBe(fs.statSync(G('tmpfs/c/lib.so')).dev);
    } finally {
      sh('umount', G('tmpfs'));
    }
  });

  it('unreadable files and directories are reported and skipped (run without DAC override)', () => {
    for (const g of ['a', 'b']) {
      writeFile(G(g, 'ok'), { content: 'readable' });
      writeFile(G(g, 'secret'), { content: 'hidden', mode: 0o000 });
      writeFile(G(g, 'locked/inside'), { content: 'inside' });
      fs.chmodSync(G(g, 'locked'), 0o000);
    }
    const before = snapshot(dir, { dirTimes: false });
    const bin = path.resolve('dist/bin.js');
    const r = spawnSync('capsh', ['--drop=cap_dac_override,cap_dac_read_search', '--', '-c',
      `exec "${process.execPath}" "${bin}" --state-dir "${testStateDir()}" --no-default-excludes "${G('a')}" "${G('b')}"`], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    const lines = r.stderr.trim().split('\n').sort();
    expect(lines).toEqual([
      `vunify: ${G('a', 'locked')}: permission denied (EACCES, openat2)`,
      `vunify: ${G('a', 'secret')}: permission denied (EACCES, open)`,
      `vunify: ${G('b', 'locked')}: permission denied (EACCES, openat2)`,
      `vunify: ${G('b', 'secret')}: permission denied (EACCES, open)`,
    ]);
    expect(inode(G('a/ok'))).toBe(inode(G('b/ok')));
    expect(inode(G('a/secret'))).not.toBe(inode(G('b/secret')));
    expect(snapshot(dir, { dirTimes: false })).toEqual(before);
    for (const g of ['a', 'b']) fs.chmodSync(G(g, 'locked'), 0o755);
  });

  it('a directory tree 2,000 levels deep', () => {
    for (const g of ['a', 'b']) {
      fs.mkdirSync(G(g));
      // The full path is far beyond PATH_MAX, so build it one directory at a time.
      execFileSync('python3', ['-c', `
import os
fd = os.open(${JSON.stringify(G(g))}, os.O_DIRECTORY)
for i in range(2000):
    os.mkdir('dir', dir_fd=fd)
    nfd = os.open('dir', os.O_DIRECTORY, dir_fd=fd); os.close(fd); fd = nfd
f = os.open('deep', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd); os.write(f, b'bottom'); os.close(f)
os.utime('deep', ns=(1700000000000000000, 1700000000000000000), dir_fd=fd)
`]);
    }
    const r = runCli(['--json', '--no-default-excludes', G('a'), G('b')]);
    expect([r.code, r.stderr]).toEqual([0, '']);
    expect(JSON.parse(r.stdout).summary).toMatchObject({ filesScanned: 2, linksMade: 1 });
    const inodes = execFileSync('find', [dir, '-name', 'deep', '-printf', '%i\\n'], { encoding: 'utf8' }).trim().split('\n');
    expect(inodes).toHaveLength(2);
    expect(new Set(inodes).size).toBe(1);
  });

  it('names with newlines, backslashes, leading dashes and invalid UTF-8 are linked and printed unambiguously', () => {
    const names = [Buffer.from('new\nline'), Buffer.from('back\\slash'), Buffer.from('-leading-dash'), Buffer.from('--help'),
      Buffer.from([0x6c, 0x61, 0x74, 0x69, 0x6e, 0x31, 0xe9])];
    for (const g of ['a', 'b']) {
      fs.mkdirSync(G(g));
      for (const n of names) {
        const p = Buffer.concat([Buffer.from(G(g) + '/'), n]);
        fs.writeFileSync(p, n); // each name its own content, so each pair is its own set
        fs.utimesSync(p, 1_700_000_000, 1_700_000_000);
      }
    }
    const r = runCli(['-v', '--no-default-excludes', G('a'), G('b')]);
    expect(r.code).toBe(0);
    const linked = r.stdout.split('\n').filter((l) => l.startsWith('linked ')).sort();
    expect(linked).toEqual([
      `linked ${G('b')}/--help => ${G('a')}/--help`,
      `linked ${G('b')}/-leading-dash => ${G('a')}/-leading-dash`,
      `linked ${G('b')}/back\\\\slash => ${G('a')}/back\\\\slash`,
      `linked ${G('b')}/latin1\\xe9 => ${G('a')}/latin1\\xe9`,
      `linked ${G('b')}/new\\x0aline => ${G('a')}/new\\x0aline`,
    ]);
    for (const n of names) {
      const pa = Buffer.concat([Buffer.from(G('a') + '/'), n]);
      const pb = Buffer.concat([Buffer.from(G('b') + '/'), n]);
      expect(inode(pa)).toBe(inode(pb));
    }
  });

  it('empty files are left alone, sparse files are counted by what they occupy', () => {
    for (const g of ['a', 'b']) {
      writeFile(G(g, 'empty'), { content: '' });
      writeFile(G(g, 'sparse'), { content: '' });
      sh('truncate', '-s', '64M', G(g, 'sparse'));
      sh('touch', '-d', '@1700000000', G(g, 'sparse'));
    }
    const r = runCli(['--json', '--no-default-excludes', G('a'), G('b')]);
    const s = JSON.parse(r.stdout).summary;
    expect(r.code).toBe(0);
    expect(s.freedBytes).toBe(64 * 2 ** 20);
    expect(s.freedDiskBytes).toBe(Number(sh('stat', '-c', '%b', G('a/sparse')).trim()) * 512);
    expect(s.freedDiskBytes).toBeLessThan(s.freedBytes);
    expect(distinct([G('a/empty'), G('b/empty')])).toBe(2);
    expect(distinct([G('a/sparse'), G('b/sparse')])).toBe(1);
  });

  it('a filesystem that is full: every link fails with ENOSPC, no temporary name is left and nothing is lost', () => {
    fs.mkdirSync(G('small'));
    sh('mount', '-t', 'tmpfs', '-o', 'size=4m,nr_inodes=64', 'none', G('small'));
    try {
      for (let i = 0; i < 10; i++) for (const g of ['a', 'b']) writeFile(G('small', g, `f${i}`), { content: `file ${i}` });
      // tmpfs counts every hard link against nr_inodes: use up the rest.
      for (let i = 0; ; i++) {
        try {
          fs.writeFileSync(G('small', `filler${i}`), '');
        } catch {
          break;
        }
      }
      const before = snapshot(G('small'), { inodes: true });
      const r = runCli(['--json', '--no-default-excludes', G('small/a'), G('small/b')]);
      expect(r.code).toBe(1);
      const report = JSON.parse(r.stdout);
      expect(report.summary).toMatchObject({ linksPlanned: 10, linksMade: 0, skipped: 10 });
      expect(new Set(report.errors.map((e: { code: string }) => e.code))).toEqual(new Set(['ENOSPC']));
      expect(r.stderr).toMatch(new RegExp(`vunify: ${G('small/b/f0')}: no space left on device \\(ENOSPC, linkat\\)`));
      expect(snapshot(G('small'), { inodes: true })).toEqual(before);
    } finally {
      sh('umount', G('small'));
    }
  });
});
