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

/**
 * A directory seen by the walker, named by its parent and its own name: a
 * full path per directory cost memory quadratic in the depth of a tree (a
 * guest chooses the depth). The path is built only when a message or an open
 * needs it (dirRel in paths.ts).
 */
export interface DirNode {
  root: Root;
  /** The directory it was listed in; null for the root itself. */
  parent: DirNode | null;
  /** Its name in the parent; empty for the root. */
  name: Buffer;
  /** Levels below the root: 0 for the root. */
  depth: number;
  /** Bytes of its path relative to the root (names and the slashes between them). */
  relLength: number;
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
  /**
   * Inode flags (FS_IOC_GETFLAGS, 0 where the filesystem has none) and
   * project ID (FS_IOC_FSGETXATTR, 0 where none): read with the hash, or
   * for a canonical candidate by pipeline/canonical.ts.
   */
  flags?: number;
  projid?: number;
  /** Content starts with the ELF magic (executables, shared libraries); set with the hash. */
  elf?: boolean;
}
