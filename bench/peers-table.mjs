#!/usr/bin/env node
/*
 * The table and the target check of bench/peers.sh, from its samples: the
 * fleet targets of issue 13 (dry run, rerun) and issue 14 (linking run, a
 * new guest's reads), as ratios of this run's medians.
 *
 *   node bench/peers-table.mjs --samples FILE [--found FILE] [--io FILE] [--date D] [--machine M]
 *        [--fleet F] [--rounds N] [--dist D] [--load L]
 *
 * samples: one line per timed run, tab-separated:
 *   group (report|link|rerun|newguest)  name  round  exit-status  wall-s  peak-RSS-KiB  user-s  sys-s
 * found: name <tab> what the run reported (first round).
 * io: one line per new-guest run: round  guest  apparent-bytes  rchar  read_bytes
 * Prints markdown on stdout. Exit status: 0 every target met; 1 a target
 * missed; 2 a run failed or a target could not be computed.
 */
import fs from 'node:fs';

const args = process.argv.slice(2);
const opt = (name, dflt = '') => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt;
};
const samplesFile = opt('--samples');
if (!samplesFile) {
  console.error('usage: node bench/peers-table.mjs --samples FILE [--found FILE] ...');
  process.exit(2);
}

const samples = fs
  .readFileSync(samplesFile, 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((l) => {
    const [group, name, round, rc, wall, rss, user, sys] = l.split('\t');
    return { group, name, round: +round, rc: +rc, wall: +wall, rss: +rss, cpu: +user + +sys };
  });
const found = new Map();
if (opt('--found') && fs.existsSync(opt('--found'))) {
  for (const l of fs.readFileSync(opt('--found'), 'utf8').split('\n').filter(Boolean)) {
    const i = l.indexOf('\t');
    const [k, v] = [l.slice(0, i), l.slice(i + 1)];
    found.set(k, found.has(k) ? `${found.get(k)}; ${v}` : v);
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const runs = new Map(); // name -> {group, walls, rss, cpu, failed}
for (const s of samples) {
  const r = runs.get(s.name) ?? { group: s.group, walls: [], rss: [], cpu: [], failed: 0 };
  r.walls.push(s.wall);
  r.rss.push(s.rss);
  r.cpu.push(s.cpu);
  if (s.rc !== 0) r.failed++;
  runs.set(s.name, r);
}
const med = (name) => (runs.has(name) ? median(runs.get(name).walls) : NaN);

const GROUPS = [
  { id: 'report', title: 'Report only, on the fleet (warm page cache)', ref: 'jdupes -r -m -p' },
  { id: 'link', title: 'Linking runs, each on a fresh `cp -a` copy', ref: 'jdupes -r -p -L' },
  { id: 'rerun', title: "Reruns, each tool on its own unified copy", ref: 'jdupes -r -p -L (rerun)' },
  { id: 'newguest', title: "vunify's unified copy plus one new guest (a `cp -a` of a fleet guest): a linking run" },
];
const isPeer = (name) => !name.startsWith('vunify') && !name.startsWith('read floor');
const x = (v) => (Number.isFinite(v) ? `${v.toFixed(2)}×` : '–');
const s2 = (v) => (Number.isFinite(v) ? v.toFixed(2) : '–');
const cell = (t) => String(t ?? '').replaceAll('|', '\\|');

const out = [];
const p = (l = '') => out.push(l);
const rounds = opt('--rounds', String(Math.max(0, ...samples.map((s) => s.round))));
p(`## Peers, ${opt('--date', new Date().toISOString().slice(0, 16).replace('T', ' '))}`);
p();
p(`- machine: ${opt('--machine', '?')}`);
if (opt('--fleet')) p(`- fleet: ${opt('--fleet')}`);
if (opt('--dist')) p(`- vunify: dist/ of ${opt('--dist')}`);
p(`- ${rounds} rounds, tools alternating within each round (order rotated per round); medians; peak RSS from \`/usr/bin/time %M\``);
if (opt('--load')) p(`- ${opt('--load')}`);
p();

for (const g of GROUPS) {
  const names = [...runs.keys()].filter((n) => runs.get(n).group === g.id);
  if (!names.length) continue;
  const peers = names.filter(isPeer);
  const best = peers.length ? Math.min(...peers.map(med)) : NaN;
  const bestName = peers.find((n) => med(n) === best);
  p(`### ${g.title}`);
  p();
  p(`| run | median wall s | each run s | peak RSS MiB | CPU s (user+sys) | × best peer (${cell(bestName ?? '–')}) | × ${cell(g.ref ?? '–')} | found (round 1) |`);
  p('|---|---:|---:|---:|---:|---:|---:|---|');
  for (const n of names) {
    const r = runs.get(n);
    const each = r.walls.map((w) => w.toFixed(2)).join(', ');
    const fail = r.failed ? ` **(${r.failed} of ${r.walls.length} runs exited non-zero)**` : '';
    p(
      `| ${n.startsWith('vunify') ? `**${cell(n)}**` : cell(n)}${fail} | ${s2(med(n))} | ${each} | ${(median(r.rss) / 1024).toFixed(0)} | ${s2(median(r.cpu))} | ${x(med(n) / best)} | ${x(med(n) / med(g.ref))} | ${cell(found.get(n) ?? '')} |`,
    );
  }
  p();
}

// The new guest's reads: per round, rchar / apparent size; the median of those.
const io = (opt('--io') && fs.existsSync(opt('--io')) ? fs.readFileSync(opt('--io'), 'utf8') : '')
  .split('\n')
  .filter(Boolean)
  .map((l) => {
    const [round, guest, apparent, rchar, readBytes] = l.split('\t');
    return { round: +round, guest, apparent: +apparent, rchar: rchar === '' ? NaN : +rchar, readBytes: +readBytes };
  });
const ioRatio = io.length ? median(io.map((r) => r.rchar / r.apparent)) : NaN;

const TARGETS = [
  { issue: 13, what: 'dry run (`--no-cache`) vs `jdupes -r -m -p`', a: 'vunify --dry-run', b: 'jdupes -r -m -p', limit: 0.5 },
  { issue: 13, what: 'dry run (`--no-cache`) vs the read floor (`xargs -P2 xxh64sum`)', a: 'vunify --dry-run', b: 'read floor: xargs -P2 xxh64sum', limit: 1.5 },
  { issue: 13, what: "rerun over its unified copy vs jdupes' rerun (`-r -p -L`) over its own", a: 'vunify (rerun)', b: 'jdupes -r -p -L (rerun)', limit: 0.4 },
  { issue: 14, what: 'linking run vs `jdupes -r -p -L`, each on a fresh copy', a: 'vunify', b: 'jdupes -r -p -L', limit: 0.5 },
  {
    issue: 14,
    what: `reads (rchar) of a run over the unified fleet plus a new guest vs the new guest's apparent size (\`du -s --apparent-size -B1\`)`,
    ratio: ioRatio,
    va: io.length ? `${(median(io.map((r) => r.rchar)) / 2 ** 20).toFixed(0)} MiB read` : '–',
    vb: io.length ? `${(median(io.map((r) => r.apparent)) / 2 ** 20).toFixed(0)} MiB (${io[0].guest})` : '–',
    limit: 3.2,
  },
];
const ratioOf = (t) => t.ratio ?? med(t.a) / med(t.b);
let missed = 0;
let broken = 0;
p('### Targets (ratios of medians from this run)');
p();
p('| issue | target | vunify | reference | ratio | limit | |');
p('|---|---|---:|---:|---:|---:|---|');
for (const t of TARGETS) {
  const ratio = ratioOf(t);
  let verdict;
  if (!Number.isFinite(ratio)) {
    verdict = '**not measured**';
    broken++;
  } else if (ratio <= t.limit) verdict = 'met';
  else {
    verdict = '**missed**';
    missed++;
  }
  p(`| ${t.issue} | ${t.what} | ${t.va ?? `${s2(med(t.a))} s`} | ${t.vb ?? `${s2(med(t.b))} s`} | ${x(ratio)} | ≤ ${t.limit.toFixed(1)}× | ${verdict} |`);
}
if (io.length) {
  p();
  p(
    `New guest, each round: ${io.map((r) => `${(r.rchar / 2 ** 20).toFixed(0)} MiB read (from disk ${(r.readBytes / 2 ** 20).toFixed(0)} MiB) for ${(r.apparent / 2 ** 20).toFixed(0)} MiB apparent: ${x(r.rchar / r.apparent)}`).join('; ')}.`,
  );
}
const dry = runs.get('vunify --dry-run');
const files = /(\d+) files/.exec(found.get('vunify --dry-run') ?? '')?.[1];
if (dry && files) {
  p();
  p(`vunify --dry-run peak RSS: ${((median(dry.rss) * 1024) / +files).toFixed(0)} bytes per scanned file (${files} files; issue 13's 100 B/file target applies at 2M files, see \`bench/scale.mjs\`).`);
}
const failedRuns = [...runs.entries()].filter(([, r]) => r.failed);
p();
p('<details><summary>raw samples</summary>');
p();
p('```');
p('group\tname\tround\texit\twall_s\tpeak_rss_kib\tcpu_s');
for (const s of samples) p([s.group, s.name, s.round, s.rc, s.wall, s.rss, s.cpu.toFixed(2)].join('\t'));
p('```');
p();
p('</details>');
console.log(out.join('\n'));

for (const [n, r] of failedRuns) console.error(`bench:peers: ${n}: ${r.failed} of ${r.walls.length} runs exited non-zero`);
for (const t of TARGETS) {
  const ratio = ratioOf(t);
  if (!(ratio <= t.limit)) console.error(`bench:peers: target missed: ${t.what}: ${x(ratio)} > ${t.limit}×`);
}
process.exit(failedRuns.length || broken ? 2 : missed ? 1 : 0);
