// vitest globalSetup: compile src/ to dist/ once before any test file runs,
// so the tests that spawn the CLI (node dist/bin.js) always run the current
// sources, never a build older than the last edit. Incremental: a build with
// nothing to do costs a few seconds; the build info lives inside dist/, so
// deleting dist/ forces a full build.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const root = path.join(import.meta.dirname, '..', '..');

export default function build(): (() => void) | void {
  // Both test projects name this setup; build once per vitest process.
  if (process.env.VUNIFY_TEST_BUILT === String(process.pid)) return;
  // Test processes put their state directories (tree.ts testStateDir) in
  // this one, removed when the run ends: vitest ends its workers without
  // letting them clean up after themselves.
  const states = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-states-'));
  process.env.VUNIFY_TEST_STATES = states;
  const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  try {
    execFileSync(process.execPath, [tsc, '-p', 'tsconfig.json', '--incremental', '--tsBuildInfoFile', 'dist/.tsbuildinfo'], {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // What `npm run build` copies beside the JavaScript: the fleet merge's SQL.
    fs.cpSync(path.join(root, 'src/report/sql'), path.join(root, 'dist/report/sql'), { recursive: true });
    // The CLI under test runs dist/ module by module, never the bundle `npm
    // run build` makes (packaging/bundle.mjs): the hooks the scenarios
    // preload (cli-hook.mjs, window-hook.mjs, journal-size.mjs) patch the
    // sys seam of dist/os/sys.js, and the bundle has its own copy of it, so
    // after a build with nothing for tsc to emit here they were silently
    // bypassed. Without its list of inputs dist/bin.js takes dist/ (bin.test
    // makes its own bundle on a copy of dist/).
    fs.rmSync(path.join(root, 'dist', 'bundle', 'inputs.json'), { force: true });
  } catch (er) {
    const e = er as { stdout?: string; stderr?: string };
    throw new Error(`the TypeScript build failed, so no test would run the current sources:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
  process.env.VUNIFY_TEST_BUILT = String(process.pid);
  return () => fs.rmSync(states, { recursive: true, force: true });
}
