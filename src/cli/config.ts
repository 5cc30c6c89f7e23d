/*
 * Configuration file (/etc/vunify/vunify.conf, --config FILE): the command
 * line, one option per line, so a setting means exactly what the option of
 * the same name means and --help documents both.
 *
 *   # nightly unification of every guest
 *   root /vservers/*
 *   exclude /usr/local
 *   min-size 4k
 *   metrics-file /var/lib/prometheus/node-exporter/vunify.prom
 *
 * A line is a long option name without the dashes, then its value (the rest
 * of the line, spaces included: no quoting, no shell, so a glob reaches
 * vunify unexpanded). `root` names a ROOT. Blank lines and lines starting
 * with # are ignored. Options that take no value stand alone. An unknown
 * name, a missing or unexpected value is a usage error naming file and line.
 */
import fs from 'node:fs';
import { UsageError } from '../core/errors.js';

export const DEFAULT_CONFIG = '/etc/vunify/vunify.conf';

export interface ConfigLine {
  name: string;
  value?: string;
  where: string;
}

/** What the command accepts: option name (without dashes) -> whether it takes a value. */
export type OptionSpec = ReadonlyMap<string, boolean>;

export function parseConfig(text: string, file: string, spec: OptionSpec): ConfigLine[] {
  const out: ConfigLine[] = [];
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const where = `${file}:${i + 1}`;
    const m = /^(\S+)(?:\s+(.*))?$/.exec(line)!;
    const name = m[1]!.replace(/^--/, '');
    const value = m[2];
    const takesValue = name === 'root' ? true : spec.get(name);
    if (takesValue === undefined || name === 'config') throw new UsageError(`${where}: unknown setting '${name}'`);
    if (takesValue && value === undefined) throw new UsageError(`${where}: '${name}' needs a value`);
    if (!takesValue && value !== undefined) throw new UsageError(`${where}: '${name}' takes no value`);
    out.push({ name, value, where });
  }
  return out;
}

export function readConfig(file: string, spec: OptionSpec): ConfigLine[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (er) {
    throw new UsageError(`${file}: cannot read config file: ${(er as Error).message}`);
  }
  return parseConfig(text, file, spec);
}

/** Config lines as command-line words (roots excluded). */
export function configArgs(lines: readonly ConfigLine[]): string[] {
  return lines.filter((l) => l.name !== 'root').flatMap((l) => (l.value === undefined ? [`--${l.name}`] : [`--${l.name}`, l.value]));
}

export function configRoots(lines: readonly ConfigLine[]): string[] {
  return lines.filter((l) => l.name === 'root').map((l) => l.value!);
}
