// The planner is pure: these tests build inodes by hand.
import { describe, expect, it } from 'vitest';
import { plan } from '../../src/pipeline/plan.js';
import type { DirNode, FileRec, Inode, Root } from '../../src/core/types.js';
import { FileType, type Stat } from '../../src/core/stat.js';
import { dirRel } from '../../src/core/paths.js';
import { dirAt } from '../helpers/nodes.js';

const roots: Root[] = [0, 1, 2].map((index) => ({ index, path: `/g${index}`, fd: -1, dev: 1, ino: 100 + index, mntId: 1 }));

let nextIno = 1000;
function mkInode(spec: { nlink?: number; paths: [number, string][]; size?: number }): Inode {
  const ino = nextIno++;
  const stat: Stat = {
    type: FileType.Regular, mode: 0o100644, uid: 0, gid: 0, nlink: spec.nlink ?? spec.paths.length, ino, dev: 1,
    size: spec.size ?? 100, blocks: 8, mtimeSec: 1, mtimeNsec: 0, ctimeSec: 1, ctimeNsec: 0, mntId: 1,
  };
  const paths: FileRec[] = spec.paths.map(([root, rel]) => {
    const parts = rel.split('/');
    const dir: DirNode = dirAt(roots[root]!, parts.slice(0, -1).join('/'));
    return { dir, name: Buffer.from(parts.at(-1)!), stat };
  });
  return { dev: 1, ino, stat, paths };
}

const shown = (f: FileRec) => `${f.dir.root.path}/${dirRel(f.dir)}/${f.name}`;

describe('plan', () => {
  it('prefers an inode with links outside the roots, whatever else', () => {
    const many = mkInode({ paths: [[0, 'a/x'], [0, 'b/x'], [0, 'c/x']] });
    const outside = mkInode({ nlink: 2, paths: [[2, 'z/x']] });
    const p = plan([[many, outside]]);
    expect(p.sets[0]!.canonical).toBe(outside);
    // All three links of `many` are replaced, so it is freed; `outside` never is.
    expect(p.sets[0]!.ops.map((o) => shown(o.file))).toEqual(['/g0/a/x', '/g0/b/x', '/g0/c/x']);
    expect([p.freeableInodes, p.freeableBytes, p.linksPlanned]).toEqual([1, 100, 3]);
  });

  it('then the most links, then the earliest root, then path order', () => {
    const twoLinks = mkInode({ paths: [[2, 'x'], [2, 'y']] });
    const early = mkInode({ paths: [[0, 'zzz']] });
    const late = mkInode({ paths: [[1, 'aaa']] });
    expect(plan([[early, late, twoLinks]]).sets[0]!.canonical).toBe(twoLinks);
    expect(plan([[late, early]]).sets[0]!.canonical).toBe(early);
    const b = mkInode({ paths: [[0, 'usr/b']] });
    const a = mkInode({ paths: [[0, 'usr/a']] });
    const p = plan([[b, a]]);
    expect(p.sets[0]!.canonical).toBe(a);
    expect(shown(p.sets[0]!.source)).toBe('/g0/usr/a');
  });

  it('does not count an inode as freeable when it has links outside the roots', () => {
    const canon = mkInode({ paths: [[0, 'a']] });
    const pinned = mkInode({ nlink: 3, paths: [[1, 'a'], [1, 'b']] });
    const free = mkInode({ paths: [[2, 'a']], size: 100 });
    // pinned wins canonical (outside links); give two pinned inodes to see one replaced but not freed.
    const pinned2 = mkInode({ nlink: 2, paths: [[2, 'b']] });
    const p = plan([[canon, pinned, free, pinned2]]);
    expect(p.sets[0]!.canonical).toBe(pinned);
    expect(p.linksPlanned).toBe(3);
    expect(p.freeableInodes).toBe(2); // canon and free; pinned2 keeps its outside link
  });

  it('emits one operation per path and skips single-inode sets', () => {
    const x = mkInode({ paths: [[0, 'a']] });
    const y = mkInode({ paths: [[1, 'a'], [1, 'b'], [2, 'c']] });
    expect(plan([[x]]).sets).toHaveLength(0);
    const p = plan([[x, y]]);
    expect(p.sets[0]!.canonical).toBe(y);
    expect(p.sets[0]!.ops.map((o) => shown(o.file))).toEqual(['/g0//a']);
  });
});

describe('plan with what the kernel allows', () => {
  it('leaves locked inodes out, and cuts a set where its canonical has no room left', () => {
    const full = mkInode({ nlink: 9, paths: [[0, 'a/x']] }); // 8 links outside the roots, limit 10: room for 1
    const locked = mkInode({ nlink: 5, paths: [[0, 'b/x']] });
    const others = [1, 2, 3].map((r) => mkInode({ paths: [[r % 3, `c${r}/x`]] }));
    const p = plan([[full, locked, ...others]], { locked: (i) => i === locked, linkLimit: () => 10 });
    expect(p.sets.map((s) => [s.canonical, s.duplicates])).toEqual([[full, [others[2]]], [others[0], [others[1]]]].map(([c, d]) => [c, d]));
    expect(p.linksPlanned).toBe(2);
    expect(p.sets.flatMap((s) => s.duplicates)).not.toContain(locked);
  });
});
