/*
 * What the three commands (vunify, vunify split, vunify report) share on the
 * command line, declared once: the options themselves, sizes, the config
 * file, and the one mapping from what went wrong to an exit code a script
 * can trust: 0 all done, 1 finished but something was skipped because of an
 * error, 2 bad usage or input (nothing was changed).
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { UsageError } from '../core/errors.js';
import { parseRule, parseRuleFile, type Rule } from '../pipeline/excludes.js';
import { parseMemory } from '../os/memory-limit.js';
import { DEFAULT_STATE_DIR } from '../state/run-state.js';
import { configArgs, configRoots, DEFAULT_CONFIG, readConfig, type ConfigLine } from './config.js';

export const EXIT_OK = 0;
export const EXIT_SKIPPED = 1;
export const EXIT_USAGE = 2;

type Out = NodeJS.WritableStream;

const SIZE_UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** "4096", "4k", "10M", "1GiB" -> bytes. */
export function parseSize(text: string): number {
  const m = /^(\d+)\s*([kmgt]?)(?:i?b)?$/i.exec(text.trim());
  if (!m) throw new UsageError(`invalid size '${text}' (use e.g. 4096, 64k, 10M, 1G)`);
  return Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]!;
}

/** --min-size and --max-size as bytes, checked against each other. */
export function sizeBounds(o: { minSize: string; maxSize?: string }): { minSize: number; maxSize: number } {
  const minSize = parseSize(o.minSize);
  const maxSize = o.maxSize === undefined ? Number.MAX_SAFE_INTEGER : parseSize(o.maxSize);
  if (minSize > maxSize) throw new UsageError(`--min-size ${o.minSize} is larger than --max-size ${o.maxSize}`);
  return { minSize, maxSize };
}

/** A command with the options every command shares: output, excludes, state directory and config file. */
export function baseCommand(name: string, out: Out, err: Out, rules: Rule[]): Command {
  const addRule = (kind: 'include' | 'exclude') => (text: string) => {
    rules.push(parseRule(text, kind));
    return text;
  };
  return new Command(name)
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
    .addOption(new Option('--state-dir <dir>', "where linking runs keep their locks, journal and hash cache: root's, not writable by others, outside every guest root (refused otherwise)").default(DEFAULT_STATE_DIR))
    .option('--max-memory <size>', 'stop (exit 2, nothing changed) rather than use more memory than this, e.g. 512M, 2G (default: the cgroup\'s MemoryMax/MemoryHigh less a margin, else no limit)', (v: string) => {
      parseMemory(v);
      return v;
    })
    .option('--config <file>', `read options and ROOTs from file first (the timer uses ${DEFAULT_CONFIG})`)
    .exitOverride()
    .configureOutput({ writeOut: (s) => out.write(s), writeErr: (s) => err.write(s) });
}

/** Which files take part, and the hash cache: vunify and vunify report, so the report adds up to the dry run. */
export function withSelection(cmd: Command): Command {
  return cmd
    .option('--ignore-mtime', 'unify files even when their mtimes differ (the canonical mtime wins)')
    .addOption(new Option('--min-size <size>', 'leave files smaller than this alone').default('1'))
    .addOption(new Option('--max-size <size>', 'leave files larger than this alone'))
    .option('--cache <dir>', 'hash cache directory, one file per root: rehash only files changed since an earlier run (default STATE_DIR/cache)')
    .option('--no-cache', 'neither read nor write a hash cache')
    .option('--hash-key <file>', 'secret key the content hash is keyed with (default STATE_DIR/hash.key, created on first use; a fleet copies one to every host)');
}

/** The options of `vunify` itself that no other command has. */
export function withUnifyOnly(cmd: Command): Command {
  return cmd
    .option('-n, --dry-run', 'report only: scan, hash, plan and print; change nothing')
    .option('-v, --verbose', 'print one line per link made')
    .option('--iunlink', 'after linking, mark unified files immutable + immutable-unlink (Linux-VServer kernels)')
    .option('--metrics-file <file>', "write Prometheus metrics here (atomically), for node_exporter's textfile collector");
}

/**
 * Parse `argv`, config file lines first (the command line wins). A config
 * file is vunify's: every setting must be one vunify knows, and a command
 * takes the ones it has (split: excludes and state; report: also the file
 * selection and cache). ROOTs come from the command line, else from the
 * file's `root` lines when `rootsFromConfig`.
 */
export function parseWithConfig(cmd: Command, argv: readonly string[], rootsFromConfig: boolean): string[] {
  const config = configOf(argv);
  const has = new Set(cmd.options.map((o) => o.long?.slice(2)));
  const own = config.filter((l) => has.has(l.name));
  cmd.parse([...configArgs(own), ...argv], { from: 'user' });
  return cmd.args.length || !rootsFromConfig ? cmd.args : configRoots(config);
}

/** The config file named by `argv`'s --config, if any (read before commander sees the rest). */
function configOf(argv: readonly string[]): ConfigLine[] {
  const i = argv.findIndex((a) => a === '--config' || a.startsWith('--config='));
  if (i < 0) return [];
  const file = argv[i]!.startsWith('--config=') ? argv[i]!.slice('--config='.length) : argv[i + 1];
  if (file === undefined) return []; // commander reports the missing value
  const all = withUnifyOnly(withSelection(baseCommand('', process.stdout, process.stderr, [])));
  const spec = new Map(all.options.filter((o) => o.long).map((o) => [o.long!.slice(2), o.required || o.optional]));
  return readConfig(file, spec);
}

/**
 * The exit code for what a command threw: commander's own (help, version:
 * 0; bad usage: 2), usage errors (2, with the message on stderr); anything
 * else is an internal error, thrown on to bin.ts.
 */
export function exitCodeFor(er: unknown, err: Out): number {
  if (er instanceof CommanderError) return er.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
  // MemoryLimitError (os/memory-limit.ts) is one too: the limit stops a run before it changes anything.
  if (er instanceof UsageError) {
    err.write(`vunify: ${er.message}\n`);
    return EXIT_USAGE;
  }
  throw er;
}

/** A per-file error line on stderr: `vunify: PATH: reason`. */
export const errorLine = (err: Out) => (e: { path: string; message: string }) => err.write(`vunify: ${e.path}: ${e.message}\n`);

export const isTTY = (s: Out): boolean => !!(s as NodeJS.WriteStream).isTTY;
