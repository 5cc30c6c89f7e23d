// Manifests of real trees, and the consolidation estimate across hosts, with
// expected numbers computed from the sizes written.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scanCapacity } from '../../src/commands/report.js';
import { UsageError } from '../../src/core/errors.js';
import { buildManifest, formatManifest, parseManifest, readManifest, writeManifest, type Manifest } from '../../src/report/manifest.js';
import { rmTree, tempDir, testStateDir, writeFile } from '../helpers/tree.js';
import { mergeFleet } from '../../src/report/fleet.js';
import { KEY_FILE, loadHashKey } from '../../src/state/hash-key.js';

let dir: string;
const fill = (n: number, c: string) => Buffer.alloc(n, c);

async function manifestOf(roots: string[], ignoreMtime = false): Promise<Manifest> {
  const scan = await scanCapacity({
    roots, candidates: [], ignoreMtime, stateDir: testStateDir(), minSize: 1, maxSize: Number.MAX_SAFE_INTEGER, rules: [], noDefaultExcludes: true, top: 5, hashAll: true, cache: false, onError: () => {},
  });
  return buildManifest(scan.roots, scan.inodes, ignoreMtime, scan.key);
}

// host A: a1, a2 both hold "common" (1000) and "aonly" (700, identical in both); a1 holds unique 50.
// host B: b1 holds "common" (1000, same metadata), "bonly" (300); b2 holds "common" with another mtime.
beforeAll(() => {
  dir = tempDir();
  const W = (p: string, content: Buffer, mtime?: string) => writeFile(path.join(dir, p), { content, mtime });
  for (const g of ['A/a1', 'A/a2']) {
    W(`${g}/usr/common`, fill(1000, 'c'));
    W(`${g}/usr/aonly`, fill(700, 'a'));
  }
  W('A/a1/usr/unique', fill(50, 'u'));
  W('B/b1/usr/common', fill(1000, 'c'));
  W('B/b1/usr/bonly', fill(300, 'b'));
  W('B/b2/usr/common', fill(1000, 'c'), '1600000000');
});
afterAll(() => rmTree(dir));

describe('manifest', () => {
  it('one line per guest and (content, policy); round-trips through text and gzip', async () => {
    const m = await manifestOf([path.join(dir, 'A/a1'), path.join(dir, 'A/a2')]);
    expect(m.entries).toHaveLength(5); // a1: common, aonly, unique; a2: common, aonly
    expect(m.entries.reduce((t, e) => t + e.inodes * e.size, 0)).toBe(2 * 1000 + 2 * 700 + 50);
    const text = formatManifest(m);
    expect(text.split('\n')[0]).toBe('#vunify-manifest\t1');
    expect(parseManifest(text, 'x')).toEqual(m);
    const gz = path.join(dir, 'a.manifest.gz');
    writeManifest(gz, m);
    expect(fs.readFileSync(gz).subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
    expect(readManifest(gz)).toEqual(m);
  });

  it('records which hash and the key\'s fingerprint (never the key); the merge refuses manifests of different keys', async () => {
    const a = await manifestOf([path.join(dir, 'A/a1')]);
    const key = fs.readFileSync(path.join(testStateDir(), KEY_FILE));
    const text = formatManifest(a);
    expect(text).toMatch(new RegExp(`^#hash\txxh3-keyed$`, 'm'));
    expect(text).toMatch(new RegExp(`^#key\t${loadHashKey(path.join(testStateDir(), KEY_FILE), { create: false }).fingerprint}$`, 'm'));
    expect(text).not.toContain(key.toString('hex'));
    expect(text).not.toContain(key.toString('hex').slice(0, 16));
    // Host B hashed under another key: same content, other hashes, and the merge says so.
    const other = path.join(dir, 'other.key');
    fs.writeFileSync(other, Buffer.alloc(32, 9), { mode: 0o600 });
    const scan = await scanCapacity({
      roots: [path.join(dir, 'B/b1')], candidates: [], ignoreMtime: false, stateDir: testStateDir(), hashKey: other, minSize: 1, maxSize: Number.MAX_SAFE_INTEGER, rules: [], noDefaultExcludes: true, top: 5, hashAll: true, cache: false, onError: () => {},
    });
    const b = await buildManifest(scan.roots, scan.inodes, false, scan.key);
    const common = (m: Manifest) => m.entries.find((e) => e.size === 1000)!.hash;
    expect(common(b)).not.toBe(common(a));
    const files = ['a', 'b'].map((n) => path.join(dir, `${n}.manifest`));
    writeManifest(files[0]!, { ...a, host: 'hostA' });
    writeManifest(files[1]!, { ...b, host: 'hostB' });
    const er = await mergeFleet(files).then(() => undefined, (e: unknown) => e);
    expect(er).toBeInstanceOf(UsageError);
    expect((er as Error).message).toMatch(/hash key/);
    // The same key on both hosts: they merge, and the common content is counted once.
    const same = await manifestOf([path.join(dir, 'B/b1')]);
    writeManifest(files[1]!, { ...same, host: 'hostB' });
    expect((await mergeFleet(files)).totals.consolidatedBytes).toBe(1000 + 700 + 50 + 300);
    // A manifest of the same key written before XXH3 (its #hash line says xxh64-keyed): another function, never merged with this one.
    const before = formatManifest({ ...same, host: 'hostB' }).replace(/^#hash\txxh3-keyed$/m, '#hash\txxh64-keyed');
    expect(before).toMatch(/^#hash\txxh64-keyed$/m);
    fs.writeFileSync(files[1]!, before);
    expect(readManifest(files[1]!).hash).toBe('xxh64-keyed');
    const mixed = await mergeFleet(files).then(() => undefined, (e: unknown) => e);
    expect(mixed).toBeInstanceOf(UsageError);
    expect((mixed as Error).message).toMatch(/xxh3-keyed:[0-9a-f]{16}.*xxh64-keyed:[0-9a-f]{16}|xxh64-keyed:[0-9a-f]{16}.*xxh3-keyed:[0-9a-f]{16}/);
    expect((mixed as Error).message).toMatch(/write those again/);
  });

  it('refuses what is not a manifest and a malformed line (the merge: test/report/fleet.test.ts)', async () => {
    expect(() => parseManifest('hello\n', 'f')).toThrow(UsageError);
    expect(() => parseManifest('#vunify-manifest\t1\n#guest\t0\t/g\nzz\t1\t2\t0\t1\t1\n', 'f')).toThrow(/f:3: malformed/);
    expect(() => parseManifest('#vunify-manifest\t1\n0123456789abcdef\t1\t0123456789abcdef\t7\t1\t1\n', 'f')).toThrow(/malformed/); // unknown guest
    expect(() => readManifest(path.join(dir, 'missing'))).toThrow(/missing: cannot read manifest/);
  });
});
