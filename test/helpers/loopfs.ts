// Test helper: real filesystems in image files, loop-mounted, and taken down
// again (unmounted, loop device detached, image removed) whatever happened.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from './tree.js';

export interface LoopFs {
  /** Where it is mounted. */
  mnt: string;
  dev: string;
  /** Extra mounts made on top (bind mounts): unmounted first. */
  mounts: string[];
  cleanup(): void;
}

const run = (cmd: string, ...args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** Make a `type` ('xfs' or 'btrfs') filesystem of `mib` MiB in a temporary file and mount it. */
export function loopFs(type: 'xfs' | 'btrfs', mib = 320): LoopFs {
  const dir = tempDir(`vunify-${type}-`);
  const img = path.join(dir, 'fs.img');
  const mnt = path.join(dir, 'mnt');
  fs.mkdirSync(mnt);
  fs.closeSync(fs.openSync(img, 'w'));
  fs.truncateSync(img, mib << 20);
  run(type === 'xfs' ? 'mkfs.xfs' : 'mkfs.btrfs', '-q', img);
  let dev = '';
  const mounts: string[] = [];
  const cleanup = () => {
    for (const m of [...mounts].reverse()) spawnQuiet('umount', m);
    spawnQuiet('umount', mnt);
    if (dev) spawnQuiet('losetup', '-d', dev);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    dev = run('losetup', '-f', '--show', img).trim();
    run('mount', dev, mnt);
  } catch (er) {
    cleanup();
    throw er;
  }
  return { mnt, dev, mounts, cleanup };
}

function spawnQuiet(cmd: string, ...args: string[]): void {
  try {
    run(cmd, ...args);
  } catch {
    // already gone
  }
}
