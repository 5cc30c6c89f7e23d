/*
 * Metrics for a fleet dashboard: the report as Prometheus text exposition
 * format, for node_exporter's textfile collector (--metrics-file).
 *
 * The collector may read the file at any moment, so it is written to a
 * temporary name in the same directory and renamed over the old one: it
 * always sees a whole file, from this run or the one before. A run that
 * fails before it has a report still writes the file, marking the run
 * failed and carrying the previous last-success time forward, so an alert
 * on "no success for two days" keeps working.
 *
 * Every value is a gauge describing the latest run, except
 * vunify_shared_bytes, which describes the roots as they are now.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Report } from './report.js';

interface Metric {
  name: string;
  help: string;
  samples: [labels: Record<string, string>, value: number][];
}

const gauge = (name: string, help: string, value: number): Metric => ({ name, help, samples: [[{}, value]] });

/** Metrics of a finished run (`report`), or of a failed one (undefined). */
export function formatMetrics(report: Report | undefined, now: Date, lastSuccess?: number): string {
  const ts = now.getTime() / 1000;
  const metrics: Metric[] = [
    gauge('vunify_last_run_timestamp_seconds', 'When the latest run ended.', ts),
    gauge('vunify_last_run_success', '1 when the latest run finished (some files may have been skipped, see vunify_errors), 0 when it failed.', report ? 1 : 0),
  ];
  const success = report ? ts : lastSuccess;
  if (success !== undefined) metrics.push(gauge('vunify_last_success_timestamp_seconds', 'When a run last finished.', success));
  if (report) {
    const s = report.summary;
    metrics.push(
      gauge('vunify_dry_run', '1 when the latest run changed nothing (--dry-run).', report.dryRun ? 1 : 0),
      gauge('vunify_files_scanned', 'Regular-file paths scanned.', s.filesScanned),
      gauge('vunify_bytes_scanned', 'Sum of the sizes of the scanned paths.', s.bytesScanned),
      gauge('vunify_files_hashed', 'Files whose content was read to hash it (not found in the cache).', report.hashed.files),
      gauge('vunify_bytes_hashed', 'Bytes read to hash files.', report.hashed.bytes),
      gauge('vunify_cache_hits', 'Candidate files whose hash came from the cache.', report.hashed.cacheHits),
      gauge('vunify_links_made', 'Paths replaced by a link in the latest run.', s.linksMade),
      gauge('vunify_freed_bytes', 'Bytes (st_size) of inodes freed by the latest run.', s.freedBytes),
      gauge('vunify_freed_disk_bytes', 'Allocated bytes of inodes freed by the latest run.', s.freedDiskBytes),
      gauge('vunify_freeable_bytes', 'Bytes the plan of the latest run could free.', s.freeableBytes),
      gauge('vunify_shared_bytes', 'Bytes hardlinks save across the scanned roots now: sum over inodes of (paths - 1) x size.', s.alreadySharedBytes + s.freedBytes),
      gauge('vunify_errors', 'Errors in the latest run (each skipped a file, directory or link).', s.errors),
      gauge('vunify_duration_seconds', 'How long the latest run took.', (report.durations.total ?? 0) / 1000),
      {
        name: 'vunify_root_freeable_bytes',
        help: 'Bytes the plan could free, per root (each inode charged to the root of its first path).',
        samples: report.roots.map((r) => [{ root: r.path }, r.freeableBytes]),
      },
    );
  }
  return metrics.map(render).join('');
}

function render(m: Metric): string {
  const lines = [`# HELP ${m.name} ${m.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${m.name} gauge`];
  for (const [labels, value] of m.samples) {
    const l = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
    lines.push(`${m.name}${l.length ? `{${l.join(',')}}` : ''} ${value}`);
  }
  return lines.join('\n') + '\n';
}

/** Label values: backslash, double quote and newline are escaped, as the format requires. */
export function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** The last-success time recorded in an earlier metrics file, if any. */
export function previousSuccess(file: string): number | undefined {
  try {
    const m = /^vunify_last_success_timestamp_seconds (\S+)$/m.exec(fs.readFileSync(file, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Write atomically: a reader sees the old file or the new one, never half of one. */
export function writeMetrics(file: string, text: string): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}`);
  fs.writeFileSync(tmp, text, { mode: 0o644, flag: 'wx' });
  try {
    fs.renameSync(tmp, file);
  } catch (er) {
    fs.rmSync(tmp, { force: true });
    throw er;
  }
}
