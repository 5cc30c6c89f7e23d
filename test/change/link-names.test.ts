// The native linker's names, end to end on a real tree: directory and file
// names of arbitrary bytes (newline, 0xff, control bytes, 248-byte names),
// directories ~57 KB deep (two pairs in one call's 128 KiB of names) and
// ~134 KB deep (one pair past it), an inode with 300 paths in one guest
// that is also linked into a second guest and outside the roots, and its
// copies with links of their own. The tree is written and read back by
// Python and find/sha256 (not vunify): afterwards every path has the bytes
// it had, each content is one inode (the 300-path one where it is among
// them), no temporary name is left, and the links made are exactly the
// paths that were not on that inode before.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { rmTree, runUnify, tempDir } from '../helpers/tree.js';

const GEN = String.raw`
import os, sys
top = sys.argv[1]
MT = 1700000000 * 10**9 + 123456789
def wfile(dfd, name, data):
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dfd); os.write(fd, data); os.close(fd)
    os.utime(name, ns=(MT, MT), dir_fd=dfd)
def mkdirs(base, parts):
    fd = os.dup(base)
    for p in parts:
        try: os.mkdir(p, 0o755, dir_fd=fd)
        except FileExistsError: pass
        n = os.open(p, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd); os.close(fd); fd = n
    return fd
G = ['g1', 'g2', 'g3', 'g4']
t = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
g = {x: mkdirs(t, [x.encode()]) for x in G}
out = mkdirs(t, [b'outside'])
odd = [b'plain', b'new\nline', b'\xff\xfe\x80', b'-dash', b' sp ace ', b'x' * 248, b'tab\tq', b'\x01\x1f', b'..x', b'a\\b']
for i in range(40):
    c = (b'content %d ' % i) * (1 + (i * 37) % 3000)
    for gi, x in enumerate(G):
        if (i + gi) % 5 == 2: continue
        d = mkdirs(g[x], [b'usr', b'd%d' % (i % 4), odd[i % len(odd)]])
        wfile(d, odd[(i * 3 + gi) % len(odd)] + b'.%d' % i, c); os.close(d)
big = b'hardlinked\n' * 3000
d = mkdirs(g['g1'], [b'usr', b'h'])
wfile(d, b'base', big)
for k in range(300):
    s = mkdirs(g['g1'], [b'usr', b'h', b's%d' % (k % 13)])
    os.link(b'base', odd[k % len(odd)][:30] + b'.%d' % k, src_dir_fd=d, dst_dir_fd=s); os.close(s)
o = mkdirs(g['g3'], [b'usr', b'h'])
os.link(b'base', b'from-g1', src_dir_fd=d, dst_dir_fd=o); os.close(o)
os.link(b'base', b'outside', src_dir_fd=d, dst_dir_fd=out); os.close(d)
for x in G[1:]:
    d = mkdirs(g[x], [b'usr', b'h']); wfile(d, b'copy', big)
    for k in range(4): os.link(b'copy', b'l%d' % k, src_dir_fd=d, dst_dir_fd=d)
    os.close(d)
for depth, tag in ((235, b'm'), (550, b'L')):
    parts = [b'opt'] + [tag + b'%03d' % k + b'\xff' * 240 for k in range(depth)]
    for x in G[:3]:
        d = mkdirs(g[x], parts)
        for f in range(4): wfile(d, b'f%d\n' % f, b'deep %s %d\n' % (tag, f) * 300)
        os.close(d)
`;

// Every regular file under the guests: (root-relative path, inode, links, sha256), read without vunify.
const LIST = String.raw`
import os, sys, hashlib
top = sys.argv[1]
def walk(fd, rel):
    for e in sorted(os.listdir(fd)):
        st = os.stat(e, dir_fd=fd, follow_symlinks=False)
        if os.path.stat.S_ISDIR(st.st_mode):
            n = os.open(e, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd); walk(n, rel + [os.fsencode(e)]); os.close(n)
        else:
            f = os.open(e, os.O_RDONLY, dir_fd=fd); h = hashlib.sha256()
            while True:
                b = os.read(f, 1 << 16)
                if not b: break
                h.update(b)
            os.close(f)
            print(b'/'.join(rel + [os.fsencode(e)]).hex(), st.st_ino, st.st_nlink, h.hexdigest())
t = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
for g in sorted(os.listdir(t)):
    if g.startswith('g'):
        n = os.open(g, os.O_RDONLY | os.O_DIRECTORY, dir_fd=t); walk(n, [os.fsencode(g)]); os.close(n)
`;

let top: string;
beforeAll(() => {
  top = tempDir('vunify-link-names-');
  execFileSync('python3', ['-c', GEN, top]);
});
afterAll(() => rmTree(top));

const list = () =>
  execFileSync('python3', ['-c', LIST, Buffer.from(top).toString()], { maxBuffer: 1 << 28 })
    .toString()
    .trim()
    .split('\n')
    .map((l) => {
      const [hex, ino, nlink, sum] = l.split(' ');
      return { path: Buffer.from(hex!, 'hex').toString('latin1'), ino: Number(ino), nlink: Number(nlink), sum: sum! };
    });

it('links every pair by its own directory and name, to its own content', async () => {
  const before = list();
  const byPath = new Map(before.map((f) => [f.path, f]));
  const bigIno = before.find((f) => f.path === 'g1/usr/h/base')!.ino;
  const { report, errors } = await runUnify(['g1', 'g2', 'g3', 'g4'].map((g) => path.join(top, g)));
  expect(errors).toEqual([]);
  const after = list();
  expect(after.map((f) => f.path)).toEqual(before.map((f) => f.path));
  const inoOf = new Map<string, Set<number>>();
  for (const f of after) {
    expect({ path: f.path, sum: f.sum }).toEqual({ path: f.path, sum: byPath.get(f.path)!.sum });
    let s = inoOf.get(f.sum);
    if (!s) inoOf.set(f.sum, (s = new Set()));
    s.add(f.ino);
  }
  // One inode per content, one of the content's own inodes; the 300-path one wherever it was among them.
  let links = 0;
  for (const [sum, inos] of inoOf) {
    expect({ sum, inodes: inos.size }).toEqual({ sum, inodes: 1 });
    const [ino] = [...inos];
    const had = before.filter((f) => f.sum === sum);
    expect(had.some((f) => f.ino === ino)).toBe(true);
    if (had.some((f) => f.ino === bigIno)) expect(ino).toBe(bigIno);
    links += had.filter((f) => f.ino !== ino).length;
  }
  expect(links).toBeGreaterThan(100);
  expect(report.summary.linksMade).toBe(links);
  expect(after.filter((f) => f.path.includes('.vunify.'))).toEqual([]);
  expect(execFileSync('find', [top, '-name', '.vunify.*']).toString()).toBe('');
  // Both deep directories were linked: 2 guests x 4 files each.
  for (const tag of ['/m000', '/L000']) expect(after.filter((f) => f.path.includes(tag) && f.ino !== byPath.get(f.path)!.ino).length).toBe(8);
});
