// Deep guest trees cost memory, journal space and lookups linear in the
// tree, not quadratic in its depth: directory nodes keep a parent link and
// a name, the journal names each directory once, and the walk opens a
// directory relative to a nearby ancestor's descriptor. And a tree deeper
// than vunify lists is cut there with one message.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeChain } from '../helpers/deep.js';
import { rmTree, tempDir, testStateDir } from '../helpers/tree.js';
import { walk, MAX_DEPTH } from '../../src/pipeline/walk.js';
import { closeRoots, openRoots } from '../../src/pipeline/roots.js';
import { journalEntry, journalWriter } from '../../src/change/journal.js';
import { O, sys } from '../../src/os/sys.js';
import { dirRel } from '../../src/core/paths.js';

const BIN = path.join(import.meta.dirname, '..', '..', 'dist', 'bin.js');
const PRELOAD = path.join(import.meta.dirname, '..', 'helpers', 'journal-size.mjs');

let dir: string;
beforeAll(() => {
  dir = tempDir();
});
afterAll(() => rmTree(dir));

/** Run the CLI under GNU time: exit code, output and the peak RSS in bytes (time's %M). */
function timed(args: string[], env: Record<string, string> = {}) {
  const rss = path.join(dir, 'rss');
  const r = spawnSync('/usr/bin/time', ['-f', '%M', '-o', rss, process.execPath, '--import', PRELOAD, BIN, '--state-dir', testStateDir(), ...args], {
    encoding: 'utf8',
    env: { ...process.env, VUNIFY_TEST_BIN: BIN, ...env },
    maxBuffer: 1 << 28,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, peak: Number(fs.readFileSync(rss, 'utf8').trim().split('\n').at(-1)) * 1024 };
}

describe('a chain of 2,000 directories with 255-byte names', () => {
  const DEPTH = 2000;
  const EVERY = 50;
  let guests: string[];
  beforeAll(() => {
    guests = ['g1', 'g2'].map((g) => path.join(dir, 'deep', g));
    for (const g of guests) {
      fs.mkdirSync(g, { recursive: true });
      makeChain(g, DEPTH, { every: EVERY });
    }
    const small = ['s1', 's2'].map((g) => path.join(dir, 'small', g));
    for (const g of small) {
      fs.mkdirSync(g, { recursive: true });
      makeChain(g, 40, { every: 1 });
    }
  }, 120_000);

  it('a dry run over it peaks at a memory bounded by the names, not by depth × path', () => {
    const base = timed(['--dry-run', '--json', '--no-cache', '--no-default-excludes', ...['s1', 's2'].map((g) => path.join(dir, 'small', g))]);
    expect(base.code).toBe(0);
    const r = timed(['--dry-run', '--json', '--no-cache', '--no-default-excludes', ...guests]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const files = Math.ceil(DEPTH / EVERY);
    expect(JSON.parse(r.stdout).summary).toMatchObject({ filesScanned: 2 * files, duplicateSets: files, linksPlanned: files, errors: 0 });
    // Full paths kept per directory: Σ depth × 256 bytes per chain = 2 × 512 MB
    // (1.59 GB peak measured before). The names themselves are 2 × 512 KB;
    // allow hash batches of long paths (32 MiB each, a few in flight) on top.
    const quadratic = 2 * (DEPTH * DEPTH / 2) * 256;
    console.log(`peak RSS: ${(r.peak / 2 ** 20).toFixed(0)} MiB deep, ${(base.peak / 2 ** 20).toFixed(0)} MiB for a 40-deep chain`);
    expect(r.peak - base.peak).toBeLessThan(quadratic / 4);
    expect(r.peak).toBeLessThan(base.peak + 256 * 2 ** 20);
  }, 300_000);
});

describe('a linking run at depth 1,000', () => {
  const DEPTH = 1000;
  const NAME = 255;
  let guests: string[];
  beforeAll(() => {
    guests = ['g1', 'g2'].map((g) => path.join(dir, 'link', g));
    for (const g of guests) {
      fs.mkdirSync(g, { recursive: true });
      makeChain(g, DEPTH, { nameLength: NAME });
    }
  }, 120_000);

  it('journals each link in bytes proportional to a name, not to the depth', () => {
    const sizes = path.join(dir, 'journal-sizes');
    const r = timed(['--json', '--no-cache', '--no-default-excludes', ...guests], { VUNIFY_TEST_JOURNAL_SIZES: sizes });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).summary).toMatchObject({ linksMade: DEPTH, errors: 0 });
    // Every file is now one inode with two names (find, not vunify, says so).
    const nlinks = execFileSync('find', [guests[0]!, '-type', 'f', '-printf', '%n\\n'], { encoding: 'utf8', maxBuffer: 1 << 26 }).trim().split('\n');
    expect(nlinks.length).toBe(DEPTH);
    expect(nlinks.every((n) => n === '2')).toBe(true);
    const [bytes] = fs.readFileSync(sizes, 'utf8').trim().split('\n').map((l) => Number(l.split(' ')[0]));
    // Per link: its directory declared once (the name in hex) plus one entry
    // and one settled mark of fixed size. Spelling out the directory's path
    // cost up to DEPTH × 512 bytes per line (254 MB measured before).
    console.log(`journal: ${bytes} bytes for ${DEPTH} links at depth ${DEPTH}`);
    expect(bytes! / DEPTH).toBeLessThan(4 * (2 * NAME) + 1024);
    // A second run finds nothing left to do.
    const again = timed(['--json', '--no-cache', '--no-default-excludes', ...guests]);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout).summary).toMatchObject({ linksPlanned: 0, errors: 0 });
  }, 300_000);
});

// The linker's addon takes the sets in flight in one call (up to 16 sets of
// up to 64 pairs), each pair with its directory's path relative to its
// root: a guest that puts many duplicates in one deep directory must not
// make that call's memory grow with pairs × depth.
describe('a linking run with a thousand duplicates in one directory 3,000 deep', () => {
  const DEPTH = 3000;
  const SETS = 16;
  const COPIES = 64;
  let guests: string[];
  beforeAll(() => {
    guests = ['g1', 'g2'].map((g) => path.join(dir, 'wide', g));
    for (const g of guests) fs.mkdirSync(g, { recursive: true });
    // g1: one file per content, near its root; g2: 64 copies of each at the bottom of a chain.
    for (let k = 0; k < SETS; k++) {
      fs.writeFileSync(path.join(guests[0]!, `f${k}`), `content of set ${k}\n`);
      fs.utimesSync(path.join(guests[0]!, `f${k}`), 1_700_000_000, 1_700_000_000);
    }
    const script = String.raw`
import os, sys
root, depth, sets, copies = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
for level in range(depth):
  name = ('%04d' % level).ljust(255, 'd')
  os.mkdir(name, 0o755, dir_fd=fd)
  nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
  os.close(fd)
  fd = nfd
for k in range(sets):
  for c in range(copies):
    f = os.open('f%d-%d' % (k, c), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=fd)
    os.write(f, b'content of set %d\n' % k)
    os.utime(f, (1700000000, 1700000000))
    os.close(f)
os.close(fd)
`;
    execFileSync('python3', ['-c', script, guests[1]!, String(DEPTH), String(SETS), String(COPIES)], { stdio: 'inherit' });
  }, 120_000);

  it('peaks at about the memory of its dry run: the paths in flight are bounded, not pairs × depth', () => {
    const dry = timed(['--dry-run', '--json', '--no-cache', '--no-default-excludes', ...guests]);
    expect(dry.code).toBe(0);
    expect(JSON.parse(dry.stdout).summary).toMatchObject({ linksPlanned: SETS * COPIES, errors: 0 });
    const r = timed(['--json', '--no-cache', '--no-default-excludes', ...guests]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).summary).toMatchObject({ linksMade: SETS * COPIES, errors: 0 });
    const nlinks = execFileSync('find', [guests[0]!, '-type', 'f', '-printf', '%n\\n'], { encoding: 'utf8' }).trim().split('\n');
    expect(nlinks).toEqual(Array(SETS).fill(String(COPIES + 1)));
    // Each pair's directory path is 3,000 × 256 bytes (750 KiB): all 1,024
    // pairs in one call would hold 750 MiB of paths, twice over.
    console.log(`peak RSS: ${(r.peak / 2 ** 20).toFixed(0)} MiB linking, ${(dry.peak / 2 ** 20).toFixed(0)} MiB dry run`);
    expect(r.peak - dry.peak).toBeLessThan(128 * 2 ** 20);
  }, 300_000);
});

it('recovers a temporary name from a compact journal left by a killed run, deep in a guest', async () => {
  const g = path.join(dir, 'recover', 'g1');
  fs.mkdirSync(g, { recursive: true });
  makeChain(g, 300, { nameLength: 200, every: 299 });
  const roots = openRoots([g]);
  try {
    const { files } = await walk(roots, { rules: [], minSize: 0, maxSize: Infinity, onError: () => {} });
    const deep = files.find((f) => f.dir.depth === 299)!;
    expect(deep).toBeDefined();
    const state = tempDir('vunify-state-');
    try {
      // What a run killed just after linking the canonical to a temporary name leaves.
      const fd = sys.open(path.join(state, 'journal.1.dead'), O.WRONLY | O.CREAT | O.EXCL, 0o600);
      const tmp = Buffer.from('.vunify.killedrunxx');
      journalWriter(fd).record(journalEntry(deep, tmp, deep.stat, deep.stat));
      sys.close(fd);
      const text = fs.readFileSync(path.join(state, 'journal.1.dead'), 'utf8');
      expect(text.length).toBeLessThan(300 * (2 * 200 + 64) + 2048); // each name once, in hex, with its numbers
      expect(text).not.toContain(deep.dir.parent!.name.toString('hex') + '2f'); // no path spelled out
      const dirFd = sys.openBeneath(roots[0]!.fd, dirRel(deep.dir), O.PATH | O.DIRECTORY);
      const fileFd = sys.openBeneath(dirFd, deep.name, O.PATH);
      sys.linkAt(fileFd, dirFd, tmp);
      sys.close(fileFd);
      sys.close(dirFd);
      const found = () => execFileSync('find', [g, '-name', '.vunify.*'], { encoding: 'utf8' }).trim();
      expect(found()).not.toBe('');
      const r = spawnSync(process.execPath, [BIN, '--state-dir', state, '--no-default-excludes', g], { encoding: 'utf8' });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(found()).toBe('');
      expect(fs.readdirSync(state).filter((n) => n.startsWith('journal.'))).toEqual([]);
    } finally {
      rmTree(state);
    }
  } finally {
    closeRoots(roots);
  }
}, 120_000);

it(`stops listing ${MAX_DEPTH} levels below a root, with one message, and links what is above`, () => {
  const guests = ['g1', 'g2'].map((g) => path.join(dir, 'toodeep', g));
  for (const g of guests) {
    fs.mkdirSync(g, { recursive: true });
    makeChain(g, MAX_DEPTH + 3, { nameLength: 1, every: 1024 });
  }
  const r = spawnSync(process.execPath, [BIN, '--state-dir', testStateDir(), '--json', '--no-cache', '--no-default-excludes', ...guests], { encoding: 'utf8', maxBuffer: 1 << 26 });
  expect(r.status).toBe(1);
  const report = JSON.parse(r.stdout);
  // Files at levels 0, 1024, 2048, 3072 and 4096 are listed; below 4096 nothing is.
  expect(report.summary).toMatchObject({ filesScanned: 10, linksMade: 5 });
  expect(report.errors.map((e: { code: string }) => e.code)).toEqual(['EDEEP', 'EDEEP']);
  expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(2);
  expect(r.stderr).toContain('subdirectories not listed');
}, 120_000);
