// The native linker reads a segment's canonical once while its read lease
// holds (native/link.c canon_unlease, held_canonical), through
// sys.linkBatch directly on real files, counting what the process read
// (/proc/self/io rchar) during the call:
//   - a set of files above the lease threshold and below CHUNK (1 MiB):
//     the canonical once, each duplicate once;
//   - at CHUNK and above (compared by data extents, not held): both files
//     of every pair, as before;
//   - a writer opening the canonical between two pairs (the JS hook, one
//     thread): the lease is found broken at the next pair, released, taken
//     again, and the canonical read again (so bytes read under a broken
//     lease are never compared again);
//   - a writer that changed the canonical's bytes while the call held its
//     lease (a real process, blocked in open(2) until the lease is given
//     up): the pair it was on is handed back, never linked, and the
//     duplicate keeps its bytes.
// Every linked path is checked with stat and sha256 afterwards.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FS_FILE_FLAGS } from '../../src/core/stat.js';
import { LINK, LINK_ARRAY, LINK_TMP, O, statDoubles, sys } from '../../src/os/sys.js';
import { writePair } from '../helpers/link-pairs.js';
import { rmTree, sha256File, tempDir } from '../helpers/tree.js';

const { stat: ST, pair: PR, out: OUT, seg: SG } = LINK_ARRAY;
const CHUNK = 1 << 20;
let top: string;
beforeAll(() => (top = tempDir('vunify-link-held-')));
afterAll(() => rmTree(top));

const rchar = () => Number(/rchar: (\d+)/.exec(fs.readFileSync('/proc/self/io', 'utf8'))![1]);

/** One set under a new directory: canonical `c` and `dups` duplicates d0..dN-1 of `size` bytes, as one segment. */
function build(name: string, size: number, dups: number) {
  const root = path.join(top, name);
  fs.mkdirSync(root);
  const content = Buffer.alloc(size, `${name} `);
  const file = (n: string) => path.join(root, n);
  for (const n of ['c', ...Array.from({ length: dups }, (_, i) => `d${i}`)]) {
    fs.writeFileSync(file(n), content);
    fs.utimesSync(file(n), 1_700_000_000, 1_700_000_000);
  }
  const rootFd = sys.open(root, O.RDONLY | O.DIRECTORY | O.CLOEXEC);
  const canonFd = sys.open(file('c'), O.RDONLY | O.CLOEXEC);
  const segs = new Float64Array(SG.length);
  const canonExpect = new Float64Array(ST.length);
  statDoubles(sys.fstat(canonFd), canonExpect, 0);
  segs[SG.canon] = canonFd;
  segs[SG.start] = 0;
  segs[SG.count] = dups;
  const pairs = new Float64Array(dups * PR.length);
  const names: Buffer[] = [];
  let offset = 0;
  for (let i = 0; i < dups; i++) {
    writePair(pairs, i, rootFd, root, file(`d${i}`), offset);
    const b = Buffer.from(`.\0d${i}\0`);
    names.push(b);
    offset += b.length;
  }
  const out = new Float64Array(dups * OUT.length).fill(-7);
  const tmps = Buffer.alloc(dups * LINK_TMP);
  const call = (threads = 1) => {
    const before = rchar();
    sys.linkBatch(segs, canonExpect, -1, 0, FS_FILE_FLAGS, pairs, Buffer.concat(names), out, tmps, threads);
    return rchar() - before;
  };
  const code = (i: number) => out[i * OUT.length + OUT.code];
  const closeAll = () => {
    for (let i = 0; i < dups; i++) {
      const c = code(i);
      if (c !== LINK.LINKED && c !== LINK.FALLBACK && c !== -7) for (const f of [OUT.dirFd, OUT.dupFd]) if (out[i * OUT.length + f]! >= 0) sys.close(out[i * OUT.length + f]!);
    }
    sys.close(canonFd);
    sys.close(rootFd);
  };
  return { root, file, content, call, code, segs, closeAll, canonFd };
}

describe('the canonical held in memory while its lease holds', () => {
  it('a set below CHUNK: the canonical is read once, each duplicate once', () => {
    const size = 64 << 10, dups = 5;
    const b = build('small', size, dups);
    const read = b.call(2);
    expect(b.segs[SG.done]).toBe(dups);
    for (let i = 0; i < dups; i++) expect(b.code(i)).toBe(LINK.LINKED);
    // (1 + dups) files read once each; reading the canonical per pair would be 2 * dups.
    expect(read).toBeGreaterThanOrEqual((1 + dups) * size);
    expect(read).toBeLessThan((2 + dups) * size);
    const c = fs.statSync(b.file('c'));
    for (let i = 0; i < dups; i++) expect(fs.statSync(b.file(`d${i}`)).ino).toBe(c.ino);
    expect(c.nlink).toBe(1 + dups);
    expect(sha256File(b.file('c'))).toBe(createHash('sha256').update(b.content).digest('hex'));
    expect(fs.readdirSync(b.root).filter((n) => n.startsWith('.vunify.'))).toEqual([]);
    b.closeAll();
  });

  it('a set at CHUNK and above is not held: both files of every pair are read', () => {
    const size = CHUNK, dups = 3;
    const b = build('large', size, dups);
    const read = b.call(1);
    for (let i = 0; i < dups; i++) expect(b.code(i)).toBe(LINK.LINKED);
    expect(read).toBeGreaterThanOrEqual(2 * dups * size);
    b.closeAll();
  });

  it('a writer opening the canonical between two pairs: the lease is taken again and the canonical read again', () => {
    const size = 64 << 10, dups = 3;
    const b = build('between', size, dups);
    // What the hook saw (an expect() failing in a hook would be swallowed by the addon).
    const seen: { held: number; open: string }[] = [];
    sys.setLinkHook((step, when) => {
      // After the first pair's unlink, the canonical's lease is still held for the next pair.
      if (step !== 'unlink' || when !== 'after' || seen.length) return;
      const held = sys.leaseHeld(b.canonFd, b.canonFd) & 1;
      // A writer's open: refused while the lease holds, and it starts the lease's break.
      let open = 'opened';
      try {
        fs.closeSync(fs.openSync(b.file('c'), fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
      } catch (er) {
        open = (er as NodeJS.ErrnoException).code!;
      }
      seen.push({ held, open });
    });
    let read: number;
    try {
      read = b.call(1);
    } finally {
      sys.setLinkHook(null);
    }
    expect(seen).toEqual([{ held: 1, open: 'EAGAIN' }]); // EWOULDBLOCK
    for (let i = 0; i < dups; i++) expect(b.code(i)).toBe(LINK.LINKED);
    // Canonical read twice (before and after the break), each duplicate once.
    expect(read).toBeGreaterThanOrEqual((2 + dups) * size);
    expect(read).toBeLessThan((3 + dups) * size);
    b.closeAll();
  });

  it('a writer that changed the canonical under the held lease: that pair is handed back, its duplicate keeps its bytes', async () => {
    const size = 64 << 10, dups = 3;
    const b = build('changed', size, dups);
    const before = Array.from({ length: dups }, (_, i) => ({ ino: fs.statSync(b.file(`d${i}`)).ino, sum: sha256File(b.file(`d${i}`)) }));
    const canon = b.file('c');
    // Blocks in open(2) until the call lets the canonical's lease go, then writes and puts the mtime back.
    const script = `import os,sys\nfd=os.open(sys.argv[1],os.O_WRONLY)\nos.pwrite(fd,b'WRITER',0)\nos.utime(fd,ns=(1700000000*10**9,1700000000*10**9))\nos.close(fd)\n`;
    let writer: ReturnType<typeof spawn> | undefined;
    let heldAfter = -1;
    const sab = new Int32Array(new SharedArrayBuffer(4));
    sys.setLinkHook((step, when, _dirFd, name) => {
      // The second pair, its leases taken (the canonical's held since the first pair) and its comparison next.
      if (step !== 'compare' || when !== 'before' || name.toString() !== 'd1' || writer) return;
      writer = spawn('python3', ['-c', script, canon], { stdio: 'ignore' });
      // Until the writer's open has started the lease's break (it then waits for the call).
      for (let t = 0; t < 10_000 && (sys.leaseHeld(b.canonFd, b.canonFd) & 1) === 1; t++) Atomics.wait(sab, 0, 0, 1);
      heldAfter = sys.leaseHeld(b.canonFd, b.canonFd) & 1;
    });
    try {
      b.call(1);
    } finally {
      sys.setLinkHook(null);
    }
    expect(writer).toBeDefined();
    expect(heldAfter).toBe(0); // the writer's open broke the held lease before the comparison
    const code = await new Promise((r) => writer!.once('exit', r));
    expect(code).toBe(0);
    expect(b.code(0)).toBe(LINK.LINKED);
    expect(b.segs[SG.done]).toBe(2); // the call ends with the pair handed back
    expect(b.code(1)).toBe(LINK.LEASE);
    expect(b.code(2)).toBe(-7);
    // d1 and d2 keep their own inode and bytes; the canonical (shared with d0 since the first pair) has the writer's bytes.
    for (const i of [1, 2]) {
      expect(fs.statSync(b.file(`d${i}`)).ino).toBe(before[i]!.ino);
      expect(sha256File(b.file(`d${i}`))).toBe(before[i]!.sum);
    }
    expect(fs.readFileSync(canon).subarray(0, 6).toString()).toBe('WRITER');
    expect(fs.statSync(b.file('d0')).ino).toBe(fs.statSync(canon).ino);
    expect(fs.readdirSync(b.root).filter((n) => n.startsWith('.vunify.'))).toEqual([]);
    b.closeAll();
  });
});
