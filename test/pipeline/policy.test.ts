// The sharing policy on hand-built inodes: the key, the order of reasons,
// locked files, and which paths a project-inherit directory lets us replace
// (and what the plan makes of them).
import { describe, expect, it } from 'vitest';
import { FileType, FS_IMMUTABLE_FL, type Stat } from '../../src/core/stat.js';
import type { DirNode, DirProject, FileRec, Inode, Root } from '../../src/core/types.js';
import { acceptsLink, firstDifference, isPinned, readKey, REASONS, shareKey } from '../../src/pipeline/policy.js';
import { plan } from '../../src/pipeline/plan.js';
import { keptApart } from '../../src/report/kept-apart.js';

const roots: Root[] = [0, 1, 2].map((index) => ({ index, path: `/g${index}`, fd: -1, dev: 1, ino: 100 + index, mntId: 1 }));
let nextIno = 10;

function mk(over: Partial<Stat> = {}, more: Partial<Inode> = {}, where: { root?: number; project?: DirProject } = {}): Inode {
  const stat: Stat = {
    type: FileType.Regular, mode: 0o100644, uid: 0, gid: 0, nlink: 1, ino: nextIno++, dev: 1,
    size: 100, blocks: 8, mtimeSec: 1, mtimeNsec: 0, ctimeSec: 1, ctimeNsec: 0, mntId: 1, ...over,
  };
  const root = roots[where.root ?? 0]!;
  const top: DirNode = { root, parent: null, name: Buffer.alloc(0), depth: 0, relLength: 0, dev: stat.dev, ino: root.ino };
  const name = Buffer.from(`d${stat.ino}`);
  const dir: DirNode = { root, parent: top, name, depth: 1, relLength: name.length, dev: stat.dev, ino: 1000 + stat.ino, project: where.project };
  const file: FileRec = { dir, name: Buffer.from('f'), stat };
  return { dev: stat.dev, ino: stat.ino, stat, paths: [file], hash: 7n, xattrs: '', flags: 0, projid: 0, ...more };
}

const opts = { ignoreMtime: false };

describe('firstDifference', () => {
  it('names the first reason in the documented order', () => {
    const base = mk();
    expect(REASONS).toEqual(['filesystem', 'mount', 'project', 'flags', 'owner', 'mode', 'mtime', 'xattrs']);
    expect(firstDifference(base, mk(), opts)).toBeUndefined();
    expect(firstDifference(base, mk({ dev: 2 }), opts)).toBe('filesystem'); // a btrfs subvolume has its own st_dev
    expect(firstDifference(base, mk({ mntId: 9 }), opts)).toBe('mount');
    expect(firstDifference(base, mk({}, { projid: 5 }), opts)).toBe('project');
    expect(firstDifference(base, mk({}, { flags: 0x40 }), opts)).toBe('flags'); // nodump
    expect(firstDifference(base, mk({ gid: 33 }), opts)).toBe('owner');
    expect(firstDifference(base, mk({ mode: 0o104644 }), opts)).toBe('mode'); // setuid alone
    expect(firstDifference(base, mk({ mtimeNsec: 1 }), opts)).toBe('mtime');
    expect(firstDifference(base, mk({}, { xattrs: 'user.x=eA==' }), opts)).toBe('xattrs');
    // Several: the earliest wins.
    expect(firstDifference(base, mk({ uid: 1, mode: 0o100600 }, { projid: 3, xattrs: 'x' }), opts)).toBe('project');
  });

  it('ignores flags the filesystem sets itself, and mtime with --ignore-mtime', () => {
    expect(firstDifference(mk(), mk({}, { flags: 0x80000 }), opts)).toBeUndefined(); // extents
    expect(firstDifference(mk(), mk({ mtimeSec: 99 }), { ignoreMtime: true })).toBeUndefined();
  });

  it('an immutable inode differs by its flags from everything, itself alike', () => {
    const locked = mk({}, { flags: FS_IMMUTABLE_FL });
    expect(firstDifference(mk(), locked, opts)).toBe('flags');
    expect(firstDifference(locked, mk({}, { flags: FS_IMMUTABLE_FL }), opts)).toBe('flags');
    expect(readKey(locked, opts)).toBeUndefined();
    expect(shareKey(locked, opts)).toBeUndefined();
    expect(readKey(locked, { ...opts, iunlink: true })).toBeDefined(); // the linker decides for --iunlink
  });
});

describe('shareKey', () => {
  it('is equal exactly when firstDifference finds nothing', () => {
    const variants = [mk(), mk(), mk({ dev: 2 }), mk({ mntId: 2 }), mk({}, { projid: 1 }), mk({}, { flags: 0x1000 }), mk({ uid: 3 }), mk({ mode: 0o100600 }), mk({ mtimeSec: 2 }), mk({}, { xattrs: 'y' }), mk({}, { hash: 8n })];
    for (const a of variants) {
      for (const b of variants) {
        const same = firstDifference(a, b, opts) === undefined && a.hash === b.hash;
        expect(shareKey(a, opts) === shareKey(b, opts)).toBe(same);
      }
    }
  });
});

describe('project-inherit directories', () => {
  it('accept links only of inodes of their own project', () => {
    const inherit7 = { projid: 7, inherit: true };
    expect(acceptsLink(mk({}, {}, { project: inherit7 }).paths[0]!, { projid: 7 })).toBe(true);
    expect(acceptsLink(mk({}, {}, { project: inherit7 }).paths[0]!, { projid: 0 })).toBe(false);
    expect(acceptsLink(mk({}, {}, { project: { projid: 7, inherit: false } }).paths[0]!, { projid: 0 })).toBe(true);
    expect(acceptsLink(mk().paths[0]!, { projid: 3 })).toBe(true); // no projects on this filesystem
  });

  it('the plan never replaces a path such a directory refuses; its inode is canonical, and the dry run says why', () => {
    // Three copies in project 0; the second guest's directory inherits project 7.
    const a = mk({}, {}, { root: 0 });
    const pinned = mk({}, {}, { root: 1, project: { projid: 7, inherit: true } });
    const c = mk({}, {}, { root: 2 });
    expect(isPinned(pinned)).toBe(true);
    const p = plan([[a, pinned, c]]);
    expect(p.sets).toHaveLength(1);
    expect(p.sets[0]!.canonical).toBe(pinned); // it cannot be freed anyway
    expect(p.sets[0]!.ops.map((o) => o.inode)).toEqual([a, c]);
    expect(p.freeableBytes).toBe(200);
    // Two pinned inodes: only the other one's links are planned, and it is not freeable.
    const q = plan([[mk({}, {}, { root: 1, project: { projid: 7, inherit: true } }), pinned]]);
    expect(q.sets).toEqual([]);
    expect(keptApart([mk({}, {}, { root: 1, project: { projid: 7, inherit: true } }), pinned], 3, opts).total.project).toBe(100);
  });
});

describe('keptApart', () => {
  it('charges each extra class to its guest and to the pair it was kept from', () => {
    const main = [mk({}, {}, { root: 0 }), mk({}, {}, { root: 0 })];
    const flagged = mk({}, { flags: 0x40 }, { root: 1 });
    const otherProject = mk({}, { projid: 4 }, { root: 2 });
    const k = keptApart([...main, flagged, otherProject], 3, opts);
    expect(k.total).toMatchObject({ flags: 100, project: 100 });
    expect(k.byGuest[1]).toMatchObject({ flags: 100, project: 0 });
    expect(k.byGuest[2]).toMatchObject({ flags: 0, project: 100 });
    expect(k.pairs.map((p) => [p.guests, p.bytes.flags, p.bytes.project])).toEqual([[[0, 1], 100, 0], [[0, 2], 0, 100]]);
  });
});
