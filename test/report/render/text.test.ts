// formatCount writes counts as toLocaleString('en-US') does, without loading ICU.
import { describe, expect, it } from 'vitest';
import { formatCount } from '../../../src/report/render/text.js';

describe('formatCount', () => {
  it('matches toLocaleString("en-US") on integers of every length and sign, and on the rest', () => {
    const values = [0, 1, 12, 123, 1234, 12345, 123456, 1234567, 1000, 1000000, 999999, Number.MAX_SAFE_INTEGER, 2 ** 53 + 2, 1.5, 1234.5678, NaN, Infinity];
    for (let k = 1; k < 16; k++) values.push(10 ** k - 1, 10 ** k, 7 * 10 ** k + 3);
    for (const v of [...values, ...values.map((x) => -x)]) expect(formatCount(v)).toBe(v.toLocaleString('en-US'));
  });
});
