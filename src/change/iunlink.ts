/*
 * --iunlink: mark unified inodes immutable + immutable-unlink (IUNLINK), as
 * util-vserver's `setattr --iunlink` and its vunify do. On a Linux-VServer
 * kernel a guest that opens such a file for writing gets a private copy
 * (copy-on-write link breaking, CONFIG_VSERVER_COWBL) and may still unlink
 * or rename its name; without that, a guest that can write its copy of a
 * unified file writes every guest's copy.
 *
 * The attributes are not inode flags reachable through FS_IOC_SETFLAGS: the
 * vserver system call sets them (VCMD_fset_iattr on an open descriptor, so
 * no path is looked up again). Values from util-vserver's lib/vserver.h and
 * kernel/switch.h: IATTR_IUNLINK 0x00020000, IATTR_IMMUTABLE 0x00040000,
 * VC_CMD(VC_CAT_INODE=38, 4, 0) = 0x26040000 (fset), 0x26030000 (fget).
 *
 * A vanilla kernel answers ENOSYS; some filesystems of a vserver kernel do
 * not support the attributes. Either way vunify must stop before changing
 * anything, so `probeIunlink` tries the call (and, for a linking run, a set,
 * read-back and clear on a scratch file on each filesystem) first.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { errorCode, UsageError } from '../core/errors.js';
import { sys } from '../os/sys.js';
import type { Root } from '../core/types.js';

export const VCMD_GET_VERSION = 0;
export const VCMD_FGET_IATTR = 0x26030000;
export const VCMD_FSET_IATTR = 0x26040000;
export const IATTR_IUNLINK = 0x00020000;
export const IATTR_IMMUTABLE = 0x00040000;
const BOTH = IATTR_IUNLINK | IATTR_IMMUTABLE;

/** struct vcmd_ctx_fiattr_v0 { u32 tag; u32 flags; u32 mask; } */
function iattr(flags: number, mask: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt32LE(flags, 4);
  b.writeUInt32LE(mask, 8);
  return b;
}

export function setIunlink(fd: number, on = true): void {
  sys.vserver(VCMD_FSET_IATTR, fd, iattr(on ? BOTH : 0, BOTH));
}

/** True when the open file already carries both attributes (unified before). */
export function isIunlinked(fd: number): boolean {
  const b = iattr(0, 0);
  sys.vserver(VCMD_FGET_IATTR, fd, b);
  return (b.readUInt32LE(4) & BOTH) === BOTH;
}

/**
 * Refuse --iunlink, before anything is changed, unless the kernel has the
 * vserver call and every filesystem of the roots keeps both attributes. A
 * dry run only asks the kernel; a linking run also sets, reads back and
 * clears them on a scratch file beside each root.
 */
export function probeIunlink(roots: readonly Root[], opts: { dryRun: boolean }): void {
  try {
    sys.vserver(VCMD_GET_VERSION, 0, null);
  } catch (er) {
    throw new UsageError(
      `--iunlink needs a Linux-VServer kernel, and the vserver system call failed here (${errorCode(er) ?? String(er)}); nothing was changed`,
    );
  }
  if (opts.dryRun) return;
  const tried = new Set<number>();
  for (const root of roots) {
    if (tried.has(root.dev)) continue;
    tried.add(root.dev);
    // Beside the root when that is the same filesystem, so guests never see the scratch file.
    const parent = path.dirname(root.path);
    const where = fs.statSync(parent).dev === root.dev ? parent : root.path;
    const scratch = path.join(where, `.vunify.probe.${randomBytes(6).toString('hex')}`);
    const fd = sys.open(scratch, fs.constants.O_RDONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
    try {
      setIunlink(fd);
      const ok = isIunlinked(fd);
      setIunlink(fd, false);
      if (!ok) throw Object.assign(new Error('the attributes did not stick'), { code: 'EOPNOTSUPP' });
    } catch (er) {
      throw new UsageError(
        `--iunlink: the filesystem of ${root.path} does not keep the immutable-unlink attributes (${errorCode(er) ?? String(er)}); nothing was changed`,
      );
    } finally {
      sys.close(fd);
      fs.unlinkSync(scratch); // a file with both attributes may always be unlinked
    }
  }
}
