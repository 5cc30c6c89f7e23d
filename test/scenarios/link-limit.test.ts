// ext4's real link limit (65,000): 70,000 identical files become 2 inodes.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { rmTree, runCli, tempDir } from '../helpers/tree.js';

let dir: string;
const GUESTS = 7;
const PER_GUEST = 10_000;

beforeAll(() => {
  dir = tempDir();
  for (let g = 0; g < GUESTS; g++) {
    for (let d = 0; d < 10; d++) {
      const sub = path.join(dir, `g${g}`, `d${d}`);
      fs.mkdirSync(sub, { recursive: true });
      for (let f = 0; f < PER_GUEST / 10; f++) {
        const p = path.join(sub, `f${f}`);
        fs.writeFileSync(p, 'the same small file\n');
        fs.utimesSync(p, 1_700_000_000, 1_700_000_000);
      }
    }
  }
}, 300_000);
afterAll(() => rmTree(dir));

it('70,000 identical files on ext4 are unified into 2 inodes, exit 0', () => {
  const fsType = execFileSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' }).trim();
  expect(fsType).toBe('ext2/ext3'); // stat's name for ext4: the limit below is ext4's
  const r = runCli(['--json', '--no-default-excludes', ...Array.from({ length: GUESTS }, (_, g) => path.join(dir, `g${g}`))]);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  const report = JSON.parse(r.stdout);
  expect(report.summary).toMatchObject({ filesScanned: 70_000, linksMade: 69_998, errors: 0 });
  const counts = execFileSync('bash', ['-c', `find '${dir}' -type f -printf '%i %n\\n' | sort | uniq -c`], { encoding: 'utf8' })
    .trim().split('\n').map((l) => l.trim().split(/\s+/).map(Number));
  // Two inodes: one at ext4's limit of 65,000 links, the other holding the rest.
  expect(counts.map(([paths, , nlink]) => [paths, nlink]).sort()).toEqual([[5_000, 5_000], [65_000, 65_000]]);
}, 300_000);
