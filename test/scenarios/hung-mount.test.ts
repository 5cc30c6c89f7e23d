// A mount that never answers, inside a guest: a FUSE filesystem whose
// daemon never reads /dev/fuse (test/helpers/hung-fuse.py, no FUSE package
// needed), so every statx, open or read through it waits forever. Mounted
// once at a default-excluded place (/home) and once where the walk would
// otherwise look (/usr/share/hung): dry runs and linking runs must finish
// and still unify the other files. The runs get 60 s each; that bound is a
// hang detector, not a timing assertion (they take well under a second).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rmTree, tempDir, testStateDir, writeFile } from '../helpers/tree.js';

import { BIN } from '../helpers/hostile.js';
const HUNG = path.join(import.meta.dirname, '..', 'helpers', 'hung-fuse.py');

let dir: string;
let mounts: { target: string; daemon: ChildProcess }[] = [];

beforeEach(() => {
  dir = tempDir('vunify-hung-');
});

afterEach(async () => {
  // Unmount lazily (a plain umount would wait on the dead filesystem), then
  // end the "daemon", which closes /dev/fuse and aborts the connection.
  for (const m of mounts) {
    spawnSync('umount', ['-l', m.target]);
    m.daemon.kill('SIGKILL');
  }
  mounts = [];
  rmTree(dir);
});

/** Mount a never-answering FUSE filesystem at `target`; resolves once mounted. */
async function hungMount(target: string): Promise<void> {
  fs.mkdirSync(target, { recursive: true });
  const daemon = spawn('python3', [HUNG, target], { stdio: ['ignore', 'pipe', 'pipe'] });
  mounts.push({ target, daemon });
  let out = '';
  let err = '';
  daemon.stderr!.on('data', (d) => (err += d));
  await new Promise<void>((resolve, reject) => {
    daemon.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('ready')) resolve();
    });
    daemon.once('exit', (code) => reject(new Error(`hung-fuse.py exited ${code}: ${err}`)));
  });
  // The kernel's own view: it is a fuse mount now.
  expect(fs.readFileSync('/proc/self/mountinfo', 'utf8')).toContain(` ${target} `);
}

function run(args: string[]) {
  const r = spawnSync(process.execPath, [BIN, '--state-dir', testStateDir(), ...args], { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

const ino = (f: string) => fs.statSync(f).ino;

describe.each([
  ['a default-excluded place', 'home'],
  ['a place the walk looks into', 'usr/share/hung'],
])('a FUSE mount that never answers, at %s', (_, where) => {
  it('does not hang a dry run nor a linking run, and the other files are still unified', async () => {
    const [g1, g2] = [path.join(dir, 'g1'), path.join(dir, 'g2')];
    for (const g of [g1, g2]) {
      writeFile(path.join(g, 'usr/bin/tool'), { content: 'the same tool\n' });
      writeFile(path.join(g, 'usr/share/doc/readme'), { content: 'the same readme\n' });
    }
    await hungMount(path.join(g1, where));

    const dry = run(['-n', '--json', g1, g2]);
    expect([dry.signal, dry.code, dry.stderr]).toEqual([null, 0, '']);
    expect(JSON.parse(dry.stdout).summary.linksPlanned).toBe(2);

    const real = run([g1, g2]);
    expect([real.signal, real.code, real.stderr]).toEqual([null, 0, '']);
    expect(ino(path.join(g2, 'usr/bin/tool'))).toBe(ino(path.join(g1, 'usr/bin/tool')));
    expect(ino(path.join(g2, 'usr/share/doc/readme'))).toBe(ino(path.join(g1, 'usr/share/doc/readme')));
  }, 150_000);
});
