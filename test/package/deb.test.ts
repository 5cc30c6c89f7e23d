// The Debian package, for real: built by packaging/build-deb.sh, checked by
// lintian, installed with apt-get into a clean Debian trixie root (debootstrap,
// cached in /var/tmp; nodejs comes from trixie's archive), run there, then
// removed and purged, with dpkg's own list of what it installed as the
// reference. Slow (a cold run builds the trixie root and downloads nodejs),
// so it runs only with VUNIFY_SLOW=1 or in CI (CI set); needs root,
// debootstrap, lintian, dpkg-dev and network to the Debian archive.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmTree, tempDir, writeFile } from '../helpers/tree.js';

const SLOW = process.env.VUNIFY_SLOW === '1' || !!process.env.CI;
const REPO = path.join(import.meta.dirname, '..', '..');
const CACHE = process.env.VUNIFY_TRIXIE_CACHE ?? '/var/tmp/vunify-trixie-cache';
const VERSION = (JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
const PATH = '/usr/sbin:/usr/bin:/sbin:/bin';

let work: string; // build output and the trixie root
let root: string; // the trixie root
let deb: string;
const timings: [string, number][] = [];

function timed<T>(what: string, f: () => T): T {
  const t0 = performance.now();
  try {
    return f();
  } finally {
    timings.push([what, (performance.now() - t0) / 1000]);
    process.stderr.write(`deb.test: ${what}: ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  }
}

function run(cmd: string, args: string[], input?: string): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: 'utf8', input, maxBuffer: 64 << 20 });
}

function ok(r: SpawnSyncReturns<string>, what: string): string {
  if (r.status !== 0) throw new Error(`${what}: exit ${r.status ?? r.signal}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** A command inside the trixie root, with a clean environment (none of vitest's NODE_OPTIONS). */
function inRoot(...args: string[]): SpawnSyncReturns<string> {
  return run('chroot', [root, '/usr/bin/env', '-i', `PATH=${PATH}`, 'LC_ALL=C', 'HOME=/root', 'DEBIAN_FRONTEND=noninteractive', ...args]);
}

function mounted(dir: string): boolean {
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === dir);
}

function aptInstall(): void {
  fs.copyFileSync(deb, path.join(root, 'tmp', path.basename(deb)));
  const install = () => inRoot('apt-get', 'install', '-y', '-q', '--no-install-recommends', `/tmp/${path.basename(deb)}`);
  let r = install();
  if (r.status !== 0) {
    // The cached root's package lists are as old as the cache: refresh once.
    ok(inRoot('apt-get', 'update', '-q'), 'apt-get update');
    r = install();
  }
  ok(r, 'apt-get install ./vunify.deb');
}

const sha256 = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

describe.skipIf(!SLOW)('Debian package', () => {
  beforeAll(() => {
    work = tempDir('vunify-deb-');
    root = path.join(work, 'trixie');
    const out = timed('build the package (npm run deb)', () =>
      ok(run('bash', [path.join(REPO, 'packaging/build-deb.sh'), path.join(work, 'out')]), 'build-deb.sh'),
    );
    deb = out.trim().split('\n').pop()!;
    timed('trixie root (debootstrap when not cached, then a copy)', () =>
      ok(run(path.join(REPO, 'test/package/trixie-root.sh'), [CACHE, root]), 'trixie-root.sh'),
    );
    ok(run('mount', ['-t', 'proc', 'proc', path.join(root, 'proc')]), 'mount proc');
    timed('apt-get install ./vunify_*.deb (with nodejs)', aptInstall);
    // Keep what apt downloaded for the next run.
    for (const f of fs.readdirSync(path.join(root, 'var/cache/apt/archives'))) {
      if (f.endsWith('.deb') && !fs.existsSync(path.join(CACHE, 'archives', f))) {
        fs.copyFileSync(path.join(root, 'var/cache/apt/archives', f), path.join(CACHE, 'archives', f));
      }
    }
  }, 480_000);

  afterAll(() => {
    if (root && mounted(path.join(root, 'proc'))) ok(run('umount', [path.join(root, 'proc')]), 'umount proc');
    if (work) rmTree(work);
    process.stderr.write(`deb.test timings: ${timings.map(([w, s]) => `${w} ${s.toFixed(1)} s`).join('; ')}\n`);
  });

  it('is named for its version and architecture, and lintian finds neither errors nor warnings', () => {
    const arch = ok(run('dpkg', ['--print-architecture']), 'dpkg').trim();
    expect(path.basename(deb)).toBe(`vunify_${VERSION}_${arch}.deb`);
    const r = timed('lintian', () => run('lintian', ['--info', '--display-level', '>=warning', deb]));
    const tags = r.stdout.split('\n').filter((l) => /^[EW]: /.test(l));
    expect(tags).toEqual([]);
    expect(r.status).toBe(0);
  });

  it('installed with nodejs from trixie, which satisfies Depends: nodejs (>= 20)', () => {
    expect(ok(inRoot('dpkg-query', '-W', '-f', '${Status} ${Version}', 'vunify'), 'dpkg-query')).toBe(`install ok installed ${VERSION}`);
    expect(ok(inRoot('dpkg-query', '-W', '-f', '${Depends}', 'vunify'), 'dpkg-query')).toMatch(/^nodejs \(>= 20\), libc6 \(>= /);
    const node = ok(inRoot('dpkg-query', '-W', '-f', '${Version}', 'nodejs'), 'dpkg-query nodejs');
    expect(inRoot('dpkg', '--compare-versions', node, 'ge', '20').status).toBe(0);
    process.stderr.write(`deb.test: trixie's nodejs is ${node}\n`);
  });

  it('carries exactly the production modules of package-lock.json, each of them loadable', () => {
    type Locked = { dev?: boolean; os?: string[]; cpu?: string[]; libc?: string[] };
    const lock = JSON.parse(fs.readFileSync(path.join(REPO, 'package-lock.json'), 'utf8')) as { packages: Record<string, Locked> };
    // npm installs a platform-specific optional module (DuckDB's prebuilt
    // engine) only where its os, cpu and libc fit: linux, x64, glibc here.
    const fits = (v: Locked) => (!v.os || v.os.includes('linux')) && (!v.cpu || v.cpu.includes('x64')) && (!v.libc || v.libc.includes('glibc'));
    const wanted = Object.entries(lock.packages)
      .filter(([k, v]) => k.startsWith('node_modules/') && !v.dev && fits(v))
      .map(([k]) => k.slice('node_modules/'.length))
      .sort();
    // Module folders as the lockfile names them ("a", "@s/a", "a/node_modules/b").
    const modules = (dir: string, prefix: string): string[] =>
      fs.readdirSync(dir).flatMap((d) => {
        if (d.startsWith('@')) return modules(path.join(dir, d), `${prefix}${d}/`);
        const nested = path.join(dir, d, 'node_modules');
        return [`${prefix}${d}`, ...(fs.existsSync(nested) ? modules(nested, `${prefix}${d}/node_modules/`) : [])];
      });
    expect(modules(path.join(root, 'usr/lib/vunify/node_modules'), '').sort()).toEqual(wanted);
    const load = inRoot('sh', '-c', `cd /usr/lib/vunify && node --input-type=module -e '
      import fs from "node:fs";
      for (const d of Object.keys(JSON.parse(fs.readFileSync("package.json", "utf8")).dependencies)) await import(d);
      console.log("ok");'`);
    expect([load.status, load.stdout, load.stderr]).toEqual([0, 'ok\n', '']);
  });

  it('vunify --version prints the version and nothing else', () => {
    const r = inRoot('vunify', '--version');
    expect([r.status, r.stdout, r.stderr]).toEqual([0, `${VERSION}\n`, '']);
  });

  it("unifies two tiny guests with trixie's node loading the addon built here", () => {
    const g = (n: number, f: string) => path.join(root, 'srv', `g${n}`, 'usr/share/t', f);
    for (const n of [1, 2]) {
      writeFile(g(n, 'same'), { content: 'identical in both guests\n' });
      writeFile(g(n, 'other'), { content: `differs: guest ${n}\n` });
    }
    const before = [1, 2].map((n) => [sha256(g(n, 'same')), sha256(g(n, 'other'))]);
    const r = inRoot('vunify', '/srv/g1', '/srv/g2');
    expect([r.status, r.stderr]).toEqual([0, '']);
    const same = [1, 2].map((n) => fs.statSync(g(n, 'same')));
    expect(same[0]!.ino).toBe(same[1]!.ino);
    expect(same[0]!.nlink).toBe(2);
    expect(fs.statSync(g(1, 'other')).ino).not.toBe(fs.statSync(g(2, 'other')).ino);
    expect([1, 2].map((n) => [sha256(g(n, 'same')), sha256(g(n, 'other'))])).toEqual(before);
    // The run used the packaged state directory: made 0700 by postinst.
    const st = fs.statSync(path.join(root, 'var/lib/vunify'));
    expect([st.mode & 0o7777, st.uid]).toEqual([0o700, 0]);
    expect(fs.readdirSync(path.join(root, 'var/lib/vunify/cache')).filter((n) => n.endsWith('.shard'))).toHaveLength(2);
  });

  it('ships the units from systemd/ with /usr/bin/vunify; they verify; the timer is not enabled', () => {
    const unitDir = path.join(root, 'usr/lib/systemd/system');
    const shipped = fs.readFileSync(path.join(unitDir, 'vunify.service'), 'utf8').split('\n');
    expect(shipped).toContain('ExecStart=/usr/bin/vunify --config /etc/vunify/vunify.conf');
    expect(shipped.join('\n')).not.toMatch(/\/usr\/local/);
    // Every other line is the repository's, so there is one source of truth.
    for (const unit of ['vunify.service', 'vunify.timer']) {
      const src = fs.readFileSync(path.join(REPO, 'systemd', unit), 'utf8').split('\n');
      const pkg = fs.readFileSync(path.join(unitDir, unit), 'utf8').split('\n');
      expect(pkg.length).toBe(src.length);
      const changed = pkg.filter((l, i) => l !== src[i]);
      expect(changed.every((l) => /^(ExecStart=|Documentation=|#)/.test(l))).toBe(true);
    }
    // systemd-analyze (the host's) on the installed files, in a scratch root
    // holding systemd's own units and the installed /usr/bin/vunify.
    const scratch = path.join(work, 'verify');
    fs.mkdirSync(path.join(scratch, 'usr/lib/systemd'), { recursive: true });
    fs.cpSync('/usr/lib/systemd/system', path.join(scratch, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });
    for (const unit of ['vunify.service', 'vunify.timer']) fs.copyFileSync(path.join(unitDir, unit), path.join(scratch, 'usr/lib/systemd/system', unit));
    fs.mkdirSync(path.join(scratch, 'usr/bin'), { recursive: true });
    fs.copyFileSync(path.join(root, 'usr/bin/vunify'), path.join(scratch, 'usr/bin/vunify'));
    fs.chmodSync(path.join(scratch, 'usr/bin/vunify'), 0o755);
    const v = run('systemd-analyze', ['verify', `--root=${scratch}`, '--man=no', 'vunify.service', 'vunify.timer']);
    expect([v.status, (v.stdout + v.stderr).trim()]).toEqual([0, '']);
    expect(fs.existsSync(path.join(root, 'etc/systemd/system/timers.target.wants/vunify.timer'))).toBe(false);
  });

  it('/etc/vunify/vunify.conf is a conffile with the bytes of systemd/vunify.conf', () => {
    const conffiles = ok(inRoot('dpkg-query', '-W', '-f', '${Conffiles}', 'vunify'), 'dpkg-query').trim().split(/\s+/);
    expect(conffiles[0]).toBe('/etc/vunify/vunify.conf');
    expect(conffiles[1]).toBe(createHash('md5').update(fs.readFileSync(path.join(REPO, 'systemd/vunify.conf'))).digest('hex'));
    expect(sha256(path.join(root, 'etc/vunify/vunify.conf'))).toBe(sha256(path.join(REPO, 'systemd/vunify.conf')));
  });

  it('vunify(8) names every option the three --help texts name', () => {
    const man = zlib.gunzipSync(fs.readFileSync(path.join(root, 'usr/share/man/man8/vunify.8.gz'))).toString('utf8').replace(/\\-/g, '-');
    expect(man).toMatch(/^\.TH VUNIFY 8 /m);
    for (const sub of [[], ['report'], ['split']]) {
      const help = ok(inRoot('vunify', ...sub, '--help'), `vunify ${sub.join(' ')} --help`);
      const options = [...new Set(help.match(/--[a-z][a-z-]+/g))];
      expect(options.length).toBeGreaterThan(5);
      for (const o of options) expect(man, o).toContain(o);
    }
  });

  it('remove keeps config and state; purge removes every installed file, both, and an enabled timer link', () => {
    // What `systemctl enable vunify.timer` makes, as an operator would.
    const wants = path.join(root, 'etc/systemd/system/timers.target.wants');
    fs.mkdirSync(wants, { recursive: true });
    fs.symlinkSync('/usr/lib/systemd/system/vunify.timer', path.join(wants, 'vunify.timer'));
    const listed = ok(inRoot('dpkg', '-L', 'vunify'), 'dpkg -L').trim().split('\n').filter((p) => p !== '/.');
    expect(listed).toContain('/usr/bin/vunify');
    expect(listed).toContain('/usr/lib/vunify/build/Release/vunify.node');
    // Directories other packages also own stay; everything else must go.
    const owners = new Map<string, string>();
    for (const line of ok(inRoot('dpkg-query', '-S', ...listed), 'dpkg-query -S').trim().split('\n')) {
      const at = line.lastIndexOf(': ');
      owners.set(line.slice(at + 2), line.slice(0, at));
    }
    const shared = listed.filter((p) => owners.get(p) !== 'vunify');
    expect(shared.every((p) => fs.statSync(path.join(root, p)).isDirectory())).toBe(true);
    const own = listed.filter((p) => owners.get(p) === 'vunify');

    timed('dpkg --remove', () => ok(inRoot('dpkg', '--remove', 'vunify'), 'dpkg --remove'));
    expect(fs.existsSync(path.join(root, 'usr/bin/vunify'))).toBe(false);
    expect(fs.existsSync(path.join(root, 'etc/vunify/vunify.conf'))).toBe(true);
    expect(fs.readdirSync(path.join(root, 'var/lib/vunify/cache')).filter((n) => n.endsWith('.shard'))).toHaveLength(2);

    const purge = timed('dpkg --purge', () => inRoot('dpkg', '--purge', 'vunify'));
    expect([purge.status, purge.stderr]).toEqual([0, '']);
    const left = own.filter((p) => fs.existsSync(path.join(root, p)) || isLink(path.join(root, p)));
    expect(left).toEqual([]);
    expect(fs.existsSync(path.join(root, 'etc/vunify'))).toBe(false);
    expect(fs.existsSync(path.join(root, 'var/lib/vunify'))).toBe(false);
    expect(isLink(path.join(wants, 'vunify.timer'))).toBe(false);
    expect(fs.readdirSync(path.join(root, 'var/lib/systemd/deb-systemd-helper-enabled')).filter((f) => f.startsWith('vunify'))).toEqual([]);
    // dpkg forgets a purged package entirely.
    const q = inRoot('dpkg-query', '-W', 'vunify');
    expect([q.status, q.stderr]).toEqual([1, 'dpkg-query: no packages found matching vunify\n']);
  });

  it("purge keeps an interrupted run's journal (and only it), and says why", () => {
    timed('apt-get install again', aptInstall);
    const state = path.join(root, 'var/lib/vunify');
    expect(fs.statSync(state).mode & 0o7777).toBe(0o700);
    const journal = 'journal.4242.0123456789ab';
    fs.writeFileSync(path.join(state, journal), '{}\n', { mode: 0o600 });
    fs.writeFileSync(path.join(state, 'hashes.cache'), 'x', { mode: 0o600 }); // an older version's cache
    const purge = inRoot('dpkg', '--purge', 'vunify');
    expect(purge.status).toBe(0);
    expect(purge.stderr).toContain(`/var/lib/vunify/${journal}`);
    expect(fs.readdirSync(state)).toEqual([journal]);
  });
});

function isLink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}
