// Two runs sharing a state directory, racing for real in two processes: one
// starts and ends linking runs over one root as fast as it can, the other
// runs recovery over another root as fast as it can. Recovery must never
// find a live run's journal unlocked and take it (the run would then link
// with no journal and crash at the end). Bounded by count, not by time.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { BIN, budget } from '../helpers/hostile.js';
import { rmTree, tempDir } from '../helpers/tree.js';

const DIST = path.dirname(BIN);
const ROUNDS = budget(4000, 40000);

let dir: string;
beforeEach(() => {
  dir = tempDir();
  for (const g of ['a', 'b']) fs.mkdirSync(path.join(dir, g));
});
afterEach(() => rmTree(dir));

/** Run `body` in a child node process with the built modules; resolves with its exit code and output. */
function child(body: string): Promise<{ code: number | null; out: string }> {
  const script = `
    import { openRoots } from ${JSON.stringify(path.join(DIST, 'pipeline/roots.js'))};
    import { openState } from ${JSON.stringify(path.join(DIST, 'state/run-state.js'))};
    const stateDir = ${JSON.stringify(path.join(dir, 'state'))};
    ${body}`;
  const c = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  c.stdout.on('data', (d) => (out += d));
  c.stderr.on('data', (d) => (out += d));
  return new Promise((resolve) => c.on('exit', (code) => resolve({ code, out })));
}

it(`recovery never takes a live run's journal (${ROUNDS} runs against a recovering neighbour)`, async () => {
  fs.mkdirSync(path.join(dir, 'state'), { mode: 0o700 });
  const live = child(`
    const roots = openRoots([${JSON.stringify(path.join(dir, 'a'))}]);
    let lost = 0;
    for (let i = 0; i < ${ROUNDS}; i++) {
      const s = openState(stateDir, roots, () => {});
      s.journal.record({ settled: '2e76756e6966792e78', ctimeSec: 0, ctimeNsec: 0 });
      try { s.close(); } catch (e) { lost++; console.log('run ' + i + ': ' + e.message); }
    }
    console.log('lost ' + lost);
    process.exit(lost ? 1 : 0);`);
  const recovering = child(`
    import fs from 'node:fs';
    const roots = openRoots([${JSON.stringify(path.join(dir, 'b'))}]);
    // Until the live loop is done (the marker file), bounded all the same.
    for (let i = 0; i < ${ROUNDS * 5} && !fs.existsSync(stateDir + '/../done'); i++) openState(stateDir, roots, () => {}).close();`);
  const l = await live;
  fs.writeFileSync(path.join(dir, 'done'), '');
  const r = await recovering;
  expect(r.code, r.out).toBe(0);
  expect(l.out.split('\n').filter(Boolean).slice(-3).join('\n'), l.out.slice(0, 2000)).toBe('lost 0');
  expect(l.code).toBe(0);
  expect(fs.readdirSync(path.join(dir, 'state')).filter((n) => n.startsWith('journal.'))).toEqual([]);
}, 120_000);
