// Xattr sets as the hash stage keeps them (a SHA-256 digest of a canonical
// encoding, the addon's own SHA-256 checked against node:crypto) and as the
// linker compares them (value by value, exactly).
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sys } from '../../src/os/sys.js';
import { sameXattrs, xattrDigest, xattrKey } from '../../src/pipeline/xattrs.js';
import { rmTree, sh, tempDir, writeFile } from '../helpers/tree.js';

describe("the addon's SHA-256", () => {
  it('matches node:crypto at every length around the block size, and across many blocks', () => {
    const data = Buffer.from(Array.from({ length: 300_007 }, (_, i) => (i * 2654435761) >>> 24));
    for (let len = 0; len <= 200; len++) expect(sys.sha256(data.subarray(0, len)).toString('hex')).toBe(createHash('sha256').update(data.subarray(0, len)).digest('hex'));
    expect(sys.sha256(data).toString('hex')).toBe(createHash('sha256').update(data).digest('hex'));
    // FIPS 180-2's "abc" vector.
    expect(sys.sha256(Buffer.from('abc')).toString('hex')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });
});

describe('xattr sets', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempDir('vunify-xattrs-');
  });
  afterEach(() => rmTree(dir));

  const fds: number[] = [];
  const open = (f: string) => {
    const fd = sys.open(path.join(dir, f), fs.constants.O_RDONLY);
    fds.push(fd);
    return fd;
  };
  afterEach(() => fds.splice(0).forEach((fd) => sys.close(fd)));

  it('are the same only with the same names and the same values, byte for byte', () => {
    const value = 'v'.repeat(3000);
    writeFile(path.join(dir, 'a'), { xattrs: { 'user.one': value, 'user.two': '2' } });
    writeFile(path.join(dir, 'b'), { xattrs: { 'user.two': '2', 'user.one': value } });
    writeFile(path.join(dir, 'c'), { xattrs: { 'user.one': value.slice(0, -1) + 'w', 'user.two': '2' } });
    writeFile(path.join(dir, 'd'), { xattrs: { 'user.one': value, 'user.tw0': '2' } });
    writeFile(path.join(dir, 'e'), { xattrs: { 'user.one': value } });
    writeFile(path.join(dir, 'none'));
    expect(sameXattrs(open('a'), open('b'))).toBe(true);
    for (const other of ['c', 'd', 'e', 'none']) expect([other, sameXattrs(open('a'), open(other))]).toEqual([other, false]);
    expect(xattrKey(open('a'))).toBe(xattrKey(open('b')));
    expect(xattrKey(open('a'))).not.toBe(xattrKey(open('c')));
    expect(xattrKey(open('none'))).toBe('');
    // The name/value boundary is part of the encoding: "ab"="c" is not "a"="bc".
    expect(xattrDigest([[Buffer.from('user.ab'), Buffer.from('c')]])).not.toBe(xattrDigest([[Buffer.from('user.a'), Buffer.from('bc')]]));
    sh('getfattr', '-d', path.join(dir, 'a')); // the files really carry them
  });
});
