// The shipped systemd units, checked by systemd itself (systemd-analyze
// verify, Debian package systemd) in a scratch root that holds systemd's own
// units and an executable at the ExecStart path.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rmTree, runCli, tempDir } from './helpers/tree.js';

const UNITS = path.join(import.meta.dirname, '..', 'systemd');
let root: string;

beforeEach(() => {
  root = tempDir('vunify-systemd-');
  fs.mkdirSync(path.join(root, 'etc/systemd/system'), { recursive: true });
  fs.mkdirSync(path.join(root, 'usr/lib/systemd'), { recursive: true });
  fs.cpSync('/usr/lib/systemd/system', path.join(root, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });
  const exec = /^ExecStart=(\S+)/m.exec(fs.readFileSync(path.join(UNITS, 'vunify.service'), 'utf8'))![1]!;
  fs.mkdirSync(path.join(root, path.dirname(exec)), { recursive: true });
  fs.writeFileSync(path.join(root, exec), '#!/bin/sh\n', { mode: 0o755 });
});
afterEach(() => rmTree(root));

function verify(service: string) {
  fs.writeFileSync(path.join(root, 'etc/systemd/system/vunify.service'), service);
  fs.copyFileSync(path.join(UNITS, 'vunify.timer'), path.join(root, 'etc/systemd/system/vunify.timer'));
  const r = spawnSync('systemd-analyze', ['verify', `--root=${root}`, '--man=no', 'vunify.service', 'vunify.timer'], { encoding: 'utf8' });
  return { code: r.status, out: (r.stdout + r.stderr).trim() };
}

describe('systemd units', () => {
  it('vunify.service and vunify.timer pass systemd-analyze verify without a single warning', () => {
    expect(verify(fs.readFileSync(path.join(UNITS, 'vunify.service'), 'utf8'))).toEqual({ code: 0, out: '' });
  });

  it('the check would notice a mistake', () => {
    const broken = fs.readFileSync(path.join(UNITS, 'vunify.service'), 'utf8').replace('IOSchedulingClass=idle', 'IOSchedulingClass=idel');
    expect(verify(broken).out).toMatch(/IO scheduling class/);
  });

  it('the service is a low-priority oneshot; the timer is daily, randomized and persistent', () => {
    const service = fs.readFileSync(path.join(UNITS, 'vunify.service'), 'utf8');
    for (const line of ['Type=oneshot', 'Nice=19', 'IOSchedulingClass=idle', 'CPUSchedulingPolicy=batch', 'ExecStart=/usr/local/bin/vunify --config /etc/vunify/vunify.conf']) {
      expect(service.split('\n')).toContain(line);
    }
    const timer = fs.readFileSync(path.join(UNITS, 'vunify.timer'), 'utf8').split('\n');
    expect(timer).toContain('OnCalendar=daily');
    expect(timer).toContain('Persistent=true');
    expect(timer.some((l) => l.startsWith('RandomizedDelaySec='))).toBe(true);
  });

  it('a stuck run is stopped before the next day\'s timer: TimeoutStartSec is finite and under 21 h', () => {
    const service = fs.readFileSync(path.join(UNITS, 'vunify.service'), 'utf8');
    const timeout = /^TimeoutStartSec=(.+)$/m.exec(service)?.[1];
    expect(timeout).toBeDefined();
    // systemd's own reading of the value, in microseconds.
    const r = spawnSync('systemd-analyze', ['timespan', timeout!], { encoding: 'utf8' });
    const usec = Number(/μs:\s*(\d+)/.exec(r.stdout)?.[1]);
    expect(usec).toBeGreaterThan(0);
    const delay = /^RandomizedDelaySec=(.+)$/m.exec(fs.readFileSync(path.join(UNITS, 'vunify.timer'), 'utf8'))![1]!;
    const delayUsec = Number(/μs:\s*(\d+)/.exec(spawnSync('systemd-analyze', ['timespan', delay], { encoding: 'utf8' }).stdout)?.[1]);
    expect(usec + delayUsec).toBeLessThan(24 * 3600 * 1e6);
  });

  it('the example config file is one vunify accepts (its roots replaced by a scratch one)', () => {
    const guest = path.join(root, 'guest');
    fs.mkdirSync(guest);
    const r = runCli(['--config', path.join(UNITS, 'vunify.conf'), '-n', guest]);
    expect([r.code, r.stderr]).toEqual([0, '']);
    const conf = fs.readFileSync(path.join(UNITS, 'vunify.conf'), 'utf8');
    expect(conf.split('\n')).toContain('root /vservers/*');
  });
});
