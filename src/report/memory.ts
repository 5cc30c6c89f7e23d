/*
 * `vunify report --memory`: which running guest processes still map private
 * copies, what restarting them would reclaim, and how much of the duplicate
 * sets sits in the page cache more than once. Read-only, from /proc only
 * (proc.ts) and mincore (page-cache.ts).
 *
 * The kernel shares memory per inode: the page cache holds one copy of each
 * page of an inode, and every process mapping that inode maps those pages.
 * A process keeps the inode it mapped until it exits or re-executes, so
 * after a linking run a guest's running programs still map their old copies.
 *
 *   guest process: its root (/proc/PID/root, by dev/ino) is a guest root or
 *     lies below one;
 *   stale mapping: a mapping of a guest-filesystem inode that a restart
 *     would not map again:
 *       duplicate  the inode is still linked, but the dry run's plan replaces
 *                  it with a link to the set's canonical inode;
 *       replaced   it is no longer linked at its path (link count 0, or the
 *                  path names another inode), and identical content is still
 *                  in the guest (what a linking run leaves behind);
 *       deleted    as replaced, but its content is nowhere in the guest any
 *                  more (an upgrade): a restart maps other bytes, so nothing
 *                  is counted as reclaimed.
 *   target: the inode a restart would map instead (the canonical of the set,
 *     or the inode with identical content now at the path). A target and the
 *     stale inodes that resolve to it form a group.
 *
 * What a restart reclaims, page by page: for each page offset of a group,
 * k = the number of member inodes whose page at that offset some guest
 * process maps (/proc/PID/pagemap: present and a file page). After every
 * listed process restarts, they all map the target, so that offset takes
 * one page instead of k: k − 1 pages are freed. Those are shared among the
 * stale members present (each gets 1 when the target has the page, else
 * (k − 1)/k) and within a member equally among the processes mapping that
 * page. A process's reclaimableAfterRestartBytes is the sum of its shares;
 * guests and the total are sums of processes. The model assumes restarted
 * processes touch the same pages as before, and counts only pages mapped by
 * guest processes; a stale inode also mapped or held open by something else
 * stays in memory.
 */
import { shareKey } from '../pipeline/policy.js';
import { errorCode } from '../core/errors.js';
import { plan as makePlan, type Plan } from '../pipeline/plan.js';
import { O, sys } from '../os/sys.js';
import type { Inode, Root } from '../core/types.js';
import { measurePageCache, type PageCacheNow, type Residency } from './page-cache.js';
import * as proc from './proc.js';
import { printable, relPath } from '../core/paths.js';
import type { Stat } from '../core/stat.js';

export type StaleReason = 'duplicate' | 'replaced' | 'deleted';

export interface StaleFile {
  /** Path inside the guest, as the kernel printed it (escaped for printing). */
  path: string;
  reason: StaleReason;
  rssBytes: number;
  pssBytes: number;
}

export interface ProcessMemory {
  pid: number;
  guest: string;
  command: string;
  /** File-backed resident memory (status RssFile) and its proportional share (smaps_rollup Pss_File). */
  fileRssBytes: number;
  filePssBytes: number;
  /** The part of it in stale mappings (Rss and Pss of those mappings, less their anonymous pages). */
  staleRssBytes: number;
  stalePssBytes: number;
  reclaimableAfterRestartBytes: number;
  staleFiles: StaleFile[];
}

export interface GuestMemory {
  path: string;
  processes: number;
  processesToRestart: number;
  fileRssBytes: number;
  filePssBytes: number;
  staleRssBytes: number;
  stalePssBytes: number;
  reclaimableAfterRestartBytes: number;
  /** Page-cache bytes of this guest's duplicates resident beside another copy. */
  duplicateResidentBytes: number;
}

export interface MemoryReport {
  pageSize: number;
  totals: Omit<GuestMemory, 'path'> & { unreadable: number };
  guests: GuestMemory[];
  /** Processes mapping something stale, most reclaimable first. */
  restart: ProcessMemory[];
  /** Guest processes whose /proc entries could not be read. */
  unreadable: { pid: number; guest: string; reason: string }[];
  pageCache: PageCacheNow;
}

export interface MemoryInput {
  roots: readonly Root[];
  inodes: readonly Inode[];
  ignoreMtime: boolean;
  /** The secret the inodes were hashed with (state/hash-key.ts): mapped files are hashed alike to be matched with them. */
  secret: Buffer;
  /** Page-cache residency taken before hashing (page-cache.ts takeResidency). */
  residency: Residency;
}

/** What we learned about one mapped inode, once for all processes. */
interface MappedFile {
  stat: Stat;
  /** Not on a guest filesystem, or neither stale nor a possible target. */
  ignore: boolean;
  reason?: StaleReason;
  /** `dev:ino` of the inode a restart would map, when known. */
  target?: string;
  /**
   * For a replaced copy, the guest path of the identical file a restart
   * maps: the kernel's name for the old inode may be vunify's temporary
   * name, which the swap moved it to before unlinking it.
   */
  name?: string;
}

interface GuestProcess {
  pid: number;
  guest: number;
  command: string;
  fileRss: number;
  filePss: number;
  stale: Map<string, StaleFile>;
}

const idOf = (s: { dev: number; ino: number }) => `${s.dev}:${s.ino}`;
/** Give up on deep chains: a process chrooted more than this far below a guest root is not matched. */
const ROOT_DEPTH = 64;

export async function readMemory(input: MemoryInput): Promise<MemoryReport> {
  const pageSize = sys.pageSize();
  const { roots, inodes } = input;
  const hashed = inodes.filter((i) => i.hash !== undefined);
  const thePlan = planOf(hashed, input.ignoreMtime);
  const byId = new Map(inodes.map((i) => [idOf(i), i]));
  const targetOf = new Map<Inode, Inode>();
  for (const set of thePlan.sets) for (const d of set.duplicates) targetOf.set(d, set.canonical);
  const byContent = new Map<string, Inode[]>();
  for (const i of hashed) {
    const k = `${i.stat.size}:${i.hash}`;
    (byContent.get(k) ?? byContent.set(k, []).get(k)!).push(i);
  }
  const hashedSizes = new Set(hashed.map((i) => i.stat.size));
  const guestDevs = new Set([...roots.map((r) => r.dev), ...inodes.map((i) => i.dev)]);
  const rootIds = new Map(roots.map((r) => [idOf(r), r.index]));
  const hostRoot = proc.statPath('/');

  const files = new Map<string, MappedFile>(); // by the kernel's "maj:min:ino"
  const pages = new Map<string, Map<number, Map<string, Set<number>>>>(); // target -> page -> member -> pids
  const processes: GuestProcess[] = [];
  const unreadable: MemoryReport['unreadable'] = [];

  /** The content hash of a mapped file (the hash stage's own, sys.hashFd), read through the mapping's own file; undefined if it cannot be read whole. */
  const hashMapped = (pathFd: number, size: number): bigint | undefined => {
    try {
      const rfd = proc.reopenForReading(pathFd);
      try {
        return sys.hashFd(rfd, size, input.secret);
      } finally {
        sys.close(rfd);
      }
    } catch {
      return undefined; // changed under us: its content cannot be vouched for
    }
  };

  /** Classify a mapped inode the first time any process shows it. */
  const classify = (procFd: number, vma: proc.Vma, root: Root): MappedFile => {
    const pathFd = proc.openMapping(procFd, vma);
    try {
      const stat = sys.fstat(pathFd);
      if (!guestDevs.has(stat.dev)) return { stat, ignore: true };
      const scanned = byId.get(idOf(stat));
      if (scanned) {
        const canonical = targetOf.get(scanned);
        return canonical ? { stat, ignore: false, reason: 'duplicate', target: idOf(canonical) } : { stat, ignore: false, target: idOf(scanned) };
      }
      const atPath = lookupInGuest(root, vma.path);
      if (stat.nlink > 0 && (!atPath || idOf(atPath) === idOf(stat))) return { stat, ignore: true };
      // Unlinked, or the path names another inode now: which identical copy would a restart map?
      let match: Inode | undefined;
      const hash = hashedSizes.has(stat.size) ? hashMapped(pathFd, stat.size) : undefined;
      if (hash !== undefined) {
        const same = byContent.get(`${stat.size}:${hash}`) ?? [];
        const here = atPath && byId.get(idOf(atPath));
        match = here && same.includes(here) ? here : same.find((i) => i.paths.some((p) => p.dir.root === root));
      }
      if (!match) return { stat, ignore: false, reason: 'deleted' };
      const inGuest = match.paths.find((q) => q.dir.root === root) ?? match.paths[0]!;
      return { stat, ignore: false, reason: 'replaced', target: idOf(targetOf.get(match) ?? match), name: '/' + printable(relPath(inGuest)) };
    } finally {
      sys.close(pathFd);
    }
  };

  for (const pid of proc.listPids()) {
    let procFd: number;
    try {
      procFd = proc.openProc(pid);
    } catch {
      continue; // exited since the listing
    }
    let guest: Root | undefined;
    try {
      guest = guestOf(proc.rootChain(procFd, ROOT_DEPTH, hostRoot), rootIds, roots);
      if (!guest) continue;
      const p = readProcess(pid, procFd, guest, files, classify, pages, pageSize);
      if (p) processes.push(p);
    } catch (er) {
      if (proc.isGone(er)) continue; // exited while we read: skipped silently
      if (guest) unreadable.push({ pid, guest: guest.path, reason: reasonOf(er) });
      // A process whose root cannot be read cannot be placed in a guest: not ours to report.
    } finally {
      sys.close(procFd);
    }
  }

  const reclaim = attribute(pages, files, pageSize);
  const perGuestCache = new Array<number>(roots.length).fill(0);
  const pageCache = measurePageCache(thePlan, input.residency, pageSize, perGuestCache);
  return assemble(roots, processes, reclaim, unreadable, pageCache, perGuestCache, pageSize);
}

function planOf(hashed: readonly Inode[], ignoreMtime: boolean): Plan {
  const classes = new Map<string, Inode[]>();
  for (const i of hashed) {
    const k = shareKey(i, { ignoreMtime }) ?? `locked\0${i.dev}:${i.ino}`;
    (classes.get(k) ?? classes.set(k, []).get(k)!).push(i);
  }
  return makePlan([...classes.values()].filter((c) => c.length > 1));
}

function guestOf(chain: readonly Stat[], rootIds: Map<string, number>, roots: readonly Root[]): Root | undefined {
  for (const st of chain) {
    const i = rootIds.get(idOf(st));
    if (i !== undefined) return roots[i];
  }
  return undefined;
}

/**
 * What the mapping's path names in the guest now, looked up confined
 * beneath the guest root (the path is the guest's to choose); undefined
 * when the path is not under the root or names nothing.
 */
function lookupInGuest(root: Root, path: Buffer): Stat | undefined {
  const prefix = Buffer.from(root.path.replace(/\/+$/, '') + '/');
  if (path.length <= prefix.length || !path.subarray(0, prefix.length).equals(prefix)) return undefined;
  try {
    const fd = sys.openBeneath(root.fd, path.subarray(prefix.length), O.PATH);
    try {
      return sys.fstat(fd);
    } finally {
      sys.close(fd);
    }
  } catch {
    return undefined;
  }
}

type Classify = (procFd: number, vma: proc.Vma, root: Root) => MappedFile;

function readProcess(
  pid: number,
  procFd: number,
  guest: Root,
  files: Map<string, MappedFile>,
  classify: Classify,
  pages: Map<string, Map<number, Map<string, Set<number>>>>,
  pageSize: number,
): GuestProcess {
  const command = printable(proc.readCmdline(procFd));
  const vmas = proc.readSmaps(procFd);
  const rollup = proc.kbFields(proc.readProcFile(procFd, 'smaps_rollup').toString('latin1'));
  const status = proc.kbFields(proc.readProcFile(procFd, 'status').toString('latin1'));
  const seen: [string, number, string][] = []; // target, page, member: merged only if the whole read succeeds
  const p: GuestProcess = { pid, guest: guest.index, command, fileRss: status.get('RssFile') ?? 0, filePss: rollup.get('Pss_File') ?? 0, stale: new Map() };
  const prefix = guest.path.replace(/\/+$/, '');
  for (const vma of vmas) {
    let f = files.get(vma.file);
    if (!f) {
      try {
        f = classify(procFd, vma, guest);
      } catch (er) {
        // The mapping went away between smaps and map_files (munmap, exec):
        // nothing of it to count. Anything else names the process.
        if (proc.isGone(er)) continue;
        throw er;
      }
      files.set(vma.file, f);
    }
    if (f.ignore) continue;
    if (f.reason) {
      const name = f.name ?? printable(vma.path.subarray(vma.path.subarray(0, prefix.length + 1).equals(Buffer.from(prefix + '/')) ? prefix.length : 0));
      const s = p.stale.get(vma.file) ?? { path: name, reason: f.reason, rssBytes: 0, pssBytes: 0 };
      s.rssBytes += Math.max(0, vma.rss - vma.anonymous);
      s.pssBytes += Math.max(0, vma.pss - vma.anonymous);
      p.stale.set(vma.file, s);
    }
    // Nothing resident, nothing to look up: a guest's huge sparse mapping costs no pagemap read.
    if (f.target === undefined || vma.rss === 0) continue;
    const filePages = Math.ceil(f.stat.size / pageSize);
    const member = idOf(f.stat);
    for (const page of proc.mappedFilePages(procFd, vma, pageSize, filePages)) seen.push([f.target, page, member]);
  }
  for (const [target, page, member] of seen) {
    const group = pages.get(target) ?? pages.set(target, new Map()).get(target)!;
    const at = group.get(page) ?? group.set(page, new Map()).get(page)!;
    (at.get(member) ?? at.set(member, new Set()).get(member)!).add(pid);
  }
  return p;
}

/** Each process's share of the pages a restart frees (see the header), in bytes. */
function attribute(pages: Map<string, Map<number, Map<string, Set<number>>>>, files: Map<string, MappedFile>, pageSize: number): Map<number, number> {
  const stale = new Set([...files.values()].filter((f) => f.reason && f.target).map((f) => idOf(f.stat)));
  const out = new Map<number, number>();
  for (const [target, group] of pages) {
    for (const members of group.values()) {
      const k = members.size;
      if (k < 2) continue;
      const each = members.has(target) ? 1 : (k - 1) / k;
      for (const [member, pids] of members) {
        if (member === target || !stale.has(member)) continue;
        for (const pid of pids) out.set(pid, (out.get(pid) ?? 0) + (each * pageSize) / pids.size);
      }
    }
  }
  return out;
}

function assemble(
  roots: readonly Root[],
  processes: GuestProcess[],
  reclaim: Map<number, number>,
  unreadable: MemoryReport['unreadable'],
  pageCache: PageCacheNow,
  perGuestCache: number[],
  pageSize: number,
): MemoryReport {
  const guests: GuestMemory[] = roots.map((r) => ({
    path: r.path,
    processes: 0,
    processesToRestart: 0,
    fileRssBytes: 0,
    filePssBytes: 0,
    staleRssBytes: 0,
    stalePssBytes: 0,
    reclaimableAfterRestartBytes: 0,
    duplicateResidentBytes: perGuestCache[r.index] ?? 0,
  }));
  const restart: ProcessMemory[] = [];
  for (const p of processes) {
    const g = guests[p.guest]!;
    const staleFiles = [...p.stale.values()];
    const m: ProcessMemory = {
      pid: p.pid,
      guest: g.path,
      command: p.command,
      fileRssBytes: p.fileRss,
      filePssBytes: p.filePss,
      staleRssBytes: staleFiles.reduce((t, s) => t + s.rssBytes, 0),
      stalePssBytes: staleFiles.reduce((t, s) => t + s.pssBytes, 0),
      reclaimableAfterRestartBytes: Math.round(reclaim.get(p.pid) ?? 0),
      staleFiles: staleFiles.sort((a, b) => b.pssBytes - a.pssBytes || (a.path < b.path ? -1 : 1)),
    };
    g.processes++;
    g.fileRssBytes += m.fileRssBytes;
    g.filePssBytes += m.filePssBytes;
    g.staleRssBytes += m.staleRssBytes;
    g.stalePssBytes += m.stalePssBytes;
    g.reclaimableAfterRestartBytes += m.reclaimableAfterRestartBytes;
    if (staleFiles.length) {
      g.processesToRestart++;
      restart.push(m);
    }
  }
  restart.sort((a, b) => b.reclaimableAfterRestartBytes - a.reclaimableAfterRestartBytes || b.stalePssBytes - a.stalePssBytes || a.pid - b.pid);
  const sum = (k: keyof Omit<GuestMemory, 'path'>) => guests.reduce((t, g) => t + g[k], 0);
  return {
    pageSize,
    totals: {
      processes: sum('processes'),
      processesToRestart: sum('processesToRestart'),
      fileRssBytes: sum('fileRssBytes'),
      filePssBytes: sum('filePssBytes'),
      staleRssBytes: sum('staleRssBytes'),
      stalePssBytes: sum('stalePssBytes'),
      reclaimableAfterRestartBytes: sum('reclaimableAfterRestartBytes'),
      duplicateResidentBytes: sum('duplicateResidentBytes'),
      unreadable: unreadable.length,
    },
    guests,
    restart,
    unreadable,
    pageCache,
  };
}

function reasonOf(er: unknown): string {
  const code = errorCode(er);
  const msg = er instanceof Error ? er.message : String(er);
  return code ? `${code}: ${msg}` : msg;
}
