/*
 * Value types shared by the pipeline stages. Paths are bytes: a guest's file
 * names need not be UTF-8, so a file is named by its directory node and its
 * name Buffer, and only turned into text for messages.
 */
import type { Stat } from './stat.js';

/** A validated guest root, open as a directory descriptor for the whole run. */
export interface Root {
  /** Position on the command line: earlier roots win ties for the canonical copy. */
  index: number;
  /** Absolute, resolved path, for messages and reports. */
  path: string;
  fd: number;
  dev: number;
  ino: number;
  mntId: number;
}

/** A directory seen by the walker; interned so files share their parent's path. */
export interface DirNode {
  root: Root;
  /** Path relative to the root, without a leading slash; empty for the root itself. */
  rel: Buffer;
  dev: number;
  ino: number;
  /** Its project and whether new entries must share it (read before planning, see pipeline/projects.ts). */
  project?: DirProject;
}

/**
 * A directory's project ID, whether it has the project-inherit flag (the
 * kernel then refuses links of other projects into it), and whether it is
 * immutable or append-only (then no name in it can be replaced).
 */
export interface DirProject {
  projid: number;
  inherit: boolean;
  locked?: boolean;
}

/** One path of a regular file, with what statx said when it was scanned. */
export interface FileRec {
  dir: DirNode;
  name: Buffer;
  stat: Stat;
}

/** One inode and every scanned path that names it. */
export interface Inode {
  dev: number;
  ino: number;
  stat: Stat;
  /** Scanned paths, in walk order; paths[0] is the one used to open it. */
  paths: FileRec[];
  /** Content hash and encoded xattrs, once read. */
  hash?: bigint;
  xattrs?: string;
  /** Inode flags (FS_IOC_GETFLAGS, 0 where the filesystem has none) and project ID (FS_IOC_FSGETXATTR, 0 where none); read with the hash. */
  flags?: number;
  projid?: number;
  /** Content starts with the ELF magic (executables, shared libraries); set with the hash. */
  elf?: boolean;
}
