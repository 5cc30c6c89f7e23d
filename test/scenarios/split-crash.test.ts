// vunify split killed at any moment (SIGKILL, at seeded delays after its
// first private copy): no byte or attribute is lost, and the next run puts
// everything right. A scenario: a whole CLI run per kill, one file at a time.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildSplitGuests, FILES } from '../helpers/split-tree.js';
import { inode, rmTree, runCli, runUnify, sh, snapshot, testStateDir, writeFile } from '../helpers/tree.js';

let dir: string;
let guests: string[];
const G = (g: number, f = '') => path.join(guests[g]!, f);

describe('vunify split, killed', () => {
  beforeEach(async () => {
    ({ dir, guests } = await buildSplitGuests());
  });
  afterEach(() => rmTree(dir));

  it('SIGKILL at any moment of a split: no byte or attribute lost, the next run puts it right', async () => {
    for (let i = 0; i < 200; i++) {
      for (const g of guests) writeFile(path.join(g, `usr/share/many/f${i}`), { content: Buffer.alloc(20_000 + i, i), mode: 0o640, uid: 7, xattrs: { 'user.n': String(i) } });
    }
    expect((await runUnify(guests, { cache: false })).errors).toEqual([]);
    const before = snapshot(dir, { dirTimes: false });
    const bin = path.join(import.meta.dirname, '..', '..', 'dist', 'bin.js');
    const kills = [0, 5, 15, 40, 80];
    for (const delay of kills) {
      // Killed `delay` ms after it announced its first private copy.
      const child = spawn(process.execPath, [bin, 'split', '-v', '--no-default-excludes', '--state-dir', testStateDir(), G(0)], { stdio: ['ignore', 'pipe', 'inherit'] });
      const ended = new Promise((resolve) => child.on('exit', resolve));
      child.stdout.once('data', () => setTimeout(() => child.kill('SIGKILL'), delay));
      await ended;
      // Whatever the moment, every path still shows exactly what it did.
      const now = snapshot(dir, { dirTimes: false });
      for (const [p, v] of before) expect(now.get(p), p).toBe(v);
    }
    const r = runCli(['split', '--no-default-excludes', G(0)]);
    expect([r.code, r.stderr]).toEqual([0, '']);
    expect(sh('find', dir, '-name', '.vunify.*', '-printf', '%p %s %n %m\\n')).toBe('');
    expect(snapshot(dir, { dirTimes: false })).toEqual(before);
    for (const f of [...FILES, 'usr/share/many/f0', 'usr/share/many/f199']) expect(inode(G(0, f))).not.toBe(inode(G(1, f)));
  });
});
