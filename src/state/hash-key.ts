/*
 * The host's hash key: 32 random bytes that key the XXH3-64 which nominates
 * identical files, so a guest cannot compute collisions it cannot see.
 *
 * XXH3 under its public default secret is easily forged (its stripe loop
 * multiplies 32-bit halves of data xor secret: known secret bytes let a
 * guest cancel a product and make two contents of one size hash alike).
 * So the key derives the whole 192-byte secret (not a 64-bit seed over
 * the default secret: with that, fixed pairs of 32-byte inputs collide
 * for about 2^-10.5 of all seeds, xxHash issue #1127; under a random
 * secret about 2^-27 per key). This is a keyed nomination, not a MAC:
 * XXH3 is no cryptographic function and 64 bits are few, so the linker
 * still compares every byte, and a set that turns out to hold two
 * contents is split (change/link.ts), never linked across.
 *
 * The key is created on first use as STATE_DIR/hash.key (mode 0600, owner
 * root, never in a guest), or named with --hash-key FILE (config
 * `hash-key`), which must exist: a fleet copies one key file to every host
 * so their manifests hash alike (docs/manifest.md). A key file that is not
 * a 32-byte regular file owned by us and unreadable by others is refused
 * (exit 2): anyone who could read it could forge collisions again.
 *
 * From the key, two values with separate purposes (HMAC-SHA-256 with
 * distinct labels), so showing one reveals nothing of the other: the
 * 192-byte XXH3 secret (six HMAC blocks, counter mode), and a fingerprint
 * that the hash cache and manifests record to tell which key their hashes
 * were made under.
 */
import { createHmac, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { errorCode, UsageError } from '../core/errors.js';
import { SECRET_SIZE } from '../core/xxh3.js';

export const KEY_FILE = 'hash.key';
export const KEY_BYTES = 32;

export interface HashKey {
  file: string;
  /** The XXH3 secret (SECRET_SIZE bytes) every content hash of this run uses. */
  secret: Buffer;
  /** 16 hex digits naming the key (not the key, nor the seed). */
  fingerprint: string;
}

/** Secret and fingerprint of raw key bytes. */
export function deriveKey(key: Buffer, file = ''): HashKey {
  const blocks = Array.from({ length: SECRET_SIZE / 32 }, (_, i) => createHmac('sha256', key).update(`vunify xxh3 secret 1 block ${i}`).digest());
  const secret = Buffer.concat(blocks);
  const fingerprint = createHmac('sha256', key).update('vunify key fingerprint 1').digest().subarray(0, 8).toString('hex');
  return { file, secret, fingerprint };
}

/**
 * Read the key at `file`, creating it first when `create` (the default key
 * in the state directory) and it does not exist. Throws UsageError when the
 * file cannot be trusted or read.
 */
export function loadHashKey(file: string, opts: { create: boolean }): HashKey {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (er) {
    if (errorCode(er) === 'ENOENT' && opts.create) {
      createKey(file);
      return loadHashKey(file, { create: false });
    }
    throw new UsageError(`${file}: cannot read the hash key: ${(er as Error).message}`);
  }
  try {
    const st = fs.fstatSync(fd);
    const why = !st.isFile()
      ? 'not a regular file'
      : st.uid !== process.geteuid!()
        ? `owned by uid ${st.uid}, not by uid ${process.geteuid!()}`
        : st.mode & 0o077
          ? `mode ${(st.mode & 0o777).toString(8)}: others may read it (want 600)`
          : st.size !== KEY_BYTES
            ? `${st.size} bytes, not ${KEY_BYTES}`
            : undefined;
    if (why) throw new UsageError(`${file}: refusing this hash key: ${why}`);
    const key = Buffer.alloc(KEY_BYTES);
    if (fs.readSync(fd, key, 0, KEY_BYTES, 0) !== KEY_BYTES) throw new UsageError(`${file}: hash key is short`);
    return deriveKey(key, file);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Write a new key whole or not at all: to a temporary file, then link(2) it
 * to its name, which fails if a concurrent run made one first (that one
 * wins, and both runs use it).
 */
function createKey(file: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp.${process.pid}.${randomBytes(4).toString('hex')}`;
  const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
  try {
    try {
      fs.writeSync(fd, randomBytes(KEY_BYTES));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    try {
      fs.linkSync(tmp, file);
    } catch (er) {
      if (errorCode(er) !== 'EEXIST') throw er;
    }
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

/** Where the key is: --hash-key FILE, else STATE_DIR/hash.key (created when missing). */
export function keyLocation(opts: { hashKey?: string; stateDir: string }): { file: string; create: boolean } {
  return opts.hashKey ? { file: opts.hashKey, create: false } : { file: path.join(opts.stateDir, KEY_FILE), create: true };
}

/** A fingerprint for a hash made with the public seed 0 (manifests written before keys existed). */
export const UNKEYED = 'unkeyed';

