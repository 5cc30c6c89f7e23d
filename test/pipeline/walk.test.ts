// The walker on real trees: what it lists (as records, and as the tables it fills), what it never follows or crosses.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseRule } from '../../src/pipeline/excludes.js';
import type { FileError } from '../../src/core/errors.js';
import { closeRoots, openRoots } from '../../src/pipeline/roots.js';
import { dirPath, MAX_DEPTH, walk, walkTables, XS, type WalkOptions } from '../../src/pipeline/walk.js';
import { readDirProjectRows } from '../../src/pipeline/projects.js';
import { dirRefusal } from '../../src/pipeline/policy.js';
import { blocksOf, BLOCKS_BIAS, ctimeSecOf, fileName, gidOf, inoOf, modeOf, mtimeSecOf, nlinkOf, sizeOf, uidOf, WIDE32, WIDE8 } from '../../src/pipeline/table.js';
import { makeChain } from '../helpers/deep.js';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { inode, rmTree, runUnify, sh, snapshot, tempDir, writeFile } from '../helpers/tree.js';
import { relPath } from '../../src/core/paths.js';

let dir: string;
beforeEach(() => {
  dir = tempDir();
});
afterEach(() => rmTree(dir));

async function listed(guest: string, rules: string[] = [], hook?: (rel: Buffer) => void) {
  const roots = openRoots([path.join(dir, guest)]);
  const errors: FileError[] = [];
  try {
    const r = await walk(roots, {
      rules: rules.map((t) => parseRule(t)),
      minSize: 1,
      maxSize: Infinity,
      onError: (e) => errors.push(e),
      hook: hook && ((_, rel) => hook(rel)),
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
    const r = await listed('g', [], (rel) => {
      if (rel.toString() === 'locked') fs.renameSync(path.join(g, 'locked'), path.join(g, 'moved'));
    });
    expect(r.paths).toEqual(['ok/file']);
    expect(r.errors.map((e) => [e.path, e.code])).toEqual([[path.join(g, 'locked'), 'ENOENT']]);
  });
});

/** Walk one root into tables; every file as "path ino size blocks uid gid mode(hex) nlink mtime ctime", sorted. */
async function tabled(root: string, opts: Partial<WalkOptions> = {}) {
  const roots = openRoots([root]);
  const errors: FileError[] = [];
  try {
    const r = await walkTables(roots, { rules: [], minSize: 1, maxSize: Infinity, onError: (e) => errors.push(e), ...opts });
    const t = r.tables;
    const rows: string[] = [];
    for (let i = 0; i < t.files.count; i++) {
      const dir = dirPath(t, t.files.dir[i]!);
      const name = fileName(t, i);
      const p = dir.length ? Buffer.concat([dir, Buffer.from('/'), name]) : Buffer.from(name);
      rows.push([p.toString('hex'), inoOf(t, i), sizeOf(t, i), blocksOf(t, i), uidOf(t, i), gidOf(t, i), modeOf(t, i).toString(16), nlinkOf(t, i), mtimeSecOf(t, i), ctimeSecOf(t, i)].join(' '));
    }
    return { ...r, rows: rows.sort(), errors };
  } finally {
    closeRoots(roots);
  }
}

/** What find says (its own stat of each file): the same fields, independently. */
function fromFind(root: string): string[] {
  const out = execFileSync('find', [root, '-type', 'f', '-size', '+0', '-printf', '%P\\0%i %s %b %U %G %m %n %T@ %C@\\0']);
  const fields = out.toString('latin1').split('\0');
  const rows: string[] = [];
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const [ino, size, blocks, uid, gid, perm, nlink, mtime, ctime] = fields[i + 1]!.split(' ');
    const mode = (0o100000 | parseInt(perm!, 8)).toString(16);
    const sec = (t: string) => Math.floor(Number(t));
    rows.push([Buffer.from(fields[i]!, 'latin1').toString('hex'), ino, size, blocks, uid, gid, mode, nlink, sec(mtime!), sec(ctime!)].join(' '));
  }
  return rows.sort();
}

describe('walkTables', () => {
  it('holds exactly what find and stat say: odd names, owners, modes, times before 1970 and after 2106, sparse and preallocated files, hard links, 300 links', async () => {
    const g = path.join(dir, 'g');
    writeFile(path.join(g, 'usr/bin/tool'), { content: 'tool' });
    const bytes = (s: string) => Buffer.concat([Buffer.from(g + '/'), Buffer.from(s, 'latin1')]);
    fs.mkdirSync(bytes('dir\nwith newline\xff'));
    fs.writeFileSync(bytes('dir\nwith newline\xff/file\n\xfe\xfd'), 'odd');
    fs.writeFileSync(path.join(g, 'owned'), 'x');
    fs.chownSync(path.join(g, 'owned'), 1234, 5678);
    fs.chmodSync(path.join(g, 'owned'), 0o4751);
    writeFile(path.join(g, 'old'), { content: 'old' });
    sh('touch', '-h', '-d', '1960-01-01 00:00:00 UTC', path.join(g, 'old'));
    writeFile(path.join(g, 'future'), { content: 'future' });
    sh('touch', '-h', '-d', '2200-01-01 00:00:00 UTC', path.join(g, 'future'));
    sh('truncate', '-s', '3T', path.join(g, 'sparse'));
    fs.writeFileSync(path.join(g, 'linked'), 'linked');
    fs.linkSync(path.join(g, 'linked'), path.join(g, 'usr/also-linked'));
    fs.writeFileSync(path.join(g, 'empty'), '');
    fs.symlinkSync('usr/bin/tool', path.join(g, 'symlink'));
    // 64 KiB allocated past a 1-byte size: 128 blocks where 8 are usual, still in the compact column.
    fs.writeFileSync(path.join(g, 'prealloc'), 'p');
    sh('fallocate', '-n', '-l', '64K', path.join(g, 'prealloc'));
    // 1 MiB with nothing allocated: too far from usual, wide.
    sh('truncate', '-s', '1M', path.join(g, 'hole'));
    // 300 links: more than the 8-bit column holds.
    fs.mkdirSync(path.join(g, 'many'));
    fs.writeFileSync(path.join(g, 'many/l0'), 'many');
    for (let k = 1; k < 300; k++) fs.linkSync(path.join(g, 'many/l0'), path.join(g, `many/l${k}`));

    const r = await tabled(g);
    expect(r.errors).toEqual([]);
    expect(r.rows).toEqual(fromFind(g));
    expect(r.rows.length).toBe(10 + 300);
    // What is outside the compact columns is in the wide table, by row, and read back exactly (above).
    const t = r.tables;
    const rowOf = (name: string) => Array.from({ length: t.files.count }, (_, i) => i).find((i) => Buffer.from(fileName(t, i)).toString() === name)!;
    expect([t.files.size[rowOf('sparse')], t.files.blocks[rowOf('sparse')]]).toEqual([WIDE32, WIDE8]);
    expect(t.files.blocks[rowOf('hole')]).toBe(WIDE8);
    expect(t.files.blocks[rowOf('prealloc')]).toBe(BLOCKS_BIAS + 120);
    expect(t.files.nlink[rowOf('l7')]).toBe(WIDE8);
    expect([t.files.mtimeSec[rowOf('old')], t.files.mtimeSec[rowOf('future')]]).toEqual([WIDE32, WIDE32]);
    expect(t.files.nlink[rowOf('linked')]).toBe(2);
    expect(t.wide.count).toBe(4 + 300);
    expect(Array.from(r.tables.wide.rows)).toEqual(Array.from(r.tables.wide.rows).sort((a, b) => a - b));
    expect(r.outOfBounds).toBe(1);
    expect(r.special).toBe(1);
  });

  it("reads each listed directory's flags and project as lsattr shows them, as the plan's own open of it would (projects.ts)", async () => {
    const g = path.join(dir, 'g');
    for (const d of ['plain/deep', 'immutable', 'append', 'inherit', 'excluded']) writeFile(path.join(g, d, 'f'));
    sh('chattr', '+P', path.join(g, 'inherit'));
    sh('chattr', '+i', path.join(g, 'immutable'));
    sh('chattr', '+a', path.join(g, 'append'));
    try {
      const roots = openRoots([g]);
      try {
        const r = await walkTables(roots, { rules: [parseRule('/excluded')], minSize: 1, maxSize: Infinity, onError: () => {}, threads: 2 });
        const t = r.tables;
        const rowOf = new Map(Array.from({ length: t.dirs.count }, (_, d) => [dirPath(t, d).toString(), d]));
        expect([...rowOf.keys()].sort()).toEqual(['', 'append', 'immutable', 'inherit', 'plain', 'plain/deep']);
        for (const [rel, d] of rowOf) {
          const [projid, attrs] = sh('lsattr', '-p', '-d', path.join(g, rel)).trim().split(/\s+/);
          const x = r.dirAttrs.state[d]!;
          expect([x & XS.mask, r.dirAttrs.projid[d], !!(x & XS.inherit), !!(x & XS.locked)], rel).toEqual([XS.ok, Number(projid), attrs!.includes('P'), /[ia]/.test(attrs!)]);
        }
        expect(r.dirAttrs.state[rowOf.get('append')!]! & XS.locked).toBeTruthy();
        expect(r.dirAttrs.state[rowOf.get('inherit')!]! & XS.inherit).toBeTruthy();
        // The plan's directory projects from the walk's columns: what opening each directory again reads.
        const scan = { tables: t, roots };
        const all = (visit: (dir: number) => void) => rowOf.forEach((d) => visit(d));
        const fromWalk = readDirProjectRows(scan, all, r.dirAttrs);
        expect(fromWalk).toEqual(readDirProjectRows(scan, all));
        expect(Array.from(fromWalk.locked).filter((x) => x).length).toBe(2);
      } finally {
        closeRoots(roots);
      }
    } finally {
      sh('chattr', '-i', '-a', path.join(g, 'immutable'), path.join(g, 'append'));
    }
  });

  it('with no project-inherit, immutable or append-only directory, the plan gets no directory projects, and none would refuse a link', async () => {
    const g = path.join(dir, 'g');
    for (const d of ['plain/deep', 'other']) writeFile(path.join(g, d, 'f'));
    const roots = openRoots([g]);
    try {
      const r = await walkTables(roots, { rules: [], minSize: 1, maxSize: Infinity, onError: () => {}, threads: 2 });
      const scan = { tables: r.tables, roots };
      const all = (visit: (dir: number) => void) => {
        for (let d = 0; d < r.tables.dirs.count; d++) visit(d);
      };
      const fromWalk = readDirProjectRows(scan, all, r.dirAttrs);
      expect(Array.from(fromWalk.known).every((x) => x === 0)).toBe(true);
      // What opening each directory reads: known, and refusing no inode of any project.
      const read = readDirProjectRows(scan, all);
      expect(Array.from(read.known).filter((x) => x).length).toBe(r.tables.dirs.count);
      for (let d = 0; d < r.tables.dirs.count; d++)
        for (const projid of [0, read.projid[d]!, read.projid[d]! + 1]) expect(dirRefusal(read.locked[d] === 1, read.inherit[d] === 1, read.projid[d]!, projid)).toBeUndefined();
    } finally {
      closeRoots(roots);
    }
  });

  it('finds the same rows on 1 thread and on 4 (the fleet, read only)', async () => {
    const fleet = '/var/tmp/fleet';
    const guests = fs.existsSync(fleet) ? fs.readdirSync(fleet).slice(0, 3).map((d) => path.join(fleet, d)) : [];
    if (!guests.length) return;
    const one = (await Promise.all(guests.map((g) => tabled(g, { threads: 1 })))).flatMap((r) => r.rows);
    const four = (await Promise.all(guests.map((g) => tabled(g, { threads: 4 })))).flatMap((r) => r.rows);
    expect(four.length).toBeGreaterThan(1000);
    expect(four).toEqual(one);
  });

  it('reports a directory swapped for a symlink to the host mid-walk, and does not follow it', async () => {
    const g = path.join(dir, 'g');
    writeFile(path.join(g, 'ok/file'));
    writeFile(path.join(g, 'sub/inner/file'));
    const r = await tabled(g, {
      hook: (_, rel) => {
        if (rel.toString() === 'sub') {
          fs.renameSync(path.join(g, 'sub'), path.join(g, 'gone'));
          fs.symlinkSync('/etc', path.join(g, 'sub'));
        }
      },
      threads: 2,
    });
    expect(r.rows.map((row) => Buffer.from(row.split(' ')[0]!, 'hex').toString())).toEqual(['ok/file']);
    // openat2 refuses the symlink (O_NOFOLLOW | O_DIRECTORY: ENOTDIR; RESOLVE_NO_SYMLINKS: ELOOP).
    expect(r.errors.map((e) => e.path)).toEqual([path.join(g, 'sub')]);
    expect(['ENOTDIR', 'ELOOP']).toContain(r.errors[0]!.code);
  });

  it('stops at MAX_DEPTH levels with one message for the directory whose subdirectories it does not list', async () => {
    const g = path.join(dir, 'g');
    fs.mkdirSync(g);
    makeChain(g, MAX_DEPTH + 1, { nameLength: 1, every: 1024 });
    const r = await tabled(g, { threads: 2 });
    expect(Math.max(...r.tables.dirs.depth)).toBe(MAX_DEPTH);
    expect(r.tables.dirs.count).toBe(MAX_DEPTH + 1);
    expect(r.errors.map((e) => [e.code, e.message])).toEqual([['EDEEP', `1 subdirectories not listed: vunify lists ${MAX_DEPTH} levels below a root`]]);
    expect(r.errors[0]!.path.split('/').length - g.split('/').length).toBe(MAX_DEPTH);
    expect(r.rows.length).toBe(Math.ceil((MAX_DEPTH + 1) / 1024));
  });

  it('stops with EBUDGET when the tables would grow past maxBytes', async () => {
    const g = path.join(dir, 'g');
    execFileSync('python3', ['-c', `import os\nfor i in range(3000):\n  d=os.path.join('${g}','d%d' % (i % 30))\n  os.makedirs(d, exist_ok=True)\n  open(os.path.join(d,'file-%d' % i),'w').write('x')`]);
    await expect(tabled(g, { maxBytes: 50_000, threads: 2 })).rejects.toMatchObject({ code: 'EBUDGET', message: expect.stringMatching(/listing \d+ entries.*50000 bytes/) });
    expect((await tabled(g, { maxBytes: 10_000_000 })).rows.length).toBe(3000);
  });

  it('charges fileBytes per file kept against maxBytes, and says for how many files and bytes it stopped', async () => {
    const g = path.join(dir, 'g');
    execFileSync('python3', ['-c', `import os\nfor i in range(3000):\n  d=os.path.join('${g}','d%d' % (i % 30))\n  os.makedirs(d, exist_ok=True)\n  open(os.path.join(d,'file-%d' % i),'w').write('x')`]);
    // The rows alone fit 1 MB easily (the test above: 3,000 files in 10 MB, not in 50 kB); at 1,200 bytes a file, 3,000 files do not.
    expect((await tabled(g, { maxBytes: 1_000_000 })).rows.length).toBe(3000);
    const er = await tabled(g, { maxBytes: 1_000_000, fileBytes: 1200, threads: 2 }).then(() => undefined, (e: unknown) => e);
    expect(er).toMatchObject({ code: 'EBUDGET' });
    const { files, need } = er as { files: number; need: number };
    expect(files).toBeGreaterThan(1_000_000 / 1200 - 1024);
    expect(files).toBeLessThanOrEqual(3000);
    expect(need).toBeGreaterThan(1_000_000);
    expect(need).toBeGreaterThanOrEqual(files * 1200);
    // Files outside the size bounds are not kept, so not charged.
    expect((await tabled(g, { maxBytes: 1_000_000, fileBytes: 1200, minSize: 2 })).rows.length).toBe(0);
  });

  it('refuses names longer than 255 bytes (a FUSE root lists up to 1,024) with ENAMETOOLONG, deep in a tree too', async () => {
    // 14 levels of 255-byte names put the path near 3.6 kB, where a 1,000-byte name used to be copied past the
    // walk's 4 kB path buffer; its length was also kept in one byte (1000 & 255), naming another file.
    const g = path.join(dir, 'g');
    fs.mkdirSync(g);
    const daemon = spawn('python3', [path.join(import.meta.dirname, '..', 'helpers', 'long-names-fuse.py'), g, '14', '1000'], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        daemon.stdout!.on('data', (d) => String(d).includes('ready') && resolve());
        daemon.once('exit', (code) => reject(new Error(`long-names-fuse.py exited ${code}`)));
      });
      expect(fs.readdirSync(g, { encoding: 'buffer' }).map((n) => n.length).sort()).toEqual([1000, 2, 255]);
      const r = await tabled(g, { threads: 2, rules: [parseRule('/no-such-name')] });
      const names = r.rows.map((row) => path.basename(Buffer.from(row.split(' ')[0]!, 'hex').toString('latin1')));
      expect(names).toEqual(Array(15).fill('ok'));
      expect(r.errors.map((e) => [e.code, path.basename(e.path).length])).toEqual(Array(15).fill(['ENAMETOOLONG', 1000]));
    } finally {
      spawnSync('umount', ['-l', g]);
      daemon.kill('SIGKILL');
    }
  });

  it('never stats a mount point inside a root (a FUSE mount that never answers)', async () => {
    const g = path.join(dir, 'g');
    writeFile(path.join(g, 'usr/file'));
    const target = path.join(g, 'usr/hung');
    fs.mkdirSync(target);
    const daemon = spawn('python3', [path.join(import.meta.dirname, '..', 'helpers', 'hung-fuse.py'), target], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        daemon.stdout!.on('data', (d) => String(d).includes('ready') && resolve());
        daemon.once('exit', (code) => reject(new Error(`hung-fuse.py exited ${code}`)));
      });
      const r = await tabled(g, { threads: 2 });
      expect(r.rows.map((row) => Buffer.from(row.split(' ')[0]!, 'hex').toString())).toEqual(['usr/file']);
      expect(r.mountPoints).toBe(1);
    } finally {
      spawnSync('umount', ['-l', target]);
      daemon.kill('SIGKILL');
    }
  });
});

describe('walkTables on a directory of a million entries', () => {
  it('lists it with memory far below a copy of its names (VmHWM of a child process)', async () => {
    const mnt = path.join(dir, 'mnt');
    fs.mkdirSync(mnt);
    sh('mount', '-t', 'tmpfs', '-o', 'size=2g,nr_inodes=1100000', 'none', mnt);
    try {
      const g = path.join(mnt, 'g');
      const N = 1_000_000;
      // 40-byte names: 40 MB of names, which a copy of the listing would need at least.
      execFileSync('python3', ['-c', `import os\nos.mkdir('${g}')\nfd=os.open('${g}',os.O_RDONLY)\nfor i in range(${N}):\n  os.close(os.open('%040d' % i, os.O_CREAT|os.O_WRONLY, 0o644, dir_fd=fd))`]);
      const script = `
        import { openRoots } from ${JSON.stringify(path.resolve('dist/pipeline/roots.js'))};
        import { walkTables } from ${JSON.stringify(path.resolve('dist/pipeline/walk.js'))};
        import fs from 'node:fs';
        const hwm = () => Number(/VmHWM:\\s+(\\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
        const roots = openRoots([${JSON.stringify(g)}]);
        const before = hwm();
        const r = await walkTables(roots, { rules: [], minSize: 1, maxSize: Infinity, onError: () => {}, threads: 2 });
        console.log(JSON.stringify({ growth: hwm() - before, listed: r.listed, outOfBounds: r.outOfBounds }));`;
      const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script]).toString()) as { growth: number; listed: number; outOfBounds: number };
      expect(out.listed).toBe(N);
      expect(out.outOfBounds).toBe(N);
      expect(out.growth).toBeLessThan((40 * N) / 8);
    } finally {
      sh('umount', mnt);
    }
  }, 600_000);
});
