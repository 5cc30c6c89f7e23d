// Inodes renumbered by grouping and by the content split (group.ts
// InodeRows.renumber/permute, rows.ts permuteRead, hash.ts
// splitRowsByContent): on real trees whose inodes have many paths (thousands
// for one inode, links outside the roots, groups of one inode with many
// paths), files alike but for an xattr or an inode flag, and metadata
// groups that mix contents, so every group's candidates are reordered. An
// attribute or a path attached to the wrong inode would show as paths of
// different files sharing an inode, or as a dry run that does not say what
// the linking run frees. Checked with find, sha256sum, getfattr and lsattr
// against an oracle computed from them before the runs; with and without the
// hash cache (its join reads the renumbered heads). A second case links
// while a guest process keeps adding and removing links to its files.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rng } from '../helpers/hostile.js';
import { rmTree, runUnify, sh, snapshot, tempDir } from '../helpers/tree.js';

let dir: string;
beforeEach(() => {
  dir = tempDir('vunify-renumber-');
});
afterEach(() => rmTree(dir));


const GUESTS = 6;
const MTIME = '1700000000.123456789';
const content = (k: number, size: number) => Buffer.alloc(size, `content ${k} `);

/** Make one file with its metadata, then `links` more names for it in its guest (and `outside` names outside every root). */
function make(root: string, rel: string, data: Buffer, o: { xattr?: string; nodump?: boolean; mode?: number; links?: number; outside?: number }) {
  const file = path.join(root, rel);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, data);
  fs.chmodSync(file, o.mode ?? 0o644);
  if (o.xattr) sh('setfattr', '-n', 'user.v', '-v', o.xattr, file);
  if (o.nodump) sh('chattr', '+d', file);
  sh('touch', '-h', '-d', `@${MTIME}`, file);
  for (let k = 0; k < (o.links ?? 0); k++) {
    const d = path.join(root, 'links', rel.replace(/\//g, '_'), String(k % 37));
    fs.mkdirSync(d, { recursive: true });
    fs.linkSync(file, path.join(d, `l${k}`));
  }
  for (let k = 0; k < (o.outside ?? 0); k++) {
    fs.mkdirSync(path.join(dir, 'outside'), { recursive: true });
    fs.linkSync(file, path.join(dir, 'outside', `${path.basename(root)}_${rel.replace(/\//g, '_')}_${k}`));
  }
}

/** The fleet: see the header. Returns the roots. */
function build(seed: number): string[] {
  const rand = rng(seed);
  const roots = Array.from({ length: GUESTS }, (_, g) => path.join(dir, `g${g}`));
  for (const r of roots) fs.mkdirSync(r);
  // One inode of 3,000 paths in a set (its content is in every guest).
  for (const [g, r] of roots.entries()) make(r, 'usr/lib/big', content(0, 8192), g === 0 ? { links: 3000 } : {});
  // One of 2,000 paths alone in a metadata group with four others that form a set:
  // the split moves it behind them.
  make(roots[1]!, 'opt/alone', content(1, 8192), { links: 2000 });
  for (const r of roots.slice(2)) make(r, 'opt/alone', content(2, 8192), {});
  // A group of one inode with many paths: no candidate at all.
  make(roots[2]!, 'srv/single', content(3, 20000), { links: 1000 });
  // Alike but for an xattr, and alike but for nodump, each with a many-path inode among them.
  for (const [g, r] of roots.entries()) make(r, 'etc/x', content(4, 8192), { xattr: g % 2 ? 'b' : 'a', links: g === 3 ? 400 : 0 });
  for (const [g, r] of roots.entries()) make(r, 'etc/d', content(5, 8192), { nodump: g % 3 === 0, links: g === 4 ? 300 : 0 });
  // And at random: contents from a small pool, one size, so groups mix them; links inside and outside.
  for (const [g, r] of roots.entries()) {
    for (let k = 0; k < 60; k++) {
      const c = 10 + Math.floor(rand() * 8);
      const o = {
        xattr: rand() < 0.1 ? (rand() < 0.5 ? 'a' : 'b') : undefined,
        nodump: rand() < 0.1,
        mode: rand() < 0.05 ? 0o600 : 0o644,
        links: rand() < 0.15 ? 1 + Math.floor(rand() * 40) : 0,
        outside: rand() < 0.05 ? 1 : 0,
      };
      make(r, `var/r${g}/f${k}`, content(c, 8192), o);
    }
  }
  return roots;
}

interface PathInfo {
  ino: number;
  size: number;
  key: string;
}

/** Every regular file under the roots: its inode, size, and everything that must not change (find, sha256sum, getfattr via snapshot; lsattr). */
function survey(roots: string[]): Map<string, PathInfo> {
  const out = new Map<string, PathInfo>();
  for (const r of roots) {
    const flags = new Map<string, string>();
    for (const line of sh('lsattr', '-Ra', r).split('\n')) {
      const m = /^(\S+) (\/.+)$/.exec(line);
      if (m) flags.set(m[2]!, m[1]!);
    }
    const withInodes = snapshot(r, { inodes: true });
    for (const [rel, v] of snapshot(r, { dirTimes: false })) {
      if (!v.startsWith('f|')) continue;
      const full = path.join(r, rel);
      const [, ino] = withInodes.get(rel)!.split('|');
      out.set(full, { ino: Number(ino), size: fs.statSync(full).size, key: `${v}|${flags.get(full)}` });
    }
  }
  return out;
}

/** Inode numbers of the files outside the roots. */
function outsideInodes(): Set<number> {
  const o = path.join(dir, 'outside');
  if (!fs.existsSync(o)) return new Set();
  return new Set(fs.readdirSync(o).map((n) => fs.statSync(path.join(o, n)).ino));
}

describe('inodes renumbered by grouping and the content split', () => {
  it.each([
    ['without the hash cache', false],
    ['with the hash cache', true],
  ])('%s: only files alike in every attribute share an inode, every path keeps its bytes and attributes, and the dry run says what linking frees', async (_, withCache) => {
    const roots = build(7);
    const before = survey(roots);
    const state = path.join(dir, 'state');
    const opts = { stateDir: state, ...(withCache ? {} : { cache: false as const }) };
    // With the cache: a first dry run fills it, so the second and the linking run join it.
    if (withCache) await runUnify(roots, { ...opts, dryRun: true });
    const dry = await runUnify(roots, { ...opts, dryRun: true });
    const linked = await runUnify(roots, opts);
    const after = survey(roots);
    expect(dry.errors).toEqual([]);
    expect(linked.errors).toEqual([]);

    // Nothing a path shows changed (content, mode, owner, mtime, xattrs, flags).
    expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
    for (const [p, a] of after) expect(a.key, p).toBe(before.get(p)!.key);
    // Paths share an inode only if they were alike in all of it; paths alike all share one now.
    const keysOfInode = new Map<number, Set<string>>();
    const inodesOfKey = new Map<string, Set<number>>();
    for (const a of after.values()) {
      (keysOfInode.get(a.ino) ?? keysOfInode.set(a.ino, new Set()).get(a.ino)!).add(a.key);
      (inodesOfKey.get(a.key) ?? inodesOfKey.set(a.key, new Set()).get(a.key)!).add(a.ino);
    }
    for (const [ino, keys] of keysOfInode) expect(keys.size, `inode ${ino}`).toBe(1);
    for (const [key, inos] of inodesOfKey) expect(inos.size, key).toBe(1);
    // Freed: the inodes no path names any more and none outside holds (their st_size).
    const now = new Set([...after.values()].map((a) => a.ino));
    const outside = outsideInodes();
    const freed = new Map<number, number>();
    for (const b of before.values()) if (!now.has(b.ino) && !outside.has(b.ino)) freed.set(b.ino, b.size);
    const freedBytes = [...freed.values()].reduce((s, v) => s + v, 0);
    const replaced = [...before].filter(([p, b]) => after.get(p)!.ino !== b.ino).length;
    expect(freedBytes).toBeGreaterThan(0);
    expect(linked.report.summary.freedBytes).toBe(freedBytes);
    expect(dry.report.summary.freeableBytes).toBe(freedBytes);
    expect(linked.report.summary.linksMade).toBe(replaced);
    expect(dry.report.summary.linksPlanned).toBe(replaced);
    const rerun = await runUnify(roots, { ...opts, dryRun: true });
    expect(rerun.report.summary.linksPlanned).toBe(0);
  }, 300_000);

  it('while a guest process adds and removes links to its files during the runs: still only files alike share an inode, none changed', async () => {
    const roots = build(11);
    const before = survey(roots);
    // The guest: links to a file of every kind above (the many-path one, the one alone, xattr and flag
    // variants), made and removed in a loop, so link counts and paths change under the walk and the linker.
    const targets = ['usr/lib/big', 'etc/x', 'etc/d', 'opt/alone'].flatMap((rel) => roots.map((r) => path.join(r, rel)));
    const made = targets.map((t, i) => `ln -f "${t}" "${path.dirname(t)}/.hostile${i}" 2>/dev/null`).join('\n');
    const gone = targets.map((t, i) => `rm -f "${path.dirname(t)}/.hostile${i}"`).join('\n');
    const script = `${made}\nsleep 0.01\n${gone}\nsleep 0.01`;
    fs.writeFileSync(path.join(dir, 'guest.sh'), `while :; do\n${script}\ndone\n`);
    const guest = spawn('sh', [path.join(dir, 'guest.sh')], { stdio: 'ignore', detached: true });
    try {
      for (let k = 0; k < 3; k++) {
        await runUnify(roots, { stateDir: path.join(dir, 'state'), dryRun: true });
        await runUnify(roots, { stateDir: path.join(dir, 'state') });
      }
    } finally {
      const exited = new Promise((r) => guest.once('exit', r));
      process.kill(-guest.pid!, 'SIGKILL');
      await exited;
    }
    const after = survey(roots);
    for (const [p, a] of after) {
      if (path.basename(p).startsWith('.hostile')) continue;
      expect(a.key, p).toBe(before.get(p)!.key);
    }
    const keysOfInode = new Map<number, Set<string>>();
    for (const [p, a] of after) (keysOfInode.get(a.ino) ?? keysOfInode.set(a.ino, new Set()).get(a.ino)!).add(path.basename(p).startsWith('.hostile') ? a.key : before.get(p)!.key);
    for (const [ino, keys] of keysOfInode) {
      if (keys.size !== 1) {
        const on = [...after].filter(([, a]) => a.ino === ino).map(([p, a]) => `${p}\n   now ${a.key}\n   was ${before.get(p)?.key} ino ${before.get(p)?.ino}`);
        console.log(`inode ${ino}:\n${on.join('\n')}`);
      }
      expect(keys.size, `inode ${ino}`).toBe(1);
    }
    expect(sh('find', dir, '-name', '.vunify.*')).toBe('');
  }, 300_000);
});
