// The linker, on real trees: what it re-checks between plan and link, EMLINK,
// forged hash collisions, and that a duplicate's path never goes missing.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { type FileError, codedError } from '../../src/core/errors.js';
import { groupFiles } from '../../src/pipeline/group.js';
import { splitByContent } from '../../src/pipeline/hash.js';
import { DEFAULT_SECRET } from '../../src/core/xxh3.js';
import { link } from '../../src/change/link.js';
import { plan } from '../../src/pipeline/plan.js';
import { closeRoots, openRoots } from '../../src/pipeline/roots.js';
import { sys, RENAME_EXCHANGE } from '../../src/os/sys.js';
import { walk } from '../../src/pipeline/walk.js';
import { inode, runUnify, sh, sharedPaths, snapshot, writeFile } from '../helpers/tree.js';
import { linkerTestDir } from '../helpers/link-ways.js';
import { TEMP_PREFIX } from '../../src/change/swap.js';
import { displayPath } from '../../src/core/paths.js';
import { FS_APPEND_FL, FS_IMMUTABLE_FL } from '../../src/core/stat.js';

const testDir = linkerTestDir();
let dir: string;
beforeEach(() => {
  dir = testDir();
});

/**
 * The linker's JS path for every pair (the addon's batches, native/link.c,
 * are off): for tests that act through the sys seam at a step the addon
 * makes itself, or count the JS path's calls.
 */
const jsPath = () => {
  sys.nativeLinker = false;
};

/** Scan and plan; `trustSize` skips hashing so a forged "collision" reaches the linker. */
async function planFor(guests: string[], opts: { trustSize?: boolean } = {}) {
  const roots = openRoots(guests.map((g) => path.join(dir, g)));
  const errors: FileError[] = [];
  const onError = (e: FileError) => errors.push(e);
  const walked = await walk(roots, { rules: [], minSize: 1, maxSize: Infinity, onError });
  const { groups } = groupFiles(walked.files, { ignoreMtime: false });
  const sets = opts.trustSize ? groups : await splitByContent(groups, { secret: Buffer.from(DEFAULT_SECRET), policy: { ignoreMtime: false }, onError });
  return { roots, plan: plan(sets), errors, onError };
}

function leftovers(root: string): string[] {
  return sh('find', root, '-name', `${TEMP_PREFIX}*`).split('\n').filter(Boolean);
}

/** Unify guests g1..g3 of `top` (no cache): the links made, errors, summary, and which paths share an inode, named relative to the tree. */
async function unifyThree(top: string) {
  const links: string[] = [];
  const r = await runUnify(['g1', 'g2', 'g3'].map((g) => path.join(top, g)), {
    cache: false,
    onLink: (f, c) => links.push(`${path.relative(top, displayPath(f))} => ${path.relative(top, displayPath(c))}`),
  });
  return { links, errors: r.errors, summary: r.report.summary, shared: sharedPaths(top) };
}

/** Two copies of one tree (`build` makes each): unifyThree() of copy a on the JS path, of copy b with the addon's linker. */
async function jsThenNative(build: (top: string) => void) {
  const a = path.join(dir, 'a');
  const b = path.join(dir, 'b');
  build(a);
  build(b);
  jsPath();
  const js = await unifyThree(a);
  sys.nativeLinker = true;
  const native = await unifyThree(b);
  return { js, native };
}

describe('link', () => {
  it('never links on a hash match alone: differing bytes split the set by content, with no error', async () => {
    writeFile(path.join(dir, 'a/f'), { content: 'AAAA' });
    writeFile(path.join(dir, 'b/f'), { content: 'BBBB' });
    const before = snapshot(dir, { inodes: true });
    const p = await planFor(['a', 'b'], { trustSize: true });
    expect(p.plan.linksPlanned).toBe(1); // the forged collision reached the linker
    const splits: string[] = [];
    const r = await link(p.plan, { ignoreMtime: false, onError: p.onError, onContentSplit: (f) => splits.push(f.name.toString()) });
    closeRoots(p.roots);
    expect(r.linksMade).toBe(0);
    expect(p.errors).toEqual([]);
    expect(splits).toEqual(['f']);
    expect(r.contentSplits).toEqual({ sets: 1, parts: 1, bytes: 4 });
    expect(snapshot(dir, { inodes: true })).toEqual(before);
  });

  it('a set of three contents under one hash: each content is unified with its own copies, in bounded comparisons', async () => {
    // Canonical (most links) holds A; then B, A, B, C copies in root order.
    writeFile(path.join(dir, 'a/f'), { content: 'AAAA' });
    fs.linkSync(path.join(dir, 'a/f'), path.join(dir, 'a/f2'));
    const contents = { b: 'BBBB', c: 'AAAA', d: 'BBBB', e: 'CCCC', f: 'BBBB' };
    for (const [g, c] of Object.entries(contents)) writeFile(path.join(dir, g, 'f'), { content: c });
    const p = await planFor(['a', ...Object.keys(contents)], { trustSize: true });
    jsPath(); // counts the JS comparison's reads
    const reads = vi.spyOn(sys, 'readSync');
    const r = await link(p.plan, { ignoreMtime: false, onError: p.onError });
    closeRoots(p.roots);
    expect(p.errors).toEqual([]);
    expect(r.linksMade).toBe(3); // c -> a; d, f -> b (the first B became its part's canonical)
    expect(r.contentSplits).toEqual({ sets: 1, parts: 2, bytes: 8 });
    const ino = (g: string) => inode(path.join(dir, g, 'f'));
    expect(ino('c')).toBe(ino('a'));
    expect(ino('d')).toBe(ino('b'));
    expect(ino('f')).toBe(ino('b'));
    expect(new Set([ino('a'), ino('b'), ino('e')]).size).toBe(3);
    // Each comparison reads both files once (4 bytes each, one chunk), and
    // each link compares once more after the exchange. With the canonical
    // that matched last tried first: b 1, c 1, d 2, e 2, f 1 comparisons,
    // never more than one per content found so far.
    expect(reads.mock.calls.length).toBe(2 * (1 + 1 + 2 + 2 + 1) + 2 * r.linksMade);
  });

  it.each([
    ['rewritten in place (same size, mtime restored)', (f: string) => {
      fs.writeFileSync(f, 'XXXXXXXXXXXXXXXXXXXX');
      sh('touch', '-d', '@1700000000.123456789', f);
    }],
    ['appended', (f: string) => fs.appendFileSync(f, 'more')],
    ['truncated', (f: string) => fs.truncateSync(f, 3)],
    ['chmod', (f: string) => fs.chmodSync(f, 0o600)],
    ['replaced by another file', (f: string) => {
      fs.renameSync(f, f + '.old');
      writeFile(f, { content: 'same content here!!\n' });
    }],
    ['replaced by a FIFO', (f: string) => {
      fs.unlinkSync(f);
      sh('mkfifo', f);
    }],
    ['replaced by a symlink', (f: string) => {
      fs.unlinkSync(f);
      fs.symlinkSync('/etc/hostname', f);
    }],
    ['deleted', (f: string) => fs.unlinkSync(f)],
  ])('skips a duplicate %s between scan and link', async (_what, change) => {
    writeFile(path.join(dir, 'a/f'), { content: 'same content here!!\n' });
    writeFile(path.join(dir, 'b/f'), { content: 'same content here!!\n' });
    const p = await planFor(['a', 'b']);
    expect(p.plan.linksPlanned).toBe(1);
    change(path.join(dir, 'b/f'));
    const after = snapshot(dir, { inodes: true });
    const r = await link(p.plan, { ignoreMtime: false, onError: p.onError });
    closeRoots(p.roots);
    expect(r.linksMade).toBe(0);
    expect(p.errors).toHaveLength(1);
    expect(p.errors[0]!.path).toBe(path.join(dir, 'b/f'));
    expect(snapshot(dir, { inodes: true })).toEqual(after);
    expect(leftovers(dir)).toEqual([]);
  });

  it('skips the set when the canonical changed between scan and link', async () => {
    for (const g of ['a', 'b', 'c']) writeFile(path.join(dir, g, 'f'), { content: 'shared' });
    const p = await planFor(['a', 'b', 'c']);
    fs.appendFileSync(path.join(dir, 'a/f'), '!');
    const r = await link(p.plan, { ignoreMtime: false, onError: p.onError });
    closeRoots(p.roots);
    expect(r.linksMade).toBe(0);
    expect(r.skipped).toBe(2);
    expect(p.errors[0]!.path).toBe(path.join(dir, 'a/f'));
  });

  it('leaves immutable and append-only files out of the plan: never replaced, no error, and the dry run says why', async () => {
    for (const g of ['a', 'b', 'c']) writeFile(path.join(dir, g, 'f'));
    sh('chattr', '+i', path.join(dir, 'b/f'));
    sh('chattr', '+a', path.join(dir, 'c/f'));
    const size = fs.statSync(path.join(dir, 'a/f')).size;
    try {
      const dry = await runUnify(['a', 'b', 'c'].map((g) => path.join(dir, g)), { dryRun: true });
      const { report, errors } = await runUnify(['a', 'b', 'c'].map((g) => path.join(dir, g)));
      expect(errors).toEqual([]);
      expect(report.summary).toMatchObject({ linksPlanned: 0, linksMade: 0, skipped: 0, freedBytes: 0 });
      expect(dry.report.summary.freeableBytes).toBe(0);
      expect(dry.report.summary.keptApart?.flags).toBe(2 * size);
      expect(new Set(['a', 'b', 'c'].map((g) => inode(path.join(dir, g, 'f')))).size).toBe(3);
      expect(sh('lsattr', path.join(dir, 'b/f')).split(' ')[0]).toMatch(/i/);
      expect(sh('lsattr', path.join(dir, 'c/f')).split(' ')[0]).toMatch(/a/);
    } finally {
      sh('chattr', '-i', path.join(dir, 'b/f'));
      sh('chattr', '-a', path.join(dir, 'c/f'));
    }
  });

  /**
   * Inode flags as if chattr'ed between the plan and the link: the plan
   * reads the flags of its canonical candidates (`planReads` calls: none,
   * now that the hash stage reads them all in the addon), then the linker sees
   * `after` (by path) added. A real chattr would also move the ctime, which
   * the linker reports as ECHANGED before it looks at the flags.
   */
  function flagsAfterPlan(planReads: number, after: Record<string, number>) {
    jsPath(); // the addon reads the flags itself
    const inos = new Map(Object.entries(after).map(([p, f]) => [inode(p), f]));
    const real = sys.getFlags;
    let calls = 0;
    vi.spyOn(sys, 'getFlags').mockImplementation((fd) => {
      const flags = real(fd);
      return ++calls > planReads ? flags | (inos.get(sys.fstat(fd).ino) ?? 0) : flags;
    });
  }

  it('skips a duplicate made immutable or append-only after the plan, with a clear message', async () => {
    for (const g of ['a', 'b', 'c']) writeFile(path.join(dir, g, 'f'));
    flagsAfterPlan(0, { [path.join(dir, 'b/f')]: FS_IMMUTABLE_FL, [path.join(dir, 'c/f')]: FS_APPEND_FL });
    const { report, errors } = await runUnify(['a', 'b', 'c'].map((g) => path.join(dir, g)));
    expect(errors.map((e) => [e.path, e.code])).toEqual([
      [path.join(dir, 'b/f'), 'EFLAGS'],
      [path.join(dir, 'c/f'), 'EFLAGS'],
    ]);
    expect(errors[0]!.message).toMatch(/immutable/);
    expect(errors[1]!.message).toMatch(/append-only/);
    expect(report.summary.skipped).toBe(2);
  });

  it('keeps a copy whose own inode flags (chattr +d, +A) differ apart in the plan: no refusal, flags unchanged', async () => {
    for (const g of ['a', 'b', 'c']) writeFile(path.join(dir, g, 'f'));
    sh('chattr', '+dA', path.join(dir, 'b/f'));
    const before = sh('lsattr', path.join(dir, 'b/f')).split(' ')[0];
    const roots = ['a', 'b', 'c'].map((g) => path.join(dir, g));
    const dry = await runUnify(roots, { dryRun: true });
    const { report, errors } = await runUnify(roots);
    expect(errors).toEqual([]);
    expect(dry.report.summary.keptApart?.flags).toBe(fs.statSync(path.join(dir, 'b/f')).size);
    expect(report.summary.freedBytes).toBe(dry.report.summary.freeableBytes);
    expect(sh('lsattr', path.join(dir, 'b/f')).split(' ')[0]).toBe(before);
    expect(inode(path.join(dir, 'b/f'))).not.toBe(inode(path.join(dir, 'a/f')));
    expect(inode(path.join(dir, 'c/f'))).toBe(inode(path.join(dir, 'a/f')));
  });

  it('an immutable copy never becomes the canonical: the others are unified among themselves', async () => {
    for (const g of ['a', 'b', 'c']) writeFile(path.join(dir, g, 'f'));
    sh('chattr', '+i', path.join(dir, 'a/f')); // would have been the canonical (first root)
    const before = inode(path.join(dir, 'a/f'));
    try {
      const { report, errors } = await runUnify(['a', 'b', 'c'].map((g) => path.join(dir, g)));
      expect(errors).toEqual([]);
      expect(report.summary).toMatchObject({ linksPlanned: 1, linksMade: 1, skipped: 0 });
      expect(inode(path.join(dir, 'a/f'))).toBe(before);
      expect(inode(path.join(dir, 'c/f'))).toBe(inode(path.join(dir, 'b/f')));
    } finally {
      sh('chattr', '-i', path.join(dir, 'a/f'));
    }
  });

  it('leaves a set alone, with one message, when its canonical is made immutable after the plan', async () => {
    for (const g of ['a', 'b', 'c']) writeFile(path.join(dir, g, 'f'));
    flagsAfterPlan(0, { [path.join(dir, 'a/f')]: FS_IMMUTABLE_FL }); // the first root's copy is the canonical
    const before = snapshot(dir, { inodes: true });
    const { report, errors } = await runUnify(['a', 'b', 'c'].map((g) => path.join(dir, g)));
    expect(errors.map((e) => [e.path, e.code, e.message])).toEqual([
      [path.join(dir, 'a/f'), 'EFLAGS', 'canonical copy is immutable (chattr); left alone'],
    ]);
    expect(report.summary).toMatchObject({ linksPlanned: 2, linksMade: 0, skipped: 2 });
    expect(snapshot(dir, { inodes: true })).toEqual(before);
  });

  it('EMLINK in the addon: the duplicate becomes the canonical for the rest of its set', async () => {
    const guests = Array.from({ length: 7 }, (_, i) => `g${i}`);
    for (const g of guests) writeFile(path.join(dir, g, 'lib.so'), { content: 'shared library' });
    const before = snapshot(dir, { dirTimes: false });
    // The third link the linker makes fails as on a full inode.
    sys.setLinkFault({ step: 'link', nth: 3, errno: os.constants.errno.EMLINK });
    const { report, errors } = await runUnify(guests.map((g) => path.join(dir, g)));
    expect(errors).toEqual([]);
    const inodes = new Set(guests.map((g) => inode(path.join(dir, g, 'lib.so'))));
    expect(inodes.size).toBe(2); // g0 + g1 + g2, then g3 + g4 + g5 + g6
    expect(report.summary.linksMade).toBe(5);
    expect(snapshot(dir, { dirTimes: false })).toEqual(before);
    expect(leftovers(dir)).toEqual([]);
  });

  it('EMLINK: the duplicate becomes the canonical for the rest of its set', async () => {
    jsPath();
    const guests = Array.from({ length: 7 }, (_, i) => `g${i}`);
    for (const g of guests) writeFile(path.join(dir, g, 'lib.so'), { content: 'shared library' });
    const before = snapshot(dir, { dirTimes: false });
    // Pretend the filesystem allows 3 links per inode.
    const real = sys.linkAt;
    vi.spyOn(sys, 'linkAt').mockImplementation((fd, dirFd, name) => {
      if (sys.fstat(fd).nlink >= 3) throw Object.assign(new Error('EMLINK: too many links, linkat'), { code: 'EMLINK' });
      real(fd, dirFd, name);
    });
    const { report, errors } = await runUnify(guests.map((g) => path.join(dir, g)));
    expect(errors).toEqual([]);
    const inodes = new Set(guests.map((g) => inode(path.join(dir, g, 'lib.so'))));
    expect(inodes.size).toBe(3); // 3 + 3 + 1 links
    expect(report.summary.linksMade).toBe(4);
    expect(snapshot(dir, { dirTimes: false })).toEqual(before);
    expect(leftovers(dir)).toEqual([]);
  });

  it('a failing rename leaves the duplicate and no temporary name behind', async () => {
    writeFile(path.join(dir, 'a/f'));
    writeFile(path.join(dir, 'b/f'));
    const before = snapshot(dir, { inodes: true, dirTimes: false });
    sys.setLinkFault({ step: 'exchange', nth: 1, errno: os.constants.errno.ENOSPC });
    const { errors } = await runUnify([path.join(dir, 'a'), path.join(dir, 'b')]);
    expect(errors.map((e) => e.code)).toEqual(['ENOSPC']);
    expect(snapshot(dir, { inodes: true, dirTimes: false })).toEqual(before);
    expect(leftovers(dir)).toEqual([]);
  });

  it('the addon, sets in flight on its threads, links what the JS path links and reports it in the same order', async () => {
    // Many sets, their duplicates spread over shared directories, some paths of one inode.
    const build = (top: string) => {
      for (const g of ['g1', 'g2', 'g3'])
        for (let d = 0; d < 12; d++)
          for (let k = 0; k < 6; k++) {
            const f = path.join(top, g, `d${d}`, `f${k}`);
            writeFile(f, { content: `content ${(d * 6 + k) % 23}\n`.repeat(k === 5 ? 5000 : 1), mtime: '1700000000' });
            if (k === 4 && d % 3 === 0) fs.linkSync(f, path.join(top, g, `d${d}`, 'also'));
          }
    };
    const { js, native } = await jsThenNative(build);
    expect(js.errors).toEqual([]);
    expect(js.links.length).toBeGreaterThan(100);
    expect(native).toEqual(js);
    expect(leftovers(dir)).toEqual([]);
  });

  it('the addon, more sets than two calls hold (one runs while the next is prepared): links what the JS path links, in the same order', async () => {
    // 300 contents, each in 3 guests, in 30 directories a guest: five calls
    // of up to 64 sets, a group's call running while the other is taken in.
    const build = (top: string) => {
      for (const g of ['g1', 'g2', 'g3'])
        for (let d = 0; d < 30; d++)
          for (let k = 0; k < 10; k++)
            writeFile(path.join(top, g, `d${d}`, `f${k}`), { content: `content ${d}.${k}\n`.repeat(k === 9 ? 3000 : 1), mtime: '1700000000' });
    };
    const { js, native } = await jsThenNative(build);
    expect(js.errors).toEqual([]);
    expect(js.links).toHaveLength(600);
    expect(js.shared).toHaveLength(300);
    expect(native).toEqual(js);
    expect(leftovers(dir)).toEqual([]);
  });

  it('a write to a duplicate inode through its other path just after the addon linked one: that path is compared again, and keeps its bytes', async () => {
    // The canonical has the most links; the duplicate inode two paths.
    writeFile(path.join(dir, 'g1/c'), { content: 'same bytes\n', mtime: '1700000000' });
    for (const n of ['c2', 'c3']) fs.linkSync(path.join(dir, 'g1/c'), path.join(dir, 'g1', n));
    writeFile(path.join(dir, 'g2/p1'), { content: 'same bytes\n', mtime: '1700000000' });
    fs.linkSync(path.join(dir, 'g2/p1'), path.join(dir, 'g2/p2'));
    let acted = false;
    let other = '';
    const P = (n: string) => path.join(dir, 'g2', n);
    sys.setLinkHook((step, when) => {
      if (step === 'unlink' && when === 'after' && !acted) {
        acted = true;
        // The path of the old inode not linked yet.
        other = inode(P('p1')) === inode(path.join(dir, 'g1/c')) ? 'p2' : 'p1';
        fs.appendFileSync(P(other), 'the guest wrote more\n');
      }
    });
    try {
      await runUnify([path.join(dir, 'g1'), path.join(dir, 'g2')], { cache: false });
    } finally {
      sys.setLinkHook(null);
    }
    expect(acted).toBe(true);
    expect(inode(P(other === 'p1' ? 'p2' : 'p1'))).toBe(inode(path.join(dir, 'g1/c')));
    expect(fs.readFileSync(P(other), 'utf8')).toBe('same bytes\nthe guest wrote more\n');
    expect(fs.readFileSync(path.join(dir, 'g1/c'), 'utf8')).toBe('same bytes\n');
    expect(leftovers(dir)).toEqual([]);
  });

  it("xattrs in the addon's comparison: a pair with the same ones is linked, one given an xattr just before it is compared is not", async () => {
    // Most files have none, and the addon then compares no lists (no lock);
    // these have some, or get one while the pair is being compared.
    for (const g of ['g1', 'g2', 'g3']) {
      writeFile(path.join(dir, g, 'same'), { content: 'with xattrs\n' });
      sh('setfattr', '-n', 'user.k', '-v', 'v', path.join(dir, g, 'same'));
      writeFile(path.join(dir, g, 'late'), { content: 'given one late\n' });
    }
    const late = path.join(dir, 'g3/late');
    const before = inode(late);
    let acted = false;
    sys.setLinkHook((step, when, _dirFd, name) => {
      if (step === 'compare' && when === 'before' && !acted && name.toString() === 'late' && inode(late) === before) {
        const other = inode(path.join(dir, 'g2/late'));
        // only when g3's own copy is the one being compared (g2's linked already, or not yet)
        if (other === inode(path.join(dir, 'g1/late'))) {
          acted = true;
          sh('setfattr', '-n', 'user.late', '-v', 'x', late);
        }
      }
    });
    try {
      await runUnify(['g1', 'g2', 'g3'].map((g) => path.join(dir, g)), { cache: false });
    } finally {
      sys.setLinkHook(null);
    }
    expect(new Set(['g1', 'g2', 'g3'].map((g) => inode(path.join(dir, g, 'same')))).size).toBe(1);
    expect(sh('getfattr', '--only-values', '-n', 'user.k', path.join(dir, 'g3/same'))).toBe('v');
    expect(acted).toBe(true);
    expect(inode(late)).toBe(before);
    expect(inode(path.join(dir, 'g2/late'))).toBe(inode(path.join(dir, 'g1/late')));
    expect(sh('getfattr', '--only-values', '-n', 'user.late', late)).toBe('x');
    expect(sh('getfattr', '-d', path.join(dir, 'g1/late'))).not.toContain('user.late');
    expect(leftovers(dir)).toEqual([]);
  });

  it('a pair the addon hands to settle() after its exchange is settled as on the JS path', async () => {
    for (const g of ['a', 'b', 'c']) writeFile(path.join(dir, g, 'f'), { content: Buffer.alloc(64 << 10, 'x') });
    // The addon's settle step refused for the first pair: swap.ts settle() decides it.
    sys.setLinkFault({ step: 'settle', nth: 1, errno: os.constants.errno.EIO });
    const { report, errors } = await runUnify(['a', 'b', 'c'].map((g) => path.join(dir, g)));
    expect(errors).toEqual([]);
    expect(report.summary.linksMade).toBe(2);
    expect(new Set(['a', 'b', 'c'].map((g) => inode(path.join(dir, g, 'f')))).size).toBe(1);
    expect(leftovers(dir)).toEqual([]);
  });

  it('a failing unlink of the temporary name after the addon linked: the message names it, and the name shows the canonical', async () => {
    writeFile(path.join(dir, 'a/f'));
    writeFile(path.join(dir, 'b/f'));
    sys.setLinkFault({ step: 'unlink', nth: 1, errno: os.constants.errno.EIO });
    const { errors } = await runUnify([path.join(dir, 'a'), path.join(dir, 'b')]);
    expect(errors.map((e) => e.code)).toEqual(['EIO']);
    expect(errors[0]!.message).toMatch(/linked, but the old file could not be removed from its temporary name \.vunify\./);
    expect(inode(path.join(dir, 'b/f'))).toBe(inode(path.join(dir, 'a/f')));
    expect(leftovers(dir)).toHaveLength(1);
  });

  it('the duplicate path exists at every moment of the swap', async () => {
    jsPath(); // watches the seam's calls
    writeFile(path.join(dir, 'a/f'));
    writeFile(path.join(dir, 'b/f'));
    const dup = path.join(dir, 'b/f');
    const seen: boolean[] = [];
    // Calls on the guest's names only: the run's journal and hash cache in the state directory are linked, renamed and unlinked too.
    const ours = (a: unknown[]) => a.some((x) => Buffer.isBuffer(x) && /^(journal\.|[0-9a-f]{32}\.shard|roots(\.tmp\.|$)|hashes\.cache)/.test(x.toString()));
    const watch = <T extends unknown[]>(fn: (...a: T) => void) => (...a: T) => {
      if (ours(a)) return fn(...a);
      seen.push(fs.existsSync(dup));
      fn(...a);
      seen.push(fs.existsSync(dup));
    };
    const { linkAt, renameAt, unlinkAt } = sys;
    vi.spyOn(sys, 'linkAt').mockImplementation(watch(linkAt));
    vi.spyOn(sys, 'renameAt').mockImplementation(watch(renameAt));
    vi.spyOn(sys, 'unlinkAt').mockImplementation(watch(unlinkAt));
    await runUnify([path.join(dir, 'a'), path.join(dir, 'b')]);
    expect(seen.length).toBe(6);
    expect(seen.every(Boolean)).toBe(true);
    expect(inode(dup)).toBe(inode(path.join(dir, 'a/f')));
  });
});

// A regression from the safety review: an undo that cannot finish names what it kept.
describe('undo when the guest removed the name after the exchange', () => {
  it('the old inode is kept at .vunify.*, and the message says where', async () => {
    const guests = ['g1', 'g2'].map((g) => path.join(dir, g));
    const temps = (d: string) => sh('find', d, '-name', '.vunify.*').split('\n').filter(Boolean);
    for (const g of guests) writeFile(path.join(g, 'f'), { content: 'same\n', mtime: '1700000000' });
    jsPath(); // the guest acts at the seam's exchange
    const real = sys.renameAt;
    let done = false;
    vi.spyOn(sys, 'renameAt').mockImplementation((...a) => {
      real(...a);
      if (!done) {
        done = true;
        const t = temps(guests[1]!)[0]!;
        fs.appendFileSync(t, 'guest wrote through an fd it held\n'); // lands in the old inode, now at the temporary name
        fs.unlinkSync(path.join(guests[1]!, 'f')); // and the guest deletes its file
      }
    });
    const { errors } = await runUnify(guests, { cache: false });
    expect(temps(guests[1]!), JSON.stringify(errors)).toHaveLength(1);
    expect(errors[0]!.message).toContain('.vunify.');
  });
});

describe('a canonical whose ctime moved during a failed swap', () => {
  // A swap that fails while the guest changes the canonical in a way only its
  // ctime shows (a rewrite with the mtime put back, a touch to the same
  // mtime): the linker may go on linking to it, but only after a full
  // comparison, and the hash cache must no longer vouch for it. Real files;
  // the failure of the exchange is injected, the guest's change is real, and
  // the results are read back with stat and the files' bytes.

  const A = Buffer.alloc(64 << 10, 'A');
  const G = (...p: string[]) => path.join(dir, ...p);

  /**
   * g1/c has four links (the canonical), g2/p1..p3 are three links of one
   * duplicate inode: the linker links p1, then its exchange at p2 fails
   * while `guest` changes the canonical, then it comes to p3.
   */
  async function failedSwapWhile(guest: (canonical: string) => void) {
    writeFile(G('g1/c'), { content: A });
    for (const n of ['c2', 'c3', 'c4']) fs.linkSync(G('g1/c'), G('g1', n));
    writeFile(G('g2/p1'), { content: A });
    for (const n of ['p2', 'p3']) fs.linkSync(G('g2/p1'), G('g2', n));
    const canonical = inode(G('g1/c'));
    const dup = inode(G('g2/p1'));
    // Older than the cache's racy window, so the hashes are remembered.
    await new Promise((r) => setTimeout(r, 1500));
    jsPath(); // the guest acts at the seam's exchange
    const realRename = sys.renameAt;
    let failed = false;
    vi.spyOn(sys, 'renameAt').mockImplementation((a, b, c, d, flags = 0) => {
      if (flags === RENAME_EXCHANGE && !failed && d.toString() === 'p2') {
        failed = true;
        guest(G('g1/c'));
        throw codedError('EIO', 'injected: exchange failed');
      }
      return realRename(a, b, c, d, flags);
    });
    const cache = G('hash-cache');
    const run = await runUnify([G('g1'), G('g2')], { cache });
    vi.restoreAllMocks();
    expect(failed).toBe(true);
    return { run, canonical, dup, cache };
  }

  // The linker takes one duplicate inode's paths in a row and drops its
  // shortcut before each swap, so this holds on its own; it guards that the
  // ctime absorbed after the failure never stands in for a comparison.
  it('a rewrite of the canonical with the mtime put back, during a failed swap: the next path of a duplicate compared before is compared again, and kept', async () => {
    const B = Buffer.alloc(A.length, 'B');
    const { run, canonical, dup, cache } = await failedSwapWhile((c) => {
      const mtime = sh('stat', '-c', '%.9Y', c).trim();
      fs.writeFileSync(c, B); // in place: same inode, same size
      sh('touch', '-m', '-d', `@${mtime}`, c);
    });
    expect(run.errors.map((e) => e.message)).toEqual([expect.stringContaining('injected')]);
    expect(run.report.summary.linksMade).toBe(1); // p1 only, before the guest's change
    expect(inode(G('g2/p1'))).toBe(canonical);
    // p2 (the failed swap) and p3 still hold the duplicate inode, with its bytes.
    for (const p of ['p2', 'p3']) {
      expect(inode(G('g2', p))).toBe(dup);
      expect(fs.readFileSync(G('g2', p)).equals(A)).toBe(true);
    }
    expect(fs.readFileSync(G('g1/c')).equals(B)).toBe(true);
    expect(sh('find', dir, '-name', '.vunify.*')).toBe('');
    // The next runs, with the cache: the dry run plans only what the linker does.
    const dry = await runUnify([G('g1'), G('g2')], { cache, dryRun: true });
    const next = await runUnify([G('g1'), G('g2')], { cache });
    expect(next.errors).toEqual([]);
    expect(next.report.summary.contentSplits?.sets ?? 0).toBe(0);
    expect(next.report.summary.linksMade).toBe(dry.report.summary.linksPlanned);
    expect(inode(G('g2/p3'))).toBe(dup);
  });

  it('a canonical whose ctime moved during a failed swap is forgotten by the hash cache, not carried over to the new ctime', async () => {
    const { run, canonical } = await failedSwapWhile((c) => {
      // The mtime it has: only the ctime moves, as with an xattr or a rewrite with the mtime put back.
      sh('touch', '-m', '-d', `@${sh('stat', '-c', '%.9Y', c).trim()}`, c);
    });
    expect(run.errors.map((e) => e.message)).toEqual([expect.stringContaining('injected')]);
    // p3 was compared in full (its bytes are the same), and linked.
    expect(inode(G('g2/p1'))).toBe(canonical);
    expect(inode(G('g2/p3'))).toBe(canonical);
    expect(fs.readFileSync(G('g2/p2')).equals(A)).toBe(true);
    // The next dry run reads the canonical again: no entry of the cache vouches for it.
    const dry = await runUnify([G('g1'), G('g2')], { cache: G('hash-cache'), dryRun: true });
    expect(dry.report.hashed.cacheHits).toBe(0);
    expect(dry.report.summary.linksPlanned).toBe(1); // p2, still the duplicate
  });
});
