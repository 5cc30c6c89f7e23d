// Locks and the journal of temporary names, on real files.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { FileError } from '../../src/core/errors.js';
import { closeRoots, openRoots } from '../../src/pipeline/roots.js';
import { openState } from '../../src/state/run-state.js';
import { recover } from '../../src/state/recovery.js';
import type { JournalEntry } from '../../src/change/journal.js';
import { killAtFirstUnlink } from '../helpers/killed-run.js';
import { sys } from '../../src/os/sys.js';
import { inode, rmTree, runUnify, sh, tempDir, testStateDir, writeFile } from '../helpers/tree.js';

let dir: string;
let stateDir: string;
beforeEach(() => {
  dir = tempDir();
  stateDir = path.join(dir, 'state');
  for (const g of ['a', 'b', 'a/inner']) fs.mkdirSync(path.join(dir, g), { recursive: true });
});
afterEach(() => rmTree(dir));

const noErrors = (e: FileError) => {
  throw new Error(`unexpected error ${e.path}: ${e.message}`);
};

function withRoots<T>(names: string[], fn: (roots: ReturnType<typeof openRoots>) => T): T {
  const roots = openRoots(names.map((n) => path.join(dir, n)));
  try {
    return fn(roots);
  } finally {
    closeRoots(roots);
  }
}

describe('locks', () => {
  it("a root's lock file holds this run's pid alone, written over a longer one an earlier run left", () => {
    withRoots(['a'], (ra) => {
      openState(stateDir, ra, noErrors).close();
      const file = path.join(stateDir, 'locks', `${ra[0]!.dev}-${ra[0]!.ino}`);
      fs.writeFileSync(file, '123456789012\n');
      const held = openState(stateDir, ra, noErrors);
      try {
        expect(fs.readFileSync(file, 'utf8')).toBe(`${process.pid}\n`);
      } finally {
        held.close();
      }
    });
  });

  it('refuses a second run on the same root or on a root inside or around a locked one', () => {
    withRoots(['a'], (ra) => {
      const held = openState(stateDir, ra, noErrors);
      try {
        for (const other of ['a', 'a/inner']) {
          expect(() => withRoots([other], (r) => openState(stateDir, r, noErrors))).toThrow(
            new RegExp(`another vunify run \\(pid ${process.pid}\\)`),
          );
        }
        // A sibling is fine.
        withRoots(['b'], (rb) => openState(stateDir, rb, noErrors).close());
      } finally {
        held.close();
      }
      withRoots(['a/inner'], (inner) => {
        const h = openState(stateDir, inner, noErrors);
        try {
          expect(() => openState(stateDir, ra, noErrors)).toThrow(/another vunify run/);
        } finally {
          h.close();
        }
      });
    });
  });

  it('a lock held by a killed process does not block the next run', async () => {
    const script = `
      import { openRoots } from '${path.resolve('dist/pipeline/roots.js')}';
      import { openState } from '${path.resolve('dist/state/run-state.js')}';
      openState(${JSON.stringify(stateDir)}, openRoots([${JSON.stringify(path.join(dir, 'a'))}]), () => {});
      console.log('locked');
      setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d) => String(d).includes('locked') && resolve());
      child.on('exit', (code) => reject(new Error(`child exited ${code}`)));
    });
    withRoots(['a'], (ra) => expect(() => openState(stateDir, ra, noErrors)).toThrow(/another vunify run/));
    child.kill('SIGKILL');
    await new Promise((r) => child.on('exit', r));
    withRoots(['a'], (ra) => openState(stateDir, ra, noErrors).close());
  });
});

describe('recovery of a killed run', () => {
  it('removes exactly its own leftovers and restores a file written after comparison', () => {
    const g = path.join(dir, 'a');
    fs.mkdirSync(stateDir, { recursive: true });
    writeFile(path.join(g, 'canon'), { content: 'shared' });
    const canon = fs.statSync(path.join(g, 'canon'));
    const st = fs.statSync(g);
    const entry = (tmp: string, name: string, dup: fs.Stats): JournalEntry => ({
      root: g, rootDev: st.dev, rootIno: st.ino, dir: '', tmp: Buffer.from(tmp).toString('hex'), name: Buffer.from(name).toString('hex'),
      canon: { dev: canon.dev, ino: canon.ino },
      dup: { dev: dup.dev, ino: dup.ino, size: dup.size, mtimeSec: Math.floor(dup.mtimeMs / 1000), mtimeNsec: Number(BigInt(fs.statSync(path.join(g, name), { bigint: true }).mtimeNs) % 1_000_000_000n) },
    });
    const entries: JournalEntry[] = [];
    // 1. killed after linkat, before the swap: the temporary name is a link to the canonical.
    writeFile(path.join(g, 'd1'), { content: 'shared' });
    entries.push(entry('.vunify.one', 'd1', fs.statSync(path.join(g, 'd1'))));
    fs.linkSync(path.join(g, 'canon'), path.join(g, '.vunify.one'));
    // 2. killed after the swap: the temporary name holds the old duplicate, unwritten.
    writeFile(path.join(g, 'd2'), { content: 'shared' });
    entries.push(entry('.vunify.two', 'd2', fs.statSync(path.join(g, 'd2'))));
    fs.renameSync(path.join(g, 'd2'), path.join(g, '.vunify.two'));
    fs.linkSync(path.join(g, 'canon'), path.join(g, 'd2'));
    // 3. the same, but the guest wrote its old file after vunify compared it.
    writeFile(path.join(g, 'd3'), { content: 'shared' });
    entries.push(entry('.vunify.three', 'd3', fs.statSync(path.join(g, 'd3'))));
    const old3 = inode(path.join(g, 'd3'));
    fs.renameSync(path.join(g, 'd3'), path.join(g, '.vunify.three'));
    fs.linkSync(path.join(g, 'canon'), path.join(g, 'd3'));
    fs.writeFileSync(path.join(g, '.vunify.three'), 'guest wrote this');
    // 4. a journaled name that now holds something else (a guest's file): left alone, reported.
    writeFile(path.join(g, 'd4'), { content: 'shared' });
    entries.push(entry('.vunify.four', 'd4', fs.statSync(path.join(g, 'd4'))));
    fs.writeFileSync(path.join(g, '.vunify.four'), 'guest file');
    // 5. a guest file that merely looks like ours, not in any journal.
    fs.writeFileSync(path.join(g, '.vunify.lookalike'), 'guest');
    // A journal cut short by the kill ends in half a line.
    fs.writeFileSync(path.join(stateDir, 'journal.999.dead'), entries.map((e) => JSON.stringify(e)).join('\n') + '\n{"root":');

    const errors: FileError[] = [];
    withRoots(['a'], (ra) => recover(stateDir, ra, (e) => errors.push(e)));
    const left = fs.readdirSync(g).sort();
    expect(left).toEqual(['.vunify.four', '.vunify.lookalike', 'canon', 'd1', 'd2', 'd3', 'd4', 'inner']);
    expect(inode(path.join(g, 'd2'))).toBe(canon.ino);
    expect(inode(path.join(g, 'd3'))).toBe(old3);
    expect(fs.readFileSync(path.join(g, 'd3'), 'utf8')).toBe('guest wrote this');
    expect(fs.statSync(path.join(g, 'canon')).nlink).toBe(2); // canon + d2
    expect(errors.map((e) => e.path)).toEqual([path.join(g, '.vunify.four')]);
    expect(fs.readdirSync(stateDir)).toEqual([]);
  });

  it('leaves the journal of a live run alone', () => {
    withRoots(['a'], (ra) => {
      const live = openState(stateDir, ra, noErrors);
      try {
        const before = fs.readdirSync(stateDir).filter((n) => n.startsWith('journal.'));
        expect(before).toHaveLength(1);
        recover(stateDir, ra, noErrors);
        expect(fs.readdirSync(stateDir).filter((n) => n.startsWith('journal.'))).toEqual(before);
      } finally {
        live.close();
      }
      expect(fs.readdirSync(stateDir).filter((n) => n.startsWith('journal.'))).toEqual([]);
    });
  });
});

// A regression from the safety review: recovery after a kill must not undo
// a guest's later edits.
describe('recovery of a linking run killed after the exchange', () => {
  afterEach(() => vi.restoreAllMocks());

  it('keeps what the guest wrote to its path, now the canonical\'s inode, before the next run', async () => {
    const guests = ['g1', 'g2'].map((g) => path.join(dir, g));
    const conf = (g: number) => path.join(guests[g]!, 'etc/conf');
    for (const g of guests) writeFile(path.join(g, 'etc/conf'), { content: 'same\n', mtime: '1700000000' });
    const runState = testStateDir();
    sys.nativeLinker = false; // the JS path: killed at its seam (the addon's kills are the crash scenario's)
    const restore = killAtFirstUnlink(runState);
    try {
      await runUnify(guests, { cache: false });
    } finally {
      sys.nativeLinker = true;
    }
    expect(restore()).toBe(true);
    expect(inode(conf(0))).toBe(inode(conf(1)));
    fs.appendFileSync(conf(1), 'guest edit\n');
    withRoots(['g1', 'g2'], (roots) => recover(runState, roots, () => {}));
    expect(fs.readFileSync(conf(1), 'utf8'), `g1 shows ${JSON.stringify(fs.readFileSync(conf(0), 'utf8'))}`).toBe('same\nguest edit\n');
  });
});

describe('a state directory that fills up', () => {
  it('stops linking at the first journal write that fails, keeps the journal, and the next run puts everything right', () => {
    // A tiny tmpfs as the state directory: the journal runs out of room
    // part-way through the run, on an entry or on a settled mark.
    const state = path.join(dir, 'tiny');
    fs.mkdirSync(state, { mode: 0o700 });
    sh('mount', '-t', 'tmpfs', '-o', 'size=16k,mode=0700', 'none', state);
    try {
      const guests = ['g1', 'g2'].map((g) => path.join(dir, g));
      for (let i = 0; i < 400; i++) for (const g of guests) writeFile(path.join(g, `usr/lib/f${i}`), { content: `file ${i} `.repeat(50), mtime: '1700000000' });
      const bin = path.join(import.meta.dirname, '..', '..', 'dist', 'bin.js');
      const run = () => spawnSync(process.execPath, [bin, '--no-default-excludes', '--no-cache', '--state-dir', state, '--json', ...guests], { encoding: 'utf8' });
      const first = run();
      expect(first.status).toBe(1);
      expect(first.stderr).toMatch(/ENOSPC|journal/);
      const made = JSON.parse(first.stdout).summary.linksMade as number;
      expect(made).toBeGreaterThan(0);
      expect(made).toBeLessThan(400);
      // The journal outlives the run; whatever temporary name is left is named in it.
      expect(fs.readdirSync(state).filter((n) => n.startsWith('journal.'))).toHaveLength(1);
      // With room again, the next run recovers first and then links the rest.
      sh('mount', '-o', 'remount,size=4m', state);
      const second = run();
      expect([second.status, second.stderr]).toEqual([0, '']);
      expect(sh('find', dir, '-name', '.vunify.*')).toBe('');
      expect(fs.readdirSync(state).filter((n) => n.startsWith('journal.'))).toEqual([]);
      for (let i = 0; i < 400; i++) {
        const [a, b] = guests.map((g) => path.join(g, `usr/lib/f${i}`));
        expect(inode(a!)).toBe(inode(b!));
        expect(fs.readFileSync(a!, 'utf8')).toBe(`file ${i} `.repeat(50));
      }
    } finally {
      sh('umount', '-l', state);
    }
  });
});
