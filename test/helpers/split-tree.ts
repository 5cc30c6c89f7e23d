// The tree split's tests start from: three guests holding the same files
// with every kind of attribute a copy must keep (setuid, owner, xattrs, a
// file capability, an ACL, a sparse file, a guest's own hardlink), unified.
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import { runUnify, sh, tempDir, writeFile } from './tree.js';

export const FILES = ['usr/bin/sudo', 'usr/bin/ping', 'usr/share/doc/acl', 'usr/lib/sparse', 'usr/bin/perl', 'usr/bin/perl5', 'etc/motd'];

export async function buildSplitGuests(): Promise<{ dir: string; guests: string[] }> {
  const dir = tempDir();
  const guests = ['g1', 'g2', 'g3'].map((g) => path.join(dir, g));
  for (const g of guests) {
    writeFile(path.join(g, 'usr/bin/sudo'), { content: Buffer.alloc(70_000, 5), mode: 0o4755, uid: 1000, gid: 1001, xattrs: { 'user.origin': 'debian' } });
    writeFile(path.join(g, 'usr/bin/ping'), { content: 'ping', mode: 0o755 });
    sh('setcap', 'cap_net_raw+ep', path.join(g, 'usr/bin/ping'));
    sh('touch', '-d', '@1700000000.5', path.join(g, 'usr/bin/ping'));
    writeFile(path.join(g, 'usr/share/doc/acl'), { content: 'acl' });
    sh('setfacl', '-m', 'u:1234:rw', path.join(g, 'usr/share/doc/acl'));
    sh('touch', '-d', '@1700000000.25', path.join(g, 'usr/share/doc/acl'));
    writeFile(path.join(g, 'usr/lib/sparse'), { content: '' });
    sh('truncate', '-s', '8M', path.join(g, 'usr/lib/sparse'));
    sh('touch', '-d', '@1700000000', path.join(g, 'usr/lib/sparse'));
    writeFile(path.join(g, 'usr/bin/perl'), { content: 'perl' });
    fs.linkSync(path.join(g, 'usr/bin/perl'), path.join(g, 'usr/bin/perl5'));
    writeFile(path.join(g, 'etc/motd'), { content: 'hello' });
  }
  const { errors } = await runUnify(guests, { cache: false });
  expect(errors).toEqual([]);
  return { dir, guests };
}
