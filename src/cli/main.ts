/*
 * Command line: options in, one report out, and an exit code a script can
 * trust: 0 all done, 1 finished but something was skipped because of an
 * error, 2 bad usage or input (nothing was changed).
 *
 * Output policy: the summary goes to stdout (or JSON with --json); each
 * per-file error goes to stderr as it happens, one line naming the path and
 * the reason; -v adds one stdout line per link made; -q keeps only errors.
 * On a terminal the summary is a small table and progress bars show on
 * stderr; anywhere else (systemd's journal, a pipe) there are no bars and
 * the summary is one line, so a run reads at a glance in `journalctl`.
 *
 * `vunify split ROOT...` is the one subcommand (split.ts). Settings can come
 * from a config file (config.ts) read before the command line, which wins.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { configArgs, configRoots, DEFAULT_CONFIG, readConfig, type ConfigLine } from './config.js';
import { formatMetrics, previousSuccess, writeMetrics } from '../report/metrics.js';
import { formatSplit, split } from '../commands/split.js';
import { ExcludeSyntaxError, parseRule, parseRuleFile, type Rule } from '../pipeline/excludes.js';
import { UsageError } from '../core/errors.js';
import { displayPath } from '../os/confine.js';
import { unify } from '../index.js';
import { noProgress, ttyProgress } from './progress.js';
import { formatHuman, formatLine } from '../report/report.js';
import { DEFAULT_STATE_DIR } from '../state/run-state.js';

export const EXIT_OK = 0;
export const EXIT_SKIPPED = 1;
export const EXIT_USAGE = 2;

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const SIZE_UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** "4096", "4k", "10M", "1GiB" -> bytes. */
export function parseSize(text: string): number {
  const m = /^(\d+)\s*([kmgt]?)(?:i?b)?$/i.exec(text.trim());
  if (!m) throw new UsageError(`invalid size '${text}' (use e.g. 4096, 64k, 10M, 1G)`);
  return Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]!;
}

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

Exit status: 0 done, 1 done but some files were skipped (errors on stderr),
2 bad usage or input (nothing changed).

Patterns match paths relative to each guest root ("/etc/passwd"). The default
list keeps mutable and private data out (/etc, /var, /home, /tmp, /root, ...);
see the README. User rules come first, so --include can override it.

A config file holds the same options, one per line without the dashes
("exclude /usr/local", "root /vservers/*"); options and ROOTs given on the
command line win (ROOTs replace the file's).`;

/** Options every command shares: output, excludes, state and config. */
function baseCommand(name: string, out: NodeJS.WritableStream, err: NodeJS.WritableStream, rules: Rule[]): Command {
  const addRule = (kind: 'include' | 'exclude') => (text: string) => {
    rules.push(parseRule(text, kind));
    return text;
  };
  return new Command(name)
    .option('-n, --dry-run', 'report only: scan, hash, plan and print; change nothing')
    .option('--json', 'print the report as JSON')
    .option('-q, --quiet', 'print nothing but errors')
    .option('--exclude <pattern>', 'exclude paths matching pattern (repeatable)', addRule('exclude'))
    .option('--include <pattern>', 'include paths matching pattern, before the defaults (repeatable)', addRule('include'))
    .option('--exclude-from <file>', 'read patterns from file, one per line (repeatable)', (file: string) => {
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (er) {
        throw new UsageError(`${file}: cannot read exclude file: ${(er as Error).message}`);
      }
      rules.push(...parseRuleFile(text, file));
      return file;
    })
    .option('--no-default-excludes', 'drop the built-in exclude list')
    .addOption(new Option('--state-dir <dir>', 'where linking runs keep their locks, journal and hash cache').default(DEFAULT_STATE_DIR))
    .option('--config <file>', `read options and ROOTs from file first (the timer uses ${DEFAULT_CONFIG})`)
    .exitOverride()
    .configureOutput({ writeOut: (s) => out.write(s), writeErr: (s) => err.write(s) });
}

/** Config file lines for `argv`'s --config, if any (read before commander sees the rest). */
function configOf(argv: readonly string[], program: Command): ConfigLine[] {
  const i = argv.findIndex((a) => a === '--config' || a.startsWith('--config='));
  if (i < 0) return [];
  const file = argv[i]!.startsWith('--config=') ? argv[i]!.slice('--config='.length) : argv[i + 1];
  if (file === undefined) return []; // commander reports the missing value
  const spec = new Map(program.options.filter((o) => o.long).map((o) => [o.long!.slice(2), o.required || o.optional]));
  return readConfig(file, spec);
}

/** Config lines first, then the command line, which wins. */
function parse(program: Command, argv: readonly string[], config: readonly ConfigLine[]): void {
  program.parse([...configArgs(config), ...argv], { from: 'user' });
}

export async function main(argv: readonly string[], out = process.stdout, err = process.stderr): Promise<number> {
  if (argv[0] === 'split') return splitMain(argv.slice(1), out, err);
  // The capacity report is a subcommand of its own (read-only, other options).
  if (argv[0] === 'report') return (await import('./report.js')).reportMain(argv.slice(1), out, err);
  const rules: Rule[] = [];
  const program = baseCommand('vunify', out, err, rules)
    .description('Replace identical files across guest roots with hardlinks to one inode.')
    .usage('[options] ROOT...\n       vunify split [options] ROOT...\n       vunify report [options] ROOT...')
    .argument('[ROOT...]', 'guest root directories (glob patterns are expanded)')
    .version(pkg.version, '-V, --version')
    .option('-v, --verbose', 'print one line per link made')
    .option('--iunlink', 'after linking, mark unified files immutable + immutable-unlink (Linux-VServer kernels)')
    .option('--ignore-mtime', 'unify files even when their mtimes differ (the canonical mtime wins)')
    .addOption(new Option('--min-size <size>', 'leave files smaller than this alone').default('1'))
    .addOption(new Option('--max-size <size>', 'leave files larger than this alone'))
    .option('--cache <file>', 'hash cache: rehash only files changed since an earlier run (default STATE_DIR/hashes.cache)')
    .option('--no-cache', 'neither read nor write a hash cache')
    .option('--metrics-file <file>', 'write Prometheus metrics here (atomically), for node_exporter\'s textfile collector')
    .addHelpText('after', EXAMPLES)
    .showHelpAfterError('(run vunify --help for usage)');

  let config: ConfigLine[];
  try {
    config = configOf(argv, program);
    parse(program, argv, config);
  } catch (er) {
    if (er instanceof CommanderError) return er.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    return usage(err, er);
  }
  const o = program.opts<{
    dryRun?: boolean; json?: boolean; iunlink?: boolean; verbose?: boolean; quiet?: boolean; ignoreMtime?: boolean;
    minSize: string; maxSize?: string; defaultExcludes: boolean; stateDir: string; cache?: string | false; metricsFile?: string;
  }>();
  const roots = program.args.length ? program.args : configRoots(config);

  try {
    if (roots.length === 0) throw new UsageError("missing required argument 'ROOT' (on the command line or as 'root' in the config file)");
    const minSize = parseSize(o.minSize);
    const maxSize = o.maxSize === undefined ? Number.MAX_SAFE_INTEGER : parseSize(o.maxSize);
    if (minSize > maxSize) throw new UsageError(`--min-size ${o.minSize} is larger than --max-size ${o.maxSize}`);
    const report = await unify({
      roots,
      dryRun: !!o.dryRun,
      ignoreMtime: !!o.ignoreMtime,
      minSize,
      maxSize,
      rules,
      noDefaultExcludes: !o.defaultExcludes,
      stateDir: o.stateDir,
      iunlink: !!o.iunlink,
      cache: o.cache,
      progress: err.isTTY && !o.quiet ? ttyProgress(err) : noProgress,
      onError: (e) => err.write(`vunify: ${e.path}: ${e.message}\n`),
      onWarning: (m) => !o.quiet && err.write(`vunify: warning: ${m}\n`),
      onNote: (m) => o.verbose && err.write(`vunify: ${m}\n`),
      onLink: o.verbose ? (f, c) => out.write(`linked ${displayPath(f)} => ${displayPath(c)}\n`) : undefined,
    });
    if (o.metricsFile) metricsOut(o.metricsFile, formatMetrics(report, new Date()), err);
    if (o.json) out.write(JSON.stringify(report, null, 2) + '\n');
    else if (!o.quiet) out.write(isTTY(out) ? formatHuman(report) : formatLine(report));
    return report.summary.errors ? EXIT_SKIPPED : EXIT_OK;
  } catch (er) {
    // A failed run still tells the dashboard so, keeping the last success time.
    if (o.metricsFile) metricsOut(o.metricsFile, formatMetrics(undefined, new Date(), previousSuccess(o.metricsFile)), err);
    if (er instanceof UsageError || er instanceof ExcludeSyntaxError) return usage(err, er);
    throw er;
  }
}

const isTTY = (s: NodeJS.WritableStream) => !!(s as NodeJS.WriteStream).isTTY;

/** A metrics file that cannot be written costs the dashboard, not the run: say so even with -q. */
function metricsOut(file: string, text: string, err: NodeJS.WritableStream): void {
  try {
    writeMetrics(file, text);
  } catch (er) {
    err.write(`vunify: ${file}: cannot write metrics: ${(er as Error).message}\n`);
  }
}

async function splitMain(argv: readonly string[], out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  const rules: Rule[] = [];
  const program = baseCommand('vunify split', out, err, rules)
    .description(
      'Give the named guests private copies of every file whose inode they share with anything outside them\n' +
        '(before moving a guest to another host or letting it rewrite files in place).',
    )
    .usage('[options] ROOT...')
    .argument('<ROOT...>', 'guest roots to split off (a config file\'s roots are not used here)')
    .option('-v, --verbose', 'print one line per path given a private copy')
    .addHelpText('after', `
Examples:
  vunify split -n /vservers/web1        what it would copy, and the free space needed
  vunify split /vservers/web1           copy, then move web1 away

Each copy keeps owner, group, mode, mtime and all xattrs, and replaces the
path atomically. Nothing is copied when a filesystem lacks the space (exit 2).
Exit status: 0 done, 1 done but some paths were skipped, 2 bad usage, not
enough space (nothing copied).`);
  try {
    // Only the exclude rules and the state directory of a unify config apply.
    const shared = new Set(program.options.map((o) => o.long?.slice(2)));
    const config = configOf(argv, baseCommand('', out, err, [])).filter((l) => shared.has(l.name) && l.name !== 'root');
    parse(program, argv, config);
  } catch (er) {
    if (er instanceof CommanderError) return er.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    return usage(err, er);
  }
  const o = program.opts<{ dryRun?: boolean; json?: boolean; verbose?: boolean; quiet?: boolean; defaultExcludes: boolean; stateDir: string }>();
  try {
    const report = await split({
      roots: program.args,
      dryRun: !!o.dryRun,
      rules,
      noDefaultExcludes: !o.defaultExcludes,
      stateDir: o.stateDir,
      onError: (e) => err.write(`vunify: ${e.path}: ${e.message}\n`),
      onSplit: o.verbose ? (f) => out.write(`split ${displayPath(f)}\n`) : undefined,
    });
    if (o.json) out.write(JSON.stringify(report, null, 2) + '\n');
    else if (!o.quiet) out.write(formatSplit(report));
    if (report.filesystems.some((f) => !f.enough)) {
      err.write(`vunify: not enough free space to split (see above); a real run would copy nothing\n`);
      return EXIT_USAGE;
    }
    return report.summary.errors ? EXIT_SKIPPED : EXIT_OK;
  } catch (er) {
    if (er instanceof UsageError || er instanceof ExcludeSyntaxError) return usage(err, er);
    throw er;
  }
}

function usage(err: NodeJS.WritableStream, er: unknown): number {
  err.write(`vunify: ${er instanceof Error ? er.message : String(er)}\n`);
  return EXIT_USAGE;
}
