// The swap in directories a guest made append-only or immutable (chattr +a /
// +i), and a temporary name that cannot be removed: never left behind
// without a message naming it. Real ext4/tmpfs directories, checked with
// find and stat.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { codedError, type FileError } from '../../src/core/errors.js';
import { TEMP_PREFIX } from '../../src/change/swap.js';
import { sys, RENAME_EXCHANGE } from '../../src/os/sys.js';
import { rmTree, runUnify, sh, tempDir, writeFile, inode, fileContents } from '../helpers/tree.js';
import { randomBytes } from 'node:crypto';
import { link } from '../../src/change/link.js';
import type { JournalLine } from '../../src/change/journal.js';
import { printable } from '../../src/core/paths.js';
import { groupFiles } from '../../src/pipeline/group.js';
import { splitByContent } from '../../src/pipeline/hash.js';
import { DEFAULT_SECRET } from '../../src/core/xxh3.js';
import { plan } from '../../src/pipeline/plan.js';
import { closeRoots, openRoots } from '../../src/pipeline/roots.js';
import { walk } from '../../src/pipeline/walk.js';

let dir: string;
const G = (g: string, f = '') => (f ? path.join(dir, g, f) : path.join(dir, g));
beforeEach(() => {
  dir = tempDir();
  for (const g of ['g1', 'g2']) writeFile(G(g, 'usr/share/f'), { content: 'the same bytes\n' });
});
// The linker's addon batches back on, the fault hook cleared, after tests that turned to the JS path.
afterEach(() => {
  sys.nativeLinker = true;
  sys.setLinkFault();
});

afterEach(() => {
  vi.restoreAllMocks();
  rmTree(dir);
});

const leftovers = () => sh('find', dir, '-name', `${TEMP_PREFIX}*`).split('\n').filter(Boolean);
const ino = (f: string) => fs.statSync(f).ino;

// chattr needs a filesystem with inode flags: tmpfs has them since 6.0, ext4 always.
const canChattr = (() => {
  const d = tempDir('vunify-chattr-');
  try {
    sh('chattr', '+a', d);
    sh('chattr', '-a', d);
    return true;
  } catch {
    return false;
  } finally {
    fs.rmSync(d, { recursive: true, force: true });
  }
})();

describe.skipIf(!canChattr)('a directory the guest made append-only or immutable', () => {
  it.each([['+a'], ['+i']])('chattr %s: the plan never replaces a name there (that copy becomes the canonical), and no temporary name is left', async (flag) => {
    const before = ino(G('g2', 'usr/share/f'));
    sh('chattr', flag, G('g2', 'usr/share'));
    try {
      const dry = await runUnify([G('g1'), G('g2')], { cache: false, dryRun: true });
      const { report, errors } = await runUnify([G('g1'), G('g2')], { cache: false });
      expect(errors).toEqual([]);
      // g2's name cannot change, so g2's inode stays and g1's path joins it.
      expect(report.summary.linksMade).toBe(1);
      expect(report.summary.freedBytes).toBe(dry.report.summary.freeableBytes);
      expect(ino(G('g1', 'usr/share/f'))).toBe(before);
    } finally {
      sh('chattr', flag.replace('+', '-'), G('g2', 'usr/share'));
    }
    expect(leftovers()).toEqual([]);
    expect(ino(G('g2', 'usr/share/f'))).toBe(before);
    // Nightly reruns add nothing either.
    sh('chattr', flag, G('g2', 'usr/share'));
    try {
      await runUnify([G('g1'), G('g2')], { cache: false });
    } finally {
      sh('chattr', flag.replace('+', '-'), G('g2', 'usr/share'));
    }
    expect(leftovers()).toEqual([]);
  });
});

describe('a temporary name that cannot be removed is named, never left silently', () => {
  it('exchange refused and the temporary link undeletable: the error names the temporary name', async () => {
    sys.nativeLinker = false; // the JS path: faults at its seam
    const realUnlink = sys.unlinkAt;
    vi.spyOn(sys, 'renameAt').mockImplementation(() => {
      throw codedError('EIO', 'injected: exchange failed');
    });
    vi.spyOn(sys, 'unlinkAt').mockImplementation((dirFd, name, flags) => {
      if (name.toString().startsWith(TEMP_PREFIX)) throw Object.assign(new Error('injected'), { code: 'EPERM', syscall: 'unlinkat' });
      return realUnlink(dirFd, name, flags);
    });
    const { errors } = await runUnify([G('g1'), G('g2')], { cache: false });
    vi.restoreAllMocks();
    const left = leftovers();
    expect(left).toHaveLength(1);
    expect(errors).toHaveLength(1);
    expect(errors[0]!.path).toBe(G('g2', 'usr/share/f'));
    expect(errors[0]!.message).toContain(`its temporary link ${path.basename(left[0]!)} could not be removed (operation not permitted`);
    // What is left is a link to the canonical, as the message says.
    expect(ino(left[0]!)).toBe(ino(G('g1', 'usr/share/f')));
  });
});

describe('settle: a guest writing while the old inode is compared after the exchange', () => {
  // A guest process that holds its file open and writes to it while the
  // linker compares it after the exchange (settle): the write must not be
  // deleted with the old inode. Real files; the write lands through the
  // guest's own descriptor, checked by reading every file left in the tree.
  let dir: string;
  beforeEach(() => {
    dir = tempDir();
  });
  afterEach(() => {
    vi.restoreAllMocks();
    rmTree(dir);
  });


  it('a write through a held descriptor during the comparison after the exchange is kept', async () => {
    sys.nativeLinker = false; // the JS path: the guest acts at its seam
    const content = randomBytes(4 << 20); // several comparison chunks
    for (const g of ['g1', 'g2']) writeFile(path.join(dir, g, 'f'), { content });
    // The guests' processes hold their files open for writing, from before the run.
    const held = ['g1', 'g2'].map((g) => fs.openSync(path.join(dir, g, 'f'), 'r+'));
    const mark = Buffer.from('WRITTEN BY THE GUEST AFTER THE EXCHANGE');
    let exchanged = false;
    let reads = 0;
    let wrote = false;
    const realRename = sys.renameAt;
    vi.spyOn(sys, 'renameAt').mockImplementation((a, b, c, d, flags = 0) => {
      realRename(a, b, c, d, flags);
      if (flags === RENAME_EXCHANGE) exchanged = true;
    });
    const realRead = sys.readSync;
    vi.spyOn(sys, 'readSync').mockImplementation((fd, buf, len, pos) => {
      const n = realRead(fd, buf, len, pos);
      // Once the first chunk of both was compared after the exchange: the
      // guest writes at offset 0 of its old file (the one only the
      // temporary name holds now).
      if (exchanged && !wrote && ++reads === 3) {
        for (const h of held) {
          if (fs.fstatSync(h).nlink === 1) {
            fs.writeSync(h, mark, 0, mark.length, 0);
            wrote = true;
          }
        }
      }
      return n;
    });
    try {
      await runUnify([path.join(dir, 'g1'), path.join(dir, 'g2')], { cache: false });
    } finally {
      vi.restoreAllMocks();
      for (const h of held) fs.closeSync(h);
    }
    expect(wrote).toBe(true);
    // The guest's bytes are somewhere in the tree (at its name, or kept beside it).
    expect(fileContents(dir).some((b) => b.subarray(0, mark.length).equals(mark))).toBe(true);
  });
});

describe('settle: the settled mark cannot be written', () => {
  // The settled mark cannot be written (the state directory's filesystem is
  // full): the exchange has happened, so the old inode sits at its temporary
  // name. The error must name that name and say what it holds, and nothing
  // more may be deleted. The failure is injected through the journal object;
  // the guest files are real, checked with stat and their bytes.
  let dir: string;
  beforeEach(() => {
    dir = tempDir();
  });
  afterEach(() => {
    rmTree(dir);
  });

  it('a settled mark the journal cannot take: the error names the temporary name and what it holds; nothing else is deleted', async () => {
    const content = Buffer.from('the same bytes\n');
    writeFile(path.join(dir, 'g1/f'), { content });
    fs.linkSync(path.join(dir, 'g1/f'), path.join(dir, 'g1/f2')); // the canonical: more links
    // A name no terminal should get raw: a newline in it (the temporary name is beside it).
    const name = 'dup\nname';
    writeFile(path.join(dir, 'g2', name), { content });
    const canonical = inode(path.join(dir, 'g1/f'));
    const dup = inode(path.join(dir, 'g2', name));

    const roots = openRoots(['g1', 'g2'].map((g) => path.join(dir, g)));
    const errors: FileError[] = [];
    const onError = (e: FileError) => errors.push(e);
    const walked = await walk(roots, { rules: [], minSize: 1, maxSize: Infinity, onError });
    const { groups } = groupFiles(walked.files, { ignoreMtime: false });
    const thePlan = plan(await splitByContent(groups, { secret: Buffer.from(DEFAULT_SECRET), policy: { ignoreMtime: false }, onError }));
    expect(thePlan.linksPlanned).toBe(1);

    const lines: JournalLine[] = [];
    const journal = {
      record(line: JournalLine) {
        if ('settled' in line) throw codedError('ENOSPC', 'injected: no space left on device');
        lines.push(line);
      },
    };
    const r = await link(thePlan, { ignoreMtime: false, onError, journal });
    closeRoots(roots);

    // The entry was journalled before the link; its temporary name is still there.
    expect(lines).toHaveLength(1);
    const tmp = Buffer.from((lines[0] as { tmp: string }).tmp, 'hex');
    const left = sh('find', path.join(dir, 'g2'), '-name', '.vunify.*').split('\n').filter(Boolean);
    expect(left).toEqual([path.join(dir, 'g2', tmp.toString())]);
    // It holds the old inode, bytes intact; the name holds the canonical.
    expect(inode(left[0]!)).toBe(dup);
    expect(fs.readFileSync(left[0]!).equals(content)).toBe(true);
    expect(inode(path.join(dir, 'g2', name))).toBe(canonical);
    expect(fs.statSync(path.join(dir, 'g1/f')).nlink).toBe(3);
    // The one error names the temporary name (printable) and what it holds.
    expect(r.skipped).toBe(1);
    expect(errors).toHaveLength(1);
    expect(errors[0]!.code).toBe('ENOSPC');
    expect(errors[0]!.message).toContain(printable(tmp));
    expect(errors[0]!.message).toMatch(/journal could not record it/);
    expect(errors[0]!.message).toMatch(/file that was at this name/);
  });
});
