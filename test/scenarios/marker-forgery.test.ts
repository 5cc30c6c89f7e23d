// A guest must not be able to make two different files of one size hash
// alike without the host's key. The content hash replaces each run of whole,
// aligned, all-zero MiBs by a 16-byte marker (native/extents.c); if the
// marker were a public constant, a guest could write it as data: a file
// "zero MiB, then P, then the marker" and a file "the marker, then P, then a
// zero MiB" give one stream, so one hash under every key. The dry run would
// then promise what the linking run cannot free (the byte comparison splits
// the set), and a manifest merge would count the forged file as shared.
// Real files on a real filesystem, run through the built CLI; the contents
// are told apart with sha256sum, the result with stat.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sys } from '../../src/os/sys.js';
import { hashFd } from '../../src/pipeline/hash.js';
import { rmTree, runCli, setMtime, sha256File, tempDir } from '../helpers/tree.js';

const MiB = 2 ** 20;
/** The marker of a run of one zero MiB, as the hash stream had it before it was keyed. */
const PUBLIC_MARKER = Buffer.concat([Buffer.from('\0vunify\0', 'latin1'), Buffer.from([1, 0, 0, 0, 0, 0, 0, 0])]);

let dir: string;
beforeEach(() => {
  dir = tempDir('vunify-marker-');
});
afterEach(() => rmTree(dir));

function put(file: string, data: Buffer): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, data, { mode: 0o644 });
  setMtime(file, '1700000000.5');
}


describe('zero-run markers', () => {
  it('a guest writing the marker as data gets no hash match: the dry run promises nothing the linking run cannot free', () => {
    const p = Buffer.alloc(MiB - 16, 'p');
    const tail = Buffer.from('tail');
    // g1: a zero MiB, then P, then the marker; g2: the marker, then P, then a zero MiB.
    const a = Buffer.concat([Buffer.alloc(MiB), p, PUBLIC_MARKER, tail]);
    const b = Buffer.concat([PUBLIC_MARKER, p, Buffer.alloc(MiB), tail]);
    expect(a.length).toBe(b.length);
    put(path.join(dir, 'g1', 'usr', 'forged'), a);
    put(path.join(dir, 'g2', 'usr', 'forged'), b);
    const f1 = path.join(dir, 'g1', 'usr', 'forged');
    const f2 = path.join(dir, 'g2', 'usr', 'forged');
    expect(sha256File(f1)).not.toBe(sha256File(f2));

    const dry = runCli(['-n', '--json', '--no-cache', path.join(dir, 'g1'), path.join(dir, 'g2')]);
    expect(dry.code, dry.stderr).toBe(0);
    const dr = JSON.parse(dry.stdout);
    const run = runCli(['--json', '--no-cache', path.join(dir, 'g1'), path.join(dir, 'g2')]);
    expect(run.code, run.stderr).toBe(0);
    const lr = JSON.parse(run.stdout);
    // Different bytes: never linked, and never promised.
    expect(fs.statSync(f1).ino).not.toBe(fs.statSync(f2).ino);
    expect(fs.statSync(f1).nlink).toBe(1);
    expect(sha256File(f1)).toBe(execFileSync('sha256sum', ['-'], { input: a, encoding: 'utf8' }).split(' ')[0]);
    expect(lr.summary.freedBytes).toBe(0);
    expect(dr.summary.freeableBytes).toBe(lr.summary.freedBytes);
    expect(dr.summary.duplicateSets).toBe(0);
  });

  it('the addon and the reference path give one hash under a random key, for holes, written zeros and the public marker as data', () => {
    const secret = randomBytes(192);
    const files: [string, Buffer | number][] = [
      ['zeros', Buffer.concat([Buffer.alloc(3 * MiB), Buffer.from('end')])],
      ['marker', Buffer.concat([PUBLIC_MARKER, Buffer.alloc(MiB - 16, 'p'), Buffer.alloc(MiB), Buffer.from('end')])],
      ['holes', 3 * MiB + 3],
    ];
    const hashes = new Map<string, [bigint, bigint]>();
    for (const [name, data] of files) {
      const file = path.join(dir, name);
      if (typeof data === 'number') {
        fs.writeFileSync(file, '');
        fs.truncateSync(file, data);
        const fd = fs.openSync(file, 'r+');
        fs.writeSync(fd, Buffer.from('end'), 0, 3, data - 3);
        fs.closeSync(fd);
      } else fs.writeFileSync(file, data);
      const fd = fs.openSync(file, 'r');
      try {
        const size = fs.fstatSync(fd).size;
        hashes.set(name, [sys.hashFd(fd, size, secret), hashFd(fd, size, Buffer.alloc(MiB), secret)]);
      } finally {
        fs.closeSync(fd);
      }
    }
    for (const [name, [native, reference]] of hashes) expect([name, native]).toEqual([name, reference]);
    // Holes and written zeros are one content; the marker written as data is another.
    expect(hashes.get('holes')![0]).toBe(hashes.get('zeros')![0]);
    expect(hashes.get('marker')![0]).not.toBe(hashes.get('zeros')![0]);
  });
});
