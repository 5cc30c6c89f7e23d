// A guest that keeps writing while vunify links its files.
//
// 1. Black box: three guests A, B and W with the same files; the built CLI
//    runs over a fresh copy of them again and again while a writer process
//    rewrites W's files in place (same size, mtime put back), appends,
//    truncates, chmods, and replaces them (new file renamed over), each time
//    opening the path afresh (the mtime is put back with futimes on that same
//    descriptor, not `touch -d` by path, which could land on another inode
//    than the one written). The writer checks, before each operation on a
//    file and once more at the end, that the path shows exactly what it last
//    made of it: vunify may change which inode a path names, never what the
//    path shows. W is sometimes the first root (its inodes are canonical,
//    so A's and B's paths are linked to them) and sometimes the last (its
//    paths are linked to A's inodes).
//
//    Whether the writer gets in vunify's way does not depend on timing:
//    when W is last, the run itself (test/helpers/cli-hook.mjs, preloaded)
//    stops just before its first exchange in W, after the linker's last
//    check, and asks the writer to act on that very file (an append) before
//    it goes on; so vunify meets a changed file in every such iteration.
//    The writer then waits until the linker is done with that file: for the
//    instant between the exchange and its undo the path shows the canonical
//    (README, crash safety), and a check there would see the append gone;
//    that window is the in-process tests' business (part 2). The iterations
//    are counted, not timed.
//
//    Hardlinks share writes: once W's path names the inode A's path names, an
//    in-place write through W changes A's file too (only --iunlink on a
//    Linux-VServer kernel prevents this; README, threat model). So
//    A and B may show what W wrote, but only what W wrote through an inode
//    that was already shared when it wrote (link count above one before or
//    after the write, on the writer's own descriptor). Anything else W wrote
//    showing up in A or B means vunify linked A's path to an inode whose
//    content it had not compared. (That paths sharing an inode show the same
//    bytes and metadata needs no test: they are one file.)
//
// 2. In process, through the sys seam: a guest's operation landing in the
//    window between the linker's last check and the exchange, one case each.
//    That window is a few microseconds per link, after a quiet stretch since
//    the scan, so the random writer above practically never hits it; these
//    put the operation exactly there.
import fs from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import type { FileError } from '../../src/core/errors.js';
import { sys } from '../../src/os/sys.js';
import { recover } from '../../src/state/recovery.js';
import { closeRoots, openRoots } from '../../src/pipeline/roots.js';
import type { JournalEntry } from '../../src/change/journal.js';
import { budget, exited, findTemps, killChildren, rng, runVunify, SEED, startScript, SCRIPT_PRELUDE, type HookConfig } from '../helpers/hostile.js';
import { rmTree, runUnify, setMtime, sh, tempDir, writeFile } from '../helpers/tree.js';
import { loopFs, type LoopFs } from '../helpers/loopfs.js';

const DIRS = 12;
const FILES = 10;
/** Iterations (a fresh copy of the guests, one run under the writer). */
const TARGET = budget(40, 2000);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let top: string;
let template: string;
const rels: string[] = [];
const original = new Map<string, { content: Buffer; mode: number; mtime: number }>();

beforeAll(() => {
  top = tempDir('vunify-writers-');
  template = path.join(top, 'template');
  for (let d = 0; d < DIRS; d++) {
    for (let f = 0; f < FILES; f++) {
      const rel = `d${String(d).padStart(2, '0')}/f${f}`;
      // Every content starts with its own path, so no two files of one guest
      // can ever become identical, whatever the writer does to them.
      const size = 200 + ((d * 31 + f * 17) % 40) * 400;
      const content = Buffer.alloc(size, `${rel}|the same in every guest|`);
      original.set(rel, { content, mode: 0o644, mtime: 1700000000 + d * 100 + f });
      rels.push(rel);
      const file = path.join(template, 'A', rel);
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, content);
      fs.chmodSync(file, 0o644);
      fs.utimesSync(file, 1700000000, original.get(rel)!.mtime);
    }
  }
  sh('cp', '-a', path.join(template, 'A'), path.join(template, 'B'));
  sh('cp', '-a', path.join(template, 'A'), path.join(template, 'W'));
}, 60_000);

afterAll(async () => {
  await killChildren();
  if (top) rmTree(top);
});

/**
 * The writer. Synchronous calls only; every operation opens the path afresh
 * and works through that one descriptor (mtimes are put back with futimes
 * on it, so they land on the inode that was written). Before each operation
 * it checks the path shows what it last made of it. Prints "ready" once it
 * has read the originals, and one JSON line when stopped.
 */
const WRITER = String.raw`
import { createHash } from 'node:crypto';
${SCRIPT_PRELUDE}const sha = (b) => createHash('sha256').update(b).digest('hex');
const P = (rel) => path.join(cfg.root, rel);

const orig = new Map();
const expected = new Map();
for (const rel of cfg.rels) {
  const st = fs.lstatSync(P(rel), { bigint: true });
  const o = { content: fs.readFileSync(P(rel)), mode: Number(st.mode & 0o7777n), mtimeNs: st.mtimeNs, uid: st.uid, gid: st.gid };
  orig.set(rel, o);
  expected.set(rel, { ...o, op: 'original', seq: 0 });
}
const leaks = new Map(); // rel -> { shas: Set, modes: Set }: what W wrote through an inode already shared
const history = new Map(); // rel -> the last few operations, for the failure message
const remember = (rel, h) => {
  const l = history.get(rel) ?? [];
  l.push({ seq, ms: Math.round(performance.now()), ...h });
  history.set(rel, l.slice(-6));
};
const violations = [];
const ops = {};
let seq = 0;

function describe(st, content) {
  return st ? { size: Number(st.size), mode: (Number(st.mode) & 0o7777).toString(8), mtimeNs: String(st.mtimeNs), sha: content && sha(content).slice(0, 12), head: content && content.subarray(0, 40).toString('latin1') } : null;
}

const matches = (e, st, content) =>
  st.isFile() && Number(st.mode & 0o7777n) === e.mode && st.mtimeNs === e.mtimeNs && st.uid === e.uid && st.gid === e.gid && content.equals(e.content);

function check(rel, when) {
  const e = expected.get(rel);
  let st, content;
  try {
    st = fs.lstatSync(P(rel), { bigint: true });
    content = st.isFile() ? fs.readFileSync(P(rel)) : null;
  } catch (er) {
    violations.push({ rel, when, error: er.code, lastOp: e.op, seq: e.seq });
    return;
  }
  if (matches(e, st, content)) {
    expected.set(rel, { ...e, before: undefined });
    return;
  }
  if (e.before && matches(e.before, st, content)) {
    // The documented limit: the operation went through a descriptor opened
    // before vunify swapped the path, to the inode it then unlinked.
    ops.lostThroughOldDescriptor = (ops.lostThroughOldDescriptor ?? 0) + 1;
    expected.set(rel, { ...e.before, before: undefined });
    return;
  }
  violations.push({ rel, when, lastOp: e.op, seq: e.seq, expected: describe({ size: e.content.length, mode: e.mode, mtimeNs: e.mtimeNs }, e.content), found: describe(st, content), history: history.get(rel) });
  // Carry on from what is there, so one loss is reported once.
  expected.set(rel, { content, mode: Number(st.mode & 0o7777n), mtimeNs: st.mtimeNs, uid: st.uid, gid: st.gid, op: 'resync', seq });
}

function leak(rel, content, mode) {
  let l = leaks.get(rel);
  if (!l) leaks.set(rel, (l = { shas: new Set(), modes: new Set() }));
  l.shas.add(sha(content));
  l.modes.add(mode);
}

function token(rel, size) {
  // Same size, different bytes, still starting with the path.
  const t = Buffer.alloc(size, rel + '|written by W #' + seq + '|');
  return t;
}

function inPlace(rel, kind) {
  const e = expected.get(rel), o = orig.get(rel);
  const fd = fs.openSync(P(rel), kind === 'chmod' ? 'r' : 'r+');
  try {
    const before = fs.fstatSync(fd, { bigint: true });
    let content = e.content, mode = e.mode;
    const whole = (buf) => {
      fs.ftruncateSync(fd, buf.length);
      fs.writeSync(fd, buf, 0, buf.length, 0);
      content = buf;
    };
    switch (kind) {
      case 'restore': // the original bytes, mode and mtime: a candidate for linking again
        whole(o.content);
        fs.fchmodSync(fd, o.mode);
        mode = o.mode;
        fs.futimesSync(fd, 1700000000, Number(o.mtimeNs / 1000000000n));
        break;
      case 'rewrite': { // same size, other bytes, mtime put back: only the bytes tell
        whole(token(rel, e.content.length));
        fs.futimesSync(fd, 1700000000, Number(e.mtimeNs / 1000000000n));
        break;
      }
      case 'chmod':
        mode = e.mode === 0o600 ? 0o644 : 0o600;
        fs.fchmodSync(fd, mode);
        break;
      case 'append': {
        const add = Buffer.from('+appended #' + seq + '\n');
        fs.writeSync(fd, add, 0, add.length, e.content.length);
        content = Buffer.concat([e.content, add]);
        break;
      }
      case 'truncate': {
        const len = Math.min(e.content.length, Math.max(24, Math.floor(e.content.length * 0.7)));
        fs.ftruncateSync(fd, len);
        content = e.content.subarray(0, len);
        break;
      }
    }
    const after = fs.fstatSync(fd, { bigint: true });
    if (before.nlink > 1n || after.nlink > 1n) leak(rel, content, mode);
    // Did vunify swap the path while this operation held its descriptor? Then
    // the operation may have gone to the displaced inode: README, "What vunify
    // cannot protect against". The next check accepts either outcome.
    let now = -1n;
    try { now = fs.lstatSync(P(rel), { bigint: true }).ino; } catch {}
    const raced = now !== after.ino;
    if (raced) ops.racedSwap = (ops.racedSwap ?? 0) + 1;
    remember(rel, { op: kind, sha: sha(content).slice(0, 12), mode: mode.toString(8), ino: String(after.ino), nlink: [String(before.nlink), String(after.nlink)], raced });
    expected.set(rel, { content, mode, mtimeNs: after.mtimeNs, uid: after.uid, gid: after.gid, op: kind, seq, before: raced ? { ...e, before: undefined } : undefined });
  } finally {
    fs.closeSync(fd);
  }
}

function replace(rel, kind) {
  // dpkg-style: a new file beside it, renamed over it.
  const e = expected.get(rel), o = orig.get(rel);
  const tmp = P(rel) + '~new';
  const content = kind === 'replaceOriginal' ? o.content : token(rel, o.content.length);
  fs.writeFileSync(tmp, content);
  fs.chmodSync(tmp, o.mode);
  fs.utimesSync(tmp, 1700000000, Number(o.mtimeNs / 1000000000n));
  fs.renameSync(tmp, P(rel));
  expected.set(rel, { content, mode: o.mode, mtimeNs: o.mtimeNs, uid: o.uid, gid: o.gid, op: kind, seq });
  remember(rel, { op: kind, sha: sha(content).slice(0, 12) });
}

const KINDS = [['restore', 30], ['rewrite', 20], ['chmod', 14], ['append', 8], ['truncate', 8], ['replaceOriginal', 10], ['replaceToken', 10]];
const TOTAL = KINDS.reduce((a, [, w]) => a + w, 0);
function pickKind() {
  let r = rand() * TOTAL;
  for (const [k, w] of KINDS) if ((r -= w) < 0) return k;
  return 'restore';
}

// The run asks (cli-hook.mjs) for an operation on one file, at the moment
// it is about to exchange it: append to it, then let the run go on.
function onRequest() {
  if (!fs.existsSync(cfg.request)) return;
  const rel = fs.readFileSync(cfg.request, 'utf8');
  fs.unlinkSync(cfg.request);
  check(rel, 'before the requested op ' + (seq + 1));
  seq++;
  try {
    inPlace(rel, 'append');
    ops.requested = (ops.requested ?? 0) + 1;
  } catch (er) {
    violations.push({ rel, when: 'requested append', error: er.code + ' ' + er.message });
  }
  fs.writeFileSync(cfg.ack, '');
  // Let the run settle that file (exchange, compare, undo) before going on.
  const until = Date.now() + 30000;
  while (!fs.existsSync(cfg.resume) && Date.now() < until) sleep(1);
  if (fs.existsSync(cfg.resume)) fs.unlinkSync(cfg.resume);
  else violations.push({ rel, when: 'after the requested append', error: 'the run never said it was done with the file' });
}

console.log('ready');
for (let n = 0; Date.now() < cfg.deadline; n++) {
  if ((n & 15) === 0 && fs.existsSync(cfg.stopFile)) break;
  onRequest();
  const rel = pick(cfg.rels);
  check(rel, 'before op ' + (seq + 1));
  let kind = pickKind();
  // Only whole seconds can be put back exactly with futimes.
  if (kind === 'rewrite' && expected.get(rel).mtimeNs % 1000000000n !== 0n) kind = 'restore';
  seq++;
  try {
    if (kind.startsWith('replace')) replace(rel, kind); else inPlace(rel, kind);
    ops[kind] = (ops[kind] ?? 0) + 1;
  } catch (er) {
    violations.push({ rel, when: 'op ' + kind, error: er.code + ' ' + er.message });
  }
  if (rand() < 0.5) sleep(rand() * cfg.pauseMs);
}
for (const rel of cfg.rels) check(rel, 'at the end');
const exp = {};
for (const [rel, e] of expected) exp[rel] = { sha: sha(e.content), mode: e.mode, mtimeNs: String(e.mtimeNs) };
const lk = {};
for (const [rel, l] of leaks) lk[rel] = { shas: [...l.shas], modes: [...l.modes] };
console.log(JSON.stringify({ ops, seq, violations, expected: exp, leaks: lk, history: Object.fromEntries(history) }));
`;

interface WriterResult {
  ops: Record<string, number>;
  seq: number;
  violations: unknown[];
  expected: Record<string, { sha: string; mode: number; mtimeNs: string }>;
  leaks: Record<string, { shas: string[]; modes: number[] }>;
  history: Record<string, unknown[]>;
}

describe('a guest writing while vunify links its files (black box)', () => {
  it('every path of the writing guest shows exactly what it last wrote; other guests see only what was written to a shared inode', async () => {
    const started = Date.now();
    const rand = rng(SEED);
    const work = path.join(top, 'work');
    const state = path.join(top, 'state');
    const stopFile = path.join(top, 'stop');
    const request = path.join(top, 'request');
    const ack = path.join(top, 'ack');
    const resume = path.join(top, 'resume');
    const done = path.join(top, 'hook-done');
    let iterations = 0;
    let requested = 0;
    let linksMade = 0;
    let leaked = 0;
    const ops: Record<string, number> = {};
    const codes: Record<string, number> = {};
    for (; iterations < TARGET; iterations++) {
      const what = `iteration ${iterations} (seed ${SEED})`;
      sh('rm', '-rf', work, stopFile, request, ack, resume, done);
      sh('cp', '-a', template, work);
      const writer = startScript(WRITER, {
        seed: SEED + iterations,
        root: path.join(work, 'W'),
        rels,
        stopFile,
        request,
        ack,
        resume,
        // Only a guard against a test that dies without writing the stop file.
        deadline: Date.now() + 600_000,
        pauseMs: 0.2,
      });
      await new Promise<void>((resolve, reject) => {
        const onData = () => writer.out().includes('ready\n') && resolve();
        writer.child.stdout!.on('data', onData);
        writer.child.once('exit', () => reject(new Error(`writer exited early: ${writer.err()}`)));
      });
      // W first: its inodes are canonical; W last: its paths are the duplicates.
      const order = rand() < 0.5 ? ['W', 'A', 'B'] : ['A', 'B', 'W'];
      const wLast = order[2] === 'W';
      const hook: HookConfig | undefined = wLast ? { exchange: { under: path.join(work, 'W'), action: 'request', request, ack, resume }, done } : undefined;
      const r = await runVunify(state, ['--json', '--no-default-excludes', ...order.map((g) => path.join(work, g))], 60_000, hook);
      fs.writeFileSync(stopFile, '');
      const end = await Promise.race([exited(writer.child), new Promise((res) => setTimeout(res, 15_000, 'timeout'))]);
      expect(end, 'writer did not stop').not.toBe('timeout');

      expect(r.hung, `${what}: vunify hung`).toBe(false);
      expect([0, 1], `${what}: exit ${r.code} ${r.signal}\n${r.stderr}`).toContain(r.code);
      expect(r.stderr).not.toMatch(/internal error/);
      const report = JSON.parse(r.stdout) as { summary: { linksMade: number }; errors: { code: string }[] };
      linksMade += report.summary.linksMade;
      for (const e of report.errors) codes[e.code] = (codes[e.code] ?? 0) + 1;
      if (wLast) {
        // The requested append was made at the exchange, and vunify noticed a change.
        expect(fs.existsSync(done), `${what}: the writer was not asked to act at an exchange`).toBe(true);
        expect(report.errors.map((e) => e.code), what).toContain('ECHANGED');
        requested++;
      }

      const res = JSON.parse(writer.out().trim().split('\n').pop()!) as WriterResult;
      for (const [k, n] of Object.entries(res.ops)) ops[k] = (ops[k] ?? 0) + n;
      leaked += Object.keys(res.leaks).length;
      // W: every path, at every check during the run and at the end, showed what W last made of it.
      expect(res.violations, `${what}, W ${order[0] === 'W' ? 'first' : 'last'}: the writing guest's own data was lost`).toEqual([]);
      // A and B: the original, or what W wrote through an inode they already shared.
      for (const g of ['A', 'B']) {
        for (const rel of rels) {
          const p = path.join(work, g, rel);
          const shown = sha(fs.readFileSync(p));
          const mode = fs.lstatSync(p).mode & 0o7777;
          const o = original.get(rel)!;
          const l = res.leaks[rel] ?? { shas: [], modes: [] };
          const ctx = `${what}: ${g}/${rel} (inode ${fs.lstatSync(p).ino}, W/${rel} inode ${fs.lstatSync(path.join(work, 'W', rel)).ino}) shows bytes W wrote to an inode ${g} did not share; W's last operations on it: ${JSON.stringify(res.history[rel])}`;
          expect([sha(o.content), ...l.shas], ctx).toContain(shown);
          expect([o.mode, ...l.modes], `${what}: ${g}/${rel} has a mode W set on an inode ${g} did not share`).toContain(mode);
        }
      }
      // vunify finished normally: none of its temporary names is left.
      expect(findTemps(work), what).toEqual([]);
    }
    console.log(`writers: seed ${SEED}, ${iterations} iterations in ${Date.now() - started} ms, ${linksMade} links made;`,
      `writer ops ${JSON.stringify(ops)} (${requested} asked for at an exchange); files W wrote through a shared inode: ${leaked}; vunify errors ${JSON.stringify(codes)}`);
    expect(iterations).toBeGreaterThanOrEqual(Math.min(TARGET, 10));
    expect(linksMade).toBeGreaterThan(0);
    expect(codes.ECHANGED ?? 0, 'the writer never got in vunify\'s way').toBeGreaterThan(0);
  }, budget(900_000, 7_200_000)); // only a hang guard: the test ends after its iterations
});

/*
 * The window the black-box writer almost never hits: after verify() has
 * compared the bytes and re-checked both files (its last fstat), link.ts's
 * replace() journals, links the canonical to a temporary name and exchanges
 * it with the duplicate's name; afterwards it checks only that the displaced
 * inode kept its identity, size and mtime. A guest operation by path that
 * lands in between goes to the duplicate's inode, which is then unlinked if
 * the operation left size and mtime alone (chmod, chown, setfattr, or a
 * same-size rewrite with the mtime put back). The tests below put the
 * operation exactly there, through the sys seam.
 */
describe('a guest acting between the last check and the exchange (in process, through the sys seam)', () => {
  let dir: string;
  const W = (name = 'f') => path.join(dir, 'w', name);
  const A = (name = 'f') => path.join(dir, 'a', name);
  beforeEach(() => {
    dir = tempDir();
    for (const g of ['a', 'w']) writeFile(path.join(dir, g, 'f'), { content: 'original content\n' });
  });
  afterEach(() => {
    vi.restoreAllMocks();
    sys.setLinkHook(null);
    sys.nativeLinker = true;
    rmTree(dir);
  });

  /** Called by the linker's addon (sys.setLinkHook) or its JS path (the sys seam), whichever makes the step. */
  const hooks: ((step: string, when: string) => void)[] = [];
  beforeEach(() => {
    hooks.length = 0;
    sys.setLinkHook((step, when) => {
      for (const h of hooks) h(step, when);
    });
  });

  /** Run vunify over the guests in `order`, doing `act` once, just before the temporary link is made. */
  async function actBeforeLink(order: string[], act: () => void) {
    const linkAt = sys.linkAt;
    let done = false;
    hooks.push((step, when) => {
      if (!done && step === 'link' && when === 'before') {
        done = true;
        act();
      }
    });
    vi.spyOn(sys, 'linkAt').mockImplementation((fd, dirFd, name) => {
      // A temporary name in the guest: the run's journal is linked into the state directory first.
      if (!done && name.toString().startsWith('.vunify.')) {
        done = true;
        act();
      }
      return linkAt(fd, dirFd, name);
    });
    const r = await runUnify(order.map((g) => path.join(dir, g)));
    expect(done).toBe(true);
    return r;
  }

  const temps = () => findTemps(dir);

  it('an append there is noticed: the guest keeps its file and its bytes', async () => {
    const { errors } = await actBeforeLink(['a', 'w'], () => fs.appendFileSync(W(), 'more\n'));
    expect(errors.map((e) => e.code)).toEqual(['ECHANGED']);
    expect(fs.readFileSync(W(), 'utf8')).toBe('original content\nmore\n');
    expect(fs.statSync(W()).ino).not.toBe(fs.statSync(A()).ino);
    expect(temps()).toEqual([]);
  });

  it('a same-size rewrite there that moves the mtime is noticed', async () => {
    const { errors } = await actBeforeLink(['a', 'w'], () => fs.writeFileSync(W(), 'ORIGINAL CONTENT\n'));
    expect(errors.map((e) => e.code)).toEqual(['ECHANGED']);
    expect(fs.readFileSync(W(), 'utf8')).toBe('ORIGINAL CONTENT\n');
    expect(temps()).toEqual([]);
  });

  // A chmod leaves size and mtime alone, and the link and the exchange move
  // the ctime anyway: only the comparison after the exchange (link.ts,
  // replace()) sees it. Same for chown and xattr changes.
  it('a chmod of the duplicate there is kept', async () => {
    await actBeforeLink(['a', 'w'], () => fs.chmodSync(W(), 0o600));
    expect(fs.statSync(W()).mode & 0o777).toBe(0o600);
  });

  // A same-size rewrite with the mtime put back (rsync --inplace -t, tar
  // extracting over a file, or a hostile guest) shows only in the bytes.
  it('a same-size rewrite of the duplicate there, mtime put back, is kept', async () => {
    await actBeforeLink(['a', 'w'], () => {
      fs.writeFileSync(W(), 'ORIGINAL CONTENT\n');
      setMtime(W(), '1700000000.123456789');
    });
    expect(fs.readFileSync(W(), 'utf8')).toBe('ORIGINAL CONTENT\n');
  });

  // linkAt links whatever the canonical's inode holds by then: guest w
  // rewrites its own file, the canonical (first root), with the mtime put
  // back; were a's path left linked to it, a's file would show w's bytes
  // although the two never shared an inode when w wrote. (Once linked,
  // in-place writes are shared anyway unless --iunlink is used.)
  it('a rewrite of the canonical there is never linked into another guest', async () => {
    await actBeforeLink(['w', 'a'], () => {
      fs.writeFileSync(W(), 'W PRIVATE DATA!!\n');
      setMtime(W(), '1700000000.123456789');
    });
    expect(fs.readFileSync(A(), 'utf8')).toBe('original content\n');
  });

  // The guest appends (vunify notices, and undoes the exchange), but just
  // before the undo it installs a new version by rename, dpkg-style. A blind
  // swap back would put the old inode at the name and hide the new version
  // under vunify's temporary name (link.ts, undo()). The new version goes
  // back to the name; the old inode, appended to, differs from the canonical,
  // so it is kept (never deleted unread) and the error names where.
  function renameOverAfterExchange(content: string) {
    const renameAt = sys.renameAt;
    let exchanged = false;
    const act = () => {
      if (!exchanged) {
        exchanged = true;
        fs.writeFileSync(W('f.dpkg-new'), content);
        fs.renameSync(W('f.dpkg-new'), W());
      }
    };
    hooks.push((step, when) => {
      if (step === 'exchange' && when === 'after') act();
    });
    vi.spyOn(sys, 'renameAt').mockImplementation((...a) => {
      renameAt(...a);
      act();
    });
  }

  it('a new version renamed over the name while the exchange is undone stays at the name', async () => {
    renameOverAfterExchange('package v2\n');
    const { errors } = await actBeforeLink(['a', 'w'], () => fs.appendFileSync(W(), 'more\n'));
    expect(fs.readFileSync(W(), 'utf8')).toBe('package v2\n');
    const left = temps();
    expect(left).toHaveLength(1);
    expect(fs.readFileSync(path.join(dir, left[0]!), 'utf8')).toBe('original content\nmore\n');
    expect(errors.map((e) => e.code)).toEqual(['ECHANGED']);
    expect(errors[0]!.message).toContain(path.basename(left[0]!));
    expect(fs.readFileSync(A(), 'utf8')).toBe('original content\n');
  });

  // Same, but the old inode was only chmodded: its bytes are the canonical's
  // yet it is not redundant (its mode is the guest's), so it is kept too.
  it('after such a rename, an old inode the guest chmodded is kept, not deleted', async () => {
    renameOverAfterExchange('package v2\n');
    await actBeforeLink(['a', 'w'], () => fs.chmodSync(W(), 0o600));
    expect(fs.readFileSync(W(), 'utf8')).toBe('package v2\n');
    expect(temps()).toHaveLength(1);
  });

  // After the exchange the guest's path shows the canonical: a chmod or a
  // write through it while vunify compares the two again is the guest's own
  // change to its (now shared) file. The link stands, and so does the
  // change; undoing would hand the path back its old inode and lose it.
  it.each([
    // at the first look at the temporary name after the exchange, before the metadata checks
    ['a chmod', 'statAt' as const, () => fs.chmodSync(W(), 0o600), () => expect(fs.statSync(W()).mode & 0o777).toBe(0o600)],
    // at the first read of the byte comparison
    ['a rewrite', 'readSync' as const, () => fs.writeFileSync(W(), 'NEW CONTENT 123\n'), () => expect(fs.readFileSync(W(), 'utf8')).toBe('NEW CONTENT 123\n')],
  ])('%s through the path while the comparison after the exchange runs is kept, and the link stands', async (_what, hook, act, check) => {
    sys.nativeLinker = false; // the JS path: the guest acts at its seam, in its comparison after the exchange
    const renameAt = sys.renameAt;
    const real = sys[hook] as (...a: unknown[]) => unknown;
    let exchanged = false;
    let acted = false;
    vi.spyOn(sys, 'renameAt').mockImplementation((...a) => {
      renameAt(...a);
      exchanged = true;
    });
    vi.spyOn(sys, hook).mockImplementation(((...a: unknown[]) => {
      if (exchanged && !acted) {
        acted = true;
        act();
      }
      return real(...a);
    }) as never);
    const { errors } = await runUnify(['a', 'w'].map((g) => path.join(dir, g)));
    expect(acted).toBe(true);
    expect(errors).toEqual([]);
    check();
    expect(fs.statSync(W()).ino).toBe(fs.statSync(A()).ino);
    expect(temps()).toEqual([]);
  });

  // The same on the addon's linker (the production path): the guest acts at
  // its hook just after the stats it takes after the exchange, before the
  // checks and the comparison that settle the swap (files under 16 KiB: no
  // leases, the bytes compared again).
  it.each([
    ['a chmod', () => fs.chmodSync(W(), 0o600), () => expect(fs.statSync(W()).mode & 0o777).toBe(0o600)],
    ['a rewrite', () => fs.writeFileSync(W(), 'NEW CONTENT 123\n'), () => expect(fs.readFileSync(W(), 'utf8')).toBe('NEW CONTENT 123\n')],
  ])('%s through the path while the addon compares after the exchange is kept, and the link stands', async (_what, act, check) => {
    let acted = false;
    hooks.push((step, when) => {
      if (!acted && step === 'settle' && when === 'before') {
        acted = true;
        act();
      }
    });
    const { errors } = await runUnify(['a', 'w'].map((g) => path.join(dir, g)));
    expect(acted).toBe(true);
    expect(errors).toEqual([]);
    check();
    expect(fs.statSync(W()).ino).toBe(fs.statSync(A()).ino);
    expect(fs.readFileSync(A(), 'utf8')).toBe(fs.readFileSync(W(), 'utf8'));
    expect(temps()).toEqual([]);
  });

  // The same chmod, by a run killed after the exchange: recovery must compare
  // the guest's old inode with the canonical in full, not only size and
  // mtime, before it deletes it (state.ts, unchanged()).
  it('a chmod of the duplicate there survives a kill after the exchange', () => {
    const stateDir = path.join(dir, 'state');
    fs.mkdirSync(stateDir);
    const canon = fs.statSync(A());
    const dup = fs.statSync(W(), { bigint: true });
    const root = fs.statSync(path.join(dir, 'w'));
    const entry: JournalEntry = {
      root: path.join(dir, 'w'), rootDev: root.dev, rootIno: root.ino, dir: '',
      tmp: Buffer.from('.vunify.killed').toString('hex'), name: Buffer.from('f').toString('hex'),
      canon: { dev: canon.dev, ino: canon.ino },
      dup: { dev: Number(dup.dev), ino: Number(dup.ino), size: Number(dup.size), mtimeSec: Number(dup.mtimeNs / 1_000_000_000n), mtimeNsec: Number(dup.mtimeNs % 1_000_000_000n) },
    };
    fs.writeFileSync(path.join(stateDir, 'journal.1.dead'), JSON.stringify(entry) + '\n');
    // What the run did before its kill, with the guest's chmod just before the exchange.
    fs.chmodSync(W(), 0o600);
    fs.linkSync(A(), W('.vunify.killed'));
    fs.renameSync(W(), W('.vunify.tmp'));
    fs.renameSync(W('.vunify.killed'), W());
    fs.renameSync(W('.vunify.tmp'), W('.vunify.killed'));
    const errors: FileError[] = [];
    const roots = openRoots([path.join(dir, 'w')]);
    try {
      recover(stateDir, roots, (e) => errors.push(e));
    } finally {
      closeRoots(roots);
    }
    expect(errors).toEqual([]);
    expect(fs.statSync(W()).mode & 0o777).toBe(0o600);
  });
});

// The comparison after the exchange is skipped when the canonical's ctime is
// later than the old inode's ("the guest wrote to its file as linked"):
// that holds only if the exchange itself gives both one ctime. On XFS it
// does not always: a duplicate rewritten (same size, mtime put back) after
// the comparison and before the link keeps a ctime older than the
// canonical's from the link, and its bytes were lost with the old inode.
describe('on XFS, a same-size rewrite with the mtime put back between the comparison and the link', () => {
  let xfs: LoopFs;
  let dir: string;
  beforeAll(() => {
    xfs = loopFs('xfs', 300 * 2 ** 20);
  });
  afterAll(() => xfs?.unmount());
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(xfs.dir, 'w-'));
    for (const g of ['a', 'w']) writeFile(path.join(dir, g, 'f'), { content: 'original content\n' });
  });
  afterEach(() => {
    vi.restoreAllMocks();
    sys.setLinkHook(null);
    sys.nativeLinker = true;
  });

  // And the other way round: a change through the path after the exchange
  // (the guest's own change to its now shared file) keeps the link.
  it.each([
    ['a chmod', (W: string) => fs.chmodSync(W, 0o600), (W: string) => expect(fs.statSync(W).mode & 0o777).toBe(0o600)],
    ['a rewrite', (W: string) => fs.writeFileSync(W, 'NEW CONTENT 123\n'), (W: string) => expect(fs.readFileSync(W, 'utf8')).toBe('NEW CONTENT 123\n')],
  ])('(%s through the path after the exchange, on the addon\'s path, keeps the link)', async (_what, act, check) => {
    const W = path.join(dir, 'w', 'f');
    const A = path.join(dir, 'a', 'f');
    let acted = false;
    sys.setLinkHook((step, when) => {
      if (!acted && step === 'settle' && when === 'before') {
        acted = true;
        act(W);
      }
    });
    const { errors } = await runUnify(['a', 'w'].map((g) => path.join(dir, g)));
    expect(acted).toBe(true);
    expect(errors).toEqual([]);
    check(W);
    expect(fs.statSync(W).ino).toBe(fs.statSync(A).ino);
    expect(findTemps(dir)).toEqual([]);
  });

  it.each(['native', 'js'])('is kept at the guest\'s path (%s path)', async (linker) => {
    const W = path.join(dir, 'w', 'f');
    const A = path.join(dir, 'a', 'f');
    const { mtimeNs } = fs.statSync(W, { bigint: true });
    let acted = false;
    const act = () => {
      acted = true;
      const fd = fs.openSync(W, 'r+');
      fs.writeSync(fd, 'ORIGINAL CONTENT\n', 0);
      sys.futimens(fd, Number(mtimeNs / 1_000_000_000n), Number(mtimeNs % 1_000_000_000n)); // to the nanosecond
      fs.closeSync(fd);
      expect(fs.statSync(W, { bigint: true }).mtimeNs).toBe(mtimeNs);
      // A clock tick or more before the link (a journal write that waited on the disk, a busy machine).
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    };
    if (linker === 'native') {
      sys.setLinkHook((step, when) => {
        if (!acted && step === 'link' && when === 'before') act();
      });
    } else {
      sys.nativeLinker = false;
      const linkAt = sys.linkAt;
      vi.spyOn(sys, 'linkAt').mockImplementation((fd, dirFd, name) => {
        if (!acted && name.toString().startsWith('.vunify.')) act();
        return linkAt(fd, dirFd, name);
      });
    }
    const { errors } = await runUnify(['a', 'w'].map((g) => path.join(dir, g)));
    expect(acted).toBe(true);
    expect(fs.readFileSync(W, 'utf8'), "the guest's bytes").toBe('ORIGINAL CONTENT\n');
    expect(fs.readFileSync(A, 'utf8')).toBe('original content\n');
    expect(fs.statSync(W).ino).not.toBe(fs.statSync(A).ino);
    expect(errors.map((e) => e.code)).toEqual(['EDIFFERENT']);
    expect(findTemps(dir)).toEqual([]);
  });
});
