// Run `vunify report` from the built CLI (dist/bin.js), with the test state
// directory (its hash cache), and capture everything.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { testStateDir } from './tree.js';

export function runReport(args: string[]) {
  const bin = path.join(import.meta.dirname, '..', '..', 'dist', 'bin.js');
  const r = spawnSync(process.execPath, [bin, 'report', '--state-dir', testStateDir(), ...args], { encoding: 'utf8', input: '' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
