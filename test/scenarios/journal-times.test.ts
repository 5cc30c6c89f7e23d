// A guest file's mtime past 2^53 seconds (tmpfs and btrfs take any 64-bit
// time; `touch -d @2^60`), linked by a run that is killed just after its
// exchange (cli-hook.mjs, at the exact call): the journal entry must still
// be read, so that the next run puts the guest's name right and removes the
// temporary name, as it does for any other time. The native linker writes
// the entry (native/link.c num()); checked with ls, stat and cmp on a tmpfs.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tmpFs, type LoopFs } from '../helpers/loopfs.js';
import { cliArgs } from '../helpers/hostile.js';
import { sh } from '../helpers/tree.js';

let tmp: LoopFs, base: string, mnt: string;
beforeEach(() => {
  tmp = tmpFs('size=64m');
  mnt = tmp.dir;
  base = path.dirname(mnt);
});
afterEach(() => tmp.unmount());

describe('journal entries of files with mtimes far from 1970', () => {
  it.each(['1152921504606846976', '-1152921504606846976', '4611686018427387904', '1700000000'])(
    'mtime @%s: a run killed after its exchange is put right by the next',
    (mtime) => {
      const state = path.join(base, 'state');
      const roots = ['a', 'b'].map((g) => path.join(mnt, g));
      for (const r of roots) {
        fs.mkdirSync(r);
        fs.writeFileSync(path.join(r, 'f'), 'the same bytes\n');
        sh('touch', '-d', `@${mtime}`, path.join(r, 'f'));
      }
      const shown = sh('stat', '-c', '%Y', path.join(roots[1]!, 'f')).trim();
      // Killed just after its second change: the link to the temporary name, then the exchange.
      const cli = cliArgs(['--no-cache', '--state-dir', state, ...roots], { kill: { n: 2, when: 'after' } });
      const killed = spawnSync(process.execPath, cli.argv, { env: cli.env, encoding: 'utf8' });
      expect(killed.signal).toBe('SIGKILL');
      expect(fs.readdirSync(roots[1]!).filter((n) => n.startsWith('.vunify.'))).toHaveLength(1);
      expect(fs.readdirSync(state).filter((n) => n.startsWith('journal.'))).toHaveLength(1);
      const next = spawnSync(process.execPath, [cli.argv[2]!, '--no-cache', '--state-dir', state, ...roots], { encoding: 'utf8' });
      expect(next.stderr).toBe('');
      expect(next.status).toBe(0);
      // No temporary name, no journal left; both names linked, the bytes and the mtime as they were.
      expect(fs.readdirSync(roots[1]!)).toEqual(['f']);
      expect(fs.readdirSync(state).filter((n) => n.startsWith('journal.'))).toEqual([]);
      expect(fs.statSync(path.join(roots[0]!, 'f')).ino).toBe(fs.statSync(path.join(roots[1]!, 'f')).ino);
      expect(fs.readFileSync(path.join(roots[1]!, 'f'), 'utf8')).toBe('the same bytes\n');
      expect(sh('stat', '-c', '%Y', path.join(roots[1]!, 'f')).trim()).toBe(shown);
    },
    60_000,
  );
});
