#!/usr/bin/env node
// Entry point of the `vunify` command; everything else starts in cli/main.ts.
// `npm run build` also bundles cli/main.ts and its imports into a few
// CommonJS chunks with V8 code caches (packaging/bundle.mjs, load-bundle.ts):
// loading ~60 ES modules one by one was a third of a rerun's start-up, and
// compiling the bundle from source at every start another ~30 ms. The
// bundle runs only while every file it was made from is unchanged (size and
// mtime, one stat each), else cli/main.js: never a bundle older than the
// last build.
import { readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

function bundleIsFresh(): boolean {
  try {
    const { inputs } = JSON.parse(readFileSync(new URL('./bundle/inputs.json', import.meta.url), 'utf8')) as { inputs: [string, number, number][] };
    if (!inputs.length) return false;
    for (const [rel, size, mtimeMs] of inputs) {
      const st = statSync(new URL(rel, import.meta.url));
      if (st.size !== size || st.mtimeMs !== mtimeMs) return false;
    }
    return true;
  } catch {
    return false; // no bundle (a build by tsc alone), or a file gone
  }
}

// A reader that goes away (`vunify --help | head -1`) must not end the run
// half-way with an unhandled EPIPE: Node ignores SIGPIPE, so the write fails
// instead. Output to a closed pipe is dropped and the run finishes as it
// would have; a linking run is never stopped by its reader. The same for
// stderr (`vunify ... 2>&1 | head`): its first error message would
// otherwise end the run before its journal is removed and its report and
// cache written (test/scenarios/stderr-pipe.test.ts); the exit code still
// says that files were skipped.
// Any other write error (`vunify -v > /dev/full`: ENOSPC, EIO) is the same
// for the run: its output is dropped and it finishes its links, journal and
// cache; but its report is lost, so it is said once on stderr and the exit
// status is at least 1 (test/bin.test.ts).
let outputLost = false;
const dropOutput = (stream: string) => (er: NodeJS.ErrnoException) => {
  // ERR_STREAM_DESTROYED: a write after the first error, already dealt with
  if (er.code === 'EPIPE' || er.code === 'ERR_STREAM_DESTROYED' || outputLost) return;
  outputLost = true;
  if (stream === 'stdout') process.stderr.write(`vunify: standard output: ${er.message}\n`);
};
process.stdout.on('error', dropOutput('stdout'));
process.stderr.on('error', dropOutput('stderr'));

type Cli = typeof import('./cli/main.js');
const { main } = bundleIsFresh()
  ? ((await import('./load-bundle.js')).loadBundle(fileURLToPath(new URL('./bundle', import.meta.url))) as Cli)
  : ((await import('./cli/main.js')) as Cli);

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = outputLost ? Math.max(code, 1) : code;
  },
  (er: unknown) => {
    process.stderr.write(`vunify: internal error: ${er instanceof Error ? er.stack : String(er)}\n`);
    process.exitCode = 70;
  },
);
