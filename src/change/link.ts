/*
 * Link: carry out a plan, one duplicate path at a time, re-checking
 * everything a guest could have changed since the scan.
 *
 * For each set the canonical inode is opened once, confined beneath its
 * root, and kept open. For each duplicate path:
 *   1. open its directory (confined, and checked to be the directory that
 *      was scanned) and the file in it (O_PATH first, checked against the
 *      scan, then reopened for reading);
 *   2. check both files are unchanged since the scan, except for the nlink
 *      and ctime changes vunify's own links caused, and that the duplicate is
 *      neither immutable nor append-only;
 *   3. compare metadata, xattrs and every byte, read through those two
 *      descriptors: a hash match alone never links;
 *   4. swap the canonical in at the duplicate's name (swap.ts: temporary
 *      link, exchange, comparison after it, settle or undo).
 * Read leases on both inodes (lease.ts), taken before step 3 and released
 * once the swap is settled or undone, prove no byte of either was written
 * meanwhile, so the comparison after the exchange reads no bytes (the
 * addon keeps the canonical's lease from one pair of a set to the next and
 * reads its bytes once while it holds, see native/link.c); a pair
 * that cannot be leased (a writer has a file open, leases unsupported, a
 * small file) is compared in full again after the exchange, as before.
 * A duplicate inode is compared with its canonical once per pair, not once
 * per path: once one of its paths is linked, its other paths (a guest can
 * give one inode thousands) go through the same opens and checks, but with
 * no byte comparison as long as both inodes are unchanged since it (dev,
 * ino, size, mtime and ctime, the ctime as vunify's own links and unlinks
 * left it; checked again just before the exchange, see swap.ts `known`).
 * A failed swap that leaves the canonical with a new ctime ends every such
 * pair with it (doubt()): the ctime may be a guest's change, not ours.
 * An xattr, flag, owner or mode change moves the ctime too. What is left
 * is a guest that writes and puts the mtime back in the microseconds
 * between two of vunify's own calls on the inode; the first path of every
 * pair still gets the full comparison and the proof after the exchange
 * (leases, or a second full comparison).
 * EMLINK (the canonical reached the filesystem's link limit) makes the
 * current duplicate the canonical for the rest of its set.
 *
 * A set holds one content as far as the keyed hash can tell; when the byte
 * comparison in step 3 shows a second one (an accidental collision, or a
 * forgery that got past the key), the set is split by content, not given
 * up: the duplicate that differs from every canonical so far becomes the
 * canonical of its own part, and each later duplicate is compared with the
 * canonicals in turn (the one that matched last first) and linked to the
 * first it matches. So an inode costs at most one comparison per content
 * found, and at most MAX_CONTENTS contents per set are kept apart; a
 * duplicate that matches none of them is reported (EDIFFERENT). Whatever
 * the forged inode is, every genuine copy still joins one canonical. Such
 * splits are no error: they are counted (contentSplits) and named with -v.
 *
 * The plan only holds what the policy allows (pipeline/policy.ts), so any
 * other refusal here comes from a change since the scan; it is reported
 * with the path and the run goes on.
 *
 * Steps 1-4 of the pair with the canonical tried first run in the addon
 * (native/link.c), for up to 64 pairs of each of up to 64 sets per call,
 * the sets shared out between min(CPUs, 8) threads of the thread pool
 * (costliest first: a call lasts until its last set is done),
 * while this thread takes in the last call of another 64 sets and prepares
 * their next one (linkBatched()). The addon
 * decides only the ordinary outcome: a pair that does not check out before
 * anything was changed is redone here (linkOne), and after its temporary
 * link any other outcome comes back with its descriptors open, for swap.ts
 * to finish in its own words (finish()). Everything else (the sets, the
 * canonicals, EMLINK, content splits, doubt(), the report) stays here, and
 * what each set reports is passed on in plan order, whatever thread ran it.
 * --iunlink, and a journal the addon cannot write to, take this file's own
 * path for every pair (as does sys.nativeLinker = false).
 *
 * A plan kept as rows (pipeline/plan-rows.ts) is linked on them while it
 * can (linkRows): each set's pairs go to the addon straight from the rows,
 * and a LINKED pair is counted with no object made for its path or inode.
 * The set's objects are built, and linkSet goes on from that pair, at its
 * first pair the addon did not link, or for the whole set when one inode
 * has two of its paths or the canonical cannot be opened as scanned. So
 * every outcome but the ordinary one is decided by the code above, on
 * objects, as before. -v (onLink) keeps every set on objects.
 */
import os from 'node:os';
import { codedError, errorCode, fileError, type FileError } from '../core/errors.js';
import { displayPath, relPath, writeDirRel } from '../core/paths.js';
import { FS_FILE_FLAGS, sameFile, type Stat } from '../core/stat.js';
import type { DirNode, FileRec, Inode } from '../core/types.js';
import { openDir, openRegular, openScanned, type OpenedFile } from '../os/confine.js';
import { noPretenuring } from '../os/memory-limit.js';
import { doublesStat, LINK, LINK_ARRAY, LINK_TMP, OPEN_CHECKED, statDoubles, sys } from '../os/sys.js';
import type { LinkOp, PlanSet } from '../pipeline/plan.js';
import { freeable } from '../pipeline/plan.js';
import { RowSet } from '../pipeline/plan-rows.js';
import { relPathRow, rootIndexOf, writeStatOfRow } from '../pipeline/rows.js';
import { blocksOf, inoOf, nlinkOf, sizeOf } from '../pipeline/table.js';
import { checkNotLocked, difference, isContentDifference } from './compare.js';
import { isIunlinked, setIunlink } from './iunlink.js';
import type { Journal } from './journal.js';
import { leaseError, PairLease } from './lease.js';
import { changedWhileLinked, settle, settledMarkFailure, swap, swapFailure, tempMoved, tempUnlinkFailure } from './swap.js';

export interface LinkOptions {
  ignoreMtime: boolean;
  onError(e: FileError): void;
  /** Called when two inodes the plan held identical turn out to differ (the hash cache forgets both). */
  onDiffer?(canonical: Inode, duplicate: Inode): void;
  /** Called when a canonical's ctime moved during a failed swap, perhaps by the guest (the hash cache forgets it). */
  onDoubt?(canonical: Inode): void;
  /** Called after each link made (for -v). Given, every set takes the objects' path (linkSet). */
  onLink?(file: FileRec, canonical: FileRec): void;
  /** For the cache: a path of this inode (as the walk saw it, its link count included) was replaced by a link. */
  onReplaced?(dev: number, ino: number, nlink: number): void;
  /**
   * For the cache: what fstat says of a canonical after links were made to
   * it (after each link, or once after a run of them: only the last counts).
   */
  onCanonical?(canonical: Stat): void;
  onProgress?(ops: number): void;
  /**
   * Called when a duplicate turned out to hold another content than its
   * set's canonical(s) and became a canonical itself. `assumed`: one of the
   * two was never hashed (see `assumed` below), so no hash matched.
   */
  onContentSplit?(file: FileRec, canonical: FileRec, assumed: boolean): void;
  /**
   * Inodes put into their set without being hashed (commands/session.ts
   * hashRowGroups: a new file whose metadata group the cache knew as one
   * content class). The byte comparison is their only check, as it is
   * everyone's last; one that differs says nothing against the cached hash
   * of the other, so onDiffer is not called for it.
   */
  assumed?(inode: Inode): boolean;
  /** Journal each temporary name before it is created (see journal.ts). */
  journal?: Journal;
  /** Mark each canonical immutable + immutable-unlink before its first link (see iunlink.ts). */
  iunlink?: boolean;
}

export interface LinkResult {
  linksMade: number;
  /** Inodes whose last link was replaced, the sum of their sizes, and of their allocated blocks. */
  freedInodes: number;
  freedBytes: number;
  freedDiskBytes: number;
  /** Planned links not made because of an error. */
  skipped: number;
  /**
   * Sets the byte comparison split by content, the parts split off, and the
   * bytes the plan counted as freeable that stayed as those parts'
   * canonicals: freedBytes + contentSplits.bytes is what the plan promised
   * when nothing else went wrong.
   */
  contentSplits: { sets: number; parts: number; bytes: number };
}

/** Contents kept apart in one set before further strangers are reported rather than compared. */
export const MAX_CONTENTS = 8;

interface Canonical {
  file: FileRec;
  inode: Inode;
  fd: number;
  /** What fstat must say now: the scan's stat, updated after each link we made. */
  expect: Stat;
  /** Already carries the immutable-unlink attributes (--iunlink). */
  iunlinked: boolean;
}

/** What fstat of each inode should say, after vunify's own changes to it (weak: the main path builds a set's objects for that set only). */
type Expected = WeakMap<Inode, Stat>;

/**
 * `plan.sets` may be built one set at a time as they are linked; a plan
 * that has them as rows too (pipeline/plan-rows.ts) is linked on its rows
 * through the addon (linkRows), each set's objects built only if needed.
 */
export async function link(plan: { sets: Iterable<PlanSet>; rowSets?: Iterable<RowSet> }, opts: LinkOptions): Promise<LinkResult> {
  const result: LinkResult = { linksMade: 0, freedInodes: 0, freedBytes: 0, freedDiskBytes: 0, skipped: 0, contentSplits: { sets: 0, parts: 0, bytes: 0 } };
  const expected: Expected = new WeakMap();
  noPretenuring(); // see there: the link stage's code is compiled once
  try {
    if (useNative(opts)) await linkBatched((!opts.onLink && plan.rowSets) || plan.sets, opts, result, expected);
    else for (const set of plan.sets) for (const _ of linkSet(set, opts, result, expected)); // never yields without a batch
  } finally {
    seen = new Uint32Array(0); // distinctOps' stamps: not kept past the run
    // The space is free when the run says so.
    await sys.closeLaterDrain();
  }
  return result;
}

/**
 * One set, one duplicate path at a time. With `batch`, the pair with the
 * canonical tried first is done by the addon, batched with the next ones:
 * the generator yields once its batch is prepared, and goes on when the
 * batch has run (linkBatched()).
 */
function* linkSet(set: PlanSet, opts: LinkOptions, result: LinkResult, expected: Expected, batch?: Batch, start?: Resume): Generator<void, void, void> {
  // One canonical per content found in the set; the plan's comes first.
  const canons: Canonical[] = [];
  if (start) canons.push(start.canon);
  else {
    try {
      canons.push(openCanonical(set.source, set.canonical, expected, opts));
    } catch (er) {
      opts.onError(fileError(displayPath(set.source), er));
      result.skipped += set.ops.length;
      return;
    }
  }
  let last = 0; // the canonical that matched last: tried first
  // Duplicate inode -> the canonical it was compared with in full, while both are unchanged since.
  const compared = new Map<Inode, Inode>();
  try {
    for (let n = start ? start.from : 0; n < set.ops.length; n++) {
      const op = set.ops[n]!;
      opts.onProgress?.(1);
      if (canons.some((c) => c.inode === op.inode)) continue; // became a canonical (EMLINK, or its own content)
      const order = canons.length === 1 ? ONLY_CANON : [last, ...canons.keys()].filter((k, i, all) => all.indexOf(k) === i);
      // The pair with the canonical tried first, done by the addon in a batch with the next ones.
      if (batch && !batch.has(n, canons[last]!) && batch.prepare(set, n, canons[last]!, canons, opts, expected, compared)) yield;
      let error: unknown;
      for (const k of order) {
        const canon = canons[k]!;
        try {
          const done = batch?.take(n, canon);
          const freed = done ? finish(done, canon, op, opts, expected, compared) : linkOne(canon, op, opts, expected, compared);
          result.linksMade++;
          if (freed) {
            result.freedInodes++;
            result.freedBytes += op.inode.stat.size;
            result.freedDiskBytes += op.inode.stat.blocks * 512;
          }
          opts.onCanonical?.(canon.expect);
          opts.onReplaced?.(op.file.stat.dev, op.file.stat.ino, op.file.stat.nlink);
          opts.onLink?.(op.file, canon.file);
          last = k;
          error = undefined;
          break;
        } catch (er) {
          error = er;
          if (isContentDifference(er)) {
            if (!opts.assumed?.(canon.inode) && !opts.assumed?.(op.inode)) opts.onDiffer?.(canon.inode, op.inode);
            continue; // another content: try the next canonical
          }
          if (errorCode(er) === 'EMLINK') {
            // The canonical is full: this duplicate carries its part from here.
            try {
              const next = openCanonical(op.file, op.inode, expected, opts);
              sys.close(canon.fd);
              canons[k] = next;
              error = undefined;
            } catch (er2) {
              error = er2;
            }
          }
          break;
        }
      }
      if (error !== undefined && isContentDifference(error) && canons.length < MAX_CONTENTS) {
        // A content no canonical holds: this inode is the canonical of its own part.
        try {
          canons.push(openCanonical(op.file, op.inode, expected, opts));
          if (canons.length === 2) result.contentSplits.sets++;
          result.contentSplits.parts++;
          if (freeable(op.inode)) result.contentSplits.bytes += op.inode.stat.size;
          opts.onContentSplit?.(op.file, canons[0]!.file, !!opts.assumed?.(op.inode) || !!opts.assumed?.(canons[0]!.inode));
          continue;
        } catch (er2) {
          error = er2;
        }
      }
      if (error === undefined) continue;
      opts.onError(fileError(displayPath(op.file), error));
      result.skipped++;
      if (errorCode(error) === 'ECANONICAL') {
        result.skipped += set.ops.length - n - 1;
        return;
      }
    }
  } finally {
    for (const c of canons) sys.close(c.fd);
  }
}

/**
 * A set through the addon on the plan's rows (the path of every set while
 * all its pairs link): linkSet's steps with no object per path. It takes a
 * set whose ops are distinct inodes, none of them the canonical (no op is
 * skipped, none is `known`, and no inode of it was changed before: sets
 * share no inode); anything else goes to linkSet whole. Each pair the
 * addon LINKED is counted as finish() counts it; at the first that it did
 * not, the set's objects are built and linkSet goes on from that op, with
 * the canonical as it is now and that pair's result (Resume). A canonical
 * that cannot be opened or is locked leaves the whole set to linkSet, which
 * opens it again and says why.
 */
function startSet(set: PlanSet | RowSet, opts: LinkOptions, result: LinkResult, expected: Expected, batch: Batch): SetRun {
  if (!(set instanceof RowSet)) return linkSet(set, opts, result, expected, batch);
  const fd = distinctOps(set) ? openRowCanonical(set, batch.canonExpect) : -1;
  return fd < 0 ? linkSet(set.objects(), opts, result, expected, batch) : linkRows(set, fd, opts, result, expected, batch);
}

/**
 * A set's run in linkBatched: yields once its next batch is prepared; a
 * linkRows run may end by handing the set over (linkBatched's step() goes
 * on with linkSet from there). Every path other than the clean one is kept
 * out of linkRows itself, which V8 compiles for that one.
 */
type SetRun = Generator<void, Resume | void, void>;

/** linkRows' set from canonical `fd` (startSet opened it): see startSet. */
function* linkRows(set: RowSet, fd: number, opts: LinkOptions, result: LinkResult, expected: Expected, batch: Batch): SetRun {
  const t = set.scan.tables;
  let resume: Resume | undefined;
  try {
    for (let n = 0; n < set.count; ) {
      if (batch.prepareRows(set, n, fd, opts)) yield;
      let linked = 0;
      if (batch.done > 0) {
        const out = batch.pool.out;
        for (let slot = 0; slot < batch.done && out[batch.at(slot) * OUT.length + OUT.code] === LINK.LINKED; slot++) {
          batch.taken(slot);
          result.linksMade++;
          if (out[batch.at(slot) * OUT.length + OUT.dup + ST.nlink] === 0) {
            const row = set.inodeRow(set.inode(n + slot));
            result.freedInodes++;
            result.freedBytes += sizeOf(t, row);
            result.freedDiskBytes += blocksOf(t, row) * 512;
          }
          linked++;
        }
      }
      if (linked > 0) {
        opts.onProgress?.(linked);
        if (opts.onReplaced)
          for (let k = n; k < n + linked; k++) {
            const row = set.row(k);
            opts.onReplaced(set.scan.roots[rootIndexOf(t, row)]!.dev, inoOf(t, row), nlinkOf(t, row));
          }
        // once per call rather than per link: the cache keeps a canonical's last (one edit, not one between each forget)
        opts.onCanonical?.(doublesStat(batch.canonExpect, 0));
        n += linked;
      }
      // A pair not LINKED (its result is the batch's to finish), or none prepared (journal): linkSet goes on from it.
      if (linked < batch.done || batch.done === 0) return (resume = handOver(set, n, fd, batch, expected));
    }
  } finally {
    if (!resume) sys.close(fd); // else linkSet's
  }
}

/** What linkSet needs to go on with `set` from op `from`: its objects, and the canonical as linkRows left it. */
function handOver(set: RowSet, from: number, fd: number, batch: Batch, expected: Expected): Resume {
  const objects = set.objects();
  const canon: Canonical = { file: objects.source, inode: objects.canonical, fd, expect: doublesStat(batch.canonExpect, 0), iunlinked: false };
  if (from > 0) expected.set(canon.inode, canon.expect); // as finish() after a link
  batch.adopt(canon);
  return { set: objects, from, canon };
}

/** Generation stamps of candidates, for distinctOps (one array for the run, grown as needed). */
let seen = new Uint32Array(0);
let generation = 0;

/** Whether every op of `set` is its own inode, and none is the canonical. */
function distinctOps(set: RowSet): boolean {
  if (seen.length < set.candidates) seen = new Uint32Array(set.candidates + (set.candidates >> 1));
  if (++generation === 0xffffffff) seen.fill(0), (generation = 1);
  seen[set.canonical] = generation;
  for (let k = 0; k < set.count; k++) {
    const m = set.inode(k);
    if (seen[m] === generation) return false;
    seen[m] = generation;
  }
  return true;
}

/**
 * openCanonical() of a set's canonical on its rows: opened through its
 * source path, checked against what the walk saw (openScanned: ctime,
 * not nlink) and not locked; its fstat in `stat`. -1 for anything else
 * (linkSet does it again with the objects, and reports it).
 */
function openRowCanonical(set: RowSet, stat: Float64Array): number {
  const t = set.scan.tables;
  const expect = (rowExpect ??= new Float64Array(ST.length));
  writeStatOfRow(set.scan, set.source, ST, expect, 0);
  let fd = -1;
  try {
    fd = sys.openChecked(set.scan.roots[rootIndexOf(t, set.source)]!.fd, relPathRow(t, set.source), expect, OPEN_CHECKED.ctime, stat);
    if (fd >= 0) checkNotLocked(fd, 'canonical copy');
    return fd;
  } catch {
    if (fd >= 0) sys.close(fd);
    return -1;
  }
}
let rowExpect: Float64Array | undefined;

/** Where linkSet takes over a set from linkRows: at op `from` of its objects, with the canonical linkRows opened. */
interface Resume {
  set: PlanSet;
  from: number;
  canon: Canonical;
}

/** The order of canonicals to try while a set has one (nearly every set): no array built per path. */
const ONLY_CANON: readonly number[] = [0];

/**
 * The per-pair sequence in the addon (native/link.c), for runs where every
 * rule it keeps applies: not --iunlink (its attributes are set here), and a
 * journal the addon can write to (or none). Off through sys.nativeLinker.
 */
const useNative = (opts: LinkOptions): boolean =>
  sys.nativeLinker && !opts.iunlink && (!opts.journal || (!!opts.journal.native && !opts.journal.failed));

/** Pairs per set and call: a few ms of work per call, so signals are handled between calls as before. */
const BATCH = 64;
/**
 * Bytes of directory paths and names per set and call: a guest's directory
 * deep down (a path up to ~1 MiB) full of duplicates must not make a call's
 * memory pairs × depth. GROUPS × ACTIVE sets of it at most: 16 MiB. A pair
 * whose own path passes it takes the JS path (add()), or a guest's 64
 * deepest files would put 64 such paths in one call.
 */
const NAME_BYTES = 1 << 17;
/**
 * Sets per call: each gives the call one run of pairs (its segment), and
 * the addon shares the segments out between its threads, each set on one
 * thread (one canonical at a time, EMLINK as on one). 64 rather than 16:
 * a quarter of the calls, each waited for and taken in by this thread.
 */
const ACTIVE = 64;
/** Threads per call (native/link.c caps them at 8). */
const THREADS = Math.max(1, Math.min(os.availableParallelism(), 8));
/**
 * Groups of up to ACTIVE sets: while one group's call runs on the thread
 * pool, this thread takes the other group's results and prepares its next
 * batches, so the linker's threads do not wait for JavaScript between calls.
 */
const GROUPS = 2;
/** linkBatch's arrays: where each field is, and the doubles each takes (native/link.c, through sys.ts). */
const { stat: ST, pair: PR, out: OUT, seg: SG } = LINK_ARRAY;

/**
 * A linkBatchStart call is running: until it is done, this thread changes
 * no guest file and writes nothing to the journal (the call's threads do
 * both; its directory locks do not cover this thread). quiet() waits for it.
 */
let inFlight = false;
function quiet(): void {
  if (inFlight) sys.linkBatchWait();
}

/** The arrays of linkBatch calls, reused: region r holds the pairs of the r-th set in flight (regions of group g: g * ACTIVE ...). */
class Pool {
  readonly pairs = new Float64Array(GROUPS * ACTIVE * BATCH * PR.length);
  readonly out = new Float64Array(GROUPS * ACTIVE * BATCH * OUT.length);
  readonly tmps = Buffer.alloc(GROUPS * ACTIVE * BATCH * LINK_TMP);
  readonly canonExpect = Array.from({ length: GROUPS }, () => new Float64Array(ACTIVE * ST.length));
  readonly segs = Array.from({ length: GROUPS }, () => new Float64Array(ACTIVE * SG.length));
  /** Each group's call's directories and names, each pair's `dir NUL name NUL`, grown as needed; and the bytes of it the call takes. */
  private readonly names = Array.from({ length: GROUPS }, () => Buffer.alloc(0));
  private readonly namesLength = new Array<number>(GROUPS).fill(0);

  /** The names of `batches`' pairs written into names[g], each pair's offset into its pairs entry; the bytes written. */
  private writeNames(g: number, batches: Batch[]): number {
    let size = 0;
    for (const b of batches) size += b.nameBytes;
    // Room to grow into, but no more than a call's share of NAME_BYTES: one
    // buffer per group, GROUPS x ACTIVE x NAME_BYTES (16 MiB) for both (the
    // LINK_FIXED of os/memory-limit.ts), where growing each by half made 24.
    if (this.names[g]!.length < size) this.names[g] = Buffer.allocUnsafe(Math.max(size, Math.min(size + (size >> 1), ACTIVE * NAME_BYTES)));
    const buf = this.names[g]!;
    let offset = 0;
    for (const b of batches) {
      for (let i = 0; i < b.count; i++) {
        this.pairs[b.at(i) * PR.length + PR.nameOff] = offset;
        const dir = b.dirs[i]!;
        writeDirRel(dir, buf, offset);
        offset += dir.relLength;
        buf[offset++] = 0;
        const from = b.nameAt[i]!, to = from + b.nameLength[i]!;
        b.nameIn[i]!.copy(buf, offset, from, to);
        offset += to - from;
        buf[offset++] = 0;
      }
    }
    return offset;
  }

  /**
   * The arrays of group `g`'s next call, from its prepared batches: written
   * while the other group's call runs (their own names buffer, segments and
   * regions of pairs), so that run() can start it as soon as that one ends.
   */
  load(g: number, batches: Batch[]): void {
    const segs = this.segs[g]!;
    const canonExpect = this.canonExpect[g]!;
    this.namesLength[g] = this.writeNames(g, batches);
    batches.forEach((b, k) => {
      const seg = k * SG.length;
      segs[seg + SG.canon] = b.canonFd;
      segs[seg + SG.start] = b.at(0);
      segs[seg + SG.count] = b.count;
      segs[seg + SG.done] = 0; // a segment the addon never started (it stops early) did none
      canonExpect.set(b.canonExpect, k * ST.length);
    });
  }

  /**
   * Start group `g`'s batches, loaded by load(), one segment each, in one
   * call on the thread pool; the promise settles once each batch knows how
   * far it got (ran()), with whether every pair of every batch was LINKED.
   */
  async run(g: number, batches: Batch[], opts: LinkOptions): Promise<boolean> {
    const segs = this.segs[g]!;
    const canonExpect = this.canonExpect[g]!;
    const journal = opts.journal?.native;
    try {
      journal?.flush(); // the directories the batches name: declared before any entry (no call runs now)
    } catch {
      // failed: the journal says so
    }
    // A journal write failed (this thread's): no line may follow it, so
    // none of these runs here; the JS path says why.
    if (opts.journal?.failed) {
      for (const b of batches) b.ran(0);
      return false;
    }
    inFlight = true;
    try {
      await sys.linkBatchStart(
        segs.subarray(0, batches.length * SG.length),
        canonExpect,
        journal ? journal.fd : -1,
        opts.ignoreMtime ? 1 : 0,
        FS_FILE_FLAGS,
        this.pairs,
        this.names[g]!.subarray(0, this.namesLength[g]),
        this.out,
        this.tmps,
        THREADS,
      );
    } finally {
      inFlight = false;
    }
    let clean = true;
    batches.forEach((b, k) => {
      // What fstat said of the canonical after the segment's last link (linkRows' expectation for the next)
      b.canonExpect.set(canonExpect.subarray(k * ST.length, (k + 1) * ST.length));
      const done = segs[k * SG.length + SG.done]!;
      if (done !== b.count || this.out[b.at(b.count - 1) * OUT.length + OUT.code] !== LINK.LINKED) clean = false;
      b.ran(done);
    });
    return clean;
  }
}

/** One pair's result in the batch arrays. */
interface Done {
  b: Batch;
  slot: number;
}

/** One set's run of pairs for the addon, and which ops of the set it holds results for. */
class Batch {
  /** The op index of each pair (-1 once its result is taken), and the canonical they are linked to (linkRows: none until linkSet takes over). */
  private ops: number[] = [];
  canon: Canonical | undefined;
  /** The canonical's descriptor and what fstat must say of it, as the addon takes them (and leaves the latter after the call). */
  canonFd = -1;
  readonly canonExpect = new Float64Array(ST.length);
  /** Pairs prepared for the next call; each one's directory and name (bytes nameAt.. of nameIn), and the bytes they take in the call. */
  count = 0;
  readonly dirs: DirNode[] = [];
  readonly nameIn: Buffer[] = [];
  readonly nameAt: number[] = [];
  readonly nameLength: number[] = [];
  nameBytes = 0;

  constructor(
    readonly pool: Pool,
    readonly region: number,
  ) {}

  has(n: number, canon: Canonical): boolean {
    return this.canon === canon && this.ops.includes(n);
  }

  /** The result for op `n` linked to `canon`, once. */
  take(n: number, canon: Canonical): Done | undefined {
    if (this.canon !== canon) return undefined;
    const slot = this.ops.indexOf(n);
    if (slot < 0) return undefined;
    this.ops[slot] = -1;
    return { b: this, slot };
  }

  /**
   * Prepare ops n, n+1, ... of `set` to be linked to `canon`, as linkSet
   * would one at a time: ops whose inode is a canonical are left out
   * (skipped there), and the run ends before an inode it already holds
   * (`known` depends on the earlier path's result). The addon ends it after
   * the first pair not LINKED (what follows depends on it). False when
   * there is nothing to run (op n takes the JS path).
   */
  prepare(set: PlanSet, n: number, canon: Canonical, canons: Canonical[], opts: LinkOptions, expected: Expected, compared: Map<Inode, Inode>): boolean {
    this.begin(canon.fd);
    this.canon = canon;
    statDoubles(canon.expect, this.canonExpect, 0);
    const inodes = new Set<Inode>();
    const pairs = this.pool.pairs;
    for (let i = n; i < set.ops.length && this.count < BATCH; i++) {
      const op = set.ops[i]!;
      if (canons.some((c) => c.inode === op.inode)) continue;
      if (inodes.has(op.inode)) break;
      const p = this.add(i, op.file.dir, op.file.name, 0, op.file.name.length, opts);
      if (p < 0) break;
      inodes.add(op.inode);
      pairs[p + PR.known] = compared.get(op.inode) === canon.inode ? 1 : 0;
      statDoubles(expected.get(op.inode) ?? op.file.stat, pairs, p + PR.expect);
    }
    return this.count > 0;
  }

  /**
   * prepare() for linkRows: ops n, n+1, ... of `set` linked to the
   * canonical open at `canonFd`, whose expected stat is in canonExpect. Its
   * ops are distinct inodes, none the canonical (linkRows checks), none
   * linked before (sets share no inode): each expects what the walk saw,
   * and none is `known`.
   */
  prepareRows(set: RowSet, n: number, canonFd: number, opts: LinkOptions): boolean {
    this.begin(canonFd);
    const t = set.scan.tables;
    const pairs = this.pool.pairs;
    for (let i = n; i < set.count && this.count < BATCH; i++) {
      const row = set.row(i);
      const p = this.add(i, set.dir(t.files.dir[row]!), t.names, t.files.nameOff[row]!, t.files.nameLen[row]!, opts);
      if (p < 0) break;
      pairs[p + PR.known] = 0;
      writeStatOfRow(set.scan, row, ST, pairs, p + PR.expect);
    }
    return this.count > 0;
  }

  private begin(canonFd: number): void {
    this.canon = undefined;
    this.canonFd = canonFd;
    this.ops = [];
    this.count = 0;
    this.nameBytes = 0;
  }

  /**
   * Op `i`, in `dir` with the name at bytes [at, at + length) of `name`,
   * as the next pair: its place in the pool's pairs, root, directory and
   * journal entry written (the caller writes `known` and `expect`); -1 when
   * it does not fit this call (nor any: its path alone passes NAME_BYTES;
   * the JS path links it) or its directory cannot be journaled (the JS path
   * says why for that pair).
   */
  private add(i: number, dir: DirNode, name: Buffer, at: number, length: number, opts: LinkOptions): number {
    const need = dir.relLength + length + 2;
    if (this.nameBytes + need > NAME_BYTES) return -1;
    let entry = 0;
    try {
      const journal = opts.journal?.native;
      entry = journal ? journal.at(dir) : 0;
    } catch {
      return -1; // failed: the JS path says so for this pair
    }
    const slot = this.count++;
    this.nameBytes += need;
    this.ops.push(i);
    this.dirs[slot] = dir;
    this.nameIn[slot] = name;
    this.nameAt[slot] = at;
    this.nameLength[slot] = length;
    const p = this.at(slot) * PR.length;
    const pairs = this.pool.pairs;
    pairs[p + PR.root] = dir.root.fd;
    pairs[p + PR.dirDev] = dir.dev;
    pairs[p + PR.dirIno] = dir.ino;
    pairs[p + PR.at] = entry;
    return p;
  }

  /** The call went through `done` of the prepared pairs. */
  ran(done: number): void {
    this.ops.length = done;
    this.count = 0;
    // no references kept to a set's directories and names past its call
    this.dirs.length = this.nameIn.length = this.nameAt.length = this.nameLength.length = 0;
  }

  /** Pairs the last call went through (ran()). */
  get done(): number {
    return this.ops.length;
  }

  /** Slot `slot`'s result taken by linkRows (it linked). */
  taken(slot: number): void {
    this.ops[slot] = -1;
  }

  /** linkSet takes over from linkRows: the results left are for `canon`. */
  adopt(canon: Canonical): void {
    this.canon = canon;
  }

  /** Where slot `slot`'s pair is in the pool's arrays. */
  at(slot: number): number {
    return this.region * BATCH + slot;
  }

  known(slot: number): boolean {
    return this.pool.pairs[this.at(slot) * PR.length + PR.known] === 1;
  }
}

/** What a set in flight reports, held back until every earlier set has reported: the order of one set at a time. */
class Held {
  /** Each call held as its function and its arguments, one after the other (no closure per call: two per path linked). */
  private calls: unknown[] = [];
  readonly opts: LinkOptions;
  constructor(base: LinkOptions) {
    const hold =
      <A extends unknown[]>(f: ((...a: A) => void) | undefined) =>
      (f ? (...a: A) => void this.calls.push(f, a) : undefined);
    this.opts = {
      ...base,
      onError: hold(base.onError)!,
      onDiffer: hold(base.onDiffer),
      onDoubt: hold(base.onDoubt),
      onLink: hold(base.onLink),
      onReplaced: hold(base.onReplaced),
      onCanonical: hold(base.onCanonical),
      onProgress: hold(base.onProgress),
      onContentSplit: hold(base.onContentSplit),
    };
  }
  flush(): void {
    const calls = this.calls.splice(0);
    for (let i = 0; i < calls.length; i += 2) (calls[i] as (...a: unknown[]) => void)(...(calls[i + 1] as unknown[]));
  }
}

let pools: Pool | undefined;

/**
 * Link the sets through the addon: two groups of up to ACTIVE sets in
 * flight, each linkSet() run until it has prepared its next batch, then
 * one call for the group (on THREADS threads of the thread pool); while it
 * runs, the other group's last call is taken in and its next one prepared.
 * One call runs at a time, and this thread changes nothing in a guest and
 * writes no journal line while it does (quiet()); a call with any pair not
 * LINKED (a pair handed back mid-swap, a journal failure, anything for
 * swap.ts or the JS path to finish) is taken in before the next call
 * starts. What each set reports is passed on in plan order, and no outcome
 * depends on which thread ran a set or when: the sets share no inode, and
 * no two threads work in one directory at a time (native/link.c).
 */
async function linkBatched(sets: Iterable<PlanSet | RowSet>, opts: LinkOptions, result: LinkResult, expected: Expected): Promise<void> {
  const pool = (pools ??= new Pool());
  type Flying = { gen: SetRun; batch: Batch; held: Held; done: boolean; group: number };
  const free = Array.from({ length: GROUPS }, (_, g) => Array.from({ length: ACTIVE }, (_, r) => g * ACTIVE + ACTIVE - 1 - r));
  const flying: Flying[][] = Array.from({ length: GROUPS }, () => []);
  const order: Flying[] = [];
  const step = (f: Flying) => {
    let r = f.gen.next();
    // linkRows handed its set over: linkSet goes on with it, on the same batch
    if (r.done && r.value) r = (f.gen = linkSet(r.value.set, f.held.opts, result, expected, f.batch, r.value)).next();
    if (r.done) {
      f.done = true;
      free[f.group]!.push(f.batch.region);
    } else flying[f.group]!.push(f);
  };
  const iter = sets[Symbol.iterator]();
  let more = true;
  const fill = (g: number) => {
    while (more && free[g]!.length) {
      const next = iter.next();
      if (next.done) {
        more = false;
        break;
      }
      const held = new Held(opts);
      const batch = new Batch(pool, free[g]!.pop()!);
      const f: Flying = { gen: startSet(next.value, held.opts, result, expected, batch), batch, held, done: false, group: g };
      order.push(f);
      step(f);
    }
  };
  // In plan order, the sets done so far report.
  const report = () => {
    while (order.length && order[0]!.done) order.shift()!.held.flush();
  };
  type Call = { ready: Flying[]; clean: Promise<boolean> };
  let running: Call | undefined;
  try {
    for (let g = 0; ; g = (g + 1) % GROUPS) {
      fill(g);
      report();
      // Complete now (the other group's sets are stepped into their own
      // group), and loaded into the pool while the last call still runs.
      const ready = flying[g]!;
      flying[g] = [];
      const batches = ready.map((f) => f.batch);
      if (ready.length) pool.load(g, batches);
      const last = running;
      running = undefined;
      let taken = false;
      if (last && !(await last.clean)) {
        // Something to finish or redo here: before any other call starts.
        for (const f of last.ready) step(f);
        taken = true;
        report();
      }
      if (ready.length) running = { ready, clean: pool.run(g, batches, opts) };
      if (last && !taken) for (const f of last.ready) step(f);
      report();
      if (!running && !more && flying.every((l) => !l.length)) break;
    }
  } finally {
    // After a throw (an internal error): the call's threads are done with
    // the canonicals before each set's generator closes its own.
    if (running) await running.clean.catch(() => false);
    for (const f of order) if (!f.done) f.gen.return();
    for (const f of order) f.held.flush();
  }
}

/**
 * What linkOne() does after its own steps, for a pair the addon went
 * through: the same bookkeeping when it linked, its JS path when it changed
 * nothing, and swap.ts's words and endings (settle(), undo()) for the rest.
 */
function finish(done: Done, canon: Canonical, op: LinkOp, opts: LinkOptions, expected: Expected, compared: Map<Inode, Inode>): boolean {
  const { b, slot } = done;
  const out = b.pool.out;
  const o = b.at(slot) * OUT.length;
  const code = out[o + OUT.code]!;
  if (code === LINK.FALLBACK) return linkOne(canon, op, opts, expected, compared);
  const known = b.known(slot);
  compared.delete(op.inode);
  const errno = out[o + OUT.errno]!;
  const aux = out[o + OUT.aux]!;
  if (code === LINK.LINKED) {
    const canonStat = doublesStat(out, o + OUT.canon);
    canon.expect = canonStat;
    expected.set(canon.inode, canonStat);
    // An inode with no name left is never opened again: no Stat for it (most pairs free their duplicate).
    const freed = out[o + OUT.dup + ST.nlink] === 0;
    if (!freed) expected.set(op.inode, doublesStat(out, o + OUT.dup));
    // Read for every pair: a test run only for an inode that keeps a link deoptimized finish() at the first such inode.
    const unchanged = (aux & 16) !== 0;
    if (!freed && unchanged) compared.set(op.inode, canon.inode);
    return freed;
  }
  quiet(); // swap.ts finishes it (never while a call runs: see linkBatched)
  const canonStat = doublesStat(out, o + OUT.canon);
  const dupStat = doublesStat(out, o + OUT.dup);
  const dirFd = out[o + OUT.dirFd]!;
  const dup: OpenedFile = { fd: out[o + OUT.dupFd]!, stat: dupStat };
  const tmps = b.pool.tmps;
  const end = tmps.indexOf(0, b.at(slot) * LINK_TMP);
  const tmp = Buffer.from(tmps.subarray(b.at(slot) * LINK_TMP, end));
  const leftErrno = out[o + OUT.left]!;
  const left = leftErrno < 0 ? undefined : { tmp, why: fileError('', sys.errnoError(leftErrno, 'unlinkat')).message };
  const journalError = () => {
    opts.journal?.native?.fail();
    if (errno === os.constants.errno.ECANCELED) return codedError('ENOSPC', 'the journal could not be written earlier in this run; nothing was changed');
    return errno > 0
      ? sys.errnoError(errno, 'write')
      : codedError('ENOSPC', `journal write cut short (${-1 - errno} of ${aux} bytes; is the state directory's filesystem full?); nothing was changed`);
  };
  const lease = code === LINK.SETTLE && aux & 4 ? PairLease.adopt(canon.fd, dup.fd) : undefined;
  let freed = false;
  try {
    try {
      switch (code) {
        case LINK.JOURNAL:
          throw journalError();
        case LINK.LINK:
          throw sys.errnoError(errno, 'linkat');
        case LINK.TMP:
          throw swapFailure(tempMoved(), left);
        case LINK.KNOWN:
          throw swapFailure(changedWhileLinked(), left);
        case LINK.LEASE:
          throw swapFailure(leaseError({ canonical: !!(aux & 1), duplicate: !!(aux & 2) }, 'while it was being linked'), left);
        case LINK.RENAME:
          throw swapFailure(sys.errnoError(errno, 'renameat2'), left);
        case LINK.SETTLE:
          settle(dirFd, tmp, op.file.name, { fd: canon.fd, file: canon.file, before: canonStat }, dup, { ignoreMtime: opts.ignoreMtime, journal: opts.journal, known, lease }, aux & 8 ? undefined : {
            intoAt: doublesStat(out, o + OUT.intoAt),
            outAt: doublesStat(out, o + OUT.outAt),
            intoChanged: (aux & 32) !== 0,
          });
          break;
        case LINK.SETTLED_JOURNAL:
          throw settledMarkFailure(journalError(), tmp);
        case LINK.UNLINK:
          throw tempUnlinkFailure(sys.errnoError(errno, 'unlinkat'), tmp);
        default:
          throw new Error(`linkBatch: unknown result ${code}`);
      }
    } catch (er) {
      lease?.release();
      throw swapFailed(er, canon, canonStat, compared, opts);
    }
    lease?.release();
    return (freed = swapped(canon, op, dup, expected, compared));
  } finally {
    lease?.release();
    if (freed) sys.closeLater(dup.fd);
    else sys.close(dup.fd);
    sys.close(dirFd);
  }
}

function openCanonical(file: FileRec, inode: Inode, expected: Expected, opts: LinkOptions): Canonical {
  const expect = expected.get(inode);
  const opened = expect
    ? openRegular(file.dir.root.fd, relPath(file), expect, { ctime: true, nlink: true })
    : openScanned(file);
  try {
    // An inode this tool marked immutable-unlink earlier may be linked to
    // again on a vserver kernel; any other immutable or append-only
    // canonical is left alone with its whole set.
    const iunlinked = !!opts.iunlink && isIunlinked(opened.fd);
    if (!iunlinked) checkNotLocked(opened.fd, 'canonical copy');
    return { file, inode, fd: opened.fd, expect: opened.stat, iunlinked };
  } catch (er) {
    sys.close(opened.fd);
    throw er;
  }
}

/** Replace one duplicate path; returns true when its inode lost its last link. */
function linkOne(
  canon: Canonical,
  op: LinkOp,
  opts: LinkOptions,
  expected: Expected,
  compared: Map<Inode, Inode>,
): boolean {
  quiet(); // changes a guest file, and writes the journal
  const dirFd = openDir(op.file.dir);
  try {
    const expectDup = expected.get(op.inode) ?? op.file.stat;
    // Opened only if unchanged since vunify last saw it (ctime included).
    const dup = openRegular(dirFd, op.file.name, expectDup, { ctime: true, nlink: false });
    const known = compared.get(op.inode) === canon.inode;
    compared.delete(op.inode);
    let freed = false;
    let lease: PairLease | undefined;
    try {
      if (!(opts.iunlink && isIunlinked(dup.fd))) checkNotLocked(dup.fd, 'duplicate');
      // From before the comparison until the swap is settled (swap.ts).
      if (!known) lease = PairLease.take(canon.fd, dup.fd, op.inode.stat.size);
      const canonBefore = verify(canon, dup, opts, known);
      if (opts.iunlink && !canon.iunlinked) {
        // As util-vserver does: the canonical first, then the links to it.
        setIunlink(canon.fd);
        canon.iunlinked = true;
        canon.expect = sys.fstat(canon.fd);
      }
      try {
        swap(dirFd, op.file, { fd: canon.fd, file: canon.file, before: canonBefore }, dup, { ignoreMtime: opts.ignoreMtime, journal: opts.journal, known, lease });
      } catch (er) {
        lease?.release();
        throw swapFailed(er, canon, canonBefore, compared, opts);
      }
      lease?.release();
      return (freed = swapped(canon, op, dup, expected, compared));
    } finally {
      lease?.release(); // when verify() or the iunlink step threw
      // Closing the last descriptor of the replaced inode frees its blocks,
      // which costs more than the rest of the link: not on this thread.
      if (freed) sys.closeLater(dup.fd);
      else sys.close(dup.fd);
    }
  } finally {
    sys.close(dirFd);
  }
}

/** After a failed swap: what is still known of the canonical; returns the error to throw. */
function swapFailed(er: unknown, canon: Canonical, canonBefore: Stat, compared: Map<Inode, Inode>, opts: LinkOptions): unknown {
  // A writer was waiting on the canonical: its content is about to change.
  if ((er as { doubt?: boolean }).doubt) doubt(canon, compared, opts);
  // Our link and unlink moved the canonical's ctime; if nothing else
  // changed, the rest of its set may still be linked to it. But a
  // guest's xattr, flag or project change, or a rewrite with the mtime
  // put back, during this swap moves only the ctime too: from here the
  // canonical is trusted only as far as a fresh full comparison shows.
  const now = sys.fstat(canon.fd);
  if (sameFile(now, canonBefore, { ctime: false, nlink: true })) {
    if (!sameFile(now, canon.expect, { ctime: true, nlink: true })) doubt(canon, compared, opts);
    canon.expect = now;
  }
  // A difference found after the exchange is a write by the guest
  // during the swap, not a second content of the set.
  if (isContentDifference(er)) (er as { content?: boolean }).content = false;
  return er;
}

/** After a settled swap: what the canonical and the old inode are now; returns true when the old inode lost its last link. */
function swapped(canon: Canonical, op: LinkOp, dup: OpenedFile, expected: Expected, compared: Map<Inode, Inode>): boolean {
  canon.expect = sys.fstat(canon.fd);
  expected.set(canon.inode, canon.expect);
  const after = sys.fstat(dup.fd);
  expected.set(op.inode, after);
  const freed = after.nlink === 0;
  // Our link, exchange and unlink moved only its ctime and nlink: its
  // other paths may skip the byte comparison while that stays so.
  if (!freed && sameFile(after, dup.stat, { ctime: false, nlink: false })) compared.set(op.inode, canon.inode);
  return freed;
}

/**
 * The canonical's ctime moved for a reason not known to be ours alone: no
 * duplicate inode skips the byte comparison with it on the strength of one
 * made before (the next path of each is compared in full, which records it
 * again), and the hash cache no longer vouches for its content.
 */
function doubt(canon: Canonical, compared: Map<Inode, Inode>, opts: LinkOptions): void {
  for (const [dup, c] of compared) if (c === canon.inode) compared.delete(dup);
  opts.onDoubt?.(canon.inode);
}

/**
 * Everything that must hold before the duplicate's name may point at the
 * canonical. `known`: this duplicate inode was compared with this canonical
 * in full, and both are unchanged since (the caller opened it against the
 * stat it had after that), so its bytes are not read again.
 */
function verify(canon: Canonical, dup: OpenedFile, opts: LinkOptions, known = false): Stat {
  const c = sys.fstat(canon.fd);
  if (!sameFile(c, canon.expect, { ctime: true, nlink: true })) {
    throw codedError('ECANONICAL', `canonical ${displayPath(canon.file)} changed since it was scanned; rest of its set skipped`);
  }
  const why = known ? undefined : difference(canon, dup, opts.ignoreMtime);
  if (why) throw why;
  // Nothing may have been written while we compared.
  if (!sameFile(sys.fstat(canon.fd), c, { ctime: true, nlink: true }) || !sameFile(sys.fstat(dup.fd), dup.stat, { ctime: true, nlink: true })) {
    throw codedError('ECHANGED', 'file changed while it was being compared');
  }
  return c;
}
