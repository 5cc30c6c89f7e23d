// The hash stage's directory descriptors (native/hash.c dir_cache) against
// a guest process that keeps swapping the directories they stand for: a
// symlink to a tree outside every root with the same names and contents,
// a directory of the guest's own moved in, a parent renamed away and back.
// Whatever the timing, the run opens nothing outside its roots (every
// descriptor the process gets, as strace -y decodes it, is checked), hashes
// no file for another inode (the linking run joins only files alike, and
// changes no byte), and leaks no descriptor (counted in /proc/self/fd over
// in-process runs).
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rmTree, runUnify, sh, snapshot, tempDir, writeFile } from '../helpers/tree.js';

let dir: string;
beforeEach(() => {
  dir = tempDir('vunify-dircache-');
});
afterEach(() => rmTree(dir));

const bin = path.join(import.meta.dirname, '..', '..', 'dist', 'bin.js');
const FILES = 150;
const body = (i: number) => Buffer.from(`library ${i} `.padEnd(3000, '#'));

/** g0 and g1 alike under a/b/c (and a/b), the same names and contents outside the roots and in g1/z. */
function build(): string[] {
  const roots = ['g0', 'g1'].map((g) => path.join(dir, g));
  for (const base of [...roots, path.join(dir, 'outside'), path.join(dir, 'g1', 'z')]) {
    for (let i = 0; i < FILES; i++) {
      writeFile(path.join(base, 'a', 'b', 'c', `f${i}`), { content: body(i) });
      if (i % 3 === 0) writeFile(path.join(base, 'a', 'b', `g${i}`), { content: body(i) });
    }
  }
  return roots;
}

/** The guest: swaps g1/a/b for a symlink outside, for its own z/a/b, and renames g1/a, in a loop. */
function startGuest(): { stop: () => Promise<void> } {
  const g1 = path.join(dir, 'g1');
  const script = `cd "${g1}" || exit 1
while :; do
  mv a/b a/b.real && ln -s "${dir}/outside/a/b" a/b && rm a/b && mv a/b.real a/b
  mv a/b a/b.real && mv z/a/b a/b && mv a/b z/a/b && mv a/b.real a/b
  mv a a.away && mv a.away a
  mv a/b/c a/b/c.x && ln -s ../../../outside/a/b/c a/b/c && rm a/b/c && mv a/b/c.x a/b/c
done
`;
  fs.writeFileSync(path.join(dir, 'guest.sh'), script);
  // Its own process group: the kill takes a mv or ln it may be running too.
  const p = spawn('sh', [path.join(dir, 'guest.sh')], { stdio: 'ignore', detached: true });
  return {
    stop: async () => {
      const exited = new Promise((r) => p.once('exit', r));
      process.kill(-p.pid!, 'SIGKILL');
      await exited;
      spawnSync('sleep', ['0.2']);
      // Put the guest's tree back as it was, whatever step the kill cut.
      const restore = `cd "${g1}" || exit 1
[ -d a.away ] && mv a.away a
if [ -d a/b.real ]; then
  if [ -L a/b ]; then rm a/b; elif [ -d a/b ] && [ ! -e z/a/b ]; then mv a/b z/a/b; fi
  mv a/b.real a/b
fi
if [ -d a/b/c.x ]; then [ -L a/b/c ] && rm a/b/c; mv a/b/c.x a/b/c; fi
true
`;
      spawnSync('sh', ['-c', restore]);
    },
  };
}

const openFds = () => fs.readdirSync('/proc/self/fd').length;

describe('the hash directory cache against a guest swapping directories', () => {
  it('opens nothing outside the roots (strace -y of the CLI, dry and linking runs)', async () => {
    const roots = build();
    const before = snapshot(dir, { dirTimes: false });
    const guest = startGuest();
    const log = path.join(dir, 'strace.log');
    const outside = path.join(dir, 'outside');
    const seen: string[] = [];
    try {
      for (let k = 0; k < 6; k++) {
        const args = ['--json', '--no-cache', '--no-default-excludes', '--state-dir', path.join(dir, 'state'), ...(k % 2 ? [] : ['-n']), ...roots];
        const r = spawnSync('strace', ['-f', '-qq', '-y', '-e', 'trace=open,openat,openat2', '-o', log, process.execPath, bin, ...args], { encoding: 'utf8', maxBuffer: 1 << 28 });
        expect([0, 1]).toContain(r.status);
        const text = fs.readFileSync(log, 'utf8');
        for (const m of text.matchAll(/= (\d+)<([^>]*)>/g)) seen.push(m[2]!);
        // The trace decodes returned descriptors: there must be some under the roots.
        expect(text).toContain(`${roots[0]}/a/b/c`);
      }
    } finally {
      await guest.stop();
    }
    expect(seen.filter((p) => p.startsWith(outside + '/') || p === outside)).toEqual([]);
    // Every byte and attribute as it was (the guest's own moves undone by stop()).
    const after = snapshot(dir, { dirTimes: false });
    for (const [p, v] of before) if (!p.startsWith('state') && !p.startsWith('strace')) expect(after.get(p), p).toBe(v);
    // Whatever was linked is alike: g0's and g1's files of one name share an inode only with their own content.
    for (let i = 0; i < FILES; i++) {
      const a = path.join(roots[1]!, 'a', 'b', 'c', `f${i}`);
      expect(fs.readFileSync(a).equals(body(i))).toBe(true);
    }
  }, 600_000);

  it('leaks no descriptor over runs that lose directories under it', async () => {
    const roots = build();
    const guest = startGuest();
    let base: number;
    try {
      await runUnify(roots, { cache: false, dryRun: true });
      base = openFds();
      for (let k = 0; k < 8; k++) await runUnify(roots, { cache: false, dryRun: true });
    } finally {
      await guest.stop();
    }
    // Closers may still be closing nothing here (a dry run frees nothing): the count is exact.
    expect(openFds()).toBe(base!);
    expect(sh('find', dir, '-name', '.vunify.*')).toBe('');
  }, 600_000);
});
