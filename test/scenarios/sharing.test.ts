// The dry run tells the truth, on real filesystems with guests that behave
// badly: project IDs on XFS (with and without the inherit flag), btrfs
// subvolumes and a bind mount as guests, and a guest that plants forged
// XXH64 collisions (built here from the algorithm with the public seed 0).
// Each case checks with independent tools (stat, xfs_io, sha256sum) which
// inodes end up shared, that the linking run frees what the dry run said,
// exits 0 with no error line, and that a rerun has nothing left to do.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli/main.js';
import { sys } from '../../src/os/sys.js';
import { KEY_FILE, loadHashKey } from '../../src/state/hash-key.js';
import { loopFs, type LoopFs } from '../helpers/loopfs.js';
import { runReport } from '../helpers/report.js';
import { inode, rmTree, runCli, sh, sha256File, tempDir, testStateDir, writeFile } from '../helpers/tree.js';
import { forgeXxh3Pair } from '../helpers/xxh3.js';
import { xxh3 } from '../../src/core/xxh3.js';

/** A library-sized file, the same in every guest. */
const LIB = Buffer.from(Array.from({ length: 96 * 1024 }, (_, i) => (i * 2654435761) >>> 24));
const SIZE = LIB.length;
const REL = 'usr/lib/libc.so.6';

interface Summary {
  freeableBytes: number;
  freedBytes: number;
  linksMade: number;
  linksPlanned: number;
  errors: number;
  keptApart?: Record<string, number>;
  contentSplits?: { sets: number; parts: number; bytes: number };
}

/** A dry run, then a linking run, then a rerun, all through the CLI with --json. */
function dryLinkRerun(roots: string[], extra: string[] = []) {
  const go = (more: string[]) => {
    const r = runCli(['--json', '--no-default-excludes', ...extra, ...more, ...roots]);
    return { code: r.code, stderr: r.stderr, summary: (r.stdout ? JSON.parse(r.stdout).summary : {}) as Summary };
  };
  return { dry: go(['-n']), link: go([]), rerun: go([]) };
}

const ino = (root: string, rel = REL) => inode(path.join(root, rel));

describe('project IDs on XFS', () => {
  let xfs: LoopFs;
  const G = (g: string) => path.join(xfs.dir, g);
  /** A guest directory in project `projid`, with or without the inherit flag, holding the library. */
  function guest(g: string, opts: { projid?: number; inherit?: boolean; fileProjid?: number }) {
    fs.mkdirSync(G(g));
    const cmds = [];
    if (opts.projid !== undefined) cmds.push('-c', `chproj ${opts.projid}`);
    if (opts.inherit) cmds.push('-c', 'chattr +P');
    if (cmds.length) sh('xfs_io', ...cmds, G(g));
    // Directories created under an inheriting one inherit flag and project.
    writeFile(path.join(G(g), REL), { content: LIB });
    if (opts.fileProjid !== undefined) sh('xfs_io', '-c', `chproj ${opts.fileProjid}`, path.join(G(g), REL));
  }
  const projidOf = (file: string) => Number(/projid = (\d+)/.exec(sh('xfs_io', '-c', 'lsproj', file))![1]);

  beforeAll(() => {
    xfs = loopFs('xfs', 320 << 20);
    // Five guests in three projects, each directory inheriting its project.
    guest('p10a', { projid: 10, inherit: true });
    guest('p10b', { projid: 10, inherit: true });
    guest('p20a', { projid: 20, inherit: true });
    guest('p20b', { projid: 20, inherit: true });
    guest('p30', { projid: 30, inherit: true });
    // No projects at all.
    guest('plain', {});
    // Project 10 inheriting directories, but the file put back in project 0:
    // a link into its directory of any project-0 inode fails EXDEV.
    guest('pinned', { projid: 10, inherit: true, fileProjid: 0 });
    // A directory without the inherit flag: the file's own project (20) decides.
    guest('loose', { projid: 10, fileProjid: 20 });
    // For the report: three more guests in three projects, left to it alone.
    for (const [g, projid] of [['r10', 10], ['r20', 20], ['r30', 30]] as const) guest(g, { projid, inherit: true });
  });
  afterAll(() => xfs?.unmount());

  it('unifies within each project, never across, and never tries a link the kernel refuses', () => {
    const roots = ['p10a', 'p10b', 'p20a', 'p20b', 'p30', 'plain', 'pinned', 'loose'].map(G);
    expect(roots.map((r) => projidOf(path.join(r, REL)))).toEqual([10, 10, 20, 20, 30, 0, 0, 20]);
    // What the kernel does, checked first with ln(1): a project-0 inode cannot be linked into "pinned".
    expect(() => execFileSync('ln', [path.join(G('plain'), REL), path.join(G('pinned'), 'usr/lib/probe')], { stdio: 'pipe' })).toThrow(/cross-device/);

    const { dry, link, rerun } = dryLinkRerun(roots);
    expect([dry.code, dry.stderr, link.code, link.stderr]).toEqual([0, '', 0, '']);
    // p10b -> p10a; p20b and loose -> p20a; plain -> pinned (pinned cannot take a link: it is the canonical).
    expect(dry.summary.freeableBytes).toBe(4 * SIZE);
    expect(link.summary.freedBytes).toBe(dry.summary.freeableBytes);
    expect(link.summary.linksMade).toBe(dry.summary.linksPlanned);
    expect(ino(G('p10b'))).toBe(ino(G('p10a')));
    expect(ino(G('p20b'))).toBe(ino(G('p20a')));
    expect(ino(G('loose'))).toBe(ino(G('p20a')));
    expect(ino(G('plain'))).toBe(ino(G('pinned')));
    expect(new Set([G('p10a'), G('p20a'), G('p30'), G('pinned')].map((r) => ino(r))).size).toBe(4);
    // Every path kept its project, and the content.
    expect(roots.map((r) => projidOf(path.join(r, REL)))).toEqual([10, 10, 20, 20, 30, 0, 0, 20]);
    for (const r of roots) expect(fs.readFileSync(path.join(r, REL)).equals(LIB)).toBe(true);
    // Nothing left, nothing refused.
    expect([rerun.code, rerun.stderr, rerun.summary.linksMade, rerun.summary.freeableBytes]).toEqual([0, '', 0, 0]);
    expect(rerun.summary.errors).toBe(0);
  });

  it('vunify report names the project as what keeps copies apart, per guest and per pair, and adds up to the dry run', () => {
    const roots = ['r10', 'r20', 'r30'].map(G);
    const r = runReport(['--json', '--no-default-excludes', ...roots]);
    expect([r.code, r.stderr]).toEqual([0, '']);
    const j = JSON.parse(r.stdout);
    // One content, three projects: the two smaller classes are kept apart by their project.
    expect(j.totals.keptApart.project).toBe(2 * SIZE);
    expect(j.guests.map((g: { keptApart: { project: number } }) => g.keptApart.project)).toEqual([0, SIZE, SIZE]);
    expect(j.keptApartPairs.map((p: { guests: string[]; bytes: { project: number } }) => [p.guests, p.bytes.project])).toEqual([
      [[roots[0], roots[1]], SIZE],
      [[roots[0], roots[2]], SIZE],
    ]);
    const dry = runCli(['--json', '-n', '--no-default-excludes', ...roots]);
    expect(j.totals.freeableBytes).toBe(JSON.parse(dry.stdout).summary.freeableBytes);
  });

  it('split gives a private copy its original\'s project, so it is what the policy would link again', () => {
    // Files in project 40 in directories without the inherit flag: a new inode there gets project 0.
    for (const g of ['s1', 's2']) guest(g, { fileProjid: 40 });
    const roots = ['s1', 's2'].map(G);
    const linked = runCli(['--no-default-excludes', ...roots]);
    expect([linked.code, linked.stderr]).toEqual([0, '']);
    expect(ino(G('s2'))).toBe(ino(G('s1')));
    const split = runCli(['split', G('s2')]);
    expect([split.code, split.stderr]).toEqual([0, '']);
    expect(ino(G('s2'))).not.toBe(ino(G('s1')));
    expect(roots.map((r) => projidOf(path.join(r, REL)))).toEqual([40, 40]);
    expect(fs.readFileSync(path.join(G('s2'), REL)).equals(LIB)).toBe(true);
    // And a dry run over both counts it freeable again, as a linking run then frees.
    const again = dryLinkRerun(roots);
    expect([again.dry.summary.freeableBytes, again.link.summary.freedBytes, again.link.stderr]).toEqual([SIZE, SIZE, '']);
  });
});

describe('btrfs subvolumes and a bind mount as guests', () => {
  let btrfs: LoopFs;
  let bound = false;
  const G = (g: string) => path.join(btrfs.dir, g);
  beforeAll(() => {
    btrfs = loopFs('btrfs', 320 << 20);
    for (const s of ['sub1', 'sub2']) sh('btrfs', 'subvolume', 'create', G(s));
    for (const g of ['sub1', 'sub2', 'dir1', 'dir2', 'src']) writeFile(path.join(G(g), REL), { content: LIB });
    // The same filesystem (st_dev) through another mount: link(2) cannot cross it.
    fs.mkdirSync(G('bound'));
    sh('mount', '--bind', G('src'), G('bound'));
    bound = true;
  });
  afterAll(() => {
    if (bound) spawnSync('umount', [G('bound')]);
    btrfs?.unmount();
  });

  it('links only within one subvolume and mount; the report says filesystem and mount', () => {
    const roots = ['sub1', 'sub2', 'dir1', 'dir2', 'bound'].map(G);
    // Independent: stat(1) sees a device of its own per subvolume, and the bind mount shares dir1's.
    const devs = roots.map((r) => sh('stat', '-c', '%d', r).trim());
    expect(new Set(devs).size).toBe(3);
    expect(devs[4]).toBe(devs[2]);

    const { dry, link, rerun } = dryLinkRerun(roots);
    expect([dry.code, dry.stderr, link.code, link.stderr]).toEqual([0, '', 0, '']);
    expect(dry.summary.freeableBytes).toBe(SIZE); // dir2 -> dir1, nothing else
    expect(link.summary.freedBytes).toBe(SIZE);
    expect(ino(G('dir2'))).toBe(ino(G('dir1')));
    expect(new Set(['sub1', 'sub2', 'dir1'].map((g) => `${sh('stat', '-c', '%d:%i', path.join(G(g), REL))}`)).size).toBe(3);
    expect([rerun.code, rerun.stderr, rerun.summary.linksMade]).toEqual([0, '', 0]);

    const r = runReport(['--json', '--no-default-excludes', ...roots]);
    expect([r.code, r.stderr]).toEqual([0, '']);
    const t = JSON.parse(r.stdout).totals;
    // One content in four policy classes; the biggest (dir1 + dir2, one inode now) is the main one.
    expect(t.keptApart).toMatchObject({ filesystem: 2 * SIZE, mount: SIZE, project: 0, flags: 0 });
  });
});

describe('a guest planting forged XXH3 collisions', () => {
  let dir: string;
  const G = (g: string) => path.join(dir, g);
  let genuine: Buffer, forged: Buffer;

  /** Three genuine copies; the hostile guest's forgery has the most links, so it would be the canonical. */
  function plant() {
    dir = tempDir();
    for (const g of ['g1', 'g2', 'g3']) writeFile(path.join(G(g), REL), { content: genuine });
    writeFile(path.join(G('evil'), REL), { content: forged });
    for (let k = 0; k < 3; k++) fs.linkSync(path.join(G('evil'), REL), path.join(G('evil'), `usr/lib/libc-${k}.so`));
  }
  const roots = () => ['g1', 'g2', 'g3', 'evil'].map(G);

  beforeAll(() => {
    // A library the guest knows (its bytes at the lanes it forges are its choice: it is the distributor's copy it plants too).
    [genuine, forged] = forgeXxh3Pair(LIB);
    // The forgery works against the public default secret: same size, same XXH3, other bytes.
    expect(forged.length).toBe(SIZE);
    expect(forged.equals(genuine)).toBe(false);
    expect(xxh3(forged)).toBe(xxh3(genuine));
  });
  afterEach(() => {
    vi.restoreAllMocks();
    if (dir) rmTree(dir);
  });

  it('the keyed hash does not collide: the genuine copies are unified, the forgery stays alone', async () => {
    plant();
    const { secret } = loadHashKey(path.join(testStateDir(), KEY_FILE), { create: true });
    expect(xxh3(forged, secret)).not.toBe(xxh3(genuine, secret));
    const evil = sha256File(path.join(G('evil'), REL));
    const evilIno = ino(G('evil'));

    const { dry, link, rerun } = dryLinkRerun(roots());
    expect([dry.code, dry.stderr, link.code, link.stderr]).toEqual([0, '', 0, '']);
    expect(dry.summary.freeableBytes).toBe(2 * SIZE);
    expect(link.summary.freedBytes).toBe(dry.summary.freeableBytes);
    expect(ino(G('g2'))).toBe(ino(G('g1')));
    expect(ino(G('g3'))).toBe(ino(G('g1')));
    expect([ino(G('evil')), sha256File(path.join(G('evil'), REL))]).toEqual([evilIno, evil]);
    expect(fs.statSync(path.join(G('evil'), REL)).nlink).toBe(4);
    expect([rerun.code, rerun.stderr, rerun.summary.linksMade, rerun.summary.freeableBytes]).toEqual([0, '', 0, 0]);
  });

  it('even a collision that gets past the key (injected) blocks nothing: the set is split by content', async () => {
    plant();
    // The seam: make hashFiles report the forgery with the genuine content's hash, as if the key had leaked.
    const { secret } = loadHashKey(path.join(testStateDir(), KEY_FILE), { create: true });
    const [fake, real] = [xxh3(forged, secret), xxh3(genuine, secret)];
    const hashFiles = sys.hashFiles;
    vi.spyOn(sys, 'hashFiles').mockImplementation(async (jobs, s) => {
      const out = await hashFiles(jobs, s);
      for (let off = 0; off + 32 <= out.length; off += out.readUInt32LE(off)) {
        if (out.readInt32LE(off + 4) === 0 && out.readBigUInt64LE(off + 16) === fake) out.writeBigUInt64LE(real, off + 16);
      }
      return out;
    });
    const evil = sha256File(path.join(G('evil'), REL));
    const evilIno = ino(G('evil'));
    const run = async (...more: string[]) => {
      const out = collect(), err = collect();
      const code = await main(['--json', '--no-cache', '--no-default-excludes', '--state-dir', testStateDir(), ...more, ...roots()], out.stream as never, err.stream as never);
      return { code, stderr: err.text(), summary: JSON.parse(out.text()).summary as Summary };
    };
    const dry = await run('-n');
    const link = await run();
    const rerun = await run();
    expect(vi.mocked(sys.hashFiles)).toHaveBeenCalled();
    expect([dry.code, dry.stderr, link.code, link.stderr]).toEqual([0, '', 0, '']);
    // The plan believed one set of four under the forged canonical; it cannot know better.
    expect(dry.summary.freeableBytes).toBe(3 * SIZE);
    // The linker found the second content, made g1 the canonical of the genuine part, and linked g2 and g3 to it.
    expect(ino(G('g2'))).toBe(ino(G('g1')));
    expect(ino(G('g3'))).toBe(ino(G('g1')));
    expect([ino(G('evil')), sha256File(path.join(G('evil'), REL))]).toEqual([evilIno, evil]);
    expect(link.summary.freedBytes).toBe(2 * SIZE);
    expect(link.summary.contentSplits).toEqual({ sets: 1, parts: 1, bytes: SIZE });
    // What the dry run promised is what was freed plus what the split kept, byte for byte.
    expect(link.summary.freedBytes + link.summary.contentSplits!.bytes).toBe(dry.summary.freeableBytes);
    // The rerun: nothing to link, no error, exit 0.
    expect([rerun.code, rerun.stderr, rerun.summary.linksMade, rerun.summary.errors]).toEqual([0, '', 0, 0]);
  });
});

/** A stream that keeps what is written to it. */
function collect() {
  const chunks: string[] = [];
  const stream = new Writable({ write: (c, _e, cb) => (chunks.push(String(c)), cb()) });
  return { stream, text: () => chunks.join('') };
}
