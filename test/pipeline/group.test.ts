// Grouping: every metadata difference alone keeps two identical files apart.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { inode, rmTree, runUnify, sh, tempDir, writeFile, type FileSpec } from '../helpers/tree.js';

let dir: string;
beforeEach(() => {
  dir = tempDir();
});
afterEach(() => rmTree(dir));

/** Two guests with one identical file each, the second differing only by `diff`. */
async function pair(diff: FileSpec, opts: { ignoreMtime?: boolean } = {}) {
  const a = path.join(dir, 'a/usr/bin/tool');
  const b = path.join(dir, 'b/usr/bin/tool');
  writeFile(a, { content: 'identical bytes\n' });
  writeFile(b, { content: 'identical bytes\n', ...diff });
  const { report } = await runUnify([path.join(dir, 'a'), path.join(dir, 'b')], { ignoreMtime: !!opts.ignoreMtime });
  return { linked: inode(a) === inode(b), report };
}

describe('metadata that keeps identical content apart', () => {
  it('links when nothing differs (the control case)', async () => {
    expect((await pair({})).linked).toBe(true);
  });

  it.each<[string, FileSpec]>([
    ['owner', { uid: 1000 }],
    ['group', { gid: 1000 }],
    ['permission bits', { mode: 0o755 }],
    ['setuid bit', { mode: 0o4644 }],
    ['setgid bit', { mode: 0o2644 }],
    ['sticky bit', { mode: 0o1644 }],
    ['mtime (one nanosecond)', { mtime: '1700000000.123456788' }],
    ['a user xattr', { xattrs: { 'user.note': 'x' } }],
    ['a trusted xattr', { xattrs: { 'trusted.t': 'x' } }],
  ])('%s', async (_what, diff) => {
    const r = await pair(diff);
    expect(r.linked).toBe(false);
    expect(r.report.summary.linksPlanned).toBe(0);
  });

  it('an ACL', async () => {
    const b = path.join(dir, 'b/usr/bin/tool');
    writeFile(path.join(dir, 'a/usr/bin/tool'));
    writeFile(b);
    sh('setfacl', '-m', 'u:4242:r', b);
    sh('touch', '-d', '@1700000000.123456789', b); // setfacl leaves mtime alone, but be sure
    await runUnify([path.join(dir, 'a'), path.join(dir, 'b')]);
    expect(inode(path.join(dir, 'a/usr/bin/tool'))).not.toBe(inode(b));
    expect(sh('getfacl', '-cp', b)).toContain('user:4242:r--');
  });

  it('a file capability', async () => {
    const b = path.join(dir, 'b/usr/bin/tool');
    writeFile(path.join(dir, 'a/usr/bin/tool'));
    writeFile(b);
    sh('setcap', 'cap_net_raw+ep', b);
    await runUnify([path.join(dir, 'a'), path.join(dir, 'b')]);
    expect(inode(path.join(dir, 'a/usr/bin/tool'))).not.toBe(inode(b));
    expect(sh('getcap', b)).toContain('cap_net_raw');
  });

  it('identical xattrs, ACLs and capabilities on both sides do link', async () => {
    const a = path.join(dir, 'a/usr/bin/tool');
    const b = path.join(dir, 'b/usr/bin/tool');
    for (const f of [a, b]) {
      writeFile(f, { xattrs: { 'user.x': 'same' } });
      sh('setfacl', '-m', 'u:4242:r', f);
      sh('setcap', 'cap_net_raw+ep', f);
      sh('touch', '-d', '@1700000000.5', f);
    }
    await runUnify([path.join(dir, 'a'), path.join(dir, 'b')]);
    expect(inode(a)).toBe(inode(b));
    expect(sh('getcap', b)).toContain('cap_net_raw');
    expect(sh('getfattr', '-n', 'user.x', '--only-values', b)).toBe('same');
  });

  it('--ignore-mtime links across different mtimes', async () => {
    expect((await pair({ mtime: '1600000000' }, { ignoreMtime: true })).linked).toBe(true);
  });

  it('different content of equal size and metadata stays apart', async () => {
    expect((await pair({ content: 'identical byteZ\n' })).linked).toBe(false);
  });

  it('leaves files outside --min-size/--max-size alone', async () => {
    for (const g of ['a', 'b']) {
      writeFile(path.join(dir, g, 'small'), { content: 'ab' });
      writeFile(path.join(dir, g, 'big'), { content: 'x'.repeat(5000) });
      writeFile(path.join(dir, g, 'mid'), { content: 'x'.repeat(100) });
    }
    await runUnify([path.join(dir, 'a'), path.join(dir, 'b')], { minSize: 3, maxSize: 4096 });
    const same = (n: string) => inode(path.join(dir, 'a', n)) === inode(path.join(dir, 'b', n));
    expect([same('small'), same('mid'), same('big')]).toEqual([false, true, false]);
  });

  it('never links empty files by default', async () => {
    for (const g of ['a', 'b']) writeFile(path.join(dir, g, 'empty'), { content: '' });
    await runUnify([path.join(dir, 'a'), path.join(dir, 'b')]);
    expect(inode(path.join(dir, 'a/empty'))).not.toBe(inode(path.join(dir, 'b/empty')));
    expect(fs.statSync(path.join(dir, 'a/empty')).nlink).toBe(1);
  });
});
