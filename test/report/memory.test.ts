// `vunify report --memory` against real processes: copies of /usr/bin/perl
// and its libraries in three guest roots, started with chroot, unified with
// the real CLI, then restarted. What the report says is checked against
// /proc read here (smaps_rollup's Pss_File) and against fincore(1); every
// process started here is killed by its pid in afterAll.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { scanCapacity } from '../../src/commands/report.js';
import { readMemory, type MemoryReport } from '../../src/report/memory.js';
import { takeResidency, type Residency } from '../../src/report/page-cache.js';
import * as proc from '../../src/report/proc.js';
import { sys } from '../../src/os/sys.js';
import { runReport } from '../helpers/report.js';
import { rmTree, tempDir, testStateDir } from '../helpers/tree.js';

const PERL = '/usr/bin/perl';
const SCRIPT = '$| = 1; print "ready\\n"; sleep 600;\n';
let dir: string;
const G = (g: string) => path.join(dir, g);
const guests = () => ['g1', 'g2', 'g3'].map(G);
const started: ChildProcess[] = [];

/** perl, the interpreter and the libraries ldd names, copied with their metadata. */
function perlFiles(): string[] {
  const ldd = execFileSync('ldd', [PERL], { encoding: 'utf8' });
  return [PERL, ...[...ldd.matchAll(/(\/\S+) \(0x/g)].map((m) => m[1]!)];
}

function makeGuest(root: string): void {
  for (const f of perlFiles()) {
    fs.mkdirSync(path.join(root, path.dirname(f)), { recursive: true });
    execFileSync('cp', ['-pL', f, path.join(root, f)]);
  }
  fs.writeFileSync(path.join(root, 'sleep.pl'), SCRIPT);
}

/** Start perl chrooted into `root` (or on the host) and wait until it has loaded and printed "ready". */
function start(root?: string): Promise<ChildProcess> {
  const child = root
    ? spawn('/usr/sbin/chroot', [root, PERL, '/sleep.pl'], { env: { LC_ALL: 'C' }, stdio: ['ignore', 'pipe', 'inherit'] })
    : spawn(PERL, ['-e', SCRIPT], { env: { LC_ALL: 'C' }, stdio: ['ignore', 'pipe', 'inherit'] });
  started.push(child);
  return new Promise((resolve, reject) => {
    child.stdout!.once('data', () => resolve(child));
    child.once('exit', (code) => reject(new Error(`perl in ${root ?? 'the host'} exited (${code})`)));
    child.once('error', reject);
  });
}

function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    process.kill(child.pid!, 'SIGKILL');
  });
}

/** Σ Pss_File of these processes, read from /proc here (independent of vunify). */
function pssFile(children: ChildProcess[]): number {
  return children.reduce((t, c) => {
    const m = /^Pss_File:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${c.pid}/smaps_rollup`, 'utf8'));
    return t + Number(m![1]) * 1024;
  }, 0);
}

function memoryJson(...roots: string[]): { code: number | null; memory: MemoryReport; stderr: string } {
  const r = runReport(['--memory', '--json', ...roots]);
  return { code: r.code, memory: r.stdout ? JSON.parse(r.stdout).memory : undefined, stderr: r.stderr };
}
const listed = (m: MemoryReport) => m.restart.map((p) => p.pid).sort((a, b) => a - b);
const pids = (cs: ChildProcess[]) => cs.map((c) => c.pid!).sort((a, b) => a - b);

afterAll(async () => {
  await Promise.all(started.map(stop));
  if (dir) rmTree(dir);
});

describe('report --memory with running guest processes', () => {
  const inGuest: Record<string, ChildProcess[]> = { g1: [], g2: [], g3: [] };
  let nested: ChildProcess;
  let outsiders: ChildProcess[];

  beforeAll(async () => {
    dir = tempDir('vunify-memory-');
    for (const g of guests()) makeGuest(g);
    makeGuest(path.join(G('g3'), 'srv/inner')); // a chroot below a guest root belongs to that guest
    makeGuest(G('outside')); // same files, not a root
    for (const g of ['g1', 'g2', 'g3']) for (let i = 0; i < 2; i++) inGuest[g]!.push(await start(G(g)));
    nested = await start(path.join(G('g3'), 'srv/inner'));
    outsiders = [await start(G('outside')), await start()];
  });

  const all = () => [...inGuest.g1!, ...inGuest.g2!, ...inGuest.g3!, nested];
  const stale = () => [...inGuest.g2!, ...inGuest.g3!, nested];

  it('lists the processes mapping stale copies before a restart, not after, and predicts the drop in Σ Pss_File', async () => {
    // Before unifying: g1 holds the canonical copies (first root), so its processes map nothing stale.
    const pre = memoryJson(...guests());
    expect([pre.code, pre.stderr]).toEqual([0, '']);
    expect(listed(pre.memory)).toEqual(pids(stale()));
    expect(pre.memory.restart.flatMap((p) => p.staleFiles.map((f) => f.reason))).toSatisfy((r: string[]) => r.every((x) => x === 'duplicate'));
    expect(pre.memory.guests.map((g) => g.processes)).toEqual([2, 2, 3]);
    const restartMe = pre.memory.restart.find((p) => p.pid === inGuest.g2![0]!.pid)!;
    expect(restartMe).toMatchObject({ guest: G('g2'), command: `${PERL} /sleep.pl` });
    expect(restartMe.staleFiles.map((f) => f.path)).toContain('/lib/x86_64-linux-gnu/libc.so.6');

    const unify = spawnSync(process.execPath, [path.join(import.meta.dirname, '../../dist/bin.js'), '--state-dir', G('state'), ...guests()], { encoding: 'utf8' });
    expect([unify.status, unify.stderr]).toEqual([0, '']);
    for (const g of guests()) expect(fs.statSync(path.join(g, 'lib/x86_64-linux-gnu/libc.so.6')).ino).toBe(fs.statSync(path.join(G('g1'), 'lib/x86_64-linux-gnu/libc.so.6')).ino);

    // After unifying, before restarting: the same processes, now mapping unlinked copies.
    const after = memoryJson(...guests());
    expect(after.code).toBe(0);
    expect(listed(after.memory)).toEqual(pids(stale()));
    const reasons = new Set(after.memory.restart.flatMap((p) => p.staleFiles.map((f) => f.reason)));
    expect([...reasons]).toEqual(['replaced']);
    const libc = after.memory.restart.find((p) => p.pid === inGuest.g3![0]!.pid)!.staleFiles.find((f) => f.path.endsWith('libc.so.6'));
    expect(libc?.path).toBe('/lib/x86_64-linux-gnu/libc.so.6'); // the path a restart maps, not the swap's temporary name
    const predicted = after.memory.totals.reclaimableAfterRestartBytes;
    expect(after.memory.restart.reduce((t, p) => t + p.reclaimableAfterRestartBytes, 0)).toBe(predicted);

    const before = pssFile(all());
    for (const g of ['g2', 'g3']) {
      for (const [i, c] of inGuest[g]!.entries()) {
        await stop(c);
        inGuest[g]![i] = await start(G(g));
      }
    }
    await stop(nested);
    nested = await start(path.join(G('g3'), 'srv/inner'));
    const drop = before - pssFile(all());
    expect(drop).toBeGreaterThan(0);
    expect(predicted).toBeGreaterThanOrEqual(drop / 2);
    expect(predicted).toBeLessThanOrEqual(drop * 2);
    expect(pre.memory.totals.reclaimableAfterRestartBytes).toBeGreaterThanOrEqual(drop / 2);
    expect(pre.memory.totals.reclaimableAfterRestartBytes).toBeLessThanOrEqual(drop * 2);

    const restarted = memoryJson(...guests());
    expect(restarted.code).toBe(0);
    expect(restarted.memory.restart).toEqual([]);
    expect(restarted.memory.totals).toMatchObject({ processes: 7, processesToRestart: 0, staleRssBytes: 0, reclaimableAfterRestartBytes: 0 });
  });

  it('never lists a process whose root is outside the guest roots', () => {
    const r = memoryJson(...guests());
    const seen = new Set(r.memory.restart.map((p) => p.pid));
    for (const c of outsiders) expect(seen.has(c.pid!)).toBe(false);
    expect(r.memory.totals.processes).toBe(7);
    // The outside tree as the only root: its process is the only one counted.
    const o = memoryJson(G('outside'));
    expect(o.memory.totals.processes).toBe(1);
  });

  it('prints the memory section in text and HTML', () => {
    const text = runReport(['--memory', ...guests()]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^Memory \(running guest processes/m);
    expect(text.stdout).toMatch(/^7 guest processes map /m);
    const html = path.join(dir, 'r.html');
    expect(runReport(['-q', '--memory', '--html', html, ...guests()]).code).toBe(0);
    expect(fs.readFileSync(html, 'utf8')).toMatch(/<h2 id="memory">[^]*<table id="memory-guests">/);
  });

  it('--memory with --csv or --merge is a usage error', () => {
    for (const extra of [['--csv'], ['--merge']]) {
      const r = runReport(['--memory', ...extra, ...guests()]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/--memory reads this host's processes/);
    }
  });

  /** The report in this process, so the seam (sys) can be made to misbehave. */
  async function inProcess(): Promise<MemoryReport> {
    let residency: Residency = new Map();
    let memory: MemoryReport | undefined;
    await scanCapacity({
      roots: guests(), candidates: [], ignoreMtime: false, minSize: 1, maxSize: Number.MAX_SAFE_INTEGER, rules: [], noDefaultExcludes: true, top: 3, stateDir: testStateDir(),
      beforeHash: (inodes) => void (residency = takeResidency(inodes)),
      inspect: async (roots, inodes, key) => void (memory = await readMemory({ roots, inodes, ignoreMtime: false, secret: key.secret, residency })),
    });
    return memory!;
  }

  it('skips a process that exits while it is being read, and names one whose /proc cannot be read', async () => {
    const victim = inGuest.g2![0]!;
    const locked = inGuest.g2![1]!;
    const open = sys.open;
    const fds = new Map<number, number>();
    let killed = false;
    const spy = vi.spyOn(sys, 'open').mockImplementation((p, flags, mode) => {
      const s = String(p);
      const m = /^\/proc\/self\/fd\/(\d+)\/smaps$/.exec(s);
      const owner = m && fds.get(Number(m[1]));
      if (owner === victim.pid && !killed) {
        // Dies after its root was matched, before its mappings are read: a zombie (we are its parent, busy here).
        killed = true;
        process.kill(victim.pid!, 'SIGKILL');
        for (let i = 0; i < 1e6 && !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${victim.pid}/stat`, 'utf8')); i++);
      }
      if (owner === locked.pid) throw Object.assign(new Error('permission denied'), { code: 'EACCES', syscall: 'open' });
      const fd = open(p, flags, mode);
      const pin = /^\/proc\/(\d+)$/.exec(s); // descriptor numbers are reused: remember each one's latest process
      if (pin) fds.set(fd, Number(pin[1]));
      return fd;
    });
    try {
      const m = await inProcess();
      expect(killed).toBe(true);
      expect(m.restart.map((p) => p.pid)).not.toContain(victim.pid);
      expect(m.unreadable).toEqual([{ pid: locked.pid, guest: G('g2'), reason: expect.stringMatching(/^EACCES/) }]);
      expect(m.guests.map((g) => g.processes)).toEqual([2, 0, 3]);
    } finally {
      spy.mockRestore();
    }
  });
});

describe('reading /proc', () => {
  it('opens every file mapping through map_files, a non-PIE binary at 0x400000 included', async () => {
    // Debian's python3.11 is not position-independent: maps prints "00400000-...", map_files names it "400000-...".
    const child = spawn('/usr/bin/python3.11', ['-c', 'import time; print("ready", flush=True); time.sleep(600)'], { stdio: ['ignore', 'pipe', 'inherit'] });
    started.push(child);
    await new Promise((resolve) => child.stdout!.once('data', resolve));
    const fd = proc.openProc(child.pid!);
    try {
      const vmas = proc.readSmaps(fd);
      expect(vmas.some((v) => v.start === 0x400000n)).toBe(true);
      const maps = fs.readFileSync(`/proc/${child.pid}/maps`, 'latin1').split('\n').filter((l) => / \/\S/.test(l));
      expect(vmas.length).toBe(maps.length);
      for (const v of vmas) {
        const m = proc.openMapping(fd, v);
        try {
          expect(String(sys.fstat(m).ino)).toBe(v.file.split(':')[2]);
        } finally {
          sys.close(m);
        }
      }
    } finally {
      sys.close(fd);
    }
  });
});

describe('page cache now', () => {
  let pc: string;
  const H = (h: string) => path.join(pc, h);
  const MiB = 1 << 20;

  beforeAll(() => {
    pc = tempDir('vunify-pagecache-');
    const data = Buffer.alloc(MiB);
    for (let i = 0; i < data.length; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i);
    for (const h of ['h1', 'h2', 'h3']) {
      fs.mkdirSync(path.join(H(h), 'srv'), { recursive: true });
      for (const [name, size] of [['data.bin', MiB], ['other.bin', MiB / 4]] as const) {
        const f = path.join(H(h), 'srv', name);
        fs.writeFileSync(f, data.subarray(0, size));
        execFileSync('touch', ['-d', '@1700000000', f]);
      }
    }
  });
  afterAll(() => rmTree(pc));

  /** Drop a file's pages (POSIX_FADV_DONTNEED after fsync) or read it whole. */
  const evict = (f: string) => execFileSync('python3', ['-c', 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)', f]);
  const load = (f: string) => fs.readFileSync(f);
  const fincore = (f: string) => Number(execFileSync('fincore', ['--bytes', '--raw', '--noheadings', '--output', 'RES', f], { encoding: 'utf8' }).trim());

  it('counts the bytes of duplicate sets resident in more than one copy, charged to the duplicates\' guests', () => {
    const f = (h: string, n: string) => path.join(H(h), 'srv', n);
    load(f('h1', 'data.bin'));
    load(f('h2', 'data.bin'));
    evict(f('h3', 'data.bin'));
    for (const h of ['h1', 'h2', 'h3']) evict(f(h, 'other.bin'));
    // The state set up, as fincore sees it.
    expect(['h1', 'h2', 'h3'].map((h) => fincore(f(h, 'data.bin')))).toEqual([MiB, MiB, 0]);
    expect(['h1', 'h2', 'h3'].map((h) => fincore(f(h, 'other.bin')))).toEqual([0, 0, 0]);

    const r = runReport(['--memory', '--json', '--no-default-excludes', H('h1'), H('h2'), H('h3')]);
    expect(r.code).toBe(0);
    const m: MemoryReport = JSON.parse(r.stdout).memory;
    expect(m.pageCache).toEqual({ sets: 2, inodes: 6, bytes: 3 * (MiB + MiB / 4), residentBytes: 2 * MiB, duplicateResidentBytes: MiB, skippedInodes: 0 });
    expect(m.guests.map((g) => g.duplicateResidentBytes)).toEqual([0, MiB, 0]);
    // The report hashed all of them after taking residency: now they are all in the cache.
    expect(fincore(f('h3', 'data.bin'))).toBe(MiB);
  });
});
