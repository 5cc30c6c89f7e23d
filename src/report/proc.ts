/*
 * Reading running processes from /proc, and nothing else: no ptrace, no
 * signals, no file of a guest opened by a path the guest controls.
 *
 * Each process is pinned by an O_PATH descriptor on its /proc/PID directory,
 * and every later read goes through /proc/self/fd/N/...: if the process
 * exits and its PID is reused while we read, the old directory answers
 * ENOENT or ESRCH instead of describing the new process. Callers treat
 * those two codes as "gone" and skip the process silently.
 *
 * A mapped file is identified through /proc/PID/map_files/START-END, a
 * magic link to the very file the mapping holds (needs CAP_SYS_ADMIN): its
 * fstat gives the real device, inode and link count (0 once unlinked), and
 * it can be reopened for reading even after the file was deleted.
 */
import fs from 'node:fs';
import { errorCode } from '../core/errors.js';
import { O, sys } from '../os/sys.js';
import { FileType, type Stat } from '../core/stat.js';

/** Codes that mean the process (or the mapping) went away while we read. */
export const isGone = (er: unknown): boolean => ['ENOENT', 'ESRCH'].includes(errorCode(er) ?? '');

/** One file-backed mapping, as /proc/PID/smaps describes it. Sizes in bytes. */
export interface Vma {
  /** Start and end addresses in hex without padding: the mapping's name in map_files. */
  range: string;
  start: bigint;
  end: bigint;
  /** File offset of the first page. */
  offset: bigint;
  perms: string;
  /** "major:minor" (hex) and inode number, as printed: a key within one read. */
  file: string;
  /** The path as the kernel prints it from our root; guest-chosen bytes, only for lookups confined to the guest. */
  path: Buffer;
  deleted: boolean;
  rss: number;
  pss: number;
  anonymous: number;
}

export const listPids = (): number[] =>
  fs.readdirSync('/proc').filter((n) => /^[1-9]\d*$/.test(n)).map(Number).sort((a, b) => a - b);

/** Pin a process: an O_PATH descriptor on /proc/PID. */
export const openProc = (pid: number): number => sys.open(`/proc/${pid}`, O.PATH | O.DIRECTORY | O.CLOEXEC);

export const procPath = (procFd: number, rel: string): string => `/proc/self/fd/${procFd}/${rel}`;

/** Every /proc file is opened through the seam (sys.open), where tests make processes vanish or refuse. */
const openRead = (path: string): number => sys.open(path, O.RDONLY | O.CLOEXEC);

/** fstat through an O_PATH open (symlinks, magic links included, are followed). */
export function statPath(path: string): Stat {
  const fd = sys.open(path, O.PATH | O.CLOEXEC);
  try {
    return sys.fstat(fd);
  } finally {
    sys.close(fd);
  }
}

/**
 * The process's root directory, then its parent, grandparent, ... up to
 * `depth` levels or our own root: a process chrooted below a guest root is
 * that guest's. "..", taken after the magic link, walks the host's tree.
 */
export function rootChain(procFd: number, depth: number, hostRoot: Stat): Stat[] {
  const chain: Stat[] = [];
  let rel = 'root';
  for (let i = 0; i <= depth; i++, rel += '/..') {
    const st = statPath(procPath(procFd, rel));
    const prev = chain[chain.length - 1];
    if (prev && prev.dev === st.dev && prev.ino === st.ino) break;
    chain.push(st);
    if (st.dev === hostRoot.dev && st.ino === hostRoot.ino) break;
  }
  return chain;
}

/** Read a whole /proc file, at most `limit` bytes (a guest controls how large some can grow). */
export function readProcFile(procFd: number, name: string, limit = 1 << 20): Buffer {
  const fd = openRead(procPath(procFd, name));
  try {
    const parts: Buffer[] = [];
    let total = 0;
    for (;;) {
      const buf = Buffer.allocUnsafe(Math.min(1 << 16, limit - total));
      if (buf.length === 0) break;
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      parts.push(buf.subarray(0, n));
      total += n;
    }
    return Buffer.concat(parts);
  } finally {
    sys.close(fd);
  }
}

const HEADER = /^([0-9a-f]+)-([0-9a-f]+) (\S+) ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) (\d+) *(.*)$/;
const FIELD = /^(\w+): +(\d+) kB$/;
const DELETED = ' (deleted)';

/**
 * The file-backed mappings of /proc/PID/smaps (inode ≠ 0), read in pieces
 * and parsed line by line, so a process with tens of thousands of mappings
 * costs time, not memory. The path is decoded byte for byte (latin1); the
 * kernel escapes only "\n" in it, as \012.
 */
export function readSmaps(procFd: number): Vma[] {
  const fd = openRead(procPath(procFd, 'smaps'));
  const vmas: Vma[] = [];
  let cur: Vma | undefined;
  const line = (l: string) => {
    const h = HEADER.exec(l);
    if (h) {
      cur = undefined;
      if (h[6] === '0') return; // anonymous, heap, stack, vdso
      let name = h[7]!;
      const deleted = name.endsWith(DELETED);
      if (deleted) name = name.slice(0, -DELETED.length);
      const start = BigInt('0x' + h[1]), end = BigInt('0x' + h[2]);
      cur = {
        // maps pads addresses to 8 digits, map_files names do not: a non-PIE binary at 0x400000 is "400000-...".
        range: `${start.toString(16)}-${end.toString(16)}`,
        start,
        end,
        offset: BigInt('0x' + h[4]),
        perms: h[3]!,
        file: `${h[5]}:${h[6]}`,
        path: Buffer.from(name.replaceAll('\\012', '\n'), 'latin1'),
        deleted,
        rss: 0,
        pss: 0,
        anonymous: 0,
      };
      vmas.push(cur);
      return;
    }
    const f = cur && FIELD.exec(l);
    if (!f) return;
    const bytes = Number(f[2]) * 1024;
    if (f[1] === 'Rss') cur!.rss = bytes;
    else if (f[1] === 'Pss') cur!.pss = bytes;
    else if (f[1] === 'Anonymous') cur!.anonymous = bytes;
  };
  try {
    const buf = Buffer.allocUnsafe(1 << 16);
    let rest = '';
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      const lines = (rest + buf.toString('latin1', 0, n)).split('\n');
      rest = lines.pop()!;
      lines.forEach(line);
    }
    if (rest) line(rest);
  } finally {
    sys.close(fd);
  }
  return vmas;
}

/** "Key:   123 kB" lines of smaps_rollup or status, in bytes. */
export function kbFields(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const l of text.split('\n')) {
    const m = /^(\w+):\s+(\d+) kB$/.exec(l);
    if (m) out.set(m[1]!, Number(m[2]) * 1024);
  }
  return out;
}

/** The command line, arguments joined by spaces (NULs in /proc/PID/cmdline). */
export function readCmdline(procFd: number): Buffer {
  const raw = readProcFile(procFd, 'cmdline', 4096);
  const parts = raw.toString('latin1').split('\0');
  if (parts[parts.length - 1] === '') parts.pop();
  return Buffer.from(parts.join(' '), 'latin1');
}

/** Open the file a mapping holds (O_PATH); the caller closes it. */
export function openMapping(procFd: number, vma: Vma): number {
  return sys.open(procPath(procFd, `map_files/${vma.range}`), O.PATH | O.CLOEXEC);
}

/**
 * Reopen an O_PATH descriptor of a mapped regular file for reading (same
 * inode, no lookup by name; O_NONBLOCK and O_NOATIME as the hash stage).
 */
export function reopenForReading(pathFd: number): number {
  const st = sys.fstat(pathFd);
  if (st.type !== FileType.Regular) throw Object.assign(new Error('not a regular file'), { code: 'EINVAL' });
  const flags = O.RDONLY | O.NONBLOCK | O.CLOEXEC;
  try {
    return sys.open(`/proc/self/fd/${pathFd}`, flags | O.NOATIME);
  } catch (er) {
    if (errorCode(er) !== 'EPERM') throw er;
    return sys.open(`/proc/self/fd/${pathFd}`, flags);
  }
}

const PRESENT = 1n << 63n;
const FILE_PAGE = 1n << 61n;

/**
 * Which pages of the mapped file this mapping has in memory, from
 * /proc/PID/pagemap: file page indexes whose entry is present and a file
 * page (a private copy made by a write is anonymous memory, not the file's).
 * At most `filePages` pages of the file are looked at: a mapping past the
 * end of the file holds none of its pages.
 */
export function mappedFilePages(procFd: number, vma: Vma, pageSize: number, filePages: number): number[] {
  const page = BigInt(pageSize);
  const first = Number(vma.offset / page);
  const count = Math.max(0, Math.min(Number((vma.end - vma.start) / page), filePages - first));
  const out: number[] = [];
  if (!count) return out;
  const fd = openRead(procPath(procFd, 'pagemap'));
  try {
    const chunk = 1 << 13; // pages per read
    const buf = Buffer.allocUnsafe(chunk * 8);
    const base = Number(vma.start / page) * 8;
    for (let k = 0; k < count; k += chunk) {
      const want = Math.min(chunk, count - k) * 8;
      const n = fs.readSync(fd, buf, 0, want, base + k * 8);
      for (let j = 0; j + 8 <= n; j += 8) {
        const e = buf.readBigUInt64LE(j);
        if (e & PRESENT && e & FILE_PAGE) out.push(first + k + j / 8);
      }
      if (n < want) break;
    }
  } finally {
    sys.close(fd);
  }
  return out;
}
