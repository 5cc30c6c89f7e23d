// A split killed (SIGKILL, for real) at a system call chosen by count, then
// run again to the end: each guest's own hardlink groups must come out one
// inode each, nothing under the split guest shared outside it any more, and
// every path's bytes and metadata as before (checked with stat, find,
// sha256sum and getfattr). The kill points are a seeded sample of every
// system call the run makes (VUNIFY_SEED replays one).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, budget, rng, SEED } from '../helpers/hostile.js';
import { rmTree, sh, snapshot, tempDir, writeFile } from '../helpers/tree.js';

const DIST = path.dirname(BIN);
const KILLS = budget(24, 200);

let top: string;
let template: string;

/** g1 is split; g2 and outside share its inodes; g1's own hardlink groups are what must survive. */
const GROUPS: string[][] = [
  ['usr/a/x', 'usr/b/y', 'usr/c/z'], // one inode, three names in g1, shared with g2 and outside
  ['etc/p', 'etc/q'],
  ['bin/e'],
  ['var/big1', 'var/big2'],
  ['home/own1', 'home/own2'], // g1's own, never shared
];

beforeAll(() => {
  top = tempDir('vunify-split-restart-');
  template = path.join(top, 'template');
  const g = (n: string, f: string) => path.join(template, n, f);
  for (const [i, group] of GROUPS.entries()) {
    const big = group[0]!.startsWith('var/');
    writeFile(g('g1', group[0]!), {
      content: big ? Buffer.alloc(3 << 20, i + 1) : `group ${i}\n`,
      mode: i % 2 ? 0o640 : 0o755,
      uid: 1000 + i,
      gid: 2000 + i,
      mtime: `17000${i}0000.12345678${i}`,
      xattrs: { 'user.group': `g${i}` },
    });
    for (const other of group.slice(1)) {
      fs.mkdirSync(path.dirname(g('g1', other)), { recursive: true });
      fs.linkSync(g('g1', group[0]!), g('g1', other));
    }
    if (group[0]!.startsWith('home/')) continue;
    for (const sharer of ['g2', 'outside']) {
      fs.mkdirSync(path.dirname(g(sharer, group[0]!)), { recursive: true });
      fs.linkSync(g('g1', group[0]!), g(sharer, group[0]!));
    }
  }
});
afterAll(() => rmTree(top));

/** Paths of g1 grouped by inode, from stat; each with the inode's link count. */
function groupsOf(root: string): { paths: string[]; nlink: number }[] {
  const byIno = new Map<string, { paths: string[]; nlink: number }>();
  const out = sh('find', root, '-type', 'f', '-printf', '%i %n %P\\n');
  for (const line of out.split('\n').filter(Boolean)) {
    const [ino, nlink, rel] = line.split(' ') as [string, string, string];
    const g = byIno.get(ino) ?? { paths: [], nlink: Number(nlink) };
    g.paths.push(rel);
    byIno.set(ino, g);
  }
  return [...byIno.values()].map((g) => ({ ...g, paths: g.paths.sort() })).sort((a, b) => a.paths[0]!.localeCompare(b.paths[0]!));
}

/** Run split of g1 in a child process that SIGKILLs itself at its `killAt`-th call through the sys seam (0: never). */
function killedSplit(work: string, state: string, killAt: number): { signal: string | null; calls: number; stderr: string } {
  const script = `
    import { sys } from ${JSON.stringify(path.join(DIST, 'os/sys.js'))};
    import { split } from ${JSON.stringify(path.join(DIST, 'commands/split.js'))};
    let n = 0;
    for (const k of Object.keys(sys)) {
      const real = sys[k];
      if (typeof real !== 'function') continue;
      sys[k] = (...a) => {
        if (++n === ${killAt}) process.kill(process.pid, 'SIGKILL');
        return real(...a);
      };
    }
    const r = await split({ roots: [${JSON.stringify(path.join(work, 'g1'))}], dryRun: false, rules: [], noDefaultExcludes: true, stateDir: ${JSON.stringify(state)} });
    console.log(JSON.stringify({ calls: n, errors: r.errors }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
  const calls = r.signal ? -1 : (JSON.parse(r.stdout) as { calls: number }).calls;
  return { signal: r.signal, calls, stderr: r.stderr };
}

describe('split killed at any system call, then run again', () => {
  it(`keeps each guest's own hardlinks one inode and shares nothing outside (${KILLS} kill points)`, () => {
    const expected = GROUPS.map((g) => [...g].sort()).sort((a, b) => a[0]!.localeCompare(b[0]!));
    const before = snapshot(path.join(template, 'g1'), { dirTimes: false });
    const beforeG2 = snapshot(path.join(template, 'g2'), { dirTimes: false });

    // How many calls a whole run makes, to spread the kills over all of it.
    const probe = path.join(top, 'probe');
    sh('cp', '-a', template, probe);
    const full = killedSplit(probe, path.join(top, 'probe-state'), 0);
    expect(full.signal, full.stderr).toBe(null);
    expect(groupsOf(path.join(probe, 'g1')).map((g) => g.paths)).toEqual(expected);
    rmTree(probe);
    const random = rng(SEED);
    const points = new Set<number>([1, full.calls]);
    while (points.size < Math.min(KILLS, full.calls)) points.add(1 + Math.floor(random() * full.calls));

    const failures: string[] = [];
    for (const at of [...points].sort((a, b) => a - b)) {
      const work = path.join(top, `kill-${at}`);
      const state = path.join(top, `state-${at}`);
      sh('cp', '-a', template, work);
      const killed = killedSplit(work, state, at);
      const rerun = spawnSync(process.execPath, [BIN, 'split', '--state-dir', state, '--no-default-excludes', '-q', path.join(work, 'g1')], { encoding: 'utf8', timeout: 60_000 });
      const g1 = path.join(work, 'g1');
      const groups = groupsOf(g1);
      const what = `kill at call ${at} of ${full.calls} (${killed.signal ?? 'not killed'}), seed ${SEED}`;
      if (rerun.status !== 0) failures.push(`${what}: rerun exited ${rerun.status}: ${rerun.stderr}`);
      const got = groups.map((g) => g.paths);
      if (JSON.stringify(got) !== JSON.stringify(expected)) failures.push(`${what}: g1's hardlink groups ${JSON.stringify(got)}`);
      for (const g of groups) if (g.nlink !== g.paths.length) failures.push(`${what}: ${g.paths[0]} still shared outside g1 (${g.nlink} links)`);
      const temps = sh('find', work, '-name', '.vunify.*');
      if (temps) failures.push(`${what}: temporary names left: ${temps}`);
      const after = snapshot(g1, { dirTimes: false });
      for (const [p, v] of before) if (after.get(p) !== v) failures.push(`${what}: ${p} was ${v}, now ${after.get(p)}`);
      if (after.size !== before.size) failures.push(`${what}: ${after.size} paths, had ${before.size}`);
      const afterG2 = snapshot(path.join(work, 'g2'), { dirTimes: false });
      for (const [p, v] of beforeG2) if (afterG2.get(p) !== v) failures.push(`${what}: g2/${p} was ${v}, now ${afterG2.get(p)}`);
      if (fs.readdirSync(state).some((n) => n.startsWith('journal.') || n.startsWith('split.'))) failures.push(`${what}: state left: ${fs.readdirSync(state)}`);
      rmTree(work);
      rmTree(state);
    }
    expect(failures).toEqual([]);
  }, 600_000);
});
