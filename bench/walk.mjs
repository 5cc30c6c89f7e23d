#!/usr/bin/env node
/*
 * The walk alone: the native parallel walk (walkTables, native/walk.c) on 1
 * and 2 threads against the previous JavaScript walk (one directory per
 * addon call on the main thread), on the same roots, warm page cache.
 *
 *   node bench/walk.mjs [--old DIST] [--runs N] [ROOT...]
 *
 * ROOT defaults to every guest of /var/tmp/fleet (only read). --old is the
 * dist/ of a checkout with the previous walk (default /work/main/dist); it
 * is loaded only when it exists. Runs alternate old / new-1 / new-2 so load
 * from other processes falls on each alike; the medians of N (default 5)
 * are printed with the entries and files each walk found. Exits 1 when the
 * walks disagree on the files found, or the new walk on 2 threads is not
 * faster than the old one.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const args = process.argv.slice(2);
let old = '/work/main/dist';
let runs = 5;
const roots = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--old') old = args[++i];
  else if (args[i] === '--runs') runs = Number(args[++i]);
  else roots.push(path.resolve(args[i]));
}
if (!roots.length) for (const d of fs.readdirSync('/var/tmp/fleet').sort()) roots.push(path.join('/var/tmp/fleet', d));

const here = path.join(import.meta.dirname, '..', 'dist');
const load = (dist, m) => import(pathToFileURL(path.join(dist, m)).href);
const { openRoots, closeRoots } = await load(here, 'pipeline/roots.js');
const { walkTables } = await load(here, 'pipeline/walk.js');
let oldWalk;
if (fs.existsSync(path.join(old, 'pipeline/walk.js'))) {
  const m = await load(old, 'pipeline/walk.js');
  const { compileRules } = await load(old, 'pipeline/excludes.js');
  const oldRoots = (await load(old, 'pipeline/roots.js'));
  oldWalk = async () => {
    const rs = oldRoots.openRoots(roots);
    try {
      const r = await m.walk(rs, { matcher: compileRules([]), minSize: 1, maxSize: Infinity, onError: () => {} });
      return { files: r.files.length, entries: NaN };
    } finally {
      oldRoots.closeRoots(rs);
    }
  };
}
const newWalk = (threads) => async () => {
  const rs = openRoots(roots);
  try {
    const r = await walkTables(rs, { rules: [], minSize: 1, maxSize: Infinity, onError: () => {}, threads });
    return { files: r.tables.files.count, entries: r.listed };
  } finally {
    closeRoots(rs);
  }
};
const cases = [...(oldWalk ? [['old (JS, 1 thread)', oldWalk]] : []), ['native, 1 thread', newWalk(1)], ['native, 2 threads', newWalk(2)]];
const times = new Map(cases.map(([n]) => [n, []]));
const found = new Map();
for (const [, fn] of cases) await fn(); // warm the page cache and the code
for (let i = 0; i < runs; i++) {
  for (const [name, fn] of cases) {
    const t0 = performance.now();
    const r = await fn();
    times.get(name).push(performance.now() - t0);
    found.set(name, r);
  }
}
const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
console.log(`walk of ${roots.length} roots, medians of ${runs} runs (alternating):`);
for (const [name] of cases) {
  const r = found.get(name);
  console.log(`  ${name.padEnd(20)} ${median(times.get(name)).toFixed(1).padStart(8)} ms   files ${r.files}${Number.isNaN(r.entries) ? '' : `   entries ${r.entries}`}`);
}
const counts = new Set([...found.values()].map((r) => r.files));
let bad = counts.size !== 1;
if (bad) console.log('FAIL: the walks found different numbers of files');
if (oldWalk && median(times.get('native, 2 threads')) >= median(times.get('old (JS, 1 thread)'))) {
  console.log('FAIL: the native walk on 2 threads is not faster than the old walk');
  bad = true;
}
process.exit(bad ? 1 : 0);
