/*
 * Command line: options in, one report out, and an exit code a script can
 * trust: 0 all done, 1 finished but something was skipped because of an
 * error, 2 bad usage or input (nothing was changed).
 *
 * Output policy: the summary goes to stdout (or JSON with --json); each
 * per-file error goes to stderr as it happens, one line naming the path and
 * the reason; -v adds one stdout line per link made; -q keeps only errors.
 * Progress bars appear only on a terminal.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { ExcludeSyntaxError, parseRule, parseRuleFile, type Rule } from './excludes.js';
import { UsageError } from './errors.js';
import { displayPath } from './confine.js';
import { unify } from './index.js';
import { noProgress, ttyProgress } from './progress.js';
import { formatHuman } from './report.js';
import { DEFAULT_STATE_DIR } from './state.js';

export const EXIT_OK = 0;
export const EXIT_SKIPPED = 1;
export const EXIT_USAGE = 2;

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

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

Exit status: 0 done, 1 done but some files were skipped (errors on stderr),
2 bad usage or input (nothing changed).

Patterns match paths relative to each guest root ("/etc/passwd"). The default
list keeps mutable and private data out (/etc, /var, /home, /tmp, /root, ...);
see the README. User rules come first, so --include can override it.`;

export async function main(argv: readonly string[], out = process.stdout, err = process.stderr): Promise<number> {
  // The capacity report is a subcommand of its own (read-only, other options).
  if (argv[0] === 'report') return (await import('./report-cli.js')).reportMain(argv.slice(1), out, err);
  const rules: Rule[] = [];
  const addRule = (kind: 'include' | 'exclude') => (text: string) => {
    rules.push(parseRule(text, kind));
    return text;
  };
  const program = new Command('vunify')
    .description('Replace identical files across guest roots with hardlinks to one inode.')
    .usage('[options] ROOT...')
    .argument('<ROOT...>', 'guest root directories (glob patterns are expanded)')
    .version(pkg.version, '-V, --version')
    .option('-n, --dry-run', 'report only: scan, hash, plan and print; change nothing')
    .option('--json', 'print the report as JSON')
    .option('-v, --verbose', 'print one line per link made')
    .option('-q, --quiet', 'print nothing but errors')
    .option('--iunlink', 'after linking, mark unified files immutable + immutable-unlink (Linux-VServer kernels)')
    .option('--ignore-mtime', 'unify files even when their mtimes differ (the canonical mtime wins)')
    .addOption(new Option('--min-size <size>', 'leave files smaller than this alone').default('1'))
    .addOption(new Option('--max-size <size>', 'leave files larger than this alone'))
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
    .addOption(new Option('--state-dir <dir>', 'where linking runs keep their locks and journal').default(DEFAULT_STATE_DIR))
    .addHelpText('after', EXAMPLES)
    .exitOverride()
    .configureOutput({ writeOut: (s) => out.write(s), writeErr: (s) => err.write(s) })
    .showHelpAfterError('(run vunify --help for usage)');

  try {
    program.parse([...argv], { from: 'user' });
  } catch (er) {
    if (er instanceof CommanderError) return er.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    return usage(err, er);
  }
  const o = program.opts<{
    dryRun?: boolean; json?: boolean; iunlink?: boolean; verbose?: boolean; quiet?: boolean; ignoreMtime?: boolean;
    minSize: string; maxSize?: string; defaultExcludes: boolean; stateDir: string;
  }>();

  try {
    const minSize = parseSize(o.minSize);
    const maxSize = o.maxSize === undefined ? Number.MAX_SAFE_INTEGER : parseSize(o.maxSize);
    if (minSize > maxSize) throw new UsageError(`--min-size ${o.minSize} is larger than --max-size ${o.maxSize}`);
    const report = await unify({
      roots: program.args,
      dryRun: !!o.dryRun,
      ignoreMtime: !!o.ignoreMtime,
      minSize,
      maxSize,
      rules,
      noDefaultExcludes: !o.defaultExcludes,
      stateDir: o.stateDir,
      iunlink: !!o.iunlink,
      progress: err.isTTY && !o.quiet ? ttyProgress(err) : noProgress,
      onError: (e) => err.write(`vunify: ${e.path}: ${e.message}\n`),
      onLink: o.verbose ? (f, c) => out.write(`linked ${displayPath(f)} => ${displayPath(c)}\n`) : undefined,
    });
    if (o.json) out.write(JSON.stringify(report, null, 2) + '\n');
    else if (!o.quiet) out.write(formatHuman(report));
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
