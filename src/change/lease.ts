/*
 * Read leases on the two inodes of one link: the proof, kept from before
 * the byte comparison until the swap is settled, that neither was written
 * in between, so the bytes are read once per link instead of compared
 * again after the exchange (swap.ts settle()).
 *
 * Why a lease is a proof: the kernel grants a read lease only while nobody
 * has the inode open for writing (a writable shared mapping keeps such an
 * open), and any later open for writing or truncate, through any name or
 * /proc link, breaks it. The breaker then waits in open(2) or truncate(2)
 * until we release (O_NONBLOCK openers get EWOULDBLOCK), so while a lease
 * is intact nothing was written to the inode since it was taken. One
 * exception, seen on this kernel: open(O_RDONLY | O_TRUNC) by someone
 * allowed to write truncates to 0 without breaking a read lease; the size
 * then differs from the stat each check compares, which catches it. Metadata
 * changes (chmod, chown, xattrs, utimes, chattr) do not break leases: the
 * callers still compare metadata, xattrs and flags after the exchange and
 * re-check ctimes as before. A lease that cannot be had (a writer has the
 * file open: EAGAIN; leases disabled or unsupported by the filesystem:
 * EINVAL; a filesystem that can be written behind this kernel's open(2),
 * such as NFS, FUSE or overlayfs: EOPNOTSUPP) leaves that pair to the
 * second comparison, as before.
 *
 * Held for microseconds: taken just before the comparison, released as
 * soon as the swap is settled or undone (a breaker waits that long).
 * The signal a break sends is made harmless in native/lease.c.
 */
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { codedError } from '../core/errors.js';
import { sys } from '../os/sys.js';

/**
 * Smaller files are compared twice instead. Measured here (2 cores, under
 * load): leasing a pair (take, three checks, release) costs 6-10 µs, while
 * reading and comparing a pair again costs 2-5 µs at 4 KiB, 4-5 µs at
 * 16 KiB and 11-14 µs at 64 KiB. Files below 16 KiB are 78% of a Debian
 * guest's files but 7% of its bytes; and each lease makes a guest that
 * opens the file for writing meanwhile wait for the link, for no I/O
 * saved there.
 */
export const LEASE_MIN_SIZE = 16 << 10;

const CANONICAL = 1;
const DUPLICATE = 2;

/**
 * How long a breaker waits for us before the kernel takes the lease away
 * (/proc/sys/fs/lease-break-time, read once), in ms, less a second for the
 * clocks: only within it does a broken lease still mean nothing was
 * written. 0 when unknown or too short to rely on.
 */
let breakWaitMs: number | undefined;
function breakWait(): number {
  if (breakWaitMs === undefined) {
    let s = 0;
    try {
      s = Number(fs.readFileSync('/proc/sys/fs/lease-break-time', 'latin1').trim());
    } catch {
      // not Linux as we know it: a break is never read as "nothing written yet"
    }
    breakWaitMs = Number.isFinite(s) && s >= 2 ? (s - 1) * 1000 : 0;
  }
  return breakWaitMs;
}

export class PairLease {
  /** Released (by release()): nothing is proven from here on. */
  released = false;
  /** When both leases were last seen intact (performance.now()). */
  private intactAt = performance.now();
  private constructor(
    private readonly canonFd: number,
    private readonly dupFd: number,
  ) {}

  /** Lease both inodes (open O_RDONLY), or undefined: this pair is compared twice. */
  static take(canonFd: number, dupFd: number, size: number): PairLease | undefined {
    if (size < LEASE_MIN_SIZE) return undefined;
    return sys.leasePair(canonFd, dupFd) === 0 ? new PairLease(canonFd, dupFd) : undefined;
  }

  /**
   * Leases the addon took on this pair (native/link.c) and handed over
   * still held. When they were last seen intact is not known here, so a
   * break is never read as "nothing written yet" (unwritten() is false).
   */
  static adopt(canonFd: number, dupFd: number): PairLease {
    const lease = new PairLease(canonFd, dupFd);
    lease.intactAt = -Infinity;
    return lease;
  }

  /** Which inodes someone opened for writing (or truncated) since the lease was taken; undefined when neither. */
  broken(): { canonical: boolean; duplicate: boolean } | undefined {
    if (this.released) return { canonical: true, duplicate: true };
    const now = performance.now();
    const held = sys.leaseHeld(this.canonFd, this.dupFd);
    if (held === (CANONICAL | DUPLICATE)) {
      this.intactAt = now;
      return undefined;
    }
    return { canonical: !(held & CANONICAL), duplicate: !(held & DUPLICATE) };
  }

  /**
   * Whether nothing can have been written to either inode yet although a
   * lease is broken: every break came after the last time both were seen
   * intact, and its breaker waits (in open or truncate) until we release or
   * the kernel's break time runs out, which it cannot have yet.
   */
  unwritten(): boolean {
    return !this.released && performance.now() - this.intactAt < breakWait();
  }

  /** Let any writer waiting on either inode go on. Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    sys.leaseRelease(this.canonFd, this.dupFd);
  }
}

/**
 * The error for a broken lease: a writer is waiting on one of the inodes,
 * so their contents are not known to stay as compared. `doubt` when it is
 * the canonical (link.ts then trusts it no further than a fresh comparison).
 */
export function leaseError(broken: { canonical: boolean; duplicate: boolean }, what: string): Error {
  const which = broken.duplicate ? 'file' : 'canonical copy';
  return Object.assign(codedError('ECHANGED', `${which} was opened for writing ${what}; left as it was`), { doubt: broken.canonical });
}
