// The mount table as the walk reads it: real mounts (tmpfs) at names the
// kernel escapes in /proc/self/mountinfo (space, newline, backslash, bytes
// that are not UTF-8), found by directory and name under the right root.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { closeRoots, openRoots } from '../../src/pipeline/roots.js';
import { mountPointsUnder, unescapeMountPath } from '../../src/pipeline/mounts.js';
import { rmTree, tempDir } from '../helpers/tree.js';

let dir: string;
const mounted: Buffer[] = [];

beforeEach(() => {
  dir = tempDir('vunify-mounts-');
});
afterEach(() => {
  for (const m of mounted.splice(0)) spawnSync('python3', ['-c', 'import ctypes, sys; ctypes.CDLL(None).umount2(bytes.fromhex(sys.argv[1]), 2)', m.toString('hex')]);
  rmTree(dir);
});

// mount(2) through Python: argv strings could not carry a name that is not UTF-8.
const MOUNT = `import ctypes, sys
p = bytes.fromhex(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
sys.exit(0 if libc.mount(b'none', p, b'tmpfs', 0, None) == 0 else ctypes.get_errno())`;

function mountTmpfs(target: Buffer): void {
  fs.mkdirSync(target, { recursive: true });
  const r = spawnSync('python3', ['-c', MOUNT, target.toString('hex')]);
  expect(r.status).toBe(0);
  mounted.push(target);
}

describe('mountPointsUnder', () => {
  it('finds mount points below each root by directory and name, escapes undone', () => {
    const odd = Buffer.concat([Buffer.from('we ird\nna\\me'), Buffer.from([0xff])]);
    mountTmpfs(Buffer.concat([Buffer.from(path.join(dir, 'g1', 'srv') + '/'), odd]));
    mountTmpfs(Buffer.from(path.join(dir, 'g1', 'home')));
    mountTmpfs(Buffer.from(path.join(dir, 'g10', 'x')));
    fs.mkdirSync(path.join(dir, 'g2'));
    const roots = openRoots([path.join(dir, 'g1'), path.join(dir, 'g2')]);
    try {
      const found = mountPointsUnder(roots);
      const g1 = found.get(roots[0]!)!;
      expect([...g1.keys()].sort()).toEqual(['', 'srv']);
      expect([...g1.get('')!]).toEqual(['home']);
      expect([...g1.get('srv')!]).toEqual([odd.toString('latin1')]);
      // g10 shares g1's prefix as text, not as a directory.
      expect(found.get(roots[1]!)!.size).toBe(0);
    } finally {
      closeRoots(roots);
    }
  });

  it('undoes the octal escapes of mountinfo', () => {
    expect(unescapeMountPath('/a\\040b\\012c\\134d\\011e')).toEqual(Buffer.from('/a b\nc\\d\te'));
  });
});
