// One pair of a native linkBatch call, written the way link.ts's Batch.prepare
// writes it: shared by the tests that drive the addon's linker directly
// (test/change/link-segments.test.ts, link-held.test.ts).
import fs from 'node:fs';
import type { Stat } from '../../src/core/stat.js';
import { LINK_ARRAY, O, statDoubles, sys } from '../../src/os/sys.js';

const PR = LINK_ARRAY.pair;

/**
 * Pair `at` of `pairs`: the regular file `file` (its stat read now, through
 * a descriptor, and returned) in the directory `dir`, looked up beneath
 * `rootFd`; its directory and name at `nameOff` of the call's names;
 * `known` as asked (compared with its canonical before: link.ts), no
 * journal directory.
 */
export function writePair(pairs: Float64Array, at: number, rootFd: number, dir: string, file: string, nameOff: number, known = false): Stat {
  const fd = sys.open(file, O.RDONLY | O.CLOEXEC);
  const st = sys.fstat(fd);
  sys.close(fd);
  const ds = fs.statSync(dir);
  const o = at * PR.length;
  pairs[o + PR.root] = rootFd;
  pairs[o + PR.dirDev] = ds.dev;
  pairs[o + PR.dirIno] = ds.ino;
  pairs[o + PR.known] = known ? 1 : 0;
  pairs[o + PR.at] = 0;
  pairs[o + PR.nameOff] = nameOff;
  statDoubles(st, pairs, o + PR.expect);
  return st;
}
