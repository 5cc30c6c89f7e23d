// The state directory as a hostile guest or a careless operator leaves it:
// inside or above a guest root, symlinked, not root's, writable by others;
// a FIFO, a directory, a symlink or garbage under the names vunify uses;
// journals naming roots this run was not given. Run through the built CLI
// (VUNIFY_BIN to point at another build), results checked with stat and
// sha256sum.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rootKey, shardName } from '../../src/state/cache.js';
import { BIN } from '../helpers/hostile.js';
import { rmTree, sh, sha256File, snapshot, tempDir, writeFile } from '../helpers/tree.js';

let dir: string;
let host: string;
const G = (g: string, f = '') => (f ? path.join(dir, g, f) : path.join(dir, g));
const guests = () => [G('g1'), G('g2')];

beforeEach(() => {
  dir = tempDir();
  for (const g of ['g1', 'g2']) {
    writeFile(G(g, 'usr/lib/libc.so.6'), { content: 'libc bytes\n' });
    writeFile(G(g, 'usr/share/doc'), { content: 'docs\n' });
  }
  // A host file a forged journal aims at (/etc/shadow in the issue).
  host = path.join(dir, 'host');
  writeFile(path.join(host, 'shadow'), { content: 'root:$6$secret:19000::::::\n', mode: 0o640 });
});
afterEach(() => rmTree(dir));

/** Run the CLI with `stateDir`; a run that hangs is killed after 30 s and shows as code null. */
function vunify(stateDir: string, args: string[]) {
  const sub = args[0] === 'report' || args[0] === 'split' ? args.splice(0, 1) : [];
  const r = spawnSync(process.execPath, [BIN, ...sub, '--state-dir', stateDir, ...args], { encoding: 'utf8', input: '', timeout: 30_000, killSignal: 'SIGKILL' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const statOf = (f: string) => sh('stat', '-c', '%i %h %s %a %u %Y', f).trim();

/** A journal line as a hostile guest would forge it: recovery is to delete `name` in `root`, claimed to be vunify's temporary link to `file`. */
function forgedLine(root: string, name: string, file: string): string {
  const r = fs.statSync(root);
  const f = fs.statSync(file);
  return JSON.stringify({
    root, rootDev: r.dev, rootIno: r.ino, dir: '', tmp: Buffer.from(name).toString('hex'), name: Buffer.from('x').toString('hex'),
    canon: { dev: f.dev, ino: f.ino }, dup: { dev: f.dev, ino: f.ino + 1, size: 0, mtimeSec: 0, mtimeNsec: 0 },
  }) + '\n';
}

describe('a state directory that others could have written is refused (exit 2, nothing changed)', () => {
  it('the issue: a state directory inside a guest root with a forged journal naming a host file', () => {
    const state = G('g1', 'var/lib/vunify');
    fs.mkdirSync(state, { recursive: true, mode: 0o700 });
    // What the guest wrote: "recover" its temporary name ".vunify.x" in the host directory, which is the shadow file.
    fs.linkSync(path.join(host, 'shadow'), path.join(host, '.vunify.x'));
    fs.writeFileSync(path.join(state, 'journal.1.forged'), forgedLine(host, '.vunify.x', path.join(host, 'shadow')) + forgedLine(host, 'shadow', path.join(host, 'shadow')));
    const before = { shadow: statOf(path.join(host, 'shadow')), sum: sha256File(path.join(host, 'shadow')), g: snapshot(dir, { inodes: true }) };
    for (const args of [[], ['--dry-run'], ['report']]) {
      const r = vunify(state, [...args, ...guests()]);
      expect(r.code, `${args}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toContain(`${state}: state directory refused: it is inside the guest root ${G('g1')}`);
      expect(r.stdout).toBe('');
    }
    expect(fs.existsSync(path.join(host, '.vunify.x'))).toBe(true);
    expect(statOf(path.join(host, 'shadow'))).toBe(before.shadow);
    expect(sha256File(path.join(host, 'shadow'))).toBe(before.sum);
    // Nothing at all changed: no link made, no journal taken, no cache written.
    expect(snapshot(dir, { inodes: true })).toEqual(before.g);
  });

  it('a state directory that contains a guest root, or is one', () => {
    for (const state of [dir, G('g2')]) {
      const r = vunify(state, guests());
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(new RegExp(`^vunify: ${state}: state directory refused: it (contains|is inside) the guest root`));
    }
    expect(fs.statSync(G('g1', 'usr/lib/libc.so.6')).ino).not.toBe(fs.statSync(G('g2', 'usr/lib/libc.so.6')).ino);
  });

  it('a symlink, a directory not owned by root or writable by group or others, or below one a user owns', () => {
    const real = path.join(dir, 'state-real');
    fs.mkdirSync(real, { mode: 0o700 });
    fs.symlinkSync(real, path.join(dir, 'state-link'));
    const cases: [string, () => void, RegExp][] = [
      [path.join(dir, 'state-link'), () => {}, /it is a symlink/],
      [path.join(dir, 'state-user'), () => fs.chownSync(path.join(dir, 'state-user'), 1000, 1000), /it is owned by uid 1000, not root/],
      [path.join(dir, 'state-ow'), () => fs.chmodSync(path.join(dir, 'state-ow'), 0o703), /it is writable by group or others \(mode 0703\)/],
      [path.join(dir, 'state-gw'), () => fs.chmodSync(path.join(dir, 'state-gw'), 0o770), /it is writable by group or others \(mode 0770\)/],
      [path.join(dir, 'user', 'state'), () => fs.chownSync(path.join(dir, 'user'), 1000, 1000), new RegExp(`${dir}/user is owned by uid 1000`)],
    ];
    for (const [state, spoil, why] of cases) {
      if (!fs.existsSync(state) && !state.endsWith('link')) fs.mkdirSync(state, { recursive: true, mode: 0o700 });
      spoil();
      const before = fs.readdirSync(state);
      for (const args of [[], ['--dry-run']]) {
        const r = vunify(state, [...args, ...guests()]);
        expect(r.code, `${state}: ${r.stderr}`).toBe(2);
        expect(r.stderr).toMatch(new RegExp(`^vunify: ${state}: state directory refused: ${why.source}`));
      }
      expect(fs.readdirSync(state)).toEqual(before);
    }
    expect(fs.readdirSync(real)).toEqual([]);
    expect(fs.statSync(G('g1', 'usr/lib/libc.so.6')).ino).not.toBe(fs.statSync(G('g2', 'usr/lib/libc.so.6')).ino);
  });

  it('a missing state directory (and missing directories above it) is created 0700, root-owned, and used', () => {
    const state = path.join(dir, 'new', 'deeper', 'state');
    const r = vunify(state, guests());
    expect(r.code, r.stderr).toBe(0);
    for (const d of [state, path.dirname(state), path.join(dir, 'new')]) expect(sh('stat', '-c', '%F %a %u', d).trim()).toBe('directory 700 0');
    expect(fs.statSync(G('g1', 'usr/lib/libc.so.6')).ino).toBe(fs.statSync(G('g2', 'usr/lib/libc.so.6')).ino);
  });

  it('a missing state directory inside a guest root is refused before anything is created', () => {
    const state = G('g1', 'var/lib/vunify');
    const r = vunify(state, guests());
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${state}: state directory refused: it is inside the guest root ${G('g1')}`);
    expect(fs.existsSync(G('g1', 'var'))).toBe(false);
  });
});

describe('what root can leave in a good state directory never hangs, crashes or redirects a run', () => {
  let state: string;
  beforeEach(() => {
    state = path.join(dir, 'state');
    fs.mkdirSync(state, { mode: 0o700 });
  });
  const unified = () => fs.statSync(G('g1', 'usr/lib/libc.so.6')).ino === fs.statSync(G('g2', 'usr/lib/libc.so.6')).ino;

  it('a FIFO, a directory, a symlink and malformed lines named like journals: warnings, and the run goes on', () => {
    sh('mkfifo', path.join(state, 'journal.1.fifo'));
    fs.mkdirSync(path.join(state, 'journal.2.dir'));
    fs.symlinkSync(path.join(host, 'shadow'), path.join(state, 'journal.3.link'));
    fs.writeFileSync(path.join(state, 'journal.4.bad'), 'null\n{"settled": 1}\n[1,2]\n');
    const r = vunify(state, guests());
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`${state}/journal.1.fifo: not read as a journal: not a regular file (fifo); left alone`);
    expect(r.stderr).toContain(`${state}/journal.2.dir: not read as a journal: not a regular file (directory)`);
    expect(r.stderr).toContain(`${state}/journal.3.link: not read as a journal: a symlink; left alone`);
    expect(r.stderr).toContain(`${state}/journal.4.bad: malformed journal (lines 1, 2, 3)`);
    expect(unified()).toBe(true);
    expect(fs.readdirSync(state).filter((n) => n.startsWith('journal.')).sort()).toEqual(['journal.1.fifo', 'journal.2.dir', 'journal.3.link', 'journal.4.bad']);
  });

  it('a symlink at a lock path or at the cache lock: its target is not truncated', () => {
    const target = path.join(host, 'shadow');
    const sum = sha256File(target);
    const root = fs.statSync(G('g1'));
    fs.mkdirSync(path.join(state, 'locks'), { mode: 0o700 });
    fs.symlinkSync(target, path.join(state, 'locks', `${root.dev}-${root.ino}`));
    const r = vunify(state, guests());
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${state}/locks/${root.dev}-${root.ino}: cannot use this lock file`);
    expect(sha256File(target)).toBe(sum);
    expect(unified()).toBe(false);
    fs.unlinkSync(path.join(state, 'locks', `${root.dev}-${root.ino}`));
    // The cache lock: the dry run warns that the cache was not saved, and goes on.
    fs.mkdirSync(path.join(state, 'cache'), { mode: 0o700 });
    fs.symlinkSync(target, path.join(state, 'cache', 'lock'));
    const dry = vunify(state, ['--dry-run', ...guests()]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stderr).toContain(`${state}/cache: hash cache not saved`);
    expect(sha256File(target)).toBe(sum);
    expect(sh('stat', '-c', '%s', target).trim()).not.toBe('0');
  });

  it('a FIFO as a root\'s hash cache shard: the dry run and the report warn and go on', () => {
    const g1 = fs.realpathSync(G('g1'));
    const st = fs.statSync(g1);
    const shard = path.join(state, 'cache', shardName(rootKey({ dev: st.dev, ino: st.ino, path: g1 })));
    fs.mkdirSync(path.join(state, 'cache'), { mode: 0o700, recursive: true });
    for (const args of [['--dry-run'], ['report']]) {
      fs.rmSync(shard, { force: true });
      sh('mkfifo', shard);
      const r = vunify(state, [...args, ...guests()]);
      expect(r.code, `${args}: ${r.stderr}`).toBe(0);
      expect(r.stderr).toContain(`${shard}: hash cache of ${g1} discarded: not a regular file (fifo)`);
    }
  });

  it('a journal naming a root this run was not given is left for a run that has it', () => {
    fs.linkSync(path.join(host, 'shadow'), path.join(host, '.vunify.x'));
    fs.writeFileSync(path.join(state, 'journal.1.other'), forgedLine(host, '.vunify.x', path.join(host, 'shadow')));
    const r = vunify(state, guests());
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(fs.existsSync(path.join(host, '.vunify.x'))).toBe(true);
    expect(fs.readdirSync(state)).toContain('journal.1.other');
  });

  it('a journal line whose names leave the directory is malformed: nothing is acted on', () => {
    // Names with a slash, or not a temporary name of ours, for a root of this run.
    writeFile(G('g1', 'etc/keep'), { content: 'keep me\n' });
    const line = (tmp: string) => forgedLine(G('g1'), tmp, G('g1', 'etc/keep'));
    fs.writeFileSync(path.join(state, 'journal.1.escape'), line('etc/keep') + line('keep') + line('.vunify./../etc/keep'));
    const before = statOf(G('g1', 'etc/keep'));
    const r = vunify(state, guests());
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('journal.1.escape: malformed journal (lines 1, 2, 3)');
    expect(statOf(G('g1', 'etc/keep'))).toBe(before);
  });
});
