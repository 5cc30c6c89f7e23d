// canonical.ts readConstraints: what the row planner asks (lockedByFlags)
// is what the objects planner asks (locked), and known flags answer without
// the disk (the root's descriptor here is -1: a read would report an error).
import { describe, expect, it } from 'vitest';
import { FS_APPEND_FL, FS_IMMUTABLE_FL, FS_NOCOW_FL } from '../../src/core/stat.js';
import type { Inode } from '../../src/core/types.js';
import { readConstraints } from '../../src/pipeline/canonical.js';

const inodeWith = (flags: number | undefined): Inode =>
  ({ dev: 1, ino: 1, stat: { nlink: 1 }, paths: [{ dir: { root: { fd: -1, path: '/nowhere', index: 0 }, parent: null, name: Buffer.alloc(0), relLength: 0 }, name: Buffer.from('f') }], flags }) as unknown as Inode;

describe('readConstraints', () => {
  it.each([false, true])('lockedByFlags answers as locked() does, without the disk (iunlink %s)', (iunlink) => {
    for (const flags of [0, FS_IMMUTABLE_FL, FS_APPEND_FL, FS_NOCOW_FL, FS_IMMUTABLE_FL | FS_NOCOW_FL]) {
      for (const role of ['canonical', 'duplicate'] as const) {
        const errors: unknown[] = [];
        const c = readConstraints({ iunlink, onError: (e) => errors.push(e) });
        const known = c.lockedByFlags(flags, role);
        if (known === undefined) {
          // Only a canonical under --iunlink is read from the disk (vunify's own marks are fine).
          expect([iunlink, role]).toEqual([true, 'canonical']);
          expect(c.locked(inodeWith(flags), role)).toBe(true); // unreadable here: left out, and reported
          expect(errors).toHaveLength(1);
        } else {
          expect(c.locked(inodeWith(flags), role)).toBe(known);
          expect(known).toBe(!iunlink && (flags & (FS_IMMUTABLE_FL | FS_APPEND_FL)) !== 0);
          expect(errors).toHaveLength(0);
        }
      }
    }
  });

  it('unknown flags: a duplicate counts as not locked, a canonical is read', () => {
    const errors: unknown[] = [];
    const c = readConstraints({ onError: (e) => errors.push(e) });
    expect(c.locked(inodeWith(undefined), 'duplicate')).toBe(false);
    expect(errors).toHaveLength(0);
    expect(c.locked(inodeWith(undefined), 'canonical')).toBe(true);
    expect(errors).toHaveLength(1);
  });
});
