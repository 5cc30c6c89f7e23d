/*
 * `vunify report`: the capacity report's command line. Read-only: it scans
 * and hashes, prints tables (or --json / --csv), and optionally writes an
 * HTML page and a manifest; `--merge` reads manifests only. Exit codes as
 * for vunify: 0 done, 1 done but some files were skipped (named on stderr),
 * 2 bad usage or input.
 */
import fs from 'node:fs';
import { Option } from 'commander';
import { UsageError } from '../core/errors.js';
import { noProgress } from '../core/progress.js';
import type { Rule } from '../pipeline/excludes.js';
import { scanCapacity } from '../commands/report.js';
import { buildManifest, mergeManifests, readManifest, writeManifest } from '../report/manifest.js';
import { formatCapacityCsv } from '../report/render/csv.js';
import { formatCapacityHtml } from '../report/render/html.js';
import { formatCapacity, formatMerge } from '../report/render/text.js';
import { baseCommand, errorLine, EXIT_OK, EXIT_SKIPPED, exitCodeFor, parseWithConfig, sizeBounds, withSelection } from './options.js';
import { ttyProgress } from './progress.js';

const HELP = `
The report changes nothing and takes no lock. To say what keeps identical
content apart and what a candidate would share, it hashes every file whose
size another file shares, whatever its owner, mode or mtime: more reading
than --dry-run (1% more bytes on the bench fleet; more where many copies
differ only in owner, mode or mtime). With --manifest it hashes every file.

Examples:
  vunify report '/vservers/*'                       tables on the terminal
  vunify report --json '/vservers/*' > capacity.json
  vunify report --csv '/vservers/*' > capacity.csv
  vunify report --html capacity.html '/vservers/*'
  vunify report --candidate /vservers/new '/vservers/*'    what would a new guest share?
  vunify report --manifest host1.manifest.gz '/vservers/*'
  vunify report --merge host1.manifest.gz host2.manifest.gz  consolidating two hosts

Per-guest freeable bytes add up to what \`vunify --dry-run\` reports as
freeable with the same options. JSON schema: docs/report-schema.md;
manifest format: docs/manifest.md.

Exit status: 0 done, 1 done but some files were skipped (errors on stderr),
2 bad usage or input.`;

interface ReportOpts {
  json?: boolean; csv?: boolean; html?: string; manifest?: string; candidate: string[]; top: string; merge?: boolean;
  quiet?: boolean; ignoreMtime?: boolean; minSize: string; maxSize?: string; defaultExcludes: boolean; stateDir: string; cache?: string | false; hashKey?: string;
}

export async function reportMain(argv: readonly string[], out: NodeJS.WritableStream & { isTTY?: boolean }, err: NodeJS.WritableStream & { isTTY?: boolean }): Promise<number> {
  const rules: Rule[] = [];
  const cmd = withSelection(baseCommand('vunify report', out, err, rules))
    .description('Capacity report: how much unifying saves, per guest and pair of guests, what keeps copies apart, what would a new guest share.')
    .usage('[options] ROOT...\n       vunify report --merge [--json] MANIFEST...')
    .argument('[ROOT...]', 'guest root directories (glob patterns are expanded); with --merge, manifest files')
    .option('--csv', 'print the report as CSV tables (per guest, pairs, top sets, top directories, candidates)')
    .option('--html <file>', 'also write a self-contained HTML page with charts')
    .option('--manifest <file>', "also write this host's manifest (gzip if the name ends in .gz)")
    .option('--candidate <root>', "estimate what this new guest would share (repeatable; never counted in the guests' numbers)", (v: string, prev: string[]) => [...prev, v], [] as string[])
    .addOption(new Option('--top <n>', 'how many duplicate sets and directories to list').default('10'))
    .option('--merge', 'read manifests (the arguments) and estimate consolidating their hosts onto one')
    .addHelpText('after', HELP)
    .showHelpAfterError('(run vunify report --help for usage)');
  try {
    const args = parseWithConfig(cmd, argv, !argv.includes('--merge'));
    const o = cmd.opts<ReportOpts>();
    if (args.length === 0) throw new UsageError("missing required argument 'ROOT' (on the command line or as 'root' in the config file)");
    if (o.json && o.csv) throw new UsageError('--json and --csv: choose one');
    const top = Number(o.top);
    if (!Number.isSafeInteger(top) || top < 1) throw new UsageError(`invalid --top '${o.top}' (a whole number ≥ 1)`);
    if (o.merge) {
      if (o.csv || o.html || o.manifest || o.candidate.length) throw new UsageError('--merge reads manifests only; it takes --json but not --csv, --html, --manifest or --candidate');
      const merged = mergeManifests(args, args.map(readManifest));
      if (o.json) out.write(JSON.stringify(merged, null, 2) + '\n');
      else if (!o.quiet) out.write(formatMerge(merged));
      return EXIT_OK;
    }
    const scan = await scanCapacity({
      roots: args,
      candidates: o.candidate,
      ignoreMtime: !!o.ignoreMtime,
      ...sizeBounds(o),
      rules,
      noDefaultExcludes: !o.defaultExcludes,
      top,
      hashAll: !!o.manifest,
      stateDir: o.stateDir,
      cache: o.cache,
      hashKey: o.hashKey,
      progress: err.isTTY && !o.quiet ? ttyProgress(err as NodeJS.WriteStream) : noProgress,
      onError: errorLine(err),
      onWarning: (m) => !o.quiet && err.write(`vunify: warning: ${m}\n`),
    });
    const r = scan.report;
    if (o.html) writeOut(o.html, formatCapacityHtml(r));
    if (o.manifest) {
      const m = await buildManifest(scan.roots, scan.inodes, !!o.ignoreMtime, scan.key);
      try {
        writeManifest(o.manifest, m);
      } catch (er) {
        throw new UsageError(`${o.manifest}: cannot write: ${(er as Error).message}`);
      }
    }
    if (o.json) out.write(JSON.stringify(r, null, 2) + '\n');
    else if (o.csv) out.write(formatCapacityCsv(r));
    else if (!o.quiet) out.write(formatCapacity(r));
    return r.errors.length ? EXIT_SKIPPED : EXIT_OK;
  } catch (er) {
    return exitCodeFor(er, err);
  }
}

function writeOut(file: string, text: string): void {
  try {
    fs.writeFileSync(file, text);
  } catch (er) {
    throw new UsageError(`${file}: cannot write: ${(er as Error).message}`);
  }
}
