// The host's hash key: created once, readable by root only, refused when it
// could have been read or replaced by someone else; and what --hash-key does.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { UsageError } from '../../src/core/errors.js';
import { deriveKey, KEY_FILE, loadHashKey } from '../../src/state/hash-key.js';
import { rmTree, runCli, sh, tempDir, writeFile } from '../helpers/tree.js';

let dir: string;
beforeEach(() => {
  dir = tempDir();
});
afterEach(() => rmTree(dir));

describe('hash key', () => {
  it('is created on first use: 32 random bytes, mode 0600, owned by root, in a 0700 directory; later loads read the same key', () => {
    const file = path.join(dir, 'state', KEY_FILE);
    const a = loadHashKey(file, { create: true });
    expect(sh('stat', '-c', '%a %u %s', file).trim()).toBe('600 0 32');
    expect(sh('stat', '-c', '%a', path.dirname(file)).trim()).toBe('700');
    const b = loadHashKey(file, { create: true });
    expect(b).toEqual(a);
    expect(a.fingerprint).toMatch(/^[0-9a-f]{16}$/);
    // Derived from the file's bytes, and neither value shows them.
    const key = fs.readFileSync(file);
    expect(deriveKey(key, file)).toEqual(a);
    expect(a.fingerprint).not.toContain(key.subarray(0, 8).toString('hex'));
    // Another key, other values.
    const other = path.join(dir, 'other', KEY_FILE);
    const c = loadHashKey(other, { create: true });
    expect([c.secret.equals(a.secret), c.fingerprint === a.fingerprint]).toEqual([false, false]);
    expect(a.secret.length).toBe(192);
    expect(a.secret.includes(key)).toBe(false);
  });

  it.each([
    ['readable by others', (f: string) => fs.chmodSync(f, 0o644), /mode 644/],
    ['owned by another user', (f: string) => fs.chownSync(f, 1000, 0), /owned by uid 1000/],
    ['of the wrong size', (f: string) => fs.appendFileSync(f, 'x'), /33 bytes, not 32/],
    ['a symlink', (f: string) => { fs.renameSync(f, f + '.real'); fs.symlinkSync(f + '.real', f); }, /cannot read the hash key/],
  ])('is refused (a usage error) when %s', (_what, spoil, why) => {
    const file = path.join(dir, KEY_FILE);
    loadHashKey(file, { create: true });
    spoil(file);
    expect(() => loadHashKey(file, { create: true })).toThrow(UsageError);
    expect(() => loadHashKey(file, { create: true })).toThrow(why);
  });

  it('is never made or read inside a guest: a state directory or --hash-key file there is refused (exit 2), even with --no-cache', () => {
    writeFile(path.join(dir, 'g1/f'));
    writeFile(path.join(dir, 'g2/f'));
    const inGuest = path.join(dir, 'g1/var/lib/vunify');
    const r = runCli(['-n', '--no-cache', '--state-dir', inGuest, path.join(dir, 'g1'), path.join(dir, 'g2')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/state directory refused/);
    expect(fs.existsSync(path.join(inGuest, KEY_FILE))).toBe(false);
    const planted = path.join(dir, 'g2/key');
    fs.writeFileSync(planted, Buffer.alloc(32, 1), { mode: 0o600 });
    const k = runCli(['-n', '--no-cache', '--hash-key', planted, path.join(dir, 'g1'), path.join(dir, 'g2')]);
    expect(k.code).toBe(2);
    expect(k.stderr).toMatch(/refused/);
  });

  it('--hash-key FILE must exist (it is never made up), and the run then changes nothing: exit 2', () => {
    writeFile(path.join(dir, 'g1/f'));
    writeFile(path.join(dir, 'g2/f'));
    const before = fs.statSync(path.join(dir, 'g2/f')).ino;
    const r = runCli(['--hash-key', path.join(dir, 'missing.key'), path.join(dir, 'g1'), path.join(dir, 'g2')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/missing\.key: cannot read the hash key/);
    expect(fs.existsSync(path.join(dir, 'missing.key'))).toBe(false);
    expect(fs.statSync(path.join(dir, 'g2/f')).ino).toBe(before);
    // With a good fleet key the same run links.
    const fleet = path.join(dir, 'fleet.key');
    fs.writeFileSync(fleet, Buffer.alloc(32, 7), { mode: 0o600 });
    const ok = runCli(['--hash-key', fleet, path.join(dir, 'g1'), path.join(dir, 'g2')]);
    expect([ok.code, ok.stderr]).toEqual([0, '']);
    expect(fs.statSync(path.join(dir, 'g2/f')).ino).toBe(fs.statSync(path.join(dir, 'g1/f')).ino);
  });
});
