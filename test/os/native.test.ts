// The record layouts the addon exports, checked against independent sources: fs.lstatSync (bigint) and
// /proc/self/fdinfo for stat records of real files of every type, the xxhash-wasm reference and Python's
// os.getxattr for hash job records.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkCodes, checkLayout, layout, native } from '../../src/os/native.js';
import { O, sys } from '../../src/os/sys.js';
import { decodeResults, encodeJobs } from '../../src/pipeline/hash.js';
import { collectInodes } from '../../src/pipeline/group.js';
import { closeRoots, openRoots } from '../../src/pipeline/roots.js';
import { walk } from '../../src/pipeline/walk.js';
import { rmTree, sh, tempDir, writeFile } from '../helpers/tree.js';
import { FileType, type Stat } from '../../src/core/stat.js';
import { DEFAULT_SECRET } from '../../src/core/xxh3.js';
import { xxhsumH3 } from '../helpers/xxh3.js';
import { relPath } from '../../src/core/paths.js';

const B = (s: string) => Buffer.from(s);
const clone = (): Record<string, any> => structuredClone(native.layout) as Record<string, any>;

describe('layout', () => {
  it('has every field the decoders use, at their width, each record a whole number of aligned words, no two fields overlapping', () => {
    expect(() => checkLayout(native.layout)).not.toThrow();
    const raw = clone();
    for (const rec of ['stat', 'hashIn', 'hashOut', 'hashXattr']) {
      const fields = Object.values(raw[rec].fields as Record<string, { offset: number; width: number }>).sort((a, b) => a.offset - b.offset);
      expect(raw[rec].headerSize % raw.recordAlign).toBe(0);
      for (let k = 1; k < fields.length; k++) expect(fields[k - 1]!.offset + fields[k - 1]!.width).toBeLessThanOrEqual(fields[k]!.offset);
      // What the decoders bound equals what the addon says.
      for (const [name, f] of Object.entries(raw[rec].fields as Record<string, { offset: number }>)) {
        expect((layout as unknown as Record<string, Record<string, number>>)[rec]![name]).toBe(f.offset);
      }
    }
    expect(new Set(layout.hashCalls).size).toBe(layout.hashCalls.length);
  });

  it('refuses an addon whose layout lacks a field, reads it at another width, or lacks the call names', () => {
    const missing = clone();
    delete missing.stat.fields.mode;
    expect(() => checkLayout(missing)).toThrow(/layout\.stat\.fields\.mode .*npm ci/);
    const wider = clone();
    wider.hashIn.fields.uid.width = 8;
    expect(() => checkLayout(wider)).toThrow(/layout\.hashIn\.fields\.uid/);
    const outside = clone();
    outside.hashOut.fields.hash.offset = outside.hashOut.headerSize;
    expect(() => checkLayout(outside)).toThrow(/layout\.hashOut\.fields\.hash/);
    const noCalls = clone();
    delete noCalls.hashCalls;
    expect(() => checkLayout(noCalls)).toThrow(/layout\.hashCalls/);
    expect(() => checkLayout(undefined)).toThrow(/recordAlign/);
  });

  it('gives the file type codes FileType has, no more, no fewer', () => {
    expect(() => checkCodes('fileTypes', FileType, layout.fileTypes)).not.toThrow();
    expect(() => checkCodes('fileTypes', FileType, { ...layout.fileTypes, Fifo: 9 })).toThrow(/fileTypes\.Fifo/);
    expect(() => checkCodes('fileTypes', FileType, { ...layout.fileTypes, Door: 8 })).toThrow(/fileTypes\.Door/);
  });
});

/** What lstat says, in the shape of a decoded record. */
function reference(file: string | Buffer): Omit<Stat, 'mntId'> {
  const s = fs.lstatSync(file, { bigint: true });
  const type = s.isFile()
    ? FileType.Regular
    : s.isDirectory()
      ? FileType.Directory
      : s.isSymbolicLink()
        ? FileType.Symlink
        : s.isFIFO()
          ? FileType.Fifo
          : s.isSocket()
            ? FileType.Socket
            : s.isCharacterDevice()
              ? FileType.CharDevice
              : s.isBlockDevice()
                ? FileType.BlockDevice
                : FileType.Other;
  const G = 1_000_000_000n;
  return {
    type,
    mode: Number(s.mode),
    uid: Number(s.uid),
    gid: Number(s.gid),
    nlink: Number(s.nlink),
    ino: Number(s.ino),
    dev: Number(s.dev),
    size: Number(s.size),
    blocks: Number(s.blocks),
    mtimeSec: Number(s.mtimeNs / G),
    mtimeNsec: Number(s.mtimeNs % G),
    ctimeSec: Number(s.ctimeNs / G),
    ctimeNsec: Number(s.ctimeNs % G),
  };
}
// Stat records decode with an empty name (one object shape for all); compare the stat fields alone.
const withoutMount = (s: Stat) => {
  const { mntId: _m, name: _n, errno: _e, ...rest } = s as Stat & { name?: Buffer; errno?: number };
  return rest;
};
const mountOf = (fd: number) => Number(/^mnt_id:\s*(\d+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]);

describe('stat records', () => {
  let dir: string;
  let fd: number;
  const names = ['file', 'link-to-file', 'sub', 'symlink', 'fifo', 'socket', 'null', 'loop'];
  const odd = Buffer.from([0x66, 0xff, 0x0a, 0x80]); // not UTF-8, with a newline

  beforeAll(() => {
    dir = tempDir();
    writeFile(path.join(dir, 'file'), { content: 'x'.repeat(5000), mode: 0o4751, uid: 1234, gid: 5678, mtime: '1234567890.987654321' });
    fs.linkSync(path.join(dir, 'file'), path.join(dir, 'link-to-file'));
    fs.mkdirSync(path.join(dir, 'sub'));
    fs.symlinkSync('/etc/passwd', path.join(dir, 'symlink'));
    sh('mkfifo', path.join(dir, 'fifo'));
    sh('python3', '-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', path.join(dir, 'socket'));
    sh('mknod', path.join(dir, 'null'), 'c', '1', '3');
    sh('mknod', path.join(dir, 'loop'), 'b', '7', '200');
    fs.writeFileSync(Buffer.concat([B(dir + '/'), odd]), 'odd');
    fd = sys.open(dir, O.RDONLY | O.DIRECTORY);
  });
  afterAll(() => {
    sys.close(fd);
    rmTree(dir);
  });

  it('decode to what lstat says, for a file of every type', () => {
    const types = new Set<FileType>();
    for (const name of names) {
      const st = sys.statAt(fd, B(name));
      expect([name, withoutMount(st)]).toEqual([name, reference(path.join(dir, name))]);
      types.add(st.type);
    }
    expect(types.size).toBe(7); // every type but Other and Error
    expect(withoutMount(sys.fstat(fd))).toEqual(reference(dir));
    expect(sys.fstat(fd).mntId).toBe(mountOf(fd));
  });

});

describe('hash job records', () => {
  let dir: string;
  // tmpfs keeps xattr lists and values past 4 KiB, which ext4 does not: both sizes are read.
  beforeAll(() => {
    dir = fs.mkdtempSync('/dev/shm/vunify-test-');
    writeFile(path.join(dir, 'empty'), { content: '' });
    writeFile(path.join(dir, 'small'), { content: 'small file\n', uid: 7, gid: 8, mode: 0o600, mtime: '1600000000.000000001' });
    writeFile(path.join(dir, 'deep/er/big'), { content: Buffer.from(Array.from({ length: 3 * 2 ** 20 + 13 }, (_, i) => (i * 31) & 0xff)) });
    fs.writeFileSync(Buffer.concat([B(dir + '/deep/'), Buffer.from([0xfe, 0x0a, 0x41])]), 'odd name');
    writeFile(path.join(dir, 'xattrs'), { content: 'with xattrs', xattrs: { 'user.b': 'two', 'user.a': 'one' } });
    writeFile(path.join(dir, 'many-xattrs'), { content: 'with many' });
    sh(
      'python3',
      '-c',
      "import os,sys\nf=sys.argv[1]\nos.setxattr(f,'user.big',bytes(range(256))*40)\nfor i in range(300): os.setxattr(f,'user.n%04d-padding-padding-padding'%i,b'%d'%i)",
      path.join(dir, 'many-xattrs'),
    );
  });
  afterAll(() => rmTree(dir));

  /** The xattrs of `file` as Python lists and reads them: [name, value] in hex, sorted by name. */
  function kernelPairs(file: string | Buffer): [string, string][] {
    const out = sh(
      'python3',
      '-c',
      'import os,sys,json\nf=bytes.fromhex(sys.argv[1])\nprint(json.dumps(sorted([[os.fsencode(n).hex(), os.getxattr(f,n).hex()] for n in os.listxattr(f)])))',
      Buffer.from(file).toString('hex'),
    );
    return JSON.parse(out) as [string, string][];
  }

  /** The documented digest of those xattrs, computed by Python's hashlib: SHA-256 of (u32 LE name length, u32 LE value length, name, value) per xattr; '' for none. */
  function kernelXattrs(file: string | Buffer): string {
    return sh(
      'python3',
      '-c',
      'import os,sys,hashlib,struct\nf=bytes.fromhex(sys.argv[1])\nns=sorted(os.fsencode(n) for n in os.listxattr(f))\nh=hashlib.sha256()\nfor n in ns:\n  v=os.getxattr(f,n); h.update(struct.pack("<II",len(n),len(v))+n+v)\nprint(h.hexdigest() if ns else "")',
      Buffer.from(file).toString('hex'),
    ).trim();
  }

  it('round-trip: every job comes back hashed as xxhsum -H3 hashes the bytes, with the xattrs the kernel lists', async () => {
    const roots = openRoots([dir]);
    try {
      const walked = await walk(roots, { rules: [], minSize: 0, maxSize: Infinity, onError: () => {} });
      const inodes = collectInodes(walked.files);
      expect(inodes.length).toBe(6);
      const results = decodeResults(await sys.hashFiles(encodeJobs(inodes, 0, inodes.length), Buffer.from(DEFAULT_SECRET)));
      const sums = xxhsumH3(dir, inodes.map((inode) => fs.readFileSync(Buffer.concat([B(dir + '/'), relPath(inode.paths[0]!)]))));
      const got = inodes.map((inode, k) => {
        const f = inode.paths[0]!;
        return [relPath(f).toString('hex'), results[k]];
      });
      const want = inodes.map((inode, k) => {
        const f = inode.paths[0]!;
        const rel = relPath(f);
        const file = Buffer.concat([B(dir + '/'), rel]);
        return [rel.toString('hex'), { hash: sums[k], xattrs: kernelXattrs(file), elf: false, flags: expect.any(Number), projid: 0 }];
      });
      expect(got).toEqual(want);
      expect(results.filter((r) => 'xattrs' in r && r.xattrs !== '').length).toBe(2);
    } finally {
      closeRoots(roots);
    }
  });

  it('getXattrs reads the same lists and values past 4 KiB, through an O_PATH descriptor too', () => {
    const file = path.join(dir, 'many-xattrs');
    for (const flags of [O.RDONLY, O.PATH]) {
      const fd = sys.open(file, flags);
      try {
        expect(sys.getXattrs(fd).map(([n, v]) => [n.toString('hex'), v.toString('hex')])).toEqual(kernelPairs(file));
      } finally {
        sys.close(fd);
      }
    }
  });
});
