/*
 * Directory projects: before planning, read the project ID and the
 * project-inherit, immutable and append-only flags of every directory
 * holding a path of a candidate set, so the plan knows which paths the
 * kernel will let us replace (policy.ts acceptsLink): no name in an
 * immutable or append-only directory can be replaced, and XFS and ext4
 * refuse link(2) and rename(2) into a project-inherit directory of an
 * inode of another project (EXDEV): on
 * hosts that give each guest its own project for its disk quota (LXD/Incus
 * "dir" pools, many hosting setups), a guest's paths can only ever join
 * inodes of its own project.
 *
 * Each directory is opened confined and checked to be the one the walk
 * listed (os/confine.ts openDir), read with FS_IOC_FSGETXATTR, and closed;
 * a filesystem without the ioctl (ENOTTY and the like) has no projects, and
 * is not asked again. A directory that cannot be opened any more is left
 * unknown: the linker names the problem if it still matters.
 */
import { errorCode } from '../core/errors.js';
import { FS_XFLAG_APPEND, FS_XFLAG_IMMUTABLE, FS_XFLAG_PROJINHERIT } from '../core/stat.js';
import type { DirNode, Inode } from '../core/types.js';
import { openDir } from '../os/confine.js';
import { O, sys } from '../os/sys.js';

const NO_PROJECTS = ['ENOTTY', 'EINVAL', 'EOPNOTSUPP', 'ENOSYS'];

/** Fill in DirNode.project for the directories of every path of `inodes`. */
export function readDirProjects(inodes: Iterable<Inode>): void {
  const noProjects = new Set<number>(); // devices without FS_IOC_FSGETXATTR
  const done = new Set<DirNode>();
  for (const inode of inodes) {
    for (const { dir } of inode.paths) {
      // Most paths share a directory already read: its project answers without a Set lookup.
      if (dir.project !== undefined || done.has(dir) || noProjects.has(dir.dev)) continue;
      done.add(dir);
      let fd: number;
      try {
        fd = openDir(dir, O.RDONLY | O.NONBLOCK); // an ioctl needs more than O_PATH
      } catch {
        continue;
      }
      try {
        const { xflags, projid } = sys.fsGetXattr(fd);
        dir.project = { projid, inherit: (xflags & FS_XFLAG_PROJINHERIT) !== 0, locked: (xflags & (FS_XFLAG_IMMUTABLE | FS_XFLAG_APPEND)) !== 0 };
      } catch (er) {
        if (NO_PROJECTS.includes(errorCode(er) ?? '')) noProjects.add(dir.dev);
      } finally {
        sys.close(fd);
      }
    }
  }
}
