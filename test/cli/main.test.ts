// The command as an operator meets it: help, exit codes, output channels.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli/main.js';
import { parseSize } from '../../src/cli/options.js';
import { sys } from '../../src/os/sys.js';
import { inode, rmTree, runCli, sh, snapshot, tempDir, testStateDir, writeFile } from '../helpers/tree.js';

/** A stream that keeps what is written to it. */
function collect() {
  const chunks: string[] = [];
  const stream = new Writable({ write: (c, _e, cb) => (chunks.push(String(c)), cb()) }) ;
  return { stream, text: () => chunks.join('') };
}

let dir: string;
beforeEach(() => {
  dir = tempDir();
  for (const g of ['g1', 'g2']) {
    writeFile(path.join(dir, g, 'usr/lib/libc.so.6'), { content: 'libc' });
    writeFile(path.join(dir, g, 'etc/passwd'), { content: 'root:x:0:0\n' });
  }
});
afterEach(() => rmTree(dir));

const G = (g: string, f = '') => path.join(dir, g, f);

describe('vunify command', () => {
  it('--help explains usage with examples and exits 0', () => {
    const r = runCli(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Usage: vunify \[options\] ROOT\.\.\./);
    expect(r.stdout).toMatch(/--dry-run/);
    expect(r.stdout).toMatch(/Examples:/);
    expect(r.stdout).toMatch(/Exit status/);
    expect(r.stdout).toMatch(/--max-memory <size>/);
    expect(r.stdout).toMatch(/vunify --max-memory 2G/);
  });

  it('--version prints the package version', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(import.meta.dirname, '..', '..', 'package.json'), 'utf8'));
    expect(runCli(['--version']).stdout.trim()).toBe(pkg.version);
  });

  it.each([
    [['--bogus', 'x'], /unknown option/],
    [[], /missing required argument/],
    [['/nonexistent-root'], /\/nonexistent-root: no such file or directory/],
    [['--min-size', 'lots', '/tmp'], /invalid size 'lots'/],
    [['--exclude', '[', '/tmp'], /\[/],
    [['--max-memory', 'lots', '/tmp'], /invalid --max-memory 'lots'/],
    [['--max-memory', '1M', '/tmp'], /--max-memory 1M is too small/],
  ])('bad usage %j exits 2 with a message on stderr', (args, message) => {
    const r = runCli(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toBe('');
  });

  it('default excludes keep /etc/passwd apart; off a terminal the summary is one line on stdout, exit 0', () => {
    const r = runCli([G('g1'), G('g2')]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^vunify: 2 files, 8 B scanned in 2 roots, \d+ B read; 1 links made, 4 B freed; 0 errors; \d+\.\d s\n$/);
    expect(inode(G('g1', 'usr/lib/libc.so.6'))).toBe(inode(G('g2', 'usr/lib/libc.so.6')));
    expect(inode(G('g1', 'etc/passwd'))).not.toBe(inode(G('g2', 'etc/passwd')));
  });

  it('expands a quoted glob itself, -q prints nothing on success', () => {
    const r = runCli(['-q', path.join(dir, 'g*')]);
    expect([r.code, r.stdout, r.stderr]).toEqual([0, '', '']);
    expect(inode(G('g1', 'usr/lib/libc.so.6'))).toBe(inode(G('g2', 'usr/lib/libc.so.6')));
  });

  it('-v prints one line per link', () => {
    const r = runCli(['-v', '--no-default-excludes', G('g1'), G('g2')]);
    const lines = r.stdout.split('\n').filter((l) => l.startsWith('linked '));
    expect(lines.sort()).toEqual([
      `linked ${G('g2', 'etc/passwd')} => ${G('g1', 'etc/passwd')}`,
      `linked ${G('g2', 'usr/lib/libc.so.6')} => ${G('g1', 'usr/lib/libc.so.6')}`,
    ]);
  });

  it('--dry-run --json reports every summary field and changes nothing', () => {
    const before = snapshot(dir, { inodes: true });
    const r = runCli(['-n', '--json', '--no-default-excludes', G('g1'), G('g2')]);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(Object.keys(report.summary).sort()).toEqual(
      ['filesScanned', 'bytesScanned', 'inodes', 'alreadySharedBytes', 'duplicateSets', 'freeableInodes', 'freeableBytes',
        'freeableDiskBytes', 'linksPlanned', 'linksMade', 'freedBytes', 'freedDiskBytes', 'skipped', 'errors', 'keptApart'].sort(),
    );
    // Two 4-byte and two 11-byte files; one of each is freeable.
    expect(report.summary).toMatchObject({ filesScanned: 4, bytesScanned: 30, inodes: 4, duplicateSets: 2, freeableInodes: 2, freeableBytes: 15, linksPlanned: 2, linksMade: 0, freedBytes: 0, errors: 0 });
    expect(report.roots).toEqual([
      { path: G('g1'), files: 2, bytes: 15, freeableBytes: 0 },
      { path: G('g2'), files: 2, bytes: 15, freeableBytes: 15 },
    ]);
    expect(snapshot(dir, { inodes: true })).toEqual(before);
  });

  it('exits 1 when files were skipped, naming each path and reason on stderr', async () => {
    writeFile(G('g3', 'usr/lib/libc.so.6'), { content: 'libc' });
    // A failure no plan can foresee: the disk fails the link into g3 (the second link; in the addon's linker).
    sys.setLinkFault({ step: 'link', nth: 2, errno: os.constants.errno.EIO });
    const out = collect(), err = collect();
    let code;
    try {
      code = await main(['--json', '--state-dir', testStateDir(), G('g1'), G('g2'), G('g3')], out.stream as never, err.stream as never);
    } finally {
      sys.setLinkFault();
    }
    expect(code).toBe(1);
    expect(err.text()).toBe(`vunify: ${G('g3', 'usr/lib/libc.so.6')}: input/output error (EIO, linkat)\n`);
    const report = JSON.parse(out.text());
    expect(report.summary).toMatchObject({ linksMade: 1, skipped: 1, errors: 1 });
    expect(report.errors).toEqual([{ path: G('g3', 'usr/lib/libc.so.6'), code: 'EIO', message: 'input/output error (EIO, linkat)' }]);
  });

  it('an immutable copy is kept apart by the plan: exit 0, no error line, and the summary line says why', () => {
    writeFile(G('g3', 'usr/lib/libc.so.6'), { content: 'libc' });
    sh('chattr', '+i', G('g3', 'usr/lib/libc.so.6'));
    const dry = runCli([G('g1'), G('g2'), G('g3'), '-n']);
    const r = runCli([G('g1'), G('g2'), G('g3')]);
    expect([dry.code, r.code]).toEqual([0, 0]);
    expect(dry.stderr + r.stderr).toBe('');
    expect(dry.stdout).toMatch(/dry run: 1 links planned, 4 B freeable; kept apart: flags 4 B; 0 errors/);
    expect(r.stdout).toMatch(/1 links made, 4 B freed; kept apart: flags 4 B; 0 errors/);
    expect(inode(G('g3', 'usr/lib/libc.so.6'))).not.toBe(inode(G('g1', 'usr/lib/libc.so.6')));
  });

  it('parses sizes with units', () => {
    expect([parseSize('4096'), parseSize('4k'), parseSize('10M'), parseSize('1GiB')]).toEqual([4096, 4096, 10485760, 1073741824]);
    expect(() => parseSize('-1')).toThrow();
  });
});
