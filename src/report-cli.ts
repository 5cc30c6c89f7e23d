/*
 * `vunify report`: the capacity report's command line. Read-only: it scans
 * and hashes, prints tables (or --json / --csv), and optionally writes an
 * HTML page and a manifest; `--merge` reads manifests only. Exit codes as
 * for vunify: 0 done, 1 done but some files were skipped (named on stderr),
 * 2 bad usage or input.
 */
import fs from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { scanCapacity } from './capacity.js';
import { EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, parseSize } from './cli.js';
import { UsageError } from './errors.js';
import { ExcludeSyntaxError, parseRule, parseRuleFile, type Rule } from './excludes.js';
import { buildManifest, mergeManifests, readManifest, writeManifest } from './manifest.js';
import { noProgress, ttyProgress } from './progress.js';
import { formatCapacityCsv } from './render/csv.js';
import { formatCapacityHtml } from './render/html.js';
import { formatCapacity, formatMerge } from './render/text.js';
import { formatMemoryHtml, formatMemoryText } from './render/memory.js';
import { readMemory, type MemoryReport } from './report/memory.js';
import { takeResidency, type Residency } from './report/page-cache.js';

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
  vunify report --memory '/vservers/*'              which running processes to restart, and what that reclaims

Per-guest freeable bytes add up to what \`vunify --dry-run\` reports as
freeable with the same options. JSON schema: docs/report-schema.md;
manifest format: docs/manifest.md.

--memory reads /proc (no ptrace, no signals) for every process whose root
is a guest root or below one: the file pages it maps, the part mapped from
copies that unifying replaced or would replace ("stale"), and what
restarting those processes would reclaim; and, with mincore, how many bytes
of the duplicate sets are in the page cache more than once.

Exit status: 0 done, 1 done but some files were skipped (errors on stderr),
2 bad usage or input.`;

interface ReportOpts {
  json?: boolean; csv?: boolean; html?: string; memory?: boolean; manifest?: string; candidate: string[]; top: string; merge?: boolean;
  quiet?: boolean; ignoreMtime?: boolean; minSize: string; maxSize?: string; defaultExcludes: boolean;
}

export async function reportMain(argv: readonly string[], out: NodeJS.WritableStream & { isTTY?: boolean }, err: NodeJS.WritableStream & { isTTY?: boolean }): Promise<number> {
  const rules: Rule[] = [];
  const cmd = new Command('vunify report')
    .description('Capacity report: how much unifying saves, per guest and pair of guests, what keeps copies apart, what a new guest would share.')
    .usage('[options] ROOT...\n       vunify report --merge [--json] MANIFEST...')
    .argument('<ROOT...>', 'guest root directories (glob patterns are expanded); with --merge, manifest files')
    .option('--json', 'print the report as JSON (schema: docs/report-schema.md)')
    .option('--csv', 'print the report as CSV tables (per guest, pairs, top sets, top directories, candidates)')
    .option('--html <file>', 'also write a self-contained HTML page with charts')
    .option('--manifest <file>', 'also write this host\'s manifest (gzip if the name ends in .gz)')
    .option('--candidate <root>', 'estimate what this new guest would share (repeatable; never counted in the guests\' numbers)', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .addOption(new Option('--top <n>', 'how many duplicate sets and directories to list').default('10'))
    .option('--memory', 'also report running guest processes that map stale copies, what restarting them reclaims, and duplicate pages in the page cache')
    .option('--merge', 'read manifests (the arguments) and estimate consolidating their hosts onto one')
    .option('-q, --quiet', 'print nothing but errors (with --html or --manifest)')
    .option('--ignore-mtime', 'as for vunify: files whose mtimes differ may share')
    .addOption(new Option('--min-size <size>', 'leave files smaller than this alone').default('1'))
    .addOption(new Option('--max-size <size>', 'leave files larger than this alone'))
    .option('--exclude <pattern>', 'exclude paths matching pattern (repeatable)', (t: string) => (rules.push(parseRule(t, 'exclude')), t))
    .option('--include <pattern>', 'include paths matching pattern, before the defaults (repeatable)', (t: string) => (rules.push(parseRule(t, 'include')), t))
    .option('--exclude-from <file>', 'read patterns from file, one per line (repeatable)', (file: string) => {
      rules.push(...parseRuleFile(readText(file, 'exclude file'), file));
      return file;
    })
    .option('--no-default-excludes', 'drop the built-in exclude list')
    .addHelpText('after', HELP)
    .exitOverride()
    .configureOutput({ writeOut: (s) => out.write(s), writeErr: (s) => err.write(s) })
    .showHelpAfterError('(run vunify report --help for usage)');
  try {
    cmd.parse([...argv], { from: 'user' });
  } catch (er) {
    if (er instanceof CommanderError) return er.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    return usage(err, er);
  }
  const o = cmd.opts<ReportOpts>();
  try {
    if (o.json && o.csv) throw new UsageError('--json and --csv: choose one');
    if (o.memory && (o.csv || o.merge)) throw new UsageError('--memory reads this host\'s processes: it takes --json or --html, not --csv or --merge');
    const top = Number(o.top);
    if (!Number.isSafeInteger(top) || top < 1) throw new UsageError(`invalid --top '${o.top}' (a whole number ≥ 1)`);
    if (o.merge) {
      if (o.csv || o.html || o.manifest || o.candidate.length) throw new UsageError('--merge reads manifests only; it takes --json but not --csv, --html, --manifest or --candidate');
      const merged = mergeManifests(cmd.args, cmd.args.map(readManifest));
      if (o.json) out.write(JSON.stringify(merged, null, 2) + '\n');
      else if (!o.quiet) out.write(formatMerge(merged));
      return EXIT_OK;
    }
    const minSize = parseSize(o.minSize);
    const maxSize = o.maxSize === undefined ? Number.MAX_SAFE_INTEGER : parseSize(o.maxSize);
    if (minSize > maxSize) throw new UsageError(`--min-size ${o.minSize} is larger than --max-size ${o.maxSize}`);
    let residency: Residency = new Map();
    let memory: MemoryReport | undefined;
    const scan = await scanCapacity({
      roots: cmd.args,
      candidates: o.candidate,
      ignoreMtime: !!o.ignoreMtime,
      minSize,
      maxSize,
      rules,
      noDefaultExcludes: !o.defaultExcludes,
      top,
      hashAll: !!o.manifest,
      progress: err.isTTY && !o.quiet ? ttyProgress(err as NodeJS.WriteStream) : noProgress,
      onError: (e) => err.write(`vunify: ${e.path}: ${e.message}\n`),
      ...(o.memory && {
        beforeHash: (inodes) => void (residency = takeResidency(inodes)),
        inspect: async (roots, inodes) => void (memory = await readMemory({ roots, inodes, ignoreMtime: !!o.ignoreMtime, residency })),
      }),
    });
    const r = memory ? { ...scan.report, memory } : scan.report;
    if (o.html) writeOut(o.html, formatCapacityHtml(r, new Date(), memory && formatMemoryHtml(memory)));
    if (o.manifest) {
      const m = await buildManifest(scan.roots, scan.inodes, !!o.ignoreMtime);
      try {
        writeManifest(o.manifest, m);
      } catch (er) {
        throw new UsageError(`${o.manifest}: cannot write: ${(er as Error).message}`);
      }
    }
    if (o.json) out.write(JSON.stringify(r, null, 2) + '\n');
    else if (o.csv) out.write(formatCapacityCsv(r));
    else if (!o.quiet) out.write(formatCapacity(r) + (memory ? formatMemoryText(memory) : ''));
    return r.errors.length ? EXIT_SKIPPED : EXIT_OK;
  } catch (er) {
    if (er instanceof UsageError || er instanceof ExcludeSyntaxError) return usage(err, er);
    throw er;
  }
}

function readText(file: string, what: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (er) {
    throw new UsageError(`${file}: cannot read ${what}: ${(er as Error).message}`);
  }
}

function writeOut(file: string, text: string): void {
  try {
    fs.writeFileSync(file, text);
  } catch (er) {
    throw new UsageError(`${file}: cannot write: ${(er as Error).message}`);
  }
}

function usage(err: NodeJS.WritableStream, er: unknown): number {
  err.write(`vunify: ${er instanceof Error ? er.message : String(er)}\n`);
  return EXIT_USAGE;
}
