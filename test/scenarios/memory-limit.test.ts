/*
 * The memory limit, in whole runs of the CLI under real limits: a child
 * process moved into a cgroup of its own with a memory limit (v2
 * memory.max, or v1 memory.limit_in_bytes on a host still on v1), and
 * --max-memory. A tree too big for the limit must end in exit 2 with the
 * message, not in an OOM kill (the cgroup's oom_kill counter stays 0), and
 * leave every file as it was (find -printf of inode, links, times, owner
 * and mode, and sha256sum of every file, before and after); a roomy limit
 * runs as usual; one directory of 1,000,000 empty files fits a modest limit.
 *
 * The limits are tight because a file costs little (os/memory-limit.ts
 * FILE_BYTES, ~250 bytes with the record tables): 300,000 files need
 * ~55 MiB for Node plus ~75 MiB, more than --max-memory 80M or a 128 MiB
 * cgroup leaves (83 MiB after the margin), so both stop while listing.
 *
 * Guests live on tmpfs mounts made here: creating hundreds of thousands of
 * files on this machine's disk takes minutes.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const BIN = path.resolve('dist/bin.js');
const M = 2 ** 20;

/** A memory cgroup under this process's own, or undefined when the host offers none we can make. */
interface Cgroup {
  dir: string;
  procs: string;
  limit(bytes: number): void;
  /** OOM kills inside it so far. */
  oomKills(): number;
  remove(): void;
}

function makeCgroup(name: string): Cgroup | undefined {
  const self = readFileSync('/proc/self/cgroup', 'utf8').split('\n');
  const v2 = self.find((l) => l.startsWith('0::'))?.slice(3);
  const v2ctl = v2 !== undefined ? `/sys/fs/cgroup${v2 === '/' ? '' : v2}/cgroup.subtree_control` : undefined;
  if (v2ctl && existsSync(v2ctl) && readFileSync(v2ctl, 'utf8').includes('memory')) {
    const dir = path.join(path.dirname(v2ctl), name);
    mkdirSync(dir);
    return cgroupAt(dir, 'memory.max', 'memory.events');
  }
  const v1 = self.map((l) => /^\d+:([^:]*):(\/.*)$/.exec(l)).find((m) => m && m[1]!.split(',').includes('memory'));
  if (v1 && existsSync('/sys/fs/cgroup/memory')) {
    const dir = path.join('/sys/fs/cgroup/memory', v1[2]!, name);
    mkdirSync(dir);
    return cgroupAt(dir, 'memory.limit_in_bytes', 'memory.oom_control');
  }
  return undefined;
}

function cgroupAt(dir: string, limitFile: string, eventsFile: string): Cgroup {
  return {
    dir,
    procs: path.join(dir, 'cgroup.procs'),
    limit: (bytes) => writeFileSync(path.join(dir, limitFile), String(bytes)),
    oomKills: () => Number(/oom_kill (\d+)/.exec(readFileSync(path.join(dir, eventsFile), 'utf8'))?.[1] ?? NaN),
    remove: () => rmdirSync(dir),
  };
}

/** Run the CLI; with a cgroup, the shell moves itself into it and then becomes node, so nothing runs outside it. */
function vunify(args: string[], cg?: Cgroup) {
  const argv = cg
    ? ['sh', ['-c', 'echo $$ > "$1" || exit 99; shift; exec "$@"', 'sh', cg.procs, process.execPath, BIN, ...args]]
    : [process.execPath, [BIN, ...args]];
  const r = spawnSync(argv[0] as string, argv[1] as string[], { encoding: 'utf8', maxBuffer: 64 * M });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** Everything a run could change about the files, from tools independent of vunify. */
function fingerprint(root: string): string {
  const meta = execFileSync('sh', ['-c', 'find "$1" -printf "%p %y %i %n %s %T@ %C@ %m %U %G\\n" | sort', 'sh', root], { maxBuffer: 1024 * M });
  const sums = execFileSync('sh', ['-c', 'cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum', 'sh', root], { maxBuffer: 1024 * M });
  return meta.toString() + sums.toString();
}

/** `guests` guests of `perGuest` small files, 1,000 per directory; contents repeat, so a run would link most. */
function makeGuests(base: string, guests: number, perGuest: number): string[] {
  execFileSync('python3', ['-c', `
import os, sys
base, guests, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for g in range(guests):
    for i in range(per):
        d = os.path.join(base, f"g{g}", "usr", f"d{i // 1000}")
        if i % 1000 == 0: os.makedirs(d, exist_ok=True)
        p = os.path.join(d, f"f{i}")
        with open(p, "w") as f: f.write(f"content {i % 5000}\\n")
        os.utime(p, (1000000000, 1000000000))  # one mtime: the default policy links only equal mtimes
`, base, String(guests), String(perGuest)]);
  return Array.from({ length: guests }, (_, g) => path.join(base, `g${g}`));
}

const work = mkdtempSync('/var/tmp/vunify-memlimit-');
const mounts: string[] = [];
const cgroups: Cgroup[] = [];
function tmpfs(name: string, size: string): string {
  const dir = path.join(work, name);
  mkdirSync(dir);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},nr_inodes=0,mode=0755`, 'tmpfs', dir]);
  mounts.push(dir);
  return dir;
}
function stateDir(name: string): string {
  const dir = path.join(work, name);
  mkdirSync(dir, { mode: 0o700 });
  return dir;
}
function cgroup(name: string): Cgroup {
  const cg = makeCgroup(`vunify-test-${process.pid}-${name}`);
  if (!cg) throw new Error('no memory cgroup can be made here (neither cgroup v2 with the memory controller nor v1)');
  cgroups.push(cg);
  return cg;
}

afterAll(() => {
  for (const cg of cgroups) {
    try {
      cg.remove();
    } catch {
      // still busy: left for the host to clean up, named after this pid
    }
  }
  for (const m of mounts.reverse()) spawnSync('umount', [m]);
  rmSync(work, { recursive: true, force: true });
});

describe('a tree too big for the memory limit', () => {
  let guests: string[];
  let before: string;
  let base: string;
  beforeAll(() => {
    base = tmpfs('big', '4g');
    guests = makeGuests(base, 2, 150_000); // 300,000 small files
    before = fingerprint(base);
  });

  it('--max-memory smaller than needed: exit 2 with the message, nothing changed, no journal left', () => {
    const sd = stateDir('state-option');
    const r = vunify(['--state-dir', sd, '--max-memory', '80M', ...guests]);
    expect(r.stderr).toMatch(/memory limit: listing the guest roots for [\d,]+ files would need about [\d,]+ MiB/);
    expect(r.stderr).toContain('from --max-memory 80M');
    expect(r.stderr).toMatch(/stopped before changing anything/);
    expect(r.stderr).toMatch(/larger --max-memory, run over fewer roots at a time, or exclude the guest/);
    expect([r.status, r.signal]).toEqual([2, null]);
    expect(r.stdout).toBe('');
    expect(fingerprint(base)).toBe(before);
    expect(readdirSync(sd).filter((f) => f.startsWith('journal') || f.includes('cache'))).toEqual([]);
  });

  it('under a cgroup limit: exit 2 naming the cgroup, not OOM-killed, nothing changed', () => {
    const cg = cgroup('tight');
    cg.limit(128 * M);
    const sd = stateDir('state-cgroup');
    const r = vunify(['--state-dir', sd, ...guests], cg);
    expect(r.stderr).toMatch(/memory limit: listing the guest roots for [\d,]+ files/);
    expect(r.stderr).toContain(cg.dir);
    expect(r.stderr).toMatch(/raise the cgroup's limit/);
    expect([r.status, r.signal]).toEqual([2, null]);
    expect(cg.oomKills()).toBe(0);
    expect(fingerprint(base)).toBe(before);
  });

  it('--dry-run under the same cgroup limit stops the same way (the listing charges every run what the costliest, the one that fills the cache, needs)', () => {
    const cg = cgroup('tight-dry');
    cg.limit(128 * M);
    const r = vunify(['-n', '--no-cache', '--state-dir', stateDir('state-dry'), ...guests], cg);
    expect([r.status, r.signal]).toEqual([2, null]);
    expect(r.stderr).toMatch(/memory limit/);
    expect(cg.oomKills()).toBe(0);
    expect(fingerprint(base)).toBe(before);
  });
});

describe('a roomy limit', () => {
  it('runs as usual under a cgroup limit and links what it should', () => {
    const base = tmpfs('small', '256m');
    const guests = makeGuests(base, 2, 3_000);
    const cg = cgroup('roomy');
    cg.limit(1024 * M);
    const r = vunify(['--state-dir', stateDir('state-roomy'), '--json', ...guests], cg);
    expect(r.stderr).toBe('');
    expect([r.status, r.signal]).toEqual([0, null]);
    expect(cg.oomKills()).toBe(0);
    // Each of the 3,000 contents is in both guests: 3,000 links, every file then has 2 names.
    const linked = execFileSync('sh', ['-c', 'find "$1" -type f -links +1 | wc -l', 'sh', base]).toString().trim();
    expect(Number(linked)).toBe(6_000);
    expect((JSON.parse(r.stdout) as { summary: { linksMade: number } }).summary.linksMade).toBe(3_000);
  });
});

describe('a linking run the listing lets through', () => {
  // 4 guests of 10,000 small files, 5,000 contents each in 8 places: small
  // enough that the listing passes, and a link stage whose fixed costs (the
  // linker's buffers, its threads' comparison buffers) are a large part of
  // its peak; before they were counted (os/memory-limit.ts LINK_FIXED) the
  // plan check let it through under --max-memory 96M and it peaked at
  // ~106 MiB.
  it('either stops with exit 2 before changing anything or stays under --max-memory (peak RSS by GNU time)', () => {
    const base = tmpfs('linker', '512m');
    const guests = makeGuests(base, 4, 10_000);
    const before = fingerprint(base);
    const rss = path.join(work, 'linker.rss');
    const r = spawnSync('/usr/bin/time', ['-f', '%M', '-o', rss, process.execPath, BIN, '--state-dir', stateDir('state-linker'), '--max-memory', '96M', ...guests], { encoding: 'utf8' });
    const peakKiB = Number(readFileSync(rss, 'utf8').trim().split('\n').pop());
    if (r.status === 2) {
      expect(r.stderr).toMatch(/memory limit: the link plan for [\d,]+ files would need about [\d,]+ MiB/);
      expect(fingerprint(base)).toBe(before);
    } else {
      expect([r.status, r.stderr]).toEqual([0, '']);
      expect(peakKiB * 1024).toBeLessThanOrEqual(96 * M);
    }
  });
});

describe('a hostile guest: one directory of 1,000,000 empty files', () => {
  it('is listed within a modest cgroup limit (empty files are never candidates; the walk holds nothing per entry it does not keep)', () => {
    const base = tmpfs('million', '1g');
    const dir = path.join(base, 'g', 'var-not', 'spool');
    mkdirSync(dir, { recursive: true });
    execFileSync('python3', ['-c', `
import os, sys
d = sys.argv[1]
for i in range(1000000): os.close(os.open(os.path.join(d, f"f{i}"), os.O_CREAT | os.O_WRONLY, 0o644))
`, dir]);
    const cg = cgroup('million');
    cg.limit(128 * M);
    const r = vunify(['-n', '--no-cache', '--json', '--state-dir', stateDir('state-million'), path.join(base, 'g')], cg);
    expect(r.stderr).toBe('');
    expect([r.status, r.signal]).toEqual([0, null]);
    expect(cg.oomKills()).toBe(0);
    expect((JSON.parse(r.stdout) as { summary: { filesScanned: number } }).summary.filesScanned).toBe(0);
  });
});
