// A linking run whose stderr reader has gone away (`vunify ... 2>&1 | head`,
// a closed ssh session, a logger that died) must not stop half-way at its
// first error message: Node ignores SIGPIPE, so the write fails with EPIPE,
// and an 'error' event nobody listens to ends the process. The run then
// leaves its journal and the rest of its links undone until the next run.
// Real trees, the real CLI, the error made by cli-hook.mjs at an exact
// point (the name of one duplicate becomes a symlink just before its
// exchange), and a stderr pipe whose reading end is closed before the run
// writes anything.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cliArgs, exited, journals } from '../helpers/hostile.js';
import { rmTree, tempDir, writeFile } from '../helpers/tree.js';

let dir: string;
beforeEach(() => {
  dir = tempDir('vunify-stderr-pipe-');
});
afterEach(() => rmTree(dir));

describe('stderr to a closed pipe', () => {
  it('an error message into it does not end a linking run: every other pair is linked, the report is printed, no journal is left', async () => {
    const N = 200;
    for (const g of ['g1', 'g2'])
      for (let i = 0; i < N; i++) writeFile(path.join(dir, g, `d${i % 5}`, `f${i}`), { content: `content ${i}\n`.repeat(40) });
    fs.mkdirSync(path.join(dir, 'decoy'));
    const state = path.join(dir, 'state');
    fs.mkdirSync(state, { mode: 0o700 });
    // The first duplicate under g2 the linker comes to becomes a symlink just before its exchange: one error line.
    const cli = cliArgs(['--state-dir', state, '--json', '--no-default-excludes', path.join(dir, 'g1'), path.join(dir, 'g2')], {
      exchange: { under: path.join(dir, 'g2'), action: 'symlink', decoy: path.join(dir, 'decoy') },
    });
    const child = spawn(process.execPath, cli.argv, { env: cli.env, stdio: ['ignore', 'pipe', 'pipe'] });
    // Close our end of its stderr at once: its writes there fail with EPIPE.
    child.stderr!.destroy();
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    const { code, signal } = await exited(child);
    if (!child.stdout!.readableEnded) await new Promise((r) => child.stdout!.once('close', r));
    expect(signal).toBeNull();
    let linked = 0;
    for (let i = 0; i < N; i++) {
      const a = fs.lstatSync(path.join(dir, 'g1', `d${i % 5}`, `f${i}`));
      const b = fs.lstatSync(path.join(dir, 'g2', `d${i % 5}`, `f${i}`));
      if (a.ino === b.ino) linked++;
    }
    // Done, one file skipped: every other pair linked, nothing left to recover, exit 1 with the whole report.
    expect({ linked, journals: journals(state), reported: out.length > 0 }).toEqual({ linked: N - 1, journals: [], reported: true });
    expect(code).toBe(1);
    const report = JSON.parse(out);
    expect(report.errors).toHaveLength(1);
    expect(report.summary.linksMade).toBe(N - 1);
  });
});
