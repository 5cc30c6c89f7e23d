#!/usr/bin/env node
// Entry point of the `vunify` command; everything else starts in cli/main.ts.
import { main } from './cli/main.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (er: unknown) => {
    process.stderr.write(`vunify: internal error: ${er instanceof Error ? er.stack : String(er)}\n`);
    process.exitCode = 70;
  },
);
