/*
 * Directory nodes built by hand for pure tests: the chain of DirNodes a walk
 * would have made for `rel` (a path relative to the root, '' for the root).
 */
import { childNode, rootNode } from '../../src/core/paths.js';
import type { DirNode, Root } from '../../src/core/types.js';

export function dirAt(root: Root, rel: string): DirNode {
  let dir = rootNode(root);
  for (const name of rel.split('/').filter(Boolean)) dir = childNode(dir, Buffer.from(name), 1, 1);
  return dir;
}
