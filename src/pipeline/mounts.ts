/*
 * Mount points inside the guest roots, known from /proc/self/mountinfo
 * before the walk looks at a single entry.
 *
 * The walk never crosses a mount, but finding out that an entry is one by
 * statx asks the mounted filesystem: a hung NFS server or a FUSE daemon
 * that never answers (a guest can run one) blocks that statx forever, and
 * with it the run, its locks and every nightly run after it. So the walk
 * asks this table by name first and never stats a mount point; the check
 * by st_dev and mount id after statx stays, for mounts made after the
 * table was read.
 */
import fs from 'node:fs';
import type { Root } from '../core/types.js';

/** Per directory (its path under the root, latin1), the names in it that are mount points (latin1). */
export type MountPoints = Map<string, Set<string>>;

/** The mount points strictly below each root, from the kernel's mount table (empty maps when it cannot be read). */
export function mountPointsUnder(roots: readonly Root[], table = readMountTable()): Map<Root, MountPoints> {
  const out = new Map<Root, MountPoints>();
  for (const root of roots) {
    const prefix = Buffer.from(root.path.endsWith('/') ? root.path : root.path + '/');
    const points: MountPoints = new Map();
    for (const m of table) {
      if (m.length <= prefix.length || !m.subarray(0, prefix.length).equals(prefix)) continue;
      const rel = m.toString('latin1', prefix.length).replace(/\/+$/, '');
      if (!rel) continue;
      const slash = rel.lastIndexOf('/');
      const dir = slash < 0 ? '' : rel.slice(0, slash);
      const name = rel.slice(slash + 1);
      let names = points.get(dir);
      if (!names) points.set(dir, (names = new Set()));
      names.add(name);
    }
    out.set(root, points);
  }
  return out;
}

/** Every mount point of this process's mount namespace, as bytes. */
export function readMountTable(file = '/proc/self/mountinfo'): Buffer[] {
  let text: Buffer;
  try {
    text = fs.readFileSync(file);
  } catch {
    return []; // no /proc: the statx check alone remains
  }
  const points: Buffer[] = [];
  for (const line of text.toString('latin1').split('\n')) {
    // "id parent major:minor root MOUNT-POINT options ...": the fifth field.
    const field = line.split(' ')[4];
    if (field) points.push(unescapeMountPath(field));
  }
  return points;
}

/** The kernel writes space, tab, newline and backslash in mount paths as \ooo octal escapes. */
export function unescapeMountPath(field: string): Buffer {
  return Buffer.from(field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8) & 0xff)), 'latin1');
}
