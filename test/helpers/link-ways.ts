// One tree unified three ways, for the tests of the linker on the plan's
// rows (test/change/link-rows*.test.ts): the JS path (no addon linker), the
// addon on the sets' objects (a -v listener keeps every set there), and the
// addon on rows (change/link.ts linkRows). Each run checks that no
// descriptor is left open and that every path keeps its bytes.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeAll, beforeEach, expect, vi } from 'vitest';
import { RowSet } from '../../src/pipeline/plan-rows.js';
import { sys } from '../../src/os/sys.js';
import { TEMP_PREFIX } from '../../src/change/swap.js';
import { rmTree, runUnify, sh, sharedPaths, tempDir } from './tree.js';

export type Way = 'js' | 'objects' | 'rows';
export type Fault = Parameters<typeof sys.setLinkFault>[0];
export type Outcome = Awaited<ReturnType<typeof unifyWay>>;

/** A temporary name's random part, which differs between runs. */
export const temp = (s: string) => s.replaceAll(/\.vunify\.[A-Za-z0-9_-]{12}/g, '.vunify.*');

/** A file with `content`, 0644 root:root, mtime 1700000000 (whole seconds: utimes keeps them exactly). */
export function put(file: string, content: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content);
  fs.chmodSync(file, 0o644);
  fs.utimesSync(file, 1700000000, 1700000000);
}

/**
 * The first run opens a descriptor it keeps (/proc/self/fd, for reopening
 * O_PATH descriptors): for a beforeAll, before any test counts descriptors.
 */
export async function warmUp(): Promise<void> {
  const d = tempDir();
  for (const g of ['a', 'b']) put(path.join(d, g, 'f'), 'warm up\n'.repeat(1000));
  await runUnify([path.join(d, 'a'), path.join(d, 'b')], { cache: false });
  rmTree(d);
}

/**
 * For a test file: a fresh temporary directory per test (the getter's),
 * removed after it with the linker's test switches put back, and warmUp()
 * once before the first.
 */
export function linkerTestDir(): () => string {
  let dir = '';
  beforeAll(warmUp);
  beforeEach(() => {
    dir = tempDir();
  });
  afterEach(() => {
    vi.restoreAllMocks();
    sys.setLinkFault();
    sys.nativeLinker = true;
    rmTree(dir);
  });
  return () => dir;
}

/** This process's open descriptors. */
export const fds = () => fs.readdirSync('/proc/self/fd').length;

/** Every file under `top`: its path relative to `top` => its bytes' sha256 (no write lost or made, whatever is linked). */
function contents(top: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of sh('find', top, '-type', 'f', '-exec', 'sha256sum', '{}', '+').split('\n').filter(Boolean)) {
    out.set(path.relative(top, line.slice(66)), line.slice(0, 64));
  }
  return out;
}

/** The guests of `top` unified one way: what came out, named relative to `top`, and how many sets built their objects (RowSet.objects). */
export async function unifyWay(top: string, way: Way, fault?: Fault) {
  sys.nativeLinker = way !== 'js';
  const objects = vi.spyOn(RowSet.prototype, 'objects');
  const before = contents(top);
  const open = fds();
  if (fault) sys.setLinkFault(fault);
  const guests = fs.readdirSync(top).sort().map((g) => path.join(top, g));
  const r = await runUnify(guests, { cache: false, onLink: way === 'objects' ? () => {} : undefined });
  sys.setLinkFault();
  const built = objects.mock.calls.length;
  objects.mockRestore();
  sys.nativeLinker = true;
  // no descriptor left open (nor one of someone else's closed twice)
  expect(fds()).toBe(open);
  // every path still holds the bytes it held (a temporary name left behind is one more: the leftovers)
  const after = contents(top);
  expect(new Map([...before].map(([p]) => [p, after.get(p)]))).toEqual(before);
  return {
    errors: r.errors.map((e) => temp(`${e.code} ${e.path} ${e.message}`.replaceAll(top, 'TOP'))),
    summary: r.report.summary,
    shared: sharedPaths(top).map(temp).sort(),
    leftovers: sh('find', top, '-name', `${TEMP_PREFIX}*`).split('\n').filter(Boolean).map((p) => temp(path.relative(top, p))),
    built,
  };
}

/**
 * `build` made in `dir`/WAY once per way and unified (with `fault`, not on
 * the JS path, whose steps the fault counts differently); the ways agree;
 * the rows' run.
 */
export async function threeWays(dir: string, build: (top: string) => void, fault?: Fault): Promise<Outcome> {
  const out: Partial<Record<Way, Outcome>> = {};
  for (const way of (fault ? ['objects', 'rows'] : ['js', 'objects', 'rows']) as Way[]) {
    const top = path.join(dir, way);
    build(top);
    out[way] = await unifyWay(top, way, fault);
  }
  const strip = ({ built: _, ...o }: Outcome) => o;
  expect(strip(out.objects!)).toEqual(strip(out.rows!));
  if (out.js) expect(strip(out.js)).toEqual(strip(out.rows!));
  expect(out.objects!.built).toBe(0); // that way never iterates rows
  return out.rows!;
}
