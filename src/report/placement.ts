/*
 * Placement: which guests to put together on N hosts of a given capacity so
 * that, each host unified, the fleet needs the fewest bytes. Pure: the
 * engine computes its input (guest-sets.sql, guest-overlap.sql).
 *
 * The cost is exact, not estimated from pairs: a host needs Σ bytes over
 * the sharing groups (a set of guests holding the same contents) that meet
 * its guests. With a count per (group, host), the cost of adding a guest to
 * a host, or of taking it away, is a sum over the guest's own groups.
 *
 * Heuristic: a greedy pass places guests in the order of the guest × guest
 * overlap (Prim-like: next, the guest sharing most with one already
 * placed), each on the host where it adds least and fits. Then local
 * search: single moves, and swaps while the fleet is small, taken while
 * they lower the total and respect the capacity. The search starts from
 * the greedy result and from today's placement (when it fits in N hosts),
 * and the better end wins; the result is never worse than today's.
 * Minimising the total is NP-hard in general (bin packing is a special
 * case), so this is a good placement, not a proven optimum.
 */

export interface PlacementInput {
  /** Each guest unified alone, by guest id. */
  sizes: readonly number[];
  sets: readonly { members: readonly number[]; bytes: number }[];
  /** Pairs [a, b, bytes in common], a < b; may be empty. */
  overlap: readonly (readonly [number, number, number])[];
  hosts: number;
  capacity: number;
  /** Today's host index per guest. */
  today: readonly number[];
}

export interface Placement {
  assign: number[];
  hostBytes: number[];
  bytes: number;
  /** Today's placement, each host unified alone. */
  todayBytes: number;
}

const MAX_PASSES = 50;
const SWAP_GUESTS = 400;

class State {
  readonly count: Uint32Array;
  readonly used: Float64Array;
  readonly assign: Int32Array;
  constructor(private readonly p: Problem, readonly n: number) {
    this.count = new Uint32Array(p.bytes.length * n);
    this.used = new Float64Array(n);
    this.assign = new Int32Array(p.guests).fill(-1);
  }
  add(g: number, h: number): number {
    let t = 0;
    for (const s of this.p.setsOf[g]!) if (this.count[s * this.n + h] === 0) t += this.p.bytes[s]!;
    return t;
  }
  gain(g: number, h: number): number {
    let t = 0;
    for (const s of this.p.setsOf[g]!) if (this.count[s * this.n + h] === 1) t += this.p.bytes[s]!;
    return t;
  }
  place(g: number, h: number): void {
    for (const s of this.p.setsOf[g]!) {
      const i = s * this.n + h;
      if (this.count[i] === 0) this.used[h]! += this.p.bytes[s]!;
      this.count[i]!++;
    }
    this.assign[g] = h;
  }
  unplace(g: number): void {
    const h = this.assign[g]!;
    for (const s of this.p.setsOf[g]!) {
      const i = s * this.n + h;
      this.count[i]!--;
      if (this.count[i] === 0) this.used[h]! -= this.p.bytes[s]!;
    }
    this.assign[g] = -1;
  }
  total(): number {
    return this.used.reduce((a, b) => a + b, 0);
  }
}

interface Problem {
  guests: number;
  bytes: number[];
  setsOf: number[][];
}

export function placeGuests(input: PlacementInput): Placement | undefined {
  const G = input.sizes.length, N = input.hosts, cap = input.capacity;
  const p: Problem = { guests: G, bytes: input.sets.map((s) => s.bytes), setsOf: Array.from({ length: G }, () => []) };
  input.sets.forEach((s, i) => s.members.forEach((g) => p.setsOf[g]!.push(i)));

  const todayN = Math.max(0, ...input.today.map((h) => h + 1));
  const today = new State(p, todayN);
  input.today.forEach((h, g) => today.place(g, h));
  const todayBytes = today.total();

  // Today's placement first: on a tie it wins, and no guest moves for nothing.
  const starts: State[] = [];
  if (todayN <= N && [...today.used].every((u) => u <= cap)) {
    const t = new State(p, N);
    input.today.forEach((h, g) => t.place(g, h));
    starts.push(t);
  }
  const greedy = new State(p, N);
  if (greedyPass(greedy, overlapOrder(input), cap)) starts.push(greedy);
  if (!starts.length) return undefined;
  for (const s of starts) improve(s, cap);
  const best = starts.reduce((a, b) => (b.total() < a.total() ? b : a));
  return { assign: [...best.assign], hostBytes: [...best.used], bytes: best.total(), todayBytes };
}

/** Prim-like order over the overlap graph: next, the unplaced guest sharing most with a placed one. */
function overlapOrder(input: PlacementInput): number[] {
  const G = input.sizes.length;
  const adj: [number, number][][] = Array.from({ length: G }, () => []);
  for (const [a, b, bytes] of input.overlap) {
    adj[a]!.push([b, bytes]);
    adj[b]!.push([a, bytes]);
  }
  const key = new Float64Array(G), done = new Uint8Array(G), order: number[] = [];
  for (let k = 0; k < G; k++) {
    let best = -1;
    for (let g = 0; g < G; g++) {
      if (done[g]) continue;
      if (best < 0 || key[g]! > key[best]! || (key[g] === key[best] && input.sizes[g]! > input.sizes[best]!)) best = g;
    }
    done[best] = 1;
    order.push(best);
    for (const [o, bytes] of adj[best]!) if (!done[o] && bytes > key[o]!) key[o] = bytes;
  }
  return order;
}

function greedyPass(s: State, order: readonly number[], cap: number): boolean {
  for (const g of order) {
    let best = -1, bestAdd = Infinity;
    for (let h = 0; h < s.n; h++) {
      const a = s.add(g, h);
      if (s.used[h]! + a <= cap && a < bestAdd) (best = h), (bestAdd = a);
    }
    if (best < 0) return false;
    s.place(g, best);
  }
  return true;
}

function improve(s: State, cap: number): void {
  const G = s.assign.length;
  for (let pass = 0; pass < MAX_PASSES; pass++) {
    let better = false;
    for (let g = 0; g < G; g++) {
      const a = s.assign[g]!;
      const gain = s.gain(g, a);
      for (let h = 0; h < s.n; h++) {
        if (h === a) continue;
        const add = s.add(g, h);
        if (add < gain && s.used[h]! + add <= cap) {
          s.unplace(g);
          s.place(g, h);
          better = true;
          break;
        }
      }
    }
    if (G <= SWAP_GUESTS) {
      for (let g = 0; g < G; g++) {
        for (let o = g + 1; o < G; o++) {
          const a = s.assign[g]!, b = s.assign[o]!;
          if (a === b) continue;
          const before = s.used[a]! + s.used[b]!;
          s.unplace(g), s.unplace(o), s.place(g, b), s.place(o, a);
          if (s.used[a]! + s.used[b]! < before && s.used[a]! <= cap && s.used[b]! <= cap) better = true;
          else s.unplace(g), s.unplace(o), s.place(g, a), s.place(o, b);
        }
      }
    }
    if (!better) return;
  }
}
