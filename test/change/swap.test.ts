// The swap in directories a guest made append-only or immutable (chattr +a /
// +i), and a temporary name that cannot be removed: never left behind
// without a message naming it. Real ext4/tmpfs directories, checked with
// find and stat.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { codedError } from '../../src/core/errors.js';
import { TEMP_PREFIX } from '../../src/change/swap.js';
import { sys } from '../../src/os/sys.js';
import { rmTree, runUnify, sh, tempDir, writeFile } from '../helpers/tree.js';

let dir: string;
const G = (g: string, f = '') => (f ? path.join(dir, g, f) : path.join(dir, g));
beforeEach(() => {
  dir = tempDir();
  for (const g of ['g1', 'g2']) writeFile(G(g, 'usr/share/f'), { content: 'the same bytes\n' });
});
afterEach(() => {
  vi.restoreAllMocks();
  rmTree(dir);
});

const leftovers = () => sh('find', dir, '-name', `${TEMP_PREFIX}*`).split('\n').filter(Boolean);
const ino = (f: string) => fs.statSync(f).ino;

// chattr needs a filesystem with inode flags: tmpfs has them since 6.0, ext4 always.
const canChattr = (() => {
  const d = tempDir('vunify-chattr-');
  try {
    sh('chattr', '+a', d);
    sh('chattr', '-a', d);
    return true;
  } catch {
    return false;
  } finally {
    fs.rmSync(d, { recursive: true, force: true });
  }
})();

describe.skipIf(!canChattr)('a directory the guest made append-only or immutable', () => {
  it.each([['+a'], ['+i']])('chattr %s: the plan never replaces a name there (that copy becomes the canonical), and no temporary name is left', async (flag) => {
    const before = ino(G('g2', 'usr/share/f'));
    sh('chattr', flag, G('g2', 'usr/share'));
    try {
      const dry = await runUnify([G('g1'), G('g2')], { cache: false, dryRun: true });
      const { report, errors } = await runUnify([G('g1'), G('g2')], { cache: false });
      expect(errors).toEqual([]);
      // g2's name cannot change, so g2's inode stays and g1's path joins it.
      expect(report.summary.linksMade).toBe(1);
      expect(report.summary.freedBytes).toBe(dry.report.summary.freeableBytes);
      expect(ino(G('g1', 'usr/share/f'))).toBe(before);
    } finally {
      sh('chattr', flag.replace('+', '-'), G('g2', 'usr/share'));
    }
    expect(leftovers()).toEqual([]);
    expect(ino(G('g2', 'usr/share/f'))).toBe(before);
    // Nightly reruns add nothing either.
    sh('chattr', flag, G('g2', 'usr/share'));
    try {
      await runUnify([G('g1'), G('g2')], { cache: false });
    } finally {
      sh('chattr', flag.replace('+', '-'), G('g2', 'usr/share'));
    }
    expect(leftovers()).toEqual([]);
  });
});

describe('a temporary name that cannot be removed is named, never left silently', () => {
  it('exchange refused and the temporary link undeletable: the error names the temporary name', async () => {
    const realUnlink = sys.unlinkAt;
    vi.spyOn(sys, 'renameAt').mockImplementation(() => {
      throw codedError('EIO', 'injected: exchange failed');
    });
    vi.spyOn(sys, 'unlinkAt').mockImplementation((dirFd, name, flags) => {
      if (name.toString().startsWith(TEMP_PREFIX)) throw Object.assign(new Error('injected'), { code: 'EPERM', syscall: 'unlinkat' });
      return realUnlink(dirFd, name, flags);
    });
    const { errors } = await runUnify([G('g1'), G('g2')], { cache: false });
    vi.restoreAllMocks();
    const left = leftovers();
    expect(left).toHaveLength(1);
    expect(errors).toHaveLength(1);
    expect(errors[0]!.path).toBe(G('g2', 'usr/share/f'));
    expect(errors[0]!.message).toContain(`its temporary link ${path.basename(left[0]!)} could not be removed (operation not permitted`);
    // What is left is a link to the canonical, as the message says.
    expect(ino(left[0]!)).toBe(ino(G('g1', 'usr/share/f')));
  });
});
