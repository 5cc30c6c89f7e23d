// Test helpers only (never in src/): XXH3-64 as an independent tool
// computes it (`xxhsum -H3`, Debian's xxhash package), and a forged XXH3
// collision under a KNOWN secret, as a hostile guest can make one for the
// public default secret.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_SECRET } from '../../src/core/xxh3.js';

/** XXH3-64 (default secret) of each buffer by `xxhsum -H3`, in one run over files in `dir`. */
export function xxhsumH3(dir: string, bufs: readonly Buffer[]): bigint[] {
  const files = bufs.map((b, i) => {
    const f = path.join(dir, `xxhsum-${i}`);
    fs.writeFileSync(f, b);
    return f;
  });
  const r = spawnSync('xxhsum', ['-H3', ...files], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`xxhsum -H3: ${r.stderr || r.error}`);
  // "XXH3 (FILE) = HEX" (BSD style, as xxhsum 0.8 prints -H3), one line per file, in order.
  const out = r.stdout.trim().split('\n').map((line) => BigInt(`0x${line.slice(line.lastIndexOf(' ') + 1)}`));
  for (const f of files) fs.rmSync(f);
  if (out.length !== bufs.length) throw new Error(`xxhsum -H3: ${out.length} lines for ${bufs.length} files`);
  return out;
}

/**
 * Two different contents of `base`'s length (at least 1024 bytes) that
 * XXH3-64 under `secret` hashes alike. In the long form each 8-byte lane
 * of a stripe adds (lo32 * hi32) of (data ^ secret) to its accumulator and
 * the data itself to its neighbour's. A lane whose low half equals the
 * secret's multiplies by zero, so its high half only adds to the
 * neighbour: raising it by d in one stripe and lowering it by d in the
 * next stripe of the same block (no scramble between) leaves every
 * accumulator as it was. Lane 0 of the first two stripes: bytes 0..7 and
 * 64..71, read with secret bytes 0..7 and 8..15.
 */
export function forgeXxh3Pair(base: Buffer, secret: Uint8Array = DEFAULT_SECRET): [Buffer, Buffer] {
  if (base.length < 1024) throw new Error('forgeXxh3Pair needs at least 1024 bytes');
  const s = Buffer.from(secret);
  const a = Buffer.from(base);
  a.writeUInt32LE(s.readUInt32LE(0), 0);
  a.writeUInt32LE(s.readUInt32LE(8), 64);
  const b = Buffer.from(a);
  const d = 0x1234567;
  b.writeUInt32LE((a.readUInt32LE(4) + d) >>> 0, 4);
  b.writeUInt32LE((a.readUInt32LE(68) - d) >>> 0, 68);
  return [a, b];
}
