// The last step of `npm run build`: dist/cli/main.js and everything it
// imports (commander included) bundled into dist/bundle/ by rolldown, as
// CommonJS chunks (main.cjs, ...), so a run loads one module instead of ~60
// (Node 20 resolves, reads and links each ES module on its own: a third of
// a rerun's start-up), and the list of the files it was made from
// (inputs.json: path, size, mtime).
//
// Then V8's code cache of each chunk the bundle loads (CHUNK.cache, listed
// with the chunk's size and mtime in code-cache.json), taken after a
// warm-up run of the bundle in this process (`--version`, and a dry run over
// two tiny roots in a temporary directory), so that the functions a run
// calls are in it too, not only the chunks' top levels: src/load-bundle.ts
// loads the chunks with them (~30 ms less at every start). A cache is only
// a shortcut: one V8 rejects (another Node, other flags) or a chunk changed
// since is compiled from source. CommonJS because Node 20 can give a code
// cache to a vm.Script, not to an ES module.
//
// dist/bin.js loads the bundle only while every one of those files is
// unchanged, else dist/cli/main.js: a build that runs tsc alone (the tests'
// build, bench/ensure-dist.sh, the Debian package) never runs a stale
// bundle. The bundle sits at the depth of dist/cli/, so the paths the code
// takes from import.meta.url (../../package.json, the addon in
// ../../build/Release, the SQL beside it) resolve alike. Packages other
// than commander stay external: loaded on demand (cli-progress, fast-glob,
// xxhash-wasm) or native (DuckDB).
//
// Without rolldown (a tree installed without devDependencies) this says so
// and removes any old bundle: the run then loads dist/ as tsc wrote it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pathToFileURL } from 'node:url';

//   node packaging/bundle.mjs [DIST]     (DIST default: dist/ of this tree)
const root = path.join(import.meta.dirname, '..');
const dist = path.resolve(process.argv[2] ?? path.join(root, 'dist'));
const out = path.join(dist, 'bundle');
fs.rmSync(out, { recursive: true, force: true });

let rolldown;
try {
  ({ rolldown } = await import('rolldown'));
} catch {
  console.error('bundle: rolldown is not installed; dist/bin.js loads dist/ module by module');
  process.exit(0);
}

// commander loads node:child_process (and with it net, dgram, stream
// wraps: ~5 ms of every start) at the top of command.js, for executable
// subcommands, which vunify has none of: the bundle asks for it on first
// use. A commander without that line is bundled as it is, with a note.
const CHILD_PROCESS = "const childProcess = require('node:child_process');";
const lazyChildProcess = {
  name: 'lazy-child-process',
  transform(code, id) {
    if (!id.replaceAll('\\', '/').endsWith('/commander/lib/command.js')) return null;
    if (!code.includes(CHILD_PROCESS)) {
      console.error('bundle: commander no longer loads node:child_process as expected; bundled as it is');
      return null;
    }
    return code.replace(CHILD_PROCESS, "const childProcess = { spawn: (...args) => require('node:child_process').spawn(...args) };");
  },
};

const build = await rolldown({
  input: { main: path.join(dist, 'cli', 'main.js') },
  platform: 'node',
  external: [/^node:/, 'cli-progress', 'fast-glob', 'xxhash-wasm', '@duckdb/node-api'],
  plugins: [lazyChildProcess],
  logLevel: 'warn',
});
const { output } = await build.write({ dir: out, format: 'cjs', entryFileNames: '[name].cjs', chunkFileNames: '[name]-[hash].cjs' });
await build.close();

// A chunk runs as a vm.Script (src/load-bundle.ts), whose own import() fails
// without a callback Node 20 has only behind a flag: the few import() of
// packages left external (xxhash-wasm, DuckDB) call the loader's instead.
// Each import(" of a package name (not a method .import(, not a relative
// path, which the chunks load with require) is renamed; the loader's name
// must not appear in the chunks before that.
const { IMPORT } = await import(pathToFileURL(path.join(dist, 'load-bundle.js')).href);
for (const chunk of output) {
  if (chunk.type !== 'chunk') continue;
  const file = path.join(out, chunk.fileName);
  const code = fs.readFileSync(file, 'utf8');
  if (code.includes(IMPORT)) throw new Error(`bundle: ${chunk.fileName} already uses the name ${IMPORT}`);
  fs.writeFileSync(file, code.replace(/(?<![.\w$])import\((?=["'][^."'])/g, `${IMPORT}(`));
}

const inputs = new Set();
for (const chunk of output) if (chunk.type === 'chunk') for (const id of chunk.moduleIds) if (path.isAbsolute(id)) inputs.add(id);
const list = [...inputs].sort().map((file) => {
  const st = fs.statSync(file);
  return [path.relative(dist, file), st.size, st.mtimeMs];
});
fs.cpSync(path.join(root, 'src', 'report', 'sql'), path.join(out, 'sql'), { recursive: true });

// The warm-up and the code caches. Whatever goes wrong here leaves a bundle without caches, never a broken one.
let cached = 0;
try {
  const { loadBundle, cacheFile, CACHE_LIST } = await import(pathToFileURL(path.join(dist, 'load-bundle.js')).href);
  const chunks = [];
  const { main } = loadBundle(out, chunks);
  const sink = new Writable({ write: (_chunk, _enc, done) => done() });
  await main(['--version'], sink, sink);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-bundle-'));
  try {
    for (const g of ['a', 'b']) {
      fs.mkdirSync(path.join(tmp, g, 'usr', 'lib'), { recursive: true });
      // Same size, owner, mode and mtime in both roots: a candidate group, hashed and planned (a set of two).
      const same = path.join(tmp, g, 'usr', 'lib', 'same');
      fs.writeFileSync(same, 'the same bytes in both roots\n');
      fs.utimesSync(same, 1577836800, 1577836800);
      fs.writeFileSync(path.join(tmp, g, 'usr', 'lib', `own-${g}`), `bytes of ${g} alone\n`);
    }
    // Its exit code does not matter (a build that is not root's cannot use the state directory): what ran is compiled.
    await main(['-n', '--json', '--no-cache', '--no-default-excludes', '--state-dir', path.join(tmp, 'state'), path.join(tmp, 'a'), path.join(tmp, 'b')], sink, sink);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const files = {};
  for (const { file, script } of chunks) {
    fs.writeFileSync(cacheFile(file), script.createCachedData());
    const st = fs.statSync(file);
    files[path.basename(file)] = [st.size, st.mtimeMs];
    cached++;
  }
  fs.writeFileSync(path.join(out, CACHE_LIST), JSON.stringify({ node: process.version, files }) + '\n');
} catch (er) {
  console.error(`bundle: no code caches (${er.message}); the bundle compiles from source at every start`);
}
fs.writeFileSync(path.join(out, 'inputs.json'), JSON.stringify({ inputs: list }) + '\n');
console.error(`bundle: ${list.length} modules into ${out}/, ${cached} chunks with code caches`);
