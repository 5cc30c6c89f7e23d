// The journal (src/change/journal.ts): its writer and reader, on real files.
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { sys } from '../../src/os/sys.js';
import { parseJournal } from '../../src/change/journal.js';
import { rmTree, runUnify, sh, tempDir, writeFile } from '../helpers/tree.js';

// The linker's addon batches back on, the fault hook cleared, after tests that turned to the JS path.
afterEach(() => {
  sys.nativeLinker = true;
  sys.setLinkFault();
});


/**
 * Cut the first journal write whose text holds `marker` to half its length,
 * as a full disk would let it through; returns what was written of it.
 */
function cutFirstWrite(marker: string): () => string | undefined {
  const real = fs.writeSync;
  let cut: string | undefined;
  vi.spyOn(fs, 'writeSync').mockImplementation(((fd: number, data: unknown, ...rest: unknown[]) => {
    const text = Buffer.isBuffer(data) ? data.toString() : typeof data === 'string' ? data : undefined;
    if (cut === undefined && text?.includes(marker)) {
      cut = text.slice(0, text.length >> 1);
      return real(fd, cut);
    }
    return (real as (...a: unknown[]) => number)(fd, data, ...rest);
  }) as typeof fs.writeSync);
  return () => cut;
}

describe('a journal write cut short', () => {
  // A journal entry the state directory's filesystem could take only part of
  // (disk full: write(2) returns a short count): recovery would read the cut
  // line as a kill's, "its name was never created", so no temporary name may
  // be created after it. The short write is injected; the guest files are real.
  let dir: string;
  beforeEach(() => {
    dir = tempDir();
  });
  afterEach(() => {
    vi.restoreAllMocks();
    rmTree(dir);
  });

  it('a journal entry written short stops the swap before any temporary name exists', async () => {
    sys.nativeLinker = false; // the JS path: its journal's write is cut short
    const roots = ['g1', 'g2'].map((g) => path.join(dir, g));
    for (const r of roots) writeFile(path.join(r, 'f'), { content: 'the same bytes\n' });
    const inodes = roots.map((r) => fs.statSync(path.join(r, 'f')).ino);
    const cut = cutFirstWrite('"tmp"');
    const { report, errors } = await runUnify(roots, { cache: false });
    vi.restoreAllMocks();
    expect(cut()).toBeDefined();
    // What recovery would make of the journal as written: nothing to act on.
    expect(parseJournal(cut()!).entries).toEqual([]);
    // So nothing was done: both names hold their own inodes, no temporary name anywhere.
    expect(report.summary.linksMade).toBe(0);
    expect(errors.length).toBeGreaterThan(0);
    expect(roots.map((r) => fs.statSync(path.join(r, 'f')).ino)).toEqual(inodes);
    expect(sh('find', dir, '-name', '.vunify.*')).toBe('');
  });

  it('a directory declaration written short, with the addon: no pair of its call runs, no temporary name exists', async () => {
    // The addon's batches name directories the JS thread declares in the
    // journal just before their call; cut that write short and nothing of
    // the call may run (its entries would follow the cut line).
    const roots = ['g1', 'g2'].map((g) => path.join(dir, g));
    const names = ['a', 'b', 'c'];
    for (const r of roots) for (const n of names) writeFile(path.join(r, 'd', n), { content: `the same bytes of ${n}\n` });
    const inodes = () => roots.flatMap((r) => names.map((n) => fs.statSync(path.join(r, 'd', n)).ino));
    const before = inodes();
    const cut = cutFirstWrite('"node"');
    const { report, errors } = await runUnify(roots, { cache: false });
    vi.restoreAllMocks();
    expect(cut()).toBeDefined();
    expect(report.summary.linksMade).toBe(0);
    expect(errors).toHaveLength(names.length);
    expect(errors.every((e) => e.code === 'ENOSPC')).toBe(true);
    expect(inodes()).toEqual(before);
    expect(sh('find', dir, '-name', '.vunify.*')).toBe('');
  });

  it('after a journal write the addon could not make, no later set of the same call is linked', async () => {
    // Several sets go to the addon in one call; the first journal line fails
    // (as on a full disk). journal.ts appends nothing after a failed write
    // (a line after a cut one would join it); the addon must not either,
    // whatever set comes next (the flag is shared by its threads).
    const roots = ['g1', 'g2'].map((g) => path.join(dir, g));
    const names = ['a', 'b', 'c', 'd', 'e', 'f'];
    for (const r of roots) for (const n of names) writeFile(path.join(r, n), { content: `the same bytes of ${n}\n` });
    const inodes = () => roots.flatMap((r) => names.map((n) => fs.statSync(path.join(r, n)).ino));
    const before = inodes();
    sys.setLinkFault({ step: 'journal', nth: 1, errno: os.constants.errno.ENOSPC });
    const { report, errors } = await runUnify(roots, { cache: false });
    expect(report.summary.linksMade).toBe(0);
    expect(errors).toHaveLength(names.length);
    expect(errors.every((e) => e.code === 'ENOSPC')).toBe(true);
    expect(errors.filter((e) => e.message.includes('could not be written earlier'))).toHaveLength(names.length - 1);
    expect(inodes()).toEqual(before);
    expect(sh('find', dir, '-name', '.vunify.*')).toBe('');
  });

  it('a journal entry the addon cannot write stops the swap before any temporary name exists', async () => {
    const roots = ['g1', 'g2'].map((g) => path.join(dir, g));
    for (const r of roots) writeFile(path.join(r, 'f'), { content: 'the same bytes\n' });
    const inodes = roots.map((r) => fs.statSync(path.join(r, 'f')).ino);
    sys.setLinkFault({ step: 'journal', nth: 1, errno: os.constants.errno.ENOSPC });
    const { report, errors } = await runUnify(roots, { cache: false });
    expect(report.summary.linksMade).toBe(0);
    expect(errors.map((e) => e.code)).toEqual(['ENOSPC']);
    expect(roots.map((r) => fs.statSync(path.join(r, 'f')).ino)).toEqual(inodes);
    expect(sh('find', dir, '-name', '.vunify.*')).toBe('');
  });
});

describe("the addon's journal lines", () => {
  // native/link.c writes its entries by hand (no printf of doubles): they
  // must be the lines journal.ts writes, JSON.stringify's form, whatever the
  // numbers (an mtime before 1970 is negative), and say what stat says.
  let dir: string;
  beforeEach(() => {
    dir = tempDir();
  });
  afterEach(() => {
    sys.setLinkHook(null);
    rmTree(dir);
  });

  it('are JSON.stringify lines that name both inodes as stat has them, a negative mtime included', async () => {
    const roots = ['g1', 'g2'].map((g) => path.join(dir, g));
    for (const r of roots) {
      writeFile(path.join(r, 'old'), { content: 'written before 1970\n' });
      sh('touch', '-m', '-d', '1960-03-04 05:06:07.123456789', path.join(r, 'old'));
    }
    const st = roots.map((r) => fs.statSync(path.join(r, 'old'), { bigint: true }));
    const stateDir = path.join(dir, 'state');
    let text = '';
    // Just after the exchange: the entry is written, the run not yet over (its journal is removed at the end).
    sys.setLinkHook((step, when) => {
      if (step !== 'exchange' || when !== 'after') return;
      for (const f of fs.readdirSync(stateDir)) if (f.startsWith('journal.')) text += fs.readFileSync(path.join(stateDir, f), 'latin1');
    });
    const { report } = await runUnify(roots, { cache: false, stateDir });
    expect(report.summary.linksMade).toBe(1);
    const lines = text.split('\n').filter((l) => l.includes('"tmp"'));
    expect(lines).toHaveLength(1);
    expect(JSON.stringify(JSON.parse(lines[0]!))).toBe(lines[0]);
    const { entries } = parseJournal(text);
    expect(entries).toHaveLength(1);
    const e = entries[0]!;
    // g1 sorts first: its copy is the canonical, g2's the one replaced
    const [canon, dup] = [st[0]!, st[1]!];
    expect(e.canon.mtimeSec).toBe(Number(canon.mtimeNs / 1_000_000_000n) - (canon.mtimeNs % 1_000_000_000n === 0n ? 0 : 1));
    expect(e.canon.mtimeSec).toBeLessThan(0);
    expect(e.canon.mtimeNsec).toBe(123456789);
    expect([e.canon.ino, e.canon.size, e.canon.mode, e.canon.uid, e.canon.gid]).toEqual([canon.ino, canon.size, canon.mode, canon.uid, canon.gid].map(Number));
    expect([e.dup.ino, e.dup.size, e.dup.mtimeSec, e.dup.mtimeNsec]).toEqual([Number(dup.ino), Number(dup.size), e.canon.mtimeSec, 123456789]);
    expect(e.canon.dev).toBe(e.dup.dev);
  });
});
