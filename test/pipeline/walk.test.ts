// The walker on real trees: what it lists, what it never follows or crosses.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { compileRules, parseRule } from '../../src/pipeline/excludes.js';
import type { FileError } from '../../src/core/errors.js';
import { closeRoots, openRoots } from '../../src/pipeline/roots.js';
import { walk } from '../../src/pipeline/walk.js';
import { inode, rmTree, runUnify, sh, snapshot, tempDir, writeFile } from '../helpers/tree.js';
import { relPath } from '../../src/core/paths.js';

let dir: string;
beforeEach(() => {
  dir = tempDir();
});
afterEach(() => rmTree(dir));

async function listed(guest: string, rules: string[] = []) {
  const roots = openRoots([path.join(dir, guest)]);
  const errors: FileError[] = [];
  try {
    const r = await walk(roots, {
      matcher: compileRules(rules.map((t) => parseRule(t))),
      minSize: 1,
      maxSize: Infinity,
      onError: (e) => errors.push(e),
    });
    return { ...r, paths: r.files.map((f) => relPath(f).toString('latin1')).sort(), errors };
  } finally {
    closeRoots(roots);
  }
}

describe('walk', () => {
  it('lists regular files only and leaves symlinks, FIFOs, sockets and devices alone', async () => {
    const g = path.join(dir, 'g');
    writeFile(path.join(g, 'usr/bin/real'));
    fs.symlinkSync('real', path.join(g, 'usr/bin/link'));
    fs.symlinkSync('/', path.join(g, 'hostroot'));
    sh('mkfifo', path.join(g, 'fifo'));
    sh('mknod', path.join(g, 'null'), 'c', '1', '3');
    sh('mknod', path.join(g, 'blk'), 'b', '7', '0');
    const server = net.createServer().listen(path.join(g, 'sock'));
    await new Promise((r) => server.once('listening', r));
    try {
      const r = await listed('g');
      expect(r.paths).toEqual(['usr/bin/real']);
      expect(r.special).toBe(6);
      expect(r.errors).toEqual([]);
    } finally {
      server.close();
    }
  });

  it('does not descend into a mount point inside a root (tmpfs, or a bind mount of the same filesystem)', async () => {
    const g = path.join(dir, 'g');
    writeFile(path.join(g, 'etc-copy/file'));
    fs.mkdirSync(path.join(g, 'mnt/tmpfs'), { recursive: true });
    fs.mkdirSync(path.join(g, 'mnt/bind'), { recursive: true });
    writeFile(path.join(dir, 'elsewhere/secret'));
    sh('mount', '-t', 'tmpfs', 'none', path.join(g, 'mnt/tmpfs'));
    sh('mount', '--bind', path.join(dir, 'elsewhere'), path.join(g, 'mnt/bind'));
    try {
      writeFile(path.join(g, 'mnt/tmpfs/inside'));
      const r = await listed('g');
      expect(r.paths).toEqual(['etc-copy/file']);
      expect(r.mountPoints).toBe(2);
    } finally {
      sh('umount', path.join(g, 'mnt/tmpfs'));
      sh('umount', path.join(g, 'mnt/bind'));
    }
  });

  it('keeps names that are not UTF-8 as bytes, and links them correctly', async () => {
    const odd = Buffer.from([0x6c, 0x69, 0x62, 0xff, 0xfe, 0x0a, 0x2d]); // "lib\xff\xfe\n-"
    const lookalike = Buffer.from('lib\ufffd\ufffd\n-'); // what a lossy decode would produce
    for (const g of ['a', 'b']) {
      fs.mkdirSync(path.join(dir, g));
      const p = Buffer.concat([Buffer.from(path.join(dir, g) + '/'), odd]);
      fs.writeFileSync(p, 'same');
      fs.utimesSync(p, 1_700_000_000, 1_700_000_000);
    }
    // A different file whose name is the lossy decoding of the odd one must never be touched.
    const look = Buffer.concat([Buffer.from(path.join(dir, 'b') + '/'), lookalike]);
    fs.writeFileSync(look, 'diff');
    fs.utimesSync(look, 1_700_000_000, 1_700_000_000);
    const before = snapshot(dir, { inodes: true });
    const r = await listed('a');
    expect(r.files.map((f) => f.name)).toEqual([odd]);
    const { errors } = await runUnify([path.join(dir, 'a'), path.join(dir, 'b')]);
    expect(errors).toEqual([]);
    const ia = inode(Buffer.concat([Buffer.from(path.join(dir, 'a') + '/'), odd]));
    const ib = inode(Buffer.concat([Buffer.from(path.join(dir, 'b') + '/'), odd]));
    const il = inode(Buffer.concat([Buffer.from(path.join(dir, 'b') + '/'), lookalike]));
    expect(ia).toBe(ib);
    expect(il).not.toBe(ia);
    expect(fs.readFileSync(look, 'utf8')).toBe('diff');
    expect(snapshot(dir).size).toBe(before.size);
  });

  it('prunes excluded directories (never listed) and applies first-match-wins rules', async () => {
    const g = path.join(dir, 'g');
    for (const f of ['usr/lib/a.so', 'var/lib/dpkg/status', 'etc/passwd', 'etc/termcap', 'etc/hosts', 'srv/x.log', 'srv/keep'])
      writeFile(path.join(g, f));
    const r = await listed('g', ['*.log', '+/etc/termcap', '/etc/*', '/var']);
    expect(r.paths).toEqual(['etc/termcap', 'srv/keep', 'usr/lib/a.so']);
    // /var was pruned as a whole: one exclusion, not one per file below it.
    expect(r.excluded).toBe(4);
  });

  it('reports an unlistable directory and goes on', async () => {
    const g = path.join(dir, 'g');
    writeFile(path.join(g, 'ok/file'));
    fs.mkdirSync(path.join(g, 'locked'));
    writeFile(path.join(g, 'locked/hidden'));
    // Root bypasses permissions; an immutable empty directory cannot be made unreadable either,
    // so make the directory vanish between listing its parent and listing it.
    const { sys } = await import('../../src/os/sys.js');
    const { vi } = await import('vitest');
    const real = sys.scanDir;
    vi.spyOn(sys, 'scanDir').mockImplementation(async (fd, rel, expect) => {
      if (rel.toString() === 'locked') fs.renameSync(path.join(g, 'locked'), path.join(g, 'moved'));
      return real(fd, rel, expect);
    });
    const r = await listed('g');
    vi.restoreAllMocks();
    expect(r.paths).toEqual(['ok/file']);
    expect(r.errors.map((e) => [e.path, e.code])).toEqual([[path.join(g, 'locked'), 'ENOENT']]);
  });
});
