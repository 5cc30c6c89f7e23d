/*
 * `vunify report`: the capacity report's command line. Read-only: it scans
 * and hashes, prints tables (or --json / --csv), and optionally writes an
 * HTML page and a manifest; `--merge` and `--plan-placement` read manifests
 * only. Exit codes as for vunify: 0 done, 1 done but some files were
 * skipped (named on stderr), 2 bad usage or input.
 */
import fs from 'node:fs';
import { Option } from 'commander';
import { UsageError } from '../core/errors.js';
import { noProgress } from '../core/progress.js';
import type { Rule } from '../pipeline/excludes.js';
import { scanCapacity } from '../commands/report.js';
import { buildManifest, writeManifest } from '../report/manifest.js';
import { formatCapacityCsv } from '../report/render/csv.js';
import { formatCapacityHtml } from '../report/render/html.js';
import { formatCapacity, formatMerge } from '../report/render/text.js';
import { baseCommand, errorLine, EXIT_OK, EXIT_SKIPPED, exitCodeFor, parseSize, parseWithConfig, sizeBounds, withSelection } from './options.js';
import { ttyProgress } from './progress.js';
import { formatMemoryHtml, formatMemoryText } from '../report/render/memory.js';
import { readMemory, type MemoryReport } from '../report/memory.js';
import { takeResidency, type Residency } from '../report/page-cache.js';

const HELP = `
The report changes nothing in the guests and takes no lock (it keeps its hash
cache in the state directory, as the dry run does). To say what keeps identical
content apart and what a candidate would share, it hashes every file whose
size another file shares, whatever its owner, mode or mtime: more reading
than --dry-run (1% more bytes on the bench fleet; more where many copies
differ only in owner, mode or mtime). With --manifest it hashes every file.

Examples:
  vunify report '/vservers/*'                       tables on the terminal
  vunify report --config /etc/vunify/vunify.conf    the guests and options of the nightly run
  vunify report --json '/vservers/*' > capacity.json
  vunify report --csv '/vservers/*' > capacity.csv
  vunify report --html capacity.html '/vservers/*'
  vunify report --candidate /vservers/new '/vservers/*'    what would a new guest share?
  vunify report --manifest host1.manifest.gz '/vservers/*'
  vunify report --manifest /srv/fleet/host1.parquet --host host1 '/vservers/*'
  vunify report --merge '/srv/fleet/*.parquet'           consolidating the fleet's hosts
  vunify report --plan-placement --hosts 40 --capacity 2T '/srv/fleet/*.parquet'
  vunify report --memory '/vservers/*'              which running processes to restart, and what that reclaims

--merge and --plan-placement run SQL (src/report/sql, docs/fleet.md) on an
embedded DuckDB over the Parquet files, out of core within --memory-limit;
they also read TSV manifests. They refuse (exit 2) manifests that disagree
on the hash key or the policy fields, or that name one host twice.

Per-guest freeable bytes add up to what \`vunify --dry-run\` reports as
freeable with the same options (--config reads vunify's config file; the
report takes the settings it has). Hashes come from and go to the same
hash cache as the dry run's (--state-dir, --cache, --no-cache). JSON schema: docs/report-schema.md;
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
  host?: string; planPlacement?: boolean; hosts?: string; capacity?: string; memoryLimit: string;
  quiet?: boolean; ignoreMtime?: boolean; minSize: string; maxSize?: string; defaultExcludes: boolean; stateDir: string; maxMemory?: string; cache?: string | false; hashKey?: string;
}

export async function reportMain(argv: readonly string[], out: NodeJS.WritableStream & { isTTY?: boolean }, err: NodeJS.WritableStream & { isTTY?: boolean }): Promise<number> {
  const rules: Rule[] = [];
  const cmd = withSelection(baseCommand('vunify report', out, err, rules))
    .description('Capacity report: how much unifying saves, per guest and pair of guests, what keeps copies apart, what a new guest would share.')
    .usage('[options] ROOT...\n       vunify report --merge [--json] MANIFEST|GLOB...\n       vunify report --plan-placement --hosts N --capacity SIZE [--json] MANIFEST|GLOB...')
    .argument('[ROOT...]', 'guest root directories (glob patterns are expanded); with --merge, manifest files')
    .option('--csv', 'print the report as CSV tables (per guest, pairs, top sets, top directories, candidates)')
    .option('--html <file>', 'also write a self-contained HTML page with charts')
    .option('--manifest <file>', "also write this host's manifest (Parquet if the name ends in .parquet, gzip if in .gz, else TSV)")
    .option('--host <name>', "the host name written in the manifest (default: this host's name)")
    .option('--candidate <root>', "estimate what this new guest would share (repeatable; never counted in the guests' numbers)", (v: string, prev: string[]) => [...prev, v], [] as string[])
    .addOption(new Option('--top <n>', 'how many duplicate sets and directories to list').default('10'))
    .option('--memory', 'also report running guest processes that map stale copies, what restarting them reclaims, and duplicate pages in the page cache')
    .option('--merge', 'read manifests (the arguments) and estimate consolidating their hosts onto one')
    .option('--plan-placement', 'read manifests and suggest which guests to put together on --hosts hosts of --capacity bytes')
    .option('--hosts <n>', 'with --plan-placement: how many hosts')
    .option('--capacity <size>', 'with --plan-placement: bytes each host may hold after unifying (k, M, G, T)')
    .addOption(new Option('--memory-limit <size>', "with --merge or --plan-placement: the engine's memory limit; more spills to a temporary directory").default('1G'))
    .addHelpText('after', HELP)
    .showHelpAfterError('(run vunify report --help for usage)');
  try {
    const manifestsOnly = argv.includes('--merge') || argv.includes('--plan-placement');
    const args = parseWithConfig(cmd, argv, !manifestsOnly);
    const o = cmd.opts<ReportOpts>();
    if (args.length === 0) throw new UsageError("missing required argument 'ROOT' (on the command line or as 'root' in the config file)");
    if (o.json && o.csv) throw new UsageError('--json and --csv: choose one');
    if (o.memory && (o.csv || o.merge || o.planPlacement)) throw new UsageError("--memory reads this host's processes: it takes --json or --html, not --csv, --merge or --plan-placement");
    const top = Number(o.top);
    if (!Number.isSafeInteger(top) || top < 1) throw new UsageError(`invalid --top '${o.top}' (a whole number ≥ 1)`);
    if (o.merge || o.planPlacement) {
      if (o.csv || o.html || o.manifest || o.candidate.length) throw new UsageError('--merge reads manifests only; it takes --json but not --csv, --html, --manifest or --candidate');
      // The engine loads only here: the nightly run and the plain report never pay for it.
      const fleet = await import('../report/fleet.js');
      const render = await import('../report/render/fleet.js');
      const memoryLimit = `${parseSize(o.memoryLimit)}B`;
      if (o.planPlacement) {
        const hosts = Number(o.hosts);
        if (o.hosts === undefined || !Number.isSafeInteger(hosts) || hosts < 1) throw new UsageError(`--plan-placement needs --hosts N (a whole number ≥ 1)${o.hosts === undefined ? '' : `, not '${o.hosts}'`}`);
        if (o.capacity === undefined) throw new UsageError('--plan-placement needs --capacity SIZE');
        const placed = await fleet.planPlacement(args, { hosts, capacity: parseSize(o.capacity), memoryLimit });
        if (o.json) out.write(JSON.stringify(placed, null, 2) + '\n');
        else if (!o.quiet) out.write(render.formatPlacement(placed));
        return EXIT_OK;
      }
      const merged = await fleet.mergeFleet(args, { memoryLimit });
      if (o.json) out.write(JSON.stringify(merged, null, 2) + '\n');
      else if (!o.quiet) out.write(formatMerge(render.safeMerge(merged)));
      return EXIT_OK;
    }
    if (o.hosts !== undefined || o.capacity !== undefined) throw new UsageError('--hosts and --capacity go with --plan-placement');
    let residency: Residency = new Map();
    let memory: MemoryReport | undefined;
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
      maxMemory: o.maxMemory,
      cache: o.cache,
      hashKey: o.hashKey,
      progress: err.isTTY && !o.quiet ? ttyProgress(err as NodeJS.WriteStream) : noProgress,
      onError: errorLine(err),
      onWarning: (m) => !o.quiet && err.write(`vunify: warning: ${m}\n`),
      ...(o.memory && {
        beforeHash: (inodes) => void (residency = takeResidency(inodes)),
        inspect: async (roots, inodes, key) => void (memory = await readMemory({ roots, inodes, ignoreMtime: !!o.ignoreMtime, secret: key.secret, residency })),
      }),
    });
    const r = memory ? { ...scan.report, memory } : scan.report;
    if (o.html) writeOut(o.html, formatCapacityHtml(r, new Date(), memory && formatMemoryHtml(memory)));
    if (o.manifest) {
      const m = await buildManifest(scan.roots, scan.inodes, !!o.ignoreMtime, scan.key);
      if (o.host !== undefined) m.host = o.host;
      try {
        if (/\.parquet$/i.test(o.manifest)) await (await import('../report/parquet.js')).writeParquetManifest(o.manifest, m);
        else writeManifest(o.manifest, m);
      } catch (er) {
        throw new UsageError(`${o.manifest}: cannot write: ${(er as Error).message}`);
      }
    }
    if (o.json) out.write(JSON.stringify(r, null, 2) + '\n');
    else if (o.csv) out.write(formatCapacityCsv(r));
    else if (!o.quiet) out.write(formatCapacity(r) + (memory ? formatMemoryText(memory) : ''));
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
