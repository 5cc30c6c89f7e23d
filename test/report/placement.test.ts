// The placement heuristic on constructed cases: its cost is recomputed here
// from the sets, and compared with the optimum found by trying every
// assignment (small cases) or known by hand.
import { describe, expect, it } from 'vitest';
import { placeGuests, type PlacementInput } from '../../src/report/placement.js';

type Sets = PlacementInput['sets'];

/** Bytes a placement needs: every set counts once per host that holds one of its guests. */
function cost(sets: Sets, assign: readonly number[]): number {
  return sets.reduce((t, s) => t + new Set(s.members.map((g) => assign[g])).size * s.bytes, 0);
}
function hostBytes(sets: Sets, assign: readonly number[], h: number): number {
  return sets.reduce((t, s) => t + (s.members.some((g) => assign[g] === h) ? s.bytes : 0), 0);
}
function brute(sets: Sets, guests: number, hosts: number, cap: number): number {
  let best = Infinity;
  const a = new Array<number>(guests).fill(0);
  const rec = (g: number) => {
    if (g === guests) {
      if ([...Array(hosts).keys()].every((h) => hostBytes(sets, a, h) <= cap)) best = Math.min(best, cost(sets, a));
      return;
    }
    for (let h = 0; h < hosts; h++) (a[g] = h), rec(g + 1);
  };
  rec(0);
  return best;
}
function input(sets: Sets, guests: number, hosts: number, capacity: number, today: number[]): PlacementInput {
  const sizes = [...Array(guests).keys()].map((g) => sets.reduce((t, s) => t + (s.members.includes(g) ? s.bytes : 0), 0));
  const overlap: [number, number, number][] = [];
  for (let a = 0; a < guests; a++) for (let b = a + 1; b < guests; b++) {
    const v = sets.reduce((t, s) => t + (s.members.includes(a) && s.members.includes(b) ? s.bytes : 0), 0);
    if (v) overlap.push([a, b, v]);
  }
  return { sizes, sets, overlap, hosts, capacity, today };
}

describe('placeGuests', () => {
  it('pairs the guests of one distribution when capacity forbids one host (optimum by hand)', () => {
    // guests 0, 2: distro X (5000); 1, 3: distro Y (4000); each a private 100; today {0,1} {2,3}.
    const sets = [{ members: [0, 2], bytes: 5000 }, { members: [1, 3], bytes: 4000 }, ...[0, 1, 2, 3].map((g) => ({ members: [g], bytes: 100 }))];
    const p = placeGuests(input(sets, 4, 2, 6000, [0, 0, 1, 1]))!;
    expect(p.todayBytes).toBe(2 * (5000 + 4000 + 200));
    expect(p.bytes).toBe(5000 + 4000 + 400);
    expect(p.assign[0]).toBe(p.assign[2]);
    expect(p.assign[1]).toBe(p.assign[3]);
    expect(cost(sets, p.assign)).toBe(p.bytes);
  });

  it('never worse than today, within capacity, and equal to the brute-force optimum on small random fleets', () => {
    let seed = 42;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    let matched = 0;
    for (let trial = 0; trial < 40; trial++) {
      const guests = 3 + rnd(4), hosts = 2 + rnd(2);
      const sets: { members: number[]; bytes: number }[] = [];
      for (let k = 0; k < 8; k++) {
        const members = [...Array(guests).keys()].filter(() => rnd(3) === 0);
        if (members.length) sets.push({ members, bytes: 100 * (1 + rnd(50)) });
      }
      for (let g = 0; g < guests; g++) sets.push({ members: [g], bytes: 10 + rnd(100) });
      const today = [...Array(guests).keys()].map((g) => g % hosts);
      const cap = Math.max(...[...Array(hosts).keys()].map((h) => hostBytes(sets, today, h))) + rnd(2000);
      const best = brute(sets, guests, hosts, cap);
      const p = placeGuests(input(sets, guests, hosts, cap, today))!;
      expect(p).toBeDefined();
      expect(cost(sets, p.assign)).toBe(p.bytes);
      expect(p.bytes).toBeLessThanOrEqual(p.todayBytes);
      expect(p.bytes).toBeGreaterThanOrEqual(best);
      for (let h = 0; h < hosts; h++) expect(hostBytes(sets, p.assign, h)).toBeLessThanOrEqual(cap);
      if (p.bytes === best) matched++;
    }
    // A heuristic: it must find the optimum on most of these tiny cases.
    expect(matched).toBeGreaterThanOrEqual(36);
  });

  it('returns nothing when no host can take a guest', () => {
    const sets = [{ members: [0], bytes: 5000 }, { members: [1], bytes: 100 }];
    expect(placeGuests(input(sets, 2, 2, 4000, [0, 1]))).toBeUndefined();
  });
});
