#!/usr/bin/env node
/*
 * The hash stage alone, before/after: every inode of the fleet (its first
 * path) hashed by two builds' addons (`hashFiles`: open, check, xattrs,
 * flags, read, hash) in batches of 256 files, 4 in flight as the pipeline
 * runs them, passes alternating; the process's CPU (user, sys) and wall per
 * pass, medians. No walk, grouping or planning in the figures: what the
 * addon's per-file work costs.
 *
 *   bash bench/ensure-dist.sh --snapshot /tmp/before   (on the old code)
 *   bash bench/ensure-dist.sh --snapshot /tmp/after    (on the new code)
 *   node bench/hash-stage.mjs /tmp/before /tmp/after [--passes 9] [--fleet DIR]
 *
 * The jobs are encoded once, by the second build's dist/ (both addons must
 * read the same job layout: checked). An addon whose layout has
 * hashSecretSize takes a secret (XXH3), an older one a seed (XXH64).
 * Prints the medians; exits 2 when a build is missing or the layouts
 * differ, else 0 (an A/B tool: no target).
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { args } from './args.mjs';

const usage = 'usage: node bench/hash-stage.mjs SNAPSHOT_A SNAPSHOT_B [--passes N] [--fleet DIR]';
const { opt } = args(usage);
const [A, B] = process.argv.slice(2).filter((a, i, all) => !a.startsWith('--') && !['--passes', '--fleet'].includes(all[i - 1]));
if (!A || !B) {
  console.error(usage);
  process.exit(2);
}
const passes = Number(opt('--passes', '9'));
const fleet = opt('--fleet', '/var/tmp/fleet');
const require = createRequire(import.meta.url);
const addon = (snap) => {
  const f = path.resolve(snap, 'build/Release/vunify.node');
  if (!fs.existsSync(f)) {
    console.error(`bench/hash-stage.mjs: ${f} missing (bench/ensure-dist.sh --snapshot ${snap})`);
    process.exit(2);
  }
  return require(f);
};
const [addA, addB] = [addon(A), addon(B)];
if (JSON.stringify(addA.layout.hashIn) !== JSON.stringify(addB.layout.hashIn)) {
  console.error('bench/hash-stage.mjs: the two addons read different job layouts');
  process.exit(2);
}
const dist = path.resolve(B, 'dist');
const { openRoots, closeRoots } = await import(`${dist}/pipeline/roots.js`);
const { walk } = await import(`${dist}/pipeline/walk.js`);
const { collectInodes } = await import(`${dist}/pipeline/group.js`);
const { encodeJobs } = await import(`${dist}/pipeline/hash.js`);

const roots = openRoots(fs.readdirSync(fleet).map((g) => path.join(fleet, g)));
const walked = await walk(roots, { rules: [], minSize: 1, maxSize: Infinity, onError: () => {} });
const inodes = collectInodes(walked.files);
const bytes = inodes.reduce((n, i) => n + i.stat.size, 0);
const batches = [];
for (let i = 0; i < inodes.length; i += 256) batches.push(encodeJobs(inodes, i, Math.min(inodes.length, i + 256)));
const keyOf = (add) => (add.layout.hashSecretSize ? Buffer.alloc(add.layout.hashSecretSize, 7) : 0x1234n);
const builds = { A: { add: addA, key: keyOf(addA), runs: [] }, B: { add: addB, key: keyOf(addB), runs: [] } };

async function pass(b) {
  let next = 0;
  const c0 = process.cpuUsage(), t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: 4 }, async () => { while (next < batches.length) await b.add.hashFiles(batches[next++], b.key); }));
  const c = process.cpuUsage(c0);
  return { wall: Number(process.hrtime.bigint() - t0) / 1e6, cpu: (c.user + c.system) / 1000, user: c.user / 1000, sys: c.system / 1000 };
}
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
await pass(builds.A), await pass(builds.B); // warm: page cache, dentries, buffers
for (let p = 0; p < passes; p++) for (const w of p % 2 ? ['B', 'A'] : ['A', 'B']) builds[w].runs.push(await pass(builds[w]));
closeRoots(roots);
console.log(`${inodes.length} files, ${(bytes / 1e9).toFixed(2)} GB, ${batches.length} batches; ${passes} passes each, alternating; load ${fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0]}`);
console.log('| build | wall ms | CPU ms | user ms | sys ms |');
console.log('|---|---|---|---|---|');
for (const [w, snap] of [['A', A], ['B', B]]) {
  const m = (k) => median(builds[w].runs.map((r) => r[k])).toFixed(0);
  console.log(`| ${w} ${snap} | ${m('wall')} | ${m('cpu')} | ${m('user')} | ${m('sys')} |`);
}
