/*
 * `vunify split ROOT...`: the command line of split (commands/split.ts).
 * A config file's excludes and state directory apply; its roots do not
 * (splitting every guest is never what the timer's file means).
 */
import { displayPath } from '../core/paths.js';
import { noProgress } from '../core/progress.js';
import type { Rule } from '../pipeline/excludes.js';
import { split } from '../commands/split.js';
import { formatSplit } from '../report/render/text.js';
import { baseCommand, errorLine, EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, exitCodeFor, isTTY, parseWithConfig } from './options.js';
import { ttyProgress } from './progress.js';

const HELP = `
Examples:
  vunify split -n /vservers/web1        what it would copy, and the free space needed
  vunify split /vservers/web1           copy, then move web1 away

Each copy keeps owner, group, mode, mtime and all xattrs, and replaces the
path atomically. Nothing is copied when a filesystem lacks the space (exit 2).
Exit status: 0 done, 1 done but some paths were skipped, 2 bad usage, not
enough space (nothing copied).`;

export async function splitMain(argv: readonly string[], out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  const rules: Rule[] = [];
  const program = baseCommand('vunify split', out, err, rules)
    .description(
      'Give the named guests private copies of every file whose inode they share with anything outside them\n' +
        '(before moving a guest to another host or letting it rewrite files in place).',
    )
    .usage('[options] ROOT...')
    .argument('<ROOT...>', "guest roots to split off (a config file's roots are not used here)")
    .option('-n, --dry-run', 'report only: what would be copied and the space needed; change nothing')
    .option('-v, --verbose', 'print one line per path given a private copy')
    .addHelpText('after', HELP);
  try {
    const roots = parseWithConfig(program, argv, false);
    const o = program.opts<{ dryRun?: boolean; json?: boolean; verbose?: boolean; quiet?: boolean; defaultExcludes: boolean; stateDir: string; maxMemory?: string }>();
    const report = await split({
      roots,
      dryRun: !!o.dryRun,
      rules,
      noDefaultExcludes: !o.defaultExcludes,
      stateDir: o.stateDir,
      maxMemory: o.maxMemory,
      progress: isTTY(err) && !o.quiet ? ttyProgress(err as NodeJS.WriteStream) : noProgress,
      onError: errorLine(err),
      onWarning: (m) => !o.quiet && err.write(`vunify: warning: ${m}\n`),
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
    return exitCodeFor(er, err);
  }
}
