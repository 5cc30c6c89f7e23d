// Crash safety, black box: the built CLI is SIGKILLed at random moments over
// and over, and after every kill every path is checked against the
// original: same content, owner, mode, mtime to the nanosecond and xattrs.
// The only thing a kill may leave is a temporary name `.vunify.*`, and it
// must hold a file identical (bytes and metadata) to one in its own
// directory: the canonical it was linked from, or the duplicate it displaced.
//
// Each iteration starts from a fresh copy of three guests (so a run has its
// whole job to do: scan, hash, compare several MiB, link) and kills one to
// three runs in a row on it before a run to completion. A run after a kill
// first recovers the killed run's leftovers, so a chain also kills runs in
// the middle of recovery, and the later kills of a chain land further into
// the plan (what earlier runs linked is done). The run to completion must
// put everything right: exit 0, no temporary name, no journal, the same
// snapshot, and everything identical unified.
//
// Where the kills land does not depend on how busy the machine is: about a
// third are timed (a seeded fraction of a measured run, so they land
// anywhere: startup, scan, hash, link, close), the rest are made by the run
// itself at an exact call (test/helpers/cli-hook.mjs, preloaded): just
// before or just after its n-th link, exchange or unlink, n seeded. So
// kills land in the middle of linking by construction, and the test ends
// after a number of kills, not after a time. Two lanes (own tree, own state
// directory) run side by side, to use both cores; each has its own seeded
// PRNG and its share of the kills.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { budget, cliArgs, exited, fastSnapshot, journals, killChildren, rng, runVunify, SEED, startChild, values, type HookConfig } from '../helpers/hostile.js';
import { rmTree, setMtime, sh, snapshot, tempDir, writeFile } from '../helpers/tree.js';

const execFileP = promisify(execFile);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const LANES = 2;
/** Kills made (runs that died of SIGKILL; the issue asks for at least 100), shared out between the lanes. */
const TARGET = budget(110, 3000);
const MIN_KILLS = 100;
const GUESTS = ['g1', 'g2', 'g3'];

let top: string;
let template: string;
/** What every path of a fresh copy looks like (fast snapshot values). */
let expected: Map<string, string>;
/** Regular-file inodes left after a complete run over a fresh copy (everything unifiable unified). */
let unifiedInodes: number;

const bytes = (seed: number, n: number) => {
  const r = rng(seed);
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (r() * 256) | 0;
  return b;
};

beforeAll(() => {
  top = tempDir('vunify-crash-');
  template = path.join(top, 'template');
  const g1 = path.join(template, 'g1');
  const G = (rel: string) => path.join(g1, rel);
  // Large enough that kills land in the middle of hashing and comparing.
  writeFile(G('usr/lib/big-a.so'), { content: bytes(1, 3 * 2 ** 20), mode: 0o755, mtime: '1700000001.111111111' });
  writeFile(G('usr/lib/big-b.so'), { content: bytes(2, 2 * 2 ** 20 + 1), xattrs: { 'user.pkg': 'libb' }, mtime: '1700000002.222222222' });
  writeFile(G('usr/lib/sparse.img'), { content: 'header' });
  sh('truncate', '-s', '2M', G('usr/lib/sparse.img'));
  setMtime(G('usr/lib/sparse.img'), '1700000003.333333333');
  // Many small ones, sizes around page boundaries, assorted owners, modes, xattrs
  // (big-a is exactly three of the linker's 1 MiB chunks, big-b one byte more than two).
  const sizes = [1, 7, 100, 4095, 4096, 4097, 65536, 65537];
  const modes = [0o644, 0o755, 0o600, 0o4755, 0o2755, 0o640];
  for (let i = 0; i < 48; i++) {
    const xattrs: Record<string, string> = {};
    if (i % 4 === 0) xattrs['user.origin'] = 'debian';
    if (i % 9 === 0) xattrs['trusted.t'] = `t${i}`;
    const owner = i % 5 === 0 ? 1000 : i % 7 === 0 ? 33 : 0;
    writeFile(G(`usr/share/pkg${i % 8}/file${i}`), {
      content: bytes(100 + i, sizes[i % sizes.length]!),
      mode: modes[i % modes.length],
      uid: owner,
      gid: owner,
      mtime: `${1700000100 + i}.${String(i * 7919).padStart(9, '0')}`,
      xattrs,
    });
  }
  writeFile(G('usr/bin/ping'), { content: bytes(3, 60_000), mode: 0o755 });
  sh('setcap', 'cap_net_raw+ep', G('usr/bin/ping'));
  setMtime(G('usr/bin/ping'), '1700000004.444444444');
  writeFile(G('usr/share/acl-file'), { content: bytes(4, 5000) });
  sh('setfacl', '-m', 'u:4242:r', G('usr/share/acl-file'));
  setMtime(G('usr/share/acl-file'), '1700000005.555555555');
  writeFile(G('usr/bin/tool'), { content: bytes(5, 30_000), mode: 0o755 });
  fs.linkSync(G('usr/bin/tool'), G('usr/bin/tool-alias'));
  writeFile(G('usr/share/empty'), { content: '' });
  fs.symlinkSync('big-a.so', G('usr/lib/libfoo.so'));
  fs.mkdirSync(G('run'));
  sh('mkfifo', G('run/fifo'));
  for (const g of ['g2', 'g3']) sh('cp', '-a', g1, path.join(template, g));
  for (const [i, g] of GUESTS.entries()) {
    const P = (rel: string) => path.join(template, g, rel);
    writeFile(P('etc/hostname'), { content: `${g}\n` });
    writeFile(P('usr/share/uniq/data'), { content: bytes(200 + i, 100_000) });
    // Same bytes, but metadata that forbids linking in one guest each.
    writeFile(P('usr/share/differ-mtime'), { content: bytes(6, 9000), mtime: g === 'g3' ? '1700000006.5' : '1700000006' });
    writeFile(P('usr/share/differ-xattr'), { content: bytes(7, 9000), xattrs: { 'user.x': g === 'g2' ? 'other' : 'same' } });
  }
  expected = values(fastSnapshot(template));
}, 60_000);

afterAll(async () => {
  await killChildren();
  if (top) rmTree(top);
});

/**
 * Make `work` a fresh copy of the template. g1 holds the canonical copies
 * (first root, and every tie goes to it), whose paths vunify never replaces:
 * it is copied once and then only checked, like the rest; g2 and g3 are
 * copied anew each time, so every run has all its links to make.
 */
async function freshCopy(work: string): Promise<void> {
  if (!fs.existsSync(path.join(work, 'g1'))) {
    await execFileP('rm', ['-rf', work]);
    await execFileP('cp', ['-a', template, work]);
    return;
  }
  await execFileP('rm', ['-rf', path.join(work, 'g2'), path.join(work, 'g3')]);
  await execFileP('cp', ['-a', path.join(template, 'g2'), path.join(template, 'g3'), work]);
}

/** Paths whose value differs from `want`, plus missing and extra paths (temporary names excepted). */
function differences(got: Map<string, string>, want: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [k, v] of want) if (got.get(k) !== v) out.push(`${k}: ${got.has(k) ? `${got.get(k)} != ${v}` : 'missing'}`);
  for (const k of got.keys()) if (!want.has(k)) out.push(`${k}: unexpected`);
  return out;
}

const isTemp = (rel: string) => path.basename(rel).startsWith('.vunify.');

/**
 * Check a tree a kill left: every path as it was; each temporary name a file
 * equal (bytes and metadata) to one in its own directory. Returns the temporary names.
 */
function checkAfterKill(work: string, cache: Map<string, string>, what: string): string[] {
  const snap = fastSnapshot(work, cache);
  const temps = [...snap.keys()].filter(isTemp);
  const rest = new Map([...snap].filter(([k]) => !isTemp(k)).map(([k, e]) => [k, e.value]));
  expect(differences(rest, expected), what).toEqual([]);
  for (const t of temps) {
    const dir = path.dirname(t);
    const siblings = [...expected].filter(([k, v]) => path.dirname(k) === dir && v.startsWith('f|')).map(([, v]) => v);
    expect(siblings, `${what}: temporary ${t} holds something that was never in its directory`).toContain(snap.get(t)!.value);
  }
  return temps;
}

const roots = (work: string) => GUESTS.map((g) => path.join(work, g));
const args = (work: string) => ['--no-default-excludes', '-q', ...roots(work)];

type Phase = 'startup' | 'scanning' | 'linking' | 'closing' | 'finished';

type KillAt = { fromStart: number } | { call: number; when: 'before' | 'after' };

/**
 * Start a linking run (with -v, so each link made is announced on stdout)
 * and have it SIGKILLed: by the test `at.fromStart` ms after it starts, or
 * by itself just before or after its `at.call`-th link, exchange or unlink
 * (cli-hook.mjs). Returns where the run was.
 */
async function killedRun(work: string, state: string, at: KillAt): Promise<Phase> {
  const hook: HookConfig | undefined = 'call' in at ? { kill: { n: at.call, when: at.when } } : undefined;
  const cli = cliArgs(['--state-dir', state, '-v', ...args(work).filter((a) => a !== '-q')], hook);
  const { child, out, err } = startChild(process.execPath, cli.argv, cli.env);
  const end = exited(child);
  if ('fromStart' in at) {
    const first = await Promise.race([end, sleep(at.fromStart).then(() => undefined)]);
    if (!first) child.kill('SIGKILL');
  }
  const { signal, code } = await end;
  if (signal !== 'SIGKILL') {
    expect(code, `a run that ended before its kill:\n${err()}`).toBe(0);
    return 'finished';
  }
  // Its journal (named after its pid) exists from just after startup (locks
  // taken, earlier leftovers recovered) until the run closes; it gains a
  // line before each temporary name is created.
  const own = journals(state).find((j) => j.startsWith(`journal.${child.pid}.`));
  if (own) return fs.statSync(path.join(state, own)).size ? 'linking' : 'scanning';
  return out().includes('linked ') ? 'closing' : 'startup';
}

/** Run to completion and check everything is right and unified. */
async function complete(work: string, state: string, cache: Map<string, string>, what: string): Promise<number> {
  const r = await runVunify(state, ['--json', ...args(work).filter((a) => a !== '-q')], 60_000);
  expect(r.hung, `${what}: completion run hung`).toBe(false);
  expect(r.code, `${what}: completion run\n${r.stderr}`).toBe(0);
  expect(r.stderr).toBe('');
  expect(journals(state), `${what}: journal left`).toEqual([]);
  const snap = fastSnapshot(work, cache);
  expect(differences(values(snap), expected), what).toEqual([]);
  return new Set([...snap.values()].filter((e) => e.value.startsWith('f|')).map((e) => e.ino)).size;
}

describe('SIGKILL at any moment', () => {
  it('never loses or alters a file, and the next run puts everything right', async () => {
    const started = Date.now();
    // Measure a whole run on a fresh copy (to time the timed kills), and
    // count its links, exchanges and unlinks (the points of the others).
    const probe = path.join(top, 'probe');
    const probeState = path.join(top, 'probe-state');
    const countFile = path.join(top, 'calls');
    let total = 0;
    let calls = 0;
    const rounds = 2;
    for (let i = 0; i < rounds; i++) {
      await freshCopy(probe);
      // A fresh state directory too: the hash cache's shards are saved through
      // the same seam calls, and a second run would find them already there.
      fs.rmSync(probeState, { recursive: true, force: true });
      const t0 = performance.now();
      const cli = cliArgs(['--state-dir', probeState, '-v', ...args(probe).filter((a) => a !== '-q')], { count: countFile });
      const { child } = startChild(process.execPath, cli.argv, cli.env);
      const { code } = await exited(child);
      expect(code).toBe(0);
      total += (performance.now() - t0) / rounds;
      const n = Number(fs.readFileSync(countFile, 'utf8'));
      if (i > 0) expect(n, 'two runs over fresh copies made different numbers of changes').toBe(calls);
      calls = n;
    }
    // Each link is a link, an exchange and an unlink at least.
    expect(calls).toBeGreaterThanOrEqual(3 * 20);
    unifiedInodes = await complete(probe, probeState, new Map(), 'probe');
    const freshInodes = new Set([...fastSnapshot(template).values()].filter((e) => e.value.startsWith('f|')).map((e) => e.ino)).size;
    expect(unifiedInodes).toBeLessThan(freshInodes);
    rmTree(probe);

    const phases = new Map<Phase, number>();
    const prof = new Map<string, number>();
    let iterations = 0;
    let kills = 0;
    let attempts = 0;
    let withTemps = 0;
    let stop = false;
    const lane = async (n: number) => {
      const rand = rng(SEED + n);
      const work = path.join(top, `lane${n}`);
      const state = path.join(top, `state${n}`);
      const share = Math.ceil(TARGET / LANES);
      let laneKills = 0;
      while (!stop && laneKills < share) {
        const it = iterations++;
        const what = `iteration ${it} (lane ${n}, seed ${SEED})`;
        let t = performance.now();
        const lap = (k: string) => { const now = performance.now(); prof.set(k, (prof.get(k) ?? 0) + now - t); t = now; };
        await freshCopy(work);
        lap('copy');
        const cache = new Map<string, string>();
        const chain = 1 + Math.floor(rand() * 3);
        for (let k = 0; k < chain; k++) {
          // A third of the kills anywhere in the run (timed), the rest at a
          // call of the linking stretch: the first run of a chain makes all
          // `calls` of them, so its kill lands there for certain; later runs
          // of a chain have less left to do (what earlier runs linked is done)
          // and may end before the call.
          const scale = k === 0 ? 1 : 0.6;
          const at: KillAt = rand() < 0.35
            ? { fromStart: rand() * total * scale }
            : { call: 1 + Math.floor(rand() * calls * scale), when: rand() < 0.5 ? 'before' : 'after' };
          const phase = await killedRun(work, state, at);
          lap('killed');
          attempts++;
          if (phase !== 'finished') {
            kills++;
            laneKills++;
          }
          phases.set(phase, (phases.get(phase) ?? 0) + 1);
          const temps = checkAfterKill(work, cache, `${what}, kill ${k} ${JSON.stringify(at)} (${phase})`);
          if (temps.length) withTemps++;
          if (phase === 'finished') expect([...temps, ...journals(state)], `${what}: a run that ended normally left these`).toEqual([]);
          lap('check');
        }
        const inodes = await complete(work, state, cache, what);
        lap('complete');
        expect(inodes, `${what}: not everything was unified`).toBe(unifiedInodes);
      }
    };
    const results = await Promise.allSettled(Array.from({ length: LANES }, (_, n) => lane(n).catch((er) => {
      stop = true;
      throw er;
    })));
    for (const r of results) if (r.status === 'rejected') throw r.reason;

    console.log(`crash: seed ${SEED}, ${iterations} iterations, ${kills} kills (${attempts} runs meant to be killed) in ${Date.now() - started} ms`,
      `(run ≈ ${total.toFixed(0)} ms, ${calls} links, exchanges and unlinks);`,
      JSON.stringify(Object.fromEntries([...prof].map(([k, v]) => [k, Math.round(v)]))),
      `kills by phase ${JSON.stringify(Object.fromEntries(phases))}; ${withTemps} kills left temporary names`);
    expect(kills).toBeGreaterThanOrEqual(MIN_KILLS);
    // The point of the exercise: kills did land in the middle of linking.
    expect(phases.get('linking') ?? 0).toBeGreaterThan(0);

    // Independently of the fast snapshot: the tools' snapshot of the last
    // tree of a lane equals the template's, path for path.
    const last = path.join(top, 'lane0');
    const want = new Map([...snapshot(template, { dirTimes: false })]);
    expect(snapshot(last, { dirTimes: false })).toEqual(want);
    // Only a hang guard: the test ends after its kills, however long they take.
  }, budget(1_200_000, 7_200_000));
});
