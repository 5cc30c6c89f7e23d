/*
 * Manifests: one host's content, compact enough to copy around, and the
 * estimate of consolidating several hosts' guests onto one.
 *
 * A manifest line stands for every file of one guest with the same content
 * (size + keyed XXH3-64) and the same policy key (a digest of size, owner,
 * group, permission bits, mtime in ns unless --ignore-mtime, inode flags and
 * every xattr): what must agree for two files to become one inode
 * (pipeline/policy.ts). The filesystem, mount and project ID are left out on
 * purpose: consolidation moves guests onto one filesystem, and projects are
 * a host's quota bookkeeping.
 *
 * Hashes are keyed with the hash key (state/hash-key.ts), so they match
 * across hosts only under the same key: a fleet copies one key file to
 * every host (--hash-key). The manifest records the key's fingerprint
 * (never the key) and the merge refuses manifests of different keys. Lines carry
 * how many inodes of that guest hold it (an inode is charged to the guest of
 * its first path, as in the report) and how many paths, so the merge can
 * tell today's disk use from the use after unification.
 *
 * Consolidation estimates trust the 64-bit hash: unlike linking, which
 * compares every byte, a merge only ever sees hashes. The format is text,
 * tab-separated, and gzip-compressed when the file name ends in .gz; see
 * docs/manifest.md. The Parquet form and the merge itself (SQL on DuckDB)
 * are in report/parquet.ts and report/fleet.ts; the merge's report shape
 * stays here.
 */
import fs from 'node:fs';
import os from 'node:os';
import zlib from 'node:zlib';
import { UsageError } from '../core/errors.js';
import { comparePaths } from '../pipeline/plan.js';
import type { Inode, Root } from '../core/types.js';
import { getHasher } from '../core/xxhash.js';
import { fileFlags } from '../pipeline/policy.js';
import { UNKEYED, type HashKey } from '../state/hash-key.js';

/**
 * What the content hash is: XXH3-64 under the secret derived from the hash
 * key. Manifests written before it name 'xxh64-keyed' (XXH64 seeded from
 * the key): the same key, another function, so never merged with these.
 */
export const MANIFEST_HASH = 'xxh3-keyed';
/** What a manifest without a #hash line was hashed with (none was written without one). */
const OLDEST_HASH = 'xxh64-keyed';

export const MANIFEST_MAGIC = '#vunify-manifest\t1';

export interface ManifestEntry {
  hash: string;
  size: number;
  policy: string;
  guest: number;
  inodes: number;
  paths: number;
}

export interface Manifest {
  host: string;
  /** The fingerprint of the hash key its hashes were made under ('unkeyed' for manifests from before keys). */
  key: string;
  /** The function that made its content hashes (MANIFEST_HASH for manifests this vunify writes). */
  hash: string;
  created: string;
  ignoreMtime: boolean;
  guests: string[];
  entries: ManifestEntry[];
}

const hex = (n: bigint) => n.toString(16).padStart(16, '0');

/** The entries of one host's hashed inodes (unhashed ones, whose read failed, are left out). */
export async function buildManifest(roots: readonly Root[], inodes: readonly Inode[], ignoreMtime: boolean, key: HashKey): Promise<Manifest> {
  const h = await getHasher();
  const entries = new Map<string, ManifestEntry>();
  for (const inode of inodes) {
    if (inode.hash === undefined) continue;
    const s = inode.stat;
    const flags = fileFlags(inode.flags);
    const policy = hex(h.h64(`${s.size}:${s.uid}:${s.gid}:${(s.mode & 0o7777).toString(8)}:${ignoreMtime ? '' : `${s.mtimeSec}.${s.mtimeNsec}`}:${flags ? `${flags.toString(16)}:` : ''}${inode.xattrs}`));
    const hash = hex(inode.hash);
    const owner = inode.paths.reduce((a, b) => (comparePaths(b, a) < 0 ? b : a)).dir.root.index;
    const touch = (guest: number) => {
      const key = `${hash}${policy}${guest}`;
      let e = entries.get(key);
      if (!e) entries.set(key, (e = { hash, size: s.size, policy, guest, inodes: 0, paths: 0 }));
      return e;
    };
    touch(owner).inodes++;
    for (const p of inode.paths) touch(p.dir.root.index).paths++;
  }
  return { host: os.hostname(), key: key.fingerprint, hash: MANIFEST_HASH, created: new Date().toISOString(), ignoreMtime, guests: roots.map((r) => r.path), entries: [...entries.values()] };
}

/**
 * Which hash made a manifest's content hashes, as Parquet manifests name it
 * (vunify_hash_key_id; the merge refuses to mix them): the hash function
 * (MANIFEST_HASH, or xxh64-keyed for manifests written before XXH3) and the
 * key's fingerprint, or XXH64 with seed 0 for manifests from before keys.
 */
export const hashKeyIdOf = (m: Pick<Manifest, 'key' | 'hash'>): string => (m.key === UNKEYED ? 'xxh64-seed0' : `${m.hash}:${m.key}`);

/** What the policy key digests, as the manifests' headers name it. */
export const policyFields = (ignoreMtime: boolean): string => (ignoreMtime ? 'size,uid,gid,mode,flags,xattrs' : 'size,uid,gid,mode,mtime,flags,xattrs');

export function formatManifest(m: Manifest): string {
  const head = [MANIFEST_MAGIC, `#host\t${m.host}`, `#created\t${m.created}`, `#policy\t${policyFields(m.ignoreMtime)}`];
  head.push(`#hash\t${m.hash}`, `#key\t${m.key}`);
  head.push(...m.guests.map((g, i) => `#guest\t${i}\t${encodeURI(g)}`));
  const lines = m.entries.map((e) => `${e.hash}\t${e.size}\t${e.policy}\t${e.guest}\t${e.inodes}\t${e.paths}`);
  return [...head, ...lines].join('\n') + '\n';
}

export function writeManifest(file: string, m: Manifest): void {
  const text = formatManifest(m);
  fs.writeFileSync(file, file.endsWith('.gz') ? zlib.gzipSync(text) : text);
}

export function readManifest(file: string): Manifest {
  let raw: Buffer;
  try {
    raw = fs.readFileSync(file);
  } catch (er) {
    throw new UsageError(`${file}: cannot read manifest: ${(er as Error).message}`);
  }
  const text = (raw[0] === 0x1f && raw[1] === 0x8b ? zlib.gunzipSync(raw) : raw).toString('utf8');
  return parseManifest(text, file);
}

export function parseManifest(text: string, file: string): Manifest {
  const lines = text.split('\n');
  if (lines[0] !== MANIFEST_MAGIC) throw new UsageError(`${file}: not a vunify manifest (version 1): first line is not '${MANIFEST_MAGIC.replace('\t', '\\t')}'`);
  const m: Manifest = { host: file, key: UNKEYED, hash: OLDEST_HASH, created: '', ignoreMtime: false, guests: [], entries: [] };
  for (const [n, line] of lines.entries()) {
    if (n === 0 || !line) continue;
    const f = line.split('\t');
    const bad = () => new UsageError(`${file}:${n + 1}: malformed manifest line`);
    if (f[0] === '#host') m.host = f[1] ?? file;
    else if (f[0] === '#created') m.created = f[1] ?? '';
    else if (f[0] === '#key') m.key = f[1] || UNKEYED;
    else if (f[0] === '#hash') m.hash = f[1] || OLDEST_HASH;
    else if (f[0] === '#policy') m.ignoreMtime = !(f[1] ?? '').split(',').includes('mtime');
    else if (f[0] === '#guest') m.guests[Number(f[1])] = decodeURI(f[2] ?? '');
    else if (f[0]!.startsWith('#')) continue; // a later minor addition: ignore
    else {
      if (f.length < 6 || !/^[0-9a-f]{16}$/.test(f[0]!) || !/^[0-9a-f]{16}$/.test(f[2]!)) throw bad();
      const [size, guest, inodes, paths] = [f[1], f[3], f[4], f[5]].map(Number) as [number, number, number, number];
      if (![size, guest, inodes, paths].every(Number.isSafeInteger) || m.guests[guest] === undefined) throw bad();
      m.entries.push({ hash: f[0]!, size, policy: f[2]!, guest, inodes, paths });
    }
  }
  return m;
}

export interface HostEstimate {
  host: string;
  file: string;
  guests: number;
  files: number;
  bytes: number;
  /** Σ inodes × size: what the guests take on disk today. */
  diskBytes: number;
  /** What they would take unified on their own host. */
  unifiedBytes: number;
}

export interface MergeReport {
  kind: 'vunify-merge';
  version: 1;
  hosts: HostEstimate[];
  totals: { guests: number; diskBytes: number; unifiedBytes: number; consolidatedBytes: number; savingBytes: number; extraSavingBytes: number };
  /** Bytes each pair of hosts has in common (content and policy). */
  matrix: { hosts: string[]; bytes: number[][] };
}
