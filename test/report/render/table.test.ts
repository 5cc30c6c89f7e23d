// Terminal tables: names left, numbers right, columns as wide as their widest cell.
import { describe, expect, it } from 'vitest';
import { percent, shortName, table } from '../../../src/report/render/table.js';

describe('table', () => {
  it('aligns names left and numbers right, two spaces apart, no trailing blanks', () => {
    expect(table(['guest', 'bytes', 'freeable'], [['web1', '1.00 KiB', '12'], ['base-long', '3 B', '']])).toEqual([
      'guest         bytes  freeable',
      'web1       1.00 KiB        12',
      'base-long       3 B',
    ]);
  });
});

describe('percent and shortName', () => {
  it('one decimal, and a dash rather than a division by zero', () => {
    expect(percent(1, 8)).toBe('12.5%');
    expect(percent(2, 3)).toBe('66.7%');
    expect(percent(0, 0)).toBe('-');
  });

  it('names a root by its last component', () => {
    expect(shortName('/vservers/web1/')).toBe('web1');
    expect(shortName('/var/lib/lxc/db/rootfs')).toBe('rootfs');
    expect(shortName('/')).toBe('/');
  });
});
