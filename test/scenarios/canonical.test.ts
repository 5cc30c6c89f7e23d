// A guest cannot choose a canonical that spoils its set: a copy linked
// from its own excluded /var (so "linked outside the roots") that is
// immutable, or that has no room left for more links (ext4: 65,000), is
// left out, and the others are unified around another copy. The dry run
// promises exactly what the linking run then frees: exit 0, no error, and
// a second run finds nothing left.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { rmTree, sh, tempDir, testStateDir, writeFile } from '../helpers/tree.js';

const BIN = path.join(import.meta.dirname, '..', '..', 'dist', 'bin.js');
let dir: string;
beforeAll(() => {
  dir = tempDir();
  // The limit below is ext4's: the tests' temporary directory must be on ext4.
  expect(execFileSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' }).trim()).toBe('ext2/ext3');
});
afterAll(() => rmTree(dir));

const run = (args: string[]) => {
  const r = spawnSync(process.execPath, [BIN, '--state-dir', testStateDir(), '--json', '--no-cache', ...args], { encoding: 'utf8' });
  return { code: r.status, stderr: r.stderr, report: r.stdout ? JSON.parse(r.stdout) : undefined };
};

/** Three guests with the same /usr/bin/tool; the hostile one also links its copy from its own /var. */
function guests(name: string): { roots: string[]; hostile: string } {
  const roots = ['hostile', 'g1', 'g2'].map((g) => path.join(dir, name, g));
  for (const g of roots) writeFile(path.join(g, 'usr/bin/tool'), { content: 'the same tool\n'.repeat(300) });
  const hostile = path.join(roots[0]!, 'usr/bin/tool');
  fs.mkdirSync(path.join(roots[0]!, 'var'), { recursive: true });
  fs.linkSync(hostile, path.join(roots[0]!, 'var/keep'));
  return { roots, hostile };
}

function checkTruth(roots: string[], hostile: string) {
  const dry = run(['--dry-run', ...roots]);
  expect(dry.stderr).toBe('');
  expect(dry.code).toBe(0);
  const real = run(roots);
  expect(real.stderr).toBe('');
  expect(real.code).toBe(0);
  // The dry run's promise is what the linking run did.
  expect(real.report.summary.freedBytes).toBe(dry.report.summary.freeableBytes);
  expect(real.report.summary.freedDiskBytes).toBe(dry.report.summary.freeableDiskBytes);
  expect(real.report.summary.linksMade).toBe(dry.report.summary.linksPlanned);
  expect(dry.report.summary.freeableBytes).toBeGreaterThan(0);
  // The two other guests now share one inode, which is not the hostile one.
  const [, a, b] = roots.map((g) => fs.statSync(path.join(g, 'usr/bin/tool')).ino);
  expect(a).toBe(b);
  expect(a).not.toBe(fs.statSync(hostile).ino);
  const again = run(roots);
  expect(again.stderr).toBe('');
  expect(again.code).toBe(0);
  expect(again.report.summary).toMatchObject({ linksPlanned: 0, errors: 0 });
}

it('an immutable copy linked outside the roots is not the canonical; the others are unified', () => {
  const { roots, hostile } = guests('immutable');
  sh('chattr', '+i', hostile);
  try {
    checkTruth(roots, hostile);
    expect(sh('lsattr', hostile)).toMatch(/^\S*i/); // vunify never clears a flag
  } finally {
    sh('chattr', '-i', hostile);
  }
}, 60_000);

it('an append-only copy linked outside the roots is not the canonical either', () => {
  const { roots, hostile } = guests('append');
  sh('chattr', '+a', hostile);
  try {
    checkTruth(roots, hostile);
  } finally {
    sh('chattr', '-a', hostile);
  }
}, 60_000);

it("a copy at ext4's link limit (65,000 links) is not the canonical; the others are unified", () => {
  const { roots, hostile } = guests('full');
  // 64,998 more links beside /var/keep: 65,000 in all, ext4's EXT4_LINK_MAX.
  execFileSync('python3', ['-c', `
import os, sys
src, d = sys.argv[1], sys.argv[2]
os.makedirs(d)
for i in range(64998): os.link(src, os.path.join(d, 'l%d' % i))
`, hostile, path.join(roots[0]!, 'var/links')]);
  expect(fs.statSync(hostile).nlink).toBe(65_000);
  checkTruth(roots, hostile);
}, 300_000);

it('a copy with room for only some of the set takes those, and the rest share another copy', () => {
  // Room for one more link: the canonical takes one guest, the rest are unified among themselves.
  const roots = ['hostile', 'g1', 'g2', 'g3'].map((g) => path.join(dir, 'room', g));
  for (const g of roots) writeFile(path.join(g, 'usr/bin/tool'), { content: 'another tool\n'.repeat(300) });
  const hostile = path.join(roots[0]!, 'usr/bin/tool');
  execFileSync('python3', ['-c', `
import os, sys
src, d = sys.argv[1], sys.argv[2]
os.makedirs(d)
for i in range(64998): os.link(src, os.path.join(d, 'l%d' % i))
`, hostile, path.join(roots[0]!, 'var/links')]);
  expect(fs.statSync(hostile).nlink).toBe(64_999);
  const dry = run(['--dry-run', ...roots]);
  expect(dry.stderr).toBe('');
  const real = run(roots);
  expect(real.stderr).toBe('');
  expect(real.code).toBe(0);
  expect(real.report.summary.freedBytes).toBe(dry.report.summary.freeableBytes);
  expect(real.report.summary.linksMade).toBe(dry.report.summary.linksPlanned);
  const inos = roots.map((g) => fs.statSync(path.join(g, 'usr/bin/tool')).ino);
  // The hostile copy (most links) took g1; g2 and g3 share one other inode.
  expect(fs.statSync(hostile).nlink).toBe(65_000);
  expect(new Set(inos).size).toBe(2);
  expect(inos[1]).toBe(inos[0]);
  expect(inos[2]).toBe(inos[3]);
  expect(run(roots).report.summary).toMatchObject({ linksPlanned: 0, errors: 0 });
}, 300_000);
