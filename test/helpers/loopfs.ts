/*
 * A real filesystem of a given type on a loop device, for tests that need
 * what tmpfs or the test machine's own filesystem cannot give: XFS for
 * 1 PiB sparse files and hundreds of MiB of xattrs per file. The image is
 * a sparse file in the temp directory; unmount() detaches the loop device
 * (mount -o loop made it autoclear) and deletes everything.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from './tree.js';

export interface LoopFs {
  /** Where it is mounted. */
  dir: string;
  unmount(): void;
}

export function loopFs(type: 'xfs' | 'ext4' | 'btrfs' | 'ext2', sizeBytes: number): LoopFs {
  const base = tempDir(`vunify-${type}-`);
  const image = path.join(base, 'image');
  const dir = path.join(base, 'mnt');
  fs.mkdirSync(dir);
  fs.writeFileSync(image, '');
  fs.truncateSync(image, sizeBytes);
  execFileSync(`mkfs.${type}`, type.startsWith('ext') ? ['-q', '-F', image] : ['-q', '-f', image], { stdio: 'ignore' });
  // -t: ext2 by its own name (coarse, once-a-tick ctime on this kernel, as every filesystem had before Linux 6.13)
  execFileSync('mount', ['-t', type, '-o', 'loop', image, dir]);
  return {
    dir,
    unmount() {
      if (spawnSync('umount', [dir]).status !== 0) spawnSync('umount', ['-l', dir]);
      fs.rmSync(base, { recursive: true, force: true });
    },
  };
}

/** A tmpfs (mount options such as "size=64m") in a fresh temp directory, whose parent holds nothing else: room for the test's own files. */
export function tmpFs(options: string): LoopFs {
  const base = tempDir('vunify-tmpfs-');
  const dir = path.join(base, 'mnt');
  fs.mkdirSync(dir);
  execFileSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir]);
  return {
    dir,
    unmount() {
      if (spawnSync('umount', [dir]).status !== 0) spawnSync('umount', ['-l', dir]);
      fs.rmSync(base, { recursive: true, force: true });
    },
  };
}
