/*
 * Loads the bundle `npm run build` makes (packaging/bundle.mjs: CommonJS
 * chunks in dist/bundle/) with V8's code cache for each chunk, which the
 * build writes after a warm-up run of the bundle. Node 20 compiles every
 * module from its source at every start (module.enableCompileCache came in
 * Node 22): ~15 ms of parsing before the first line runs, and every
 * function again when it is first called; with the cache a run starts
 * ~30 ms sooner (empty roots: 0.10 -> 0.07 s of CPU).
 *
 * V8 checks a cache against its own version and flags and the source's
 * length only, so a chunk's cache is used only while the chunk has the
 * size and mtime the build recorded for it, under the Node that made it
 * (code-cache.json); anything else (no list, another chunk, another Node, a
 * cache V8 rejects) compiles from source as Node would. Only files in the
 * bundle's own directory are loaded this way. A cache is as trusted as the
 * chunk beside it: both are the build's, in a directory only root writes.
 */
import fs from 'node:fs';
import Module, { createRequire } from 'node:module';
import path from 'node:path';
import vm from 'node:vm';

/** The list of the chunks whose caches the build wrote: { node: process.version, files: { name: [size, mtimeMs] } }. */
export const CACHE_LIST = 'code-cache.json';
/** A chunk's cache is this file beside it. */
export const cacheFile = (chunk: string): string => `${chunk}.cache`;

/** A chunk loaded by loadBundle, for the build that writes the caches. */
export interface LoadedChunk {
  file: string;
  script: vm.Script;
}

type Loader = (module: { exports: unknown }, filename: string) => void;

/**
 * The name the bundle's chunks call instead of import() (packaging/bundle.mjs
 * renames it): a vm.Script's own import() needs a callback that Node 20 has
 * only behind an experimental flag or with a warning on stderr. The chunks
 * import only packages by name (xxhash-wasm, DuckDB), which resolve from
 * here as from dist/bundle/: the same node_modules above dist/.
 */
export const IMPORT = '__vunifyImport';
const dynamicImport = (specifier: string): Promise<unknown> => import(specifier);

/** Node's CommonJS wrapper, with the import function as one more parameter. */
const wrap = (source: string): string => `(function (exports, require, module, __filename, __dirname, ${IMPORT}) { ${source}\n});`;

/**
 * `dir`/main.cjs, its chunks compiled with their caches. `compiled`: the
 * build's warm-up, which collects every chunk it loads (no cache read) to
 * write their caches once it has run.
 */
export function loadBundle(dir: string, compiled?: LoadedChunk[]): unknown {
  let list: Record<string, [number, number]> = {};
  if (!compiled) {
    try {
      const made = JSON.parse(fs.readFileSync(path.join(dir, CACHE_LIST), 'utf8')) as { node?: string; files?: typeof list };
      // Made by another Node (an upgrade since the build): V8 would most likely reject them, never try.
      if (made.node === process.version && made.files) list = made.files;
    } catch {
      // no caches (a bundle made without them): every chunk is compiled from source
    }
  }
  const extensions = (Module as unknown as { _extensions: Record<string, Loader> })._extensions;
  const other = extensions['.cjs'] ?? extensions['.js']!;
  extensions['.cjs'] = function (module, filename) {
    if (path.dirname(filename) !== dir) return other.call(this, module, filename);
    const source = fs.readFileSync(filename, 'utf8');
    let cachedData: Buffer | undefined;
    const want = Object.hasOwn(list, path.basename(filename)) ? list[path.basename(filename)] : undefined;
    if (want) {
      const st = fs.statSync(filename);
      if (st.size === want[0] && st.mtimeMs === want[1]) {
        try {
          cachedData = fs.readFileSync(cacheFile(filename));
        } catch {
          // gone: compiled from source
        }
      }
    }
    const script = new vm.Script(wrap(source), { filename, cachedData });
    compiled?.push({ file: filename, script });
    const wrapper = script.runInThisContext() as (exports: unknown, require: NodeJS.Require, module: unknown, filename: string, dirname: string, load: typeof dynamicImport) => void;
    wrapper.call(module.exports, module.exports, createRequire(filename), module, filename, dir, dynamicImport);
  };
  return createRequire(path.join(dir, 'main.cjs'))('./main.cjs');
}
