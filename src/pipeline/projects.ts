/*
 * Directory projects: before planning, read the project ID and the
 * project-inherit, immutable and append-only flags of every directory
 * holding a path of a candidate set, so the plan knows which paths the
 * kernel will let us replace (policy.ts acceptsLink): no name in an
 * immutable or append-only directory can be replaced, and XFS and ext4
 * refuse link(2) and rename(2) into a project-inherit directory of an
 * inode of another project (EXDEV): on
 * hosts that give each guest its own project for its disk quota (LXD/Incus
 * "dir" pools, many hosting setups), a guest's paths can only ever join
 * inodes of its own project.
 *
 * The native walk reads them on the descriptor it lists each directory
 * through (walk.ts DirAttrs): opened confined and checked against its
 * parent's listing, so no second open is needed (a second confined open
 * from the root of ten thousand directories was a third of a dry run's
 * plan). Without the walk's columns (the object API, tests), each directory
 * is opened confined and checked to be the one the walk listed (as
 * os/confine.ts openDir does), read with FS_IOC_FSGETXATTR, and closed, by
 * the addon, one call per root (sys.dirXattrs). Either way a filesystem
 * without the ioctl (ENOTTY and the like) has no projects, and is not
 * asked again; a directory that could not be read is left unknown: the
 * linker names the problem if it still matters. Flags changed after they
 * were read are the linker's to find (it re-checks everything).
 */
import { writeDirRel } from '../core/paths.js';
import { FS_XFLAG_APPEND, FS_XFLAG_IMMUTABLE, FS_XFLAG_PROJINHERIT } from '../core/stat.js';
import type { DirNode, DirProject, Inode, Root } from '../core/types.js';
import { DIR_XATTRS, sys } from '../os/sys.js';
import { dirRelLength, writeDirRelRow, type DirProjects, type Scan } from './rows.js';
import { XS, type DirAttrs } from './walk.js';

/** Fill in DirNode.project for the directories of every path of `inodes`. */
export function readDirProjects(inodes: Iterable<Inode>): void {
  // Each directory once, in the order the paths name them. A directory
  // being read is marked by PENDING in its project (no Set of 10,000
  // directories looked up once per path); what is not read stays unknown.
  const dirs: DirNode[] = [];
  for (const inode of inodes) {
    const paths = inode.paths;
    for (let p = 0; p < paths.length; p++) {
      const dir = paths[p]!.dir;
      if (dir.project !== undefined) continue;
      dir.project = PENDING;
      dirs.push(dir);
    }
  }
  // Read them one root at a time, in one call to the addon (four calls per
  // directory through openDir cost as much as the plan itself).
  const out = new Uint32Array(dirs.length * 3);
  const byRoot = new Map<Root, number[]>();
  for (let k = 0; k < dirs.length; k++) {
    const list = byRoot.get(dirs[k]!.root);
    if (list) list.push(k);
    else byRoot.set(dirs[k]!.root, [k]);
  }
  try {
    readRoots(dirs, byRoot, out);
  } catch (er) {
    for (const dir of dirs) dir.project = undefined; // no marker left for the plan to read as a plain directory
    throw er;
  }
  // Apply in path order: once a filesystem shows it has no projects, its
  // later directories are left without (as they were never asked before).
  const noProjects = new Set<number>(); // devices without FS_IOC_FSGETXATTR
  for (let k = 0; k < dirs.length; k++) {
    const dir = dirs[k]!;
    dir.project = undefined;
    if (noProjects.has(dir.dev)) continue;
    const status = out[3 * k]!, xflags = out[3 * k + 1]!, projid = out[3 * k + 2]!;
    if (status === DIR_XATTRS.ok) {
      dir.project = { projid, inherit: (xflags & FS_XFLAG_PROJINHERIT) !== 0, locked: (xflags & (FS_XFLAG_IMMUTABLE | FS_XFLAG_APPEND)) !== 0 };
    } else if (status === DIR_XATTRS.unsupported) {
      noProjects.add(dir.dev);
    }
  }
}

/** One sys.dirXattrs per root; each directory's status, xflags, projid into `out` at its index in `dirs`. */
function readRoots(dirs: DirNode[], byRoot: Map<Root, number[]>, out: Uint32Array): void {
  for (const [root, list] of byRoot) {
    let size = 0;
    for (const k of list) size += dirs[k]!.relLength + 1;
    const paths = Buffer.alloc(size); // zeroed: every path ends in a NUL
    const expect = new Float64Array(list.length * 2);
    const got = new Uint32Array(list.length * 3);
    for (let j = 0, at = 0; j < list.length; j++) {
      const dir = dirs[list[j]!]!;
      writeDirRel(dir, paths, at);
      at += dir.relLength + 1;
      expect[2 * j] = dir.dev;
      expect[2 * j + 1] = dir.ino;
    }
    sys.dirXattrs(root.fd, paths, expect, got);
    for (let j = 0; j < list.length; j++) out.set(got.subarray(3 * j, 3 * j + 3), 3 * list[j]!);
  }
}

/** Marks a directory listed for reading; never left in place. */
const PENDING: DirProject = Object.freeze({ projid: 0, inherit: false, locked: false });

/**
 * readDirProjects on rows: the directories (rows of the directory table)
 * listed by `dirsOf`, in that order, read one root at a time by the addon;
 * the result is columns by directory row (rows.ts DirProjects), which the
 * per-set objects take their DirNode.project from. `listed`: what the walk
 * read of every directory as it listed it; then nothing is opened here.
 */
export function readDirProjectRows(scan: Scan, dirsOf: (visit: (dir: number) => void) => void, listed?: DirAttrs): DirProjects {
  const t = scan.tables, n = t.dirs.count;
  const out: DirProjects = { known: new Uint8Array(n), projid: new Uint32Array(n), inherit: new Uint8Array(n), locked: new Uint8Array(n) };
  // No directory the walk listed is project-inherit, immutable or append-only (most hosts):
  // then none refuses a link to any inode (policy.ts dirRefusal), known or not, and what each
  // says changes no decision of the plan, kept-apart or the linker. Nothing is looked up.
  if (listed && !anyRefusing(listed)) return out;
  const seen = new Uint8Array(n);
  const order: number[] = [];
  dirsOf((dir) => {
    if (seen[dir]) return;
    seen[dir] = 1;
    order.push(dir);
  });
  const got = listed ? fromWalk(listed, order) : readDirs(scan, order);
  const noProjects = new Set<number>(); // devices without FS_IOC_FSGETXATTR
  for (let k = 0; k < order.length; k++) {
    const dir = order[k]!;
    const dev = scan.roots[t.dirs.root[dir]!]!.dev;
    if (noProjects.has(dev)) continue;
    const status = got[3 * k]!, xflags = got[3 * k + 1]!, projid = got[3 * k + 2]!;
    if (status === DIR_XATTRS.ok) {
      out.known[dir] = 1;
      out.projid[dir] = projid;
      out.inherit[dir] = (xflags & FS_XFLAG_PROJINHERIT) !== 0 ? 1 : 0;
      out.locked[dir] = (xflags & (FS_XFLAG_IMMUTABLE | FS_XFLAG_APPEND)) !== 0 ? 1 : 0;
    } else if (status === DIR_XATTRS.unsupported) {
      noProjects.add(dev);
    }
  }
  return out;
}

/** Whether a directory the walk listed may refuse a link (XS.inherit or XS.locked). */
function anyRefusing(listed: DirAttrs): boolean {
  const st = listed.state;
  for (let d = 0; d < st.length; d++) if (st[d]! & (XS.inherit | XS.locked)) return true;
  return false;
}

/** The walk's columns as sys.dirXattrs' results (status, xflags, projid) for the directories of `order`. */
function fromWalk(listed: DirAttrs, order: readonly number[]): Uint32Array {
  const got = new Uint32Array(order.length * 3);
  for (let k = 0; k < order.length; k++) {
    const x = listed.state[order[k]!]!;
    const st = x & XS.mask;
    got[3 * k] = st === XS.ok ? DIR_XATTRS.ok : st === XS.unsupported ? DIR_XATTRS.unsupported : st === XS.failed ? DIR_XATTRS.failed : DIR_XATTRS.gone;
    got[3 * k + 1] = (x & XS.inherit ? FS_XFLAG_PROJINHERIT : 0) | (x & XS.locked ? FS_XFLAG_IMMUTABLE : 0);
    got[3 * k + 2] = listed.projid[order[k]!]!;
  }
  return got;
}

/** sys.dirXattrs of the directories of `order`, one call per root: (status, xflags, projid) each. */
function readDirs(scan: Scan, order: readonly number[]): Uint32Array {
  const t = scan.tables;
  const got = new Uint32Array(order.length * 3);
  const byRoot = new Map<number, number[]>();
  for (let k = 0; k < order.length; k++) {
    const r = t.dirs.root[order[k]!]!;
    const list = byRoot.get(r);
    if (list) list.push(k);
    else byRoot.set(r, [k]);
  }
  for (const [r, list] of byRoot) {
    const root = scan.roots[r]!;
    let size = 0;
    for (const k of list) size += dirRelLength(t, order[k]!) + 1;
    const paths = Buffer.alloc(size); // zeroed: every path ends in a NUL
    const expect = new Float64Array(list.length * 2);
    const res = new Uint32Array(list.length * 3);
    for (let j = 0, at = 0; j < list.length; j++) {
      const dir = order[list[j]!]!;
      writeDirRelRow(t, dir, paths, at);
      at += dirRelLength(t, dir) + 1;
      expect[2 * j] = root.dev;
      expect[2 * j + 1] = t.dirs.ino[dir]!;
    }
    sys.dirXattrs(root.fd, paths, expect, res);
    for (let j = 0; j < list.length; j++) got.set(res.subarray(3 * j, 3 * j + 3), 3 * list[j]!);
  }
  return got;
}
