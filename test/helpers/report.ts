// Run `vunify report` from the built CLI (dist/bin.js) and capture everything.
import { spawnSync } from 'node:child_process';
import path from 'node:path';

export function runReport(args: string[]) {
  const bin = path.join(import.meta.dirname, '..', '..', 'dist', 'bin.js');
  const r = spawnSync(process.execPath, [bin, 'report', ...args], { encoding: 'utf8', input: '' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
