// The HTML report opened in a real browser (headless Chromium through
// playwright-core): the charts exist, have the expected shapes and sizes,
// nothing is fetched from the network, and a screenshot is a real image.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCapacityTree, EXPECT } from '../../helpers/capacity-tree.js';
import { rmTree, tempDir } from '../../helpers/tree.js';
import { runReport } from '../../helpers/report.js';

const CHROMIUM = '/usr/bin/chromium';
const haveChromium = fs.existsSync(CHROMIUM);
if (!haveChromium) console.warn(`SKIPPED: ${CHROMIUM} is absent (apt-get install chromium; .ci/run installs it)`);

let dir: string;
let page: string;
beforeAll(() => {
  dir = tempDir();
  buildCapacityTree(dir);
  page = path.join(dir, 'report.html');
  const r = runReport(['--no-default-excludes', '-q', '--html', page, ...['g1', 'g2', 'g3'].map((g) => path.join(dir, g))]);
  expect([r.code, r.stderr]).toEqual([0, '']);
});
afterAll(() => rmTree(dir));

describe.skipIf(!haveChromium)('HTML report in Chromium', () => {
  it('renders one bar per guest, a 3x3 heatmap and the top sets; fetches nothing; screenshots', async () => {
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    try {
      const tab = await browser.newPage({ viewport: { width: 1200, height: 900 } });
      const requests: string[] = [];
      tab.on('request', (q) => requests.push(q.url()));
      await tab.goto('file://' + page);
      expect(requests.filter((u) => !u.startsWith('file://'))).toEqual([]);

      const bars = await tab.locator('#bars g.bar').all();
      expect(bars).toHaveLength(3);
      const widths = [];
      for (const bar of bars) {
        const box = (await bar.boundingBox())!;
        expect(box.width).toBeGreaterThan(0);
        expect(box.height).toBeGreaterThan(0);
        // The segments' rendered widths: shared, freeable, private, other.
        widths.push(await bar.locator('rect.seg').evaluateAll((rs) => rs.map((r) => r.getBoundingClientRect().width)));
      }
      // One scale: the biggest guest spans the 560 px chart, the others in proportion;
      // g2 and g3 have something freeable, g1 (holding the canonicals) nothing.
      const total = (w: number[]) => w.reduce((a, b) => a + b, 0);
      const bytes = [EXPECT.bytes.g1, EXPECT.bytes.g2, EXPECT.bytes.g3];
      widths.forEach((w, i) => expect(total(w)).toBeCloseTo((560 * bytes[i]!) / Math.max(...bytes), 0));
      expect(widths.map((w) => w[1]! > 0)).toEqual([false, true, true]);

      const cells = await tab.locator('#heatmap rect.cell').all();
      expect(cells).toHaveLength(9);
      for (const c of cells) expect((await c.boundingBox())!.width).toBeGreaterThan(0);
      // The pair with most in common (g2, g3) is the darkest off-diagonal cell.
      const fills = await tab.locator('#heatmap rect.cell').evaluateAll((rs) => rs.map((r) => getComputedStyle(r).fill));
      const lum = (f: string) => f.match(/\d+/g)!.map(Number).reduce((a, b) => a + b, 0);
      expect(lum(fills[1 * 3 + 2]!)).toBeLessThan(lum(fills[0 * 3 + 1]!));

      expect(await tab.locator('#top-sets tbody tr').count()).toBe(1);
      expect(await tab.locator('#top-sets tbody td').first().textContent()).toBe('/usr/lib/x86_64-linux-gnu/libx.so.1');

      const shot = path.join(tempDir('vunify-shot-'), 'report.png');
      await tab.screenshot({ path: shot, fullPage: true });
      const png = fs.readFileSync(shot);
      expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
      expect([png.readUInt32BE(16), png.readUInt32BE(20) > 400]).toEqual([1200, true]); // IHDR width, height
      expect(png.length).toBeGreaterThan(20_000);
      rmTree(path.dirname(shot));
    } finally {
      await browser.close();
    }
  });
});
