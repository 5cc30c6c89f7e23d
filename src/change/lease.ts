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
 * is intact nothing was written to the inode since it was taken. Metadata
 * changes (chmod, chown, xattrs, utimes, chattr) do not break leases: the
 * callers still compare metadata, xattrs and flags after the exchange and
 * re-check ctimes as before. A lease that cannot be had (a writer has the
 * file open: EAGAIN; leases disabled or unsupported by the filesystem:
 * EINVAL) leaves that pair to the second comparison, as before.
 *
 * Held for microseconds: taken just before the comparison, released as
 * soon as the swap is settled or undone (a breaker waits that long).
 * The signal a break sends is made harmless in native/lease.c.
 */
import { codedError } from '../core/errors.js';
import { sys } from '../os/sys.js';

/**
 * Smaller files are compared twice instead: a lease on each of two files
 * (take, check twice, release: 8 fcntl calls) costs about as much as
 * reading and comparing two files of this size again, and files below it
 * hold under a tenth of the bytes of a Debian guest (most of its files).
 */
export const LEASE_MIN_SIZE = 16 << 10;

const CANONICAL = 1;
const DUPLICATE = 2;

export class PairLease {
  private released = false;
  private constructor(
    private readonly canonFd: number,
    private readonly dupFd: number,
  ) {}

  /** Lease both inodes (open O_RDONLY), or undefined: this pair is compared twice. */
  static take(canonFd: number, dupFd: number, size: number): PairLease | undefined {
    if (size < LEASE_MIN_SIZE) return undefined;
    return sys.leasePair(canonFd, dupFd) === 0 ? new PairLease(canonFd, dupFd) : undefined;
  }

  /** Which inodes someone opened for writing (or truncated) since the lease was taken; undefined when neither. */
  broken(): { canonical: boolean; duplicate: boolean } | undefined {
    if (this.released) return { canonical: true, duplicate: true };
    const held = sys.leaseHeld(this.canonFd, this.dupFd);
    if (held === (CANONICAL | DUPLICATE)) return undefined;
    return { canonical: !(held & CANONICAL), duplicate: !(held & DUPLICATE) };
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
