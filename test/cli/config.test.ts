// The config file: the command line's options, one per line.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/cli/config.js';
import { inode, rmTree, runCli, tempDir, writeFile } from '../helpers/tree.js';

let dir: string;
let conf: string;
const G = (g: string, f = '') => path.join(dir, g, f);

beforeEach(() => {
  dir = tempDir();
  conf = path.join(dir, 'vunify.conf');
  for (const g of ['web1', 'web2', 'db1']) {
    writeFile(G(g, 'usr/lib/libc.so.6'), { content: 'libc' });
    writeFile(G(g, 'usr/local/app'), { content: 'app' });
    writeFile(G(g, 'etc/hosts'), { content: 'hosts' });
  }
});
afterEach(() => rmTree(dir));

const spec = new Map([['exclude', true], ['dry-run', false], ['min-size', true]]);

describe('config file', () => {
  it('parses options and roots, ignoring comments and blank lines', () => {
    const lines = parseConfig('# nightly\n\nroot /vservers/*\n  exclude /usr/local dir with spaces  \ndry-run\n', 'f', spec);
    expect(lines).toEqual([
      { name: 'root', value: '/vservers/*', where: 'f:3' },
      { name: 'exclude', value: '/usr/local dir with spaces', where: 'f:4' },
      { name: 'dry-run', value: undefined, where: 'f:5' },
    ]);
  });

  it.each([
    ['bogus 1', /f:1: unknown setting 'bogus'/],
    ['exclude', /f:1: 'exclude' needs a value/],
    ['dry-run yes', /f:1: 'dry-run' takes no value/],
    ['config /etc/other', /unknown setting 'config'/],
  ])('refuses %j naming the file and line', (text, message) => {
    expect(() => parseConfig(text, 'f', spec)).toThrow(message);
  });

  it('--config means what the same options on the command line mean; the command line wins', () => {
    fs.writeFileSync(conf, `root ${G('web*')}\nexclude /usr/local\ninclude /etc/hosts\nquiet\n`);
    const r = runCli(['--config', conf]);
    expect([r.code, r.stdout, r.stderr]).toEqual([0, '', '']);
    expect(inode(G('web1', 'usr/lib/libc.so.6'))).toBe(inode(G('web2', 'usr/lib/libc.so.6')));
    expect(inode(G('web1', 'etc/hosts'))).toBe(inode(G('web2', 'etc/hosts')));
    expect(inode(G('web1', 'usr/local/app'))).not.toBe(inode(G('web2', 'usr/local/app')));
    expect(inode(G('db1', 'usr/lib/libc.so.6'))).not.toBe(inode(G('web1', 'usr/lib/libc.so.6')));
    // ROOTs on the command line replace the file's.
    runCli(['--config', conf, G('web1'), G('db1')]);
    expect(inode(G('db1', 'usr/lib/libc.so.6'))).toBe(inode(G('web1', 'usr/lib/libc.so.6')));
  });

  it('max-memory in the config file is --max-memory (a roomy one runs; a bad one is exit 2, nothing linked)', () => {
    fs.writeFileSync(conf, `root ${G('web*')}\nmax-memory lots\n`);
    const bad = runCli(['--config', conf]);
    expect([bad.code, bad.stdout, bad.stderr]).toEqual([2, '', "vunify: invalid --max-memory 'lots' (use e.g. 512M, 2G)\n"]);
    expect(inode(G('web1', 'usr/lib/libc.so.6'))).not.toBe(inode(G('web2', 'usr/lib/libc.so.6')));
    fs.writeFileSync(conf, `root ${G('web*')}\nmax-memory 2G\nquiet\n`);
    expect(runCli(['--config', conf]).code).toBe(0);
    expect(inode(G('web1', 'usr/lib/libc.so.6'))).toBe(inode(G('web2', 'usr/lib/libc.so.6')));
  });

  it('a bad config file is a usage error (exit 2) naming file and line; nothing changes', () => {
    fs.writeFileSync(conf, `root ${G('web*')}\nmin-sise 4k\n`);
    const r = runCli(['--config', conf]);
    expect([r.code, r.stdout]).toEqual([2, '']);
    expect(r.stderr).toBe(`vunify: ${conf}:2: unknown setting 'min-sise'\n`);
    expect(inode(G('web1', 'usr/lib/libc.so.6'))).not.toBe(inode(G('web2', 'usr/lib/libc.so.6')));
    expect(runCli(['--config', path.join(dir, 'none.conf')]).stderr).toMatch(/none\.conf: cannot read config file/);
  });
});
