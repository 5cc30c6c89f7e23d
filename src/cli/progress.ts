/*
 * Progress bars on stderr, only for a person watching: when stderr is a TTY
 * and -q was not given. Everything else (scripts, systemd, pipes) gets none.
 */
import { createRequire } from 'node:module';
import type cliProgressT from 'cli-progress';
import type { Progress } from '../core/progress.js';

// Loaded only for a TTY: scripts and timers, the usual case, never draw a bar.
const load = () => createRequire(import.meta.url)('cli-progress') as typeof cliProgressT;

export function ttyProgress(stream: NodeJS.WriteStream): Progress {
  const cliProgress = load();
  let bar: cliProgressT.SingleBar | undefined;
  let value = 0;
  return {
    stage(name, total, unit = 'count') {
      bar?.stop();
      value = 0;
      const fmt = unit === 'bytes' ? '{value_mib}/{total_mib} MiB' : '{value}/{total}';
      // The walk does not know its total in advance: show a count, not a bar.
      const format = total > 0 ? `${name.padEnd(8)} [{bar}] {percentage}% ${fmt}` : `${name.padEnd(8)} {value} entries`;
      bar = new cliProgress.SingleBar(
        { stream, format, hideCursor: true, clearOnComplete: true },
        cliProgress.Presets.shades_classic,
      );
      bar.start(total, 0, unit === 'bytes' ? { value_mib: 0, total_mib: Math.round(total / 2 ** 20) } : {});
    },
    tick(n) {
      value += n;
      bar?.update(value, bar && { value_mib: Math.round(value / 2 ** 20) });
    },
    stop() {
      bar?.stop();
      bar = undefined;
    },
  };
}
