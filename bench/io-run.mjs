// Run the built CLI in this process with the given arguments, then print
// what the whole process (worker threads included) read, from
// /proc/self/io, as one JSON line on stderr: rchar counts every byte read()
// returned (page cache included), read_bytes what came from the disk.
//   node bench/io-run.mjs [vunify options] ROOT...
import fs from 'node:fs';

const { main } = await import(new URL('../dist/cli/main.js', import.meta.url).href);
const code = await main(process.argv.slice(2));
const io = Object.fromEntries(
  fs.readFileSync('/proc/self/io', 'utf8').trim().split('\n').map((l) => l.split(': ')).map(([k, v]) => [k, Number(v)]),
);
process.stderr.write(JSON.stringify({ rchar: io.rchar, read_bytes: io.read_bytes }) + '\n');
process.exitCode = code;
