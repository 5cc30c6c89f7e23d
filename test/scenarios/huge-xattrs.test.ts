// Huge xattrs must not crash the run for everyone: on XFS a guest can give
// a file hundreds of MiB of user.* xattrs (6,400 values of 64 KiB here,
// 400 MiB per file; joined into one string they exceeded V8's limit and the
// run died with exit 70). Such a file is skipped with a message naming it,
// the run goes on (exit 1); files with large xattrs under the limit are
// still linked when their xattrs are identical, and not when one byte of
// one value differs. Xattrs are written by Python and checked by getfattr.
import { createHash } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN } from '../helpers/hostile.js';
import { loopFs, type LoopFs } from '../helpers/loopfs.js';
import { testStateDir, writeFile } from '../helpers/tree.js';

// Names user.0000..user.NNNN, values of 64 KiB (XFS's largest); the last
// byte of the last value is `last`.
const SET_XATTRS = `import os, sys
f, n, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    v = (b'%05d' % i) * 13107 + (bytes([last]) if i == n - 1 else b'.')
    os.setxattr(f, 'user.%04d' % i, v)`;

let xfs: LoopFs;
beforeAll(() => {
  xfs = loopFs('xfs', 2 * 2 ** 30);
});
afterAll(() => xfs.unmount());

function file(g: string, name: string, xattrs: number, last = 0x2e): string {
  const f = path.join(xfs.dir, g, 'usr', 'lib', name);
  writeFile(f, { content: `content of ${name}\n` });
  if (xattrs) execFileSync('python3', ['-c', SET_XATTRS, f, String(xattrs), String(last)]);
  // Setting xattrs moved the ctime, not the mtime: writeFile's fixed mtime stands.
  return f;
}

/** Every xattr of a file as getfattr dumps it, digested (the dump of 16 MiB is large). */
const getfattr = (f: string) => createHash('sha256').update(execFileSync('getfattr', ['-d', '-m', '-', '-e', 'hex', '--absolute-names', f], { maxBuffer: 1 << 30 })).digest('hex');

describe('files with hundreds of MiB of xattrs on XFS', () => {
  it('are skipped with a message, and the rest is still unified', () => {
    const huge = ['g1', 'g2'].map((g) => file(g, 'huge', 6400));
    const mid = ['g1', 'g2'].map((g) => file(g, 'mid', 256));
    const midDiff = [file('g1', 'mid-diff', 256, 0x2e), file('g2', 'mid-diff', 256, 0x2f)];
    const plain = ['g1', 'g2'].map((g) => file(g, 'plain', 0));
    const before = getfattr(mid[1]!);
    const roots = ['g1', 'g2'].map((g) => path.join(xfs.dir, g));

    // 120 s: a hang detector for a run that reads 800 MiB of xattrs, not a timing assertion.
    const r = spawnSync(process.execPath, [BIN, '--state-dir', testStateDir(), '--no-cache', '--json', ...roots], {
      encoding: 'utf8',
      timeout: 120_000,
      killSignal: 'SIGKILL',
    });
    expect([r.signal, r.status, r.stderr]).toEqual([null, 1, expect.any(String)]);
    // In the order the files were read: the walk's order, which its two threads decide.
    const lines = r.stderr.trim().split('\n').sort();
    expect(lines.length).toBe(2);
    for (const [k, f] of huge.entries()) expect(lines[k]!.startsWith(`vunify: ${f}: extended attributes too large to read whole (over 64 MiB of names and values`)).toBe(true);
    const report = JSON.parse(r.stdout);
    expect(report.summary.linksMade).toBe(2);
    expect(report.errors.map((e: { path: string; code: string }) => [e.path, e.code]).sort()).toEqual(huge.map((f) => [f, 'E2BIG']));

    const ino = (f: string) => fs.statSync(f).ino;
    expect(ino(mid[1]!)).toBe(ino(mid[0]!));
    expect(ino(plain[1]!)).toBe(ino(plain[0]!));
    expect(ino(midDiff[1]!)).not.toBe(ino(midDiff[0]!));
    expect(ino(huge[1]!)).not.toBe(ino(huge[0]!));
    // The linked file still carries every xattr, byte for byte.
    expect(getfattr(mid[1]!)).toBe(before);
  }, 300_000);
});
