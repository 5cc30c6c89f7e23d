/*
 * Command line: options in, one report out, and an exit code a script can
 * trust (cli/options.ts). `vunify ROOT...` unifies; `vunify split` and
 * `vunify report` are subcommands with command lines of their own
 * (cli/split.ts, cli/report.ts), sharing the options declared once in
 * cli/options.ts.
 *
 * Output policy: the summary goes to stdout (or JSON with --json); each
 * per-file error goes to stderr as it happens, one line naming the path and
 * the reason; -v adds one stdout line per link made; -q keeps only errors.
 * On a terminal the summary is a small table and progress bars show on
 * stderr; anywhere else (systemd's journal, a pipe) there are no bars and
 * the summary is one line, so a run reads at a glance in `journalctl`.
 * Settings can come from a config file (config.ts) read before the command
 * line, which wins.
 */
import { readFileSync } from 'node:fs';
import { UsageError } from '../core/errors.js';
import { displayPath } from '../core/paths.js';
import { noProgress } from '../core/progress.js';
import type { Rule } from '../pipeline/excludes.js';
import { unify } from '../index.js';
import type { Report } from '../report/report.js';
import { DEFAULT_CONFIG } from './config.js';
import { baseCommand, errorLine, EXIT_OK, EXIT_SKIPPED, exitCodeFor, isTTY, parseWithConfig, sizeBounds, withSelection, withUnifyOnly } from './options.js';
import { ttyProgress } from './progress.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const EXAMPLES = `
Examples:
  vunify --dry-run /vservers/*          report what unifying all guests would free
  vunify '/vservers/*'                  unify; the quoted glob is expanded by vunify
  vunify -q /var/lib/lxc/*/rootfs       unify LXC guests, print only errors
  vunify --json -n /var/lib/machines/* > plan.json
  vunify --exclude '/usr/local' --include /etc/hosts /vservers/web*
  vunify report '/vservers/*'           capacity report (see vunify report --help)
  vunify --config ${DEFAULT_CONFIG}     what the systemd timer runs every night
  vunify --metrics-file /var/lib/prometheus/node-exporter/vunify.prom -q '/vservers/*'
  vunify split -n /vservers/web1        bytes needed to give web1 private copies again
  vunify split /vservers/web1           give web1 private copies (before moving it away)
  vunify --max-memory 2G '/vservers/*'  stop with exit 2, before changing anything, rather than pass 2 GiB

Exit status: 0 done, 1 done but some files were skipped (errors on stderr)
or the output could not be written, 2 bad usage or input (nothing changed).

Patterns match paths relative to each guest root ("/etc/passwd"). The default
list keeps mutable and private data out (/etc, /var, /home, /tmp, /root, ...);
see the README. User rules come first, so --include can override it.

A config file holds the same options, one per line without the dashes
("exclude /usr/local", "root /vservers/*"); options and ROOTs given on the
command line win (ROOTs replace the file's).

Memory: about 54 MiB plus 60 bytes per file for a dry run, more when
linking (README "Memory"). Under a cgroup limit (systemd's MemoryMax=)
vunify stays below it, or stops with exit 2 before it changes anything;
--max-memory sets the limit yourself.`;

interface UnifyCli {
  dryRun?: boolean; json?: boolean; iunlink?: boolean; verbose?: boolean; quiet?: boolean; ignoreMtime?: boolean;
  minSize: string; maxSize?: string; defaultExcludes: boolean; stateDir: string; maxMemory?: string; cache?: string | false; hashKey?: string; metricsFile?: string;
}

export async function main(argv: readonly string[], out = process.stdout, err = process.stderr): Promise<number> {
  // Split and the capacity report are loaded only when asked for (copies, renderers, manifests):
  // each module loaded costs every run memory and start-up time.
  if (argv[0] === 'split') return (await import('./split.js')).splitMain(argv.slice(1), out, err);
  if (argv[0] === 'report') return (await import('./report.js')).reportMain(argv.slice(1), out, err);
  const rules: Rule[] = [];
  const program = withUnifyOnly(withSelection(baseCommand('vunify', out, err, rules)))
    .description('Replace identical files across guest roots with hardlinks to one inode.')
    .usage('[options] ROOT...\n       vunify split [options] ROOT...\n       vunify report [options] ROOT...')
    .argument('[ROOT...]', 'guest root directories (glob patterns are expanded)')
    .version(pkg.version, '-V, --version')
    .addHelpText('after', EXAMPLES)
    .showHelpAfterError('(run vunify --help for usage)');

  let o: UnifyCli | undefined;
  try {
    const roots = parseWithConfig(program, argv, true);
    o = program.opts<UnifyCli>();
    const opts = o;
    if (roots.length === 0) throw new UsageError("missing required argument 'ROOT' (on the command line or as 'root' in the config file)");
    const report = await unify({
      roots,
      dryRun: !!opts.dryRun,
      ignoreMtime: !!opts.ignoreMtime,
      ...sizeBounds(opts),
      rules,
      noDefaultExcludes: !opts.defaultExcludes,
      stateDir: opts.stateDir,
      maxMemory: opts.maxMemory,
      iunlink: !!opts.iunlink,
      cache: opts.cache,
      hashKey: opts.hashKey,
      progress: isTTY(err) && !opts.quiet ? ttyProgress(err) : noProgress,
      onError: errorLine(err),
      onWarning: (m) => !opts.quiet && err.write(`vunify: warning: ${m}\n`),
      onNote: (m) => opts.verbose && err.write(`vunify: ${m}\n`),
      onLink: opts.verbose ? (f, c) => out.write(`linked ${displayPath(f)} => ${displayPath(c)}\n`) : undefined,
    });
    if (opts.metricsFile) await metricsOut(opts.metricsFile, report, err);
    if (opts.json) out.write(JSON.stringify(report, null, 2) + '\n');
    else if (!opts.quiet) {
      // The renderers, like the metrics below, are loaded only by a run that prints them (start-up time).
      const { formatHuman, formatLine } = await import('../report/render/text.js');
      out.write(isTTY(out) ? formatHuman(report) : formatLine(report));
    }
    return report.summary.errors ? EXIT_SKIPPED : EXIT_OK;
  } catch (er) {
    // A failed run still tells the dashboard so, keeping the last success time.
    if (o?.metricsFile) await metricsOut(o.metricsFile, undefined, err);
    return exitCodeFor(er, err);
  }
}

/** A metrics file that cannot be written costs the dashboard, not the run: say so even with -q. */
async function metricsOut(file: string, report: Report | undefined, err: NodeJS.WritableStream): Promise<void> {
  const { formatMetrics, previousSuccess, writeMetrics } = await import('../report/metrics.js');
  // A failed run (no report) keeps the last success time.
  const text = report ? formatMetrics(report, new Date()) : formatMetrics(undefined, new Date(), previousSuccess(file));
  try {
    writeMetrics(file, text);
  } catch (er) {
    err.write(`vunify: ${file}: cannot write metrics: ${(er as Error).message}\n`);
  }
}
