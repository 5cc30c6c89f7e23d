/*
 * The memory budget: how much memory a run may take, and the clean stop
 * when it would take more.
 *
 * Why: vunify runs as root on hosts whose memory is what it exists to save,
 * over guests that decide how many files there are. A guest with tens of
 * millions of files must not get vunify OOM-killed half-way (or get other
 * services on the host killed); it must stop with a message and exit 2
 * before anything on disk changed. The limit is --max-memory when given,
 * else the tightest memory.max / memory.high of the process's cgroup v2 and
 * its ancestors (what systemd's MemoryMax= / MemoryHigh= set; on a v1 host,
 * memory.limit_in_bytes) minus a margin, else there is none.
 *
 * What is checked, and when (README "Memory"): the walk charges each file it
 * keeps at the measured cost of a whole dry run per file (so a tree too big
 * for the limit stops while it is still being listed, before hashing); just
 * before planning, what is resident now plus what planning and linking
 * still need (per candidate, and per file of the largest identical set) is
 * compared with the limit. Both happen before the first link.
 */
import os from 'node:os';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { UsageError } from '../core/errors.js';
import { native } from './native.js';

/** A limit in bytes and where it came from, for messages. */
export interface MemoryLimit {
  bytes: number;
  /** "--max-memory 512M" or "cgroup /sys/fs/cgroup/system.slice/x.scope/memory.max (1 GiB) minus a margin" */
  source: string;
  /** From the command line (the message then suggests a larger value rather than setting one). */
  fromOption: boolean;
}

/** The limit was (or would be) crossed: exit 2, nothing changed. */
export class MemoryLimitError extends UsageError {
  override name = 'MemoryLimitError';
}

/**
 * Peak resident bytes per file a run keeps (walked regular file within the
 * size bounds), over what the process holds before it looks at a file
 * (~54 MiB: Node and vunify's modules). Measured (README "Memory") with dry
 * runs over bench/scale.mjs's trees: without a cache 64 bytes per file at
 * 1,000,000 files (969,271 scanned) and 58-60 at 2,000,000 (1,938,589); with
 * a warm hash cache 73 at 1,000,000; the run that fills the cache (every
 * candidate hashed and put, the shards written) 217 at 1,000,000 when this
 * was set (178 measured since). A budget must hold for any of them, so the
 * largest, plus 15 %, rounded up.
 */
export const FILE_BYTES = 250;
/**
 * What the native walk charges a file itself, exactly: its fixed row
 * (table.ts, 37 bytes) besides its name bytes and its share of directory
 * rows. The walk is handed FILE_BYTES less this, so a row is not charged
 * twice.
 */
export const FILE_ROW_BYTES = 37;
/**
 * Planning, per candidate file, on top of what is resident after hashing,
 * in a dry run (the plan's totals, kept-apart): it rose 6.4 MiB over
 * 751,419 candidates of the 1,000,000-file tree (9 bytes each) and 8.5 MiB
 * over 1,503,667 at 2,000,000 (6) when this was set, about 3 MiB at
 * 2,000,000 (2) since kept-apart sorts fewer; the larger, with room to spare.
 */
export const PLAN_BYTES = 16;
/**
 * Planning and linking, per candidate file, in a run that links: the plan
 * kept as rows, and the linker. Measured over 4 x 10 guests of the
 * 1,000,000-file tree copied (193,819 files, 148,997 candidates, 104,998
 * links made, --no-cache): from 71 MiB after hashing to a peak of 132 MiB,
 * 426 bytes per candidate, nearly all of it while linking; plus 20 %.
 */
export const LINK_BYTES = 520;
/** Per file of the largest identical set: its records are built at once (to link it, or to plan a set its rows cannot decide). */
export const SET_BYTES = 600;
/**
 * What a run that links holds whatever its size, on top of LINK_BYTES: the
 * linker's reused arrays and path buffers (src/change/link.ts Pool, up to
 * 16 MiB of paths), and what the heap grows by while linking. Measured: 4
 * guests of 10,000 small files (40,000 candidates, 30,000 links made), the
 * estimate 84 MiB and the peak 105-106 MiB, 22 MiB over; plus room.
 */
export const LINK_FIXED = 24 * 2 ** 20;
/** Per linker thread (link.ts THREADS: one per CPU, at most 8), its two 1 MiB comparison buffers (native/link.c CHUNK). */
export const LINK_THREAD_BYTES = 2 * 2 ** 20;
/** What a run that links holds besides its per-file costs, on this host. */
export const linkerBytes = (): number => LINK_FIXED + LINK_THREAD_BYTES * Math.min(os.availableParallelism(), 8);

/**
 * Taken off a cgroup's limit: what vunify's checks cannot see coming
 * between two of them (one directory's listing, garbage the collector has
 * not yet returned) and the page cache the kernel charges to the cgroup
 * too. 10 % plus 32 MiB.
 */
export function cgroupMargin(limit: number): number {
  return Math.floor(limit / 10) + 32 * 2 ** 20;
}

const UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** "512M", "2G", "1.5G", "1073741824", "768MiB" -> bytes. */
export function parseMemory(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(text.trim());
  const bytes = m ? Math.floor(Number(m[1]) * UNITS[m[2]!.toLowerCase()]!) : NaN;
  if (!m || !Number.isFinite(bytes)) throw new UsageError(`invalid --max-memory '${text}' (use e.g. 512M, 2G)`);
  // Less than Node needs to start cannot be meant.
  if (bytes < 64 * 2 ** 20) throw new UsageError(`--max-memory ${text} is too small: vunify needs at least 64M to start (see README "Memory")`);
  return bytes;
}

/** Where the cgroup files are: the real ones, or a fake tree in tests. */
export interface CgroupPaths {
  /** /proc/self/cgroup */
  self: string;
  /** The cgroup v2 mount (/sys/fs/cgroup) and the v1 memory controller's (/sys/fs/cgroup/memory). */
  v2: string;
  v1: string;
}

const REAL: CgroupPaths = { self: '/proc/self/cgroup', v2: '/sys/fs/cgroup', v1: '/sys/fs/cgroup/memory' };

const readText = (p: string): string | undefined => {
  try {
    return readFileSync(p, 'utf8');
  } catch {
    return undefined;
  }
};

/** v1 writes "no limit" as a page-rounded 2^63 - 1. */
const V1_UNLIMITED = 2 ** 62;

/**
 * The tightest memory limit on the way from this process's cgroup up to the
 * root: cgroup v2's memory.max and memory.high (the "0::/path" line of
 * /proc/self/cgroup), or on a host still on v1 the memory controller's
 * memory.limit_in_bytes (the "N:memory:/path" line). undefined when none is
 * set ("max") or the files are not there.
 */
export function cgroupLimit(paths: CgroupPaths = REAL): { bytes: number; file: string } | undefined {
  const lines = readText(paths.self)?.split('\n') ?? [];
  let best: { bytes: number; file: string } | undefined;
  const consider = (mount: string, rel: string, files: readonly string[]): void => {
    for (let at = rel.replace(/\/+$/, ''); ; at = at.slice(0, at.lastIndexOf('/'))) {
      for (const name of files) {
        const text = readText(`${mount}${at}/${name}`)?.trim();
        if (text === undefined || !/^\d+$/.test(text)) continue; // "max": none
        const bytes = Number(text);
        if (bytes >= V1_UNLIMITED) continue;
        if (best === undefined || bytes < best.bytes) best = { bytes, file: `${mount}${at}/${name}` };
      }
      if (at === '') break;
    }
  };
  for (const line of lines) {
    const m = /^(\d+):([^:]*):(\/.*)$/.exec(line.trim());
    if (!m) continue;
    if (m[1] === '0' && m[2] === '') consider(paths.v2, m[3]!, ['memory.max', 'memory.high']);
    else if (m[2]!.split(',').includes('memory')) consider(paths.v1, m[3]!, ['memory.limit_in_bytes']);
  }
  return best;
}

/** The run's limit: --max-memory, else the cgroup's minus the margin, else none. */
/**
 * The run's limit: --max-memory, else the cgroup's minus the margin, else
 * none. A --max-memory above what the cgroup allows is not honoured: the
 * kernel would OOM-kill the run half-way (a dry run of 388,000 files under a
 * 256 MiB cgroup with --max-memory 4G was, after 28 s), so the tighter wins.
 */
export function memoryLimit(option: string | undefined, paths?: CgroupPaths): MemoryLimit | undefined {
  const opt = option === undefined ? undefined : parseMemory(option);
  const cg = cgroupLimit(paths);
  const fromCg = cg && Math.max(0, cg.bytes - cgroupMargin(cg.bytes));
  if (opt !== undefined && (cg === undefined || opt <= fromCg!)) return { bytes: opt, source: `--max-memory ${option}`, fromOption: true };
  if (cg === undefined) return undefined;
  return {
    bytes: fromCg!,
    source: `the cgroup limit ${cg.file} (${mib(cg.bytes)}) less a margin of ${mib(cgroupMargin(cg.bytes))}` + (opt === undefined ? '' : `, tighter than --max-memory ${option}`),
    fromOption: false,
  };
}

export const mib = (n: number): string => `${Math.round(n / 2 ** 20).toLocaleString('en-US')} MiB`;

let gc: (() => void) | undefined;

/**
 * Files below which collectGarbage() does nothing: what it would give back
 * (sort keys of 8 bytes per file, under 2 MiB) is less than the Node
 * process's own baseline moves, while each full collection costs a few
 * milliseconds of a run that takes a few hundred (a rerun over a unified
 * fleet of 90,000 files paid ~30 ms of CPU for three of them).
 */
export const GC_MIN_FILES = 262_144;

/**
 * A full garbage collection, between stages, and the memory it freed given
 * back. A stage leaves tens of megabytes of spent typed arrays (sort keys,
 * a list sized for every inode of which a part was copied out) while the
 * JavaScript heap itself stays at a few megabytes, so the collector, which
 * runs on the heap's growth, would not look at them before the run's peak;
 * a collection of so small a heap takes a few milliseconds. Their memory,
 * once freed, stays in malloc's arenas, resident, unless trimmed.
 * V8 frees a dead ArrayBuffer's memory on a background thread after the
 * collection returns: the trim ran before most of it was free, and a stage
 * started with the last one's arrays still resident (23 MiB at the end of
 * grouping at 2,000,000 files). Swept during the collection, they are free
 * when the trim runs.
 * `files`: the run's; below GC_MIN_FILES nothing is done.
 */
export function collectGarbage(files: number): void {
  if (files < GC_MIN_FILES) return;
  if (!gc) {
    setV8Flags('--no-concurrent-array-buffer-sweeping', '--expose-gc');
    gc = (createRequire(import.meta.url)('node:vm') as typeof import('node:vm')).runInNewContext('gc') as () => void;
  }
  gc();
  native.mallocTrim();
}

/**
 * Turn off V8's allocation-site pretenuring for the rest of the process
 * (a linking run, from its link stage). The link stage keeps its sets'
 * objects (DirNodes for the whole plan, each set's Inodes, Stats and
 * canonicals while it is in flight) past a few scavenges, so their
 * allocation sites are "maybe tenure" when the young generation first
 * reaches its maximum size, mid-stage; V8 then throws away every optimized
 * function that allocates at such a site (linkSet, prepare, planSets and
 * the Materializer's) and compiles them again, and again when the sites
 * are tenured: ~0.3-0.5 CPU-s of TurboFan on the fleet, taken from the
 * linker's threads. Without it those objects are copied once by the
 * scavenger, which costs less. Changes no result.
 */
export function noPretenuring(): void {
  setV8Flags('--no-allocation-site-pretenuring');
}

/** V8 flags set at run time; node:v8 is loaded here, by the runs that set one: it alone is milliseconds of every start. */
function setV8Flags(...flags: string[]): void {
  const v8 = createRequire(import.meta.url)('node:v8') as typeof import('node:v8');
  for (const f of flags) v8.setFlagsFromString(f);
}

/** Resident set size of this process now. */
export const residentBytes = (): number => process.memoryUsage.rss();

/**
 * The checks of one run against a limit (or none: every check passes).
 * `base` is what the process holds before it looks at any file.
 */
export class MemoryBudget {
  readonly base: number;
  constructor(
    readonly limit: MemoryLimit | undefined,
    private readonly rss: () => number = residentBytes,
  ) {
    this.base = rss();
  }

  /**
   * Bytes the native walk may charge (its maxBytes), or undefined for no
   * limit. At least 1: a limit already below what Node holds at the start
   * stops the walk at its first file with the exit-2 error, not with the
   * addon's complaint about a zero budget.
   */
  tableBytes(): number | undefined {
    return this.limit === undefined ? undefined : Math.max(1, this.limit.bytes - this.base);
  }
  /** What the native walk charges per file kept besides its rows (its fileBytes): with them, the whole run's cost of a file. */
  fileBytes(): number | undefined {
    return this.limit === undefined ? undefined : FILE_BYTES - FILE_ROW_BYTES;
  }

  /**
   * Before planning and linking: resident now plus what they need, for
   * `candidates` files and a largest set of `largest` paths (or a function
   * that counts them, called only when there is a limit: a pass over every
   * set member, ~5 ms of a fleet dry run's single-threaded plan stage, for
   * nothing on a host without one); `links`: the run goes on to link (a
   * dry run only plans).
   */
  beforePlan(candidates: number, largest: number | (() => number), links = true): void {
    if (this.limit === undefined) return;
    const most = typeof largest === 'function' ? largest() : largest;
    const need = this.rss() + candidates * (links ? LINK_BYTES : PLAN_BYTES) + most * SET_BYTES + (links ? linkerBytes() : 0);
    if (need > this.limit.bytes) this.fail('the link plan', candidates, need, 'after hashing');
  }

  /** An EBUDGET from the native walk (it stopped before its tables passed `maxBytes`). */
  fromWalk(er: unknown): unknown {
    if (this.limit === undefined || (er as { code?: unknown })?.code !== 'EBUDGET') return er;
    const { files, need, listed } = er as { files?: unknown; need?: unknown; listed?: unknown };
    if (typeof files !== 'number' || typeof need !== 'number' || typeof listed !== 'number')
      return new MemoryLimitError(this.message('listing the guest roots', undefined, undefined, (er as Error).message));
    return new MemoryLimitError(this.message('listing the guest roots', files, this.base + need, `after ${listed.toLocaleString('en-US')} entries listed`));
  }

  private fail(what: string, files: number, need: number, when: string): never {
    throw new MemoryLimitError(this.message(what, files, need, when));
  }

  private message(what: string, files: number | undefined, need: number | undefined, when: string): string {
    const l = this.limit!;
    const count = files === undefined ? '' : ` for ${files.toLocaleString('en-US')} files`;
    const needs = need === undefined ? '' : ` would need about ${mib(need)}`;
    const more = l.fromOption ? 'give a larger --max-memory' : "raise the cgroup's limit (MemoryMax= of the unit)";
    return (
      `memory limit: ${what}${count}${needs} (${when}), more than the limit of ${mib(l.bytes)} from ${l.source}; ` +
      `stopped before changing anything. To go on, ${more}, run over fewer roots at a time, ` +
      `or exclude the guest that holds too many files (vunify needs about ${FILE_BYTES} bytes per file, see README "Memory")`
    );
  }
}
