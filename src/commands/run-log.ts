/*
 * What every command (unify, split, report) keeps while it runs: the
 * per-file errors, passed on as they come and collected for the report, and
 * how long each stage took. One place, so the three report them alike.
 */
import type { FileError } from '../core/errors.js';

export interface RunLog {
  errors: FileError[];
  /** Milliseconds per stage, and `total` once finish() is called. */
  durations: Record<string, number>;
  onError(e: FileError): void;
  /** The stage that just ended: charge it the time since the last mark. */
  timed(stage: string): void;
  finish(): void;
}

export function runLog(onError?: (e: FileError) => void): RunLog {
  const start = performance.now();
  let mark = start;
  const log: RunLog = {
    errors: [],
    durations: {},
    onError(e) {
      log.errors.push(e);
      onError?.(e);
    },
    timed(stage) {
      const now = performance.now();
      log.durations[stage] = Math.round(now - mark);
      mark = now;
    },
    finish() {
      log.durations.total = Math.round(performance.now() - start);
    },
  };
  return log;
}
