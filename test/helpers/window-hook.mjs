// Preloaded into the CLI under test (`node --import window-hook.mjs
// dist/bin.js`) by test/scenarios/lease-windows.test.ts: stops the run in
// one window of one link and lets a guest process act on the duplicate's
// path there, whatever the timing. On the JS path it wraps the built sys
// seam (dist/os/sys.js); on the native path (the production one) it acts
// from the addon's test hook (sys.setLinkHook) and refuses leases through
// its fault hook (sys.setLinkFault, step 'lease'). Configured by
// VUNIFY_WINDOW_HOOK (JSON):
//
//   sys      absolute path of the build's os/sys.js (required)
//   native   true: the linker's addon (native/link.c) makes the link;
//            false: its JS path (sys.nativeLinker = false)
//   under    the guest directory whose file is the duplicate
//   canon    the canonical's path (native: to find its descriptor)
//   window   'lease'    just after the linker tried to lease the pair
//                       (before its byte comparison)
//            'exchange' just before the RENAME_EXCHANGE (after the
//                       comparison and the linker's last check)
//            'settle'   just after the exchange, before it is settled
//   trigger  the path acted on is written here; the guest process acts
//   done     ... and creates this file when it is done. The run goes on
//            when `done` exists, or when a lease the run holds is broken
//            (the guest is then waiting in open(2) or truncate(2) until
//            the run releases it), or after 20 s (the test then fails)
//   noLease  sys.leasePair fails with EINVAL without asking the kernel; on
//            the native path, the noLease-th pair's leases (1: the first)
//   log      JSON written here at exit: leasePair's results (JS path),
//            whether the addon held both leases at its comparison (native),
//            whether and how the hook resumed, and how many reads (JS) or
//            bytes read (native, /proc/self/io rchar, up to the unlink) the
//            run made after the first exchange
import fs from 'node:fs';
import path from 'node:path';

const raw = process.env.VUNIFY_WINDOW_HOOK;
if (raw) {
  const cfg = JSON.parse(raw);
  const { sys } = await import(cfg.sys);
  // The JS path's windows are at its seam (sys.leasePair, readSync,
  // renameAt); with `native` off, the addon, which makes those steps
  // itself, is turned off. With it on, the seam stays wrapped too: a pair
  // the addon hands back is redone there.
  if (!cfg.native) sys.nativeLinker = false;
  const RENAME_EXCHANGE = 2;
  const sab = new Int32Array(new SharedArrayBuffer(4));
  const log = { leasePair: [], leased: [], acted: false, resumed: null, readsAfterExchange: 0, readBytesAfterExchange: null };
  let leased; // [canonFd, dupFd] of the pair the run holds leases on now
  let exchanged = false;
  const under = (p) => p.startsWith(cfg.under + '/');

  const act = (p) => {
    log.acted = true;
    fs.writeFileSync(`${cfg.trigger}.tmp`, p);
    fs.renameSync(`${cfg.trigger}.tmp`, cfg.trigger);
    const until = Date.now() + 20_000;
    for (;;) {
      if (fs.existsSync(cfg.done)) return (log.resumed = 'done');
      if (leased && realHeld(...leased) !== 3) return (log.resumed = 'broken');
      if (Date.now() > until) return (log.resumed = 'timeout');
      Atomics.wait(sab, 0, 0, 1);
    }
  };

  const realPair = sys.leasePair;
  const realHeld = sys.leaseHeld;
  const realRelease = sys.leaseRelease;
  sys.leasePair = (canonFd, dupFd) => {
    const r = cfg.noLease ? 22 : realPair(canonFd, dupFd);
    log.leasePair.push(r);
    leased = r === 0 ? [canonFd, dupFd] : undefined;
    const p = fs.readlinkSync(`/proc/self/fd/${dupFd}`);
    if (cfg.window === 'lease' && !log.acted && under(p)) act(p);
    return r;
  };
  sys.leaseRelease = (a, b) => {
    leased = undefined;
    return realRelease(a, b);
  };
  const realRename = sys.renameAt;
  sys.renameAt = (...a) => {
    const isX = a[4] === RENAME_EXCHANGE;
    const p = isX ? path.join(fs.readlinkSync(`/proc/self/fd/${a[2]}`), a[3].toString()) : '';
    const mine = isX && !log.acted && under(p);
    if (mine && cfg.window === 'exchange') act(p);
    const r = realRename(...a);
    if (isX) exchanged = true;
    if (mine && cfg.window === 'settle') act(p);
    return r;
  };
  const realRead = sys.readSync;
  sys.readSync = (...a) => {
    if (exchanged) log.readsAfterExchange++;
    return realRead(...a);
  };
  if (cfg.native) {
    if (cfg.noLease) sys.setLinkFault({ step: 'lease', nth: cfg.noLease, errno: 22 });
    const rchar = () => Number(/rchar: (\d+)/.exec(fs.readFileSync('/proc/self/io', 'utf8'))[1]);
    let rcharAtExchange;
    // The pair's descriptors, found by what they name: the addon does not hand them out.
    const pairFds = () => {
      const canon = [];
      const dup = [];
      for (const n of fs.readdirSync('/proc/self/fd')) {
        let t;
        try {
          t = fs.readlinkSync(`/proc/self/fd/${n}`);
        } catch {
          continue;
        }
        if (t === cfg.canon) canon.push(Number(n));
        else if (under(t)) dup.push(Number(n));
      }
      return { canon, dup };
    };
    const held = (fd) => (realHeld(fd, fd) & 1) === 1;
    sys.setLinkHook((step, when, dirFd, name) => {
      const p = path.join(fs.readlinkSync(`/proc/self/fd/${dirFd}`), name.toString('latin1'));
      if (!under(p)) return;
      if (step === 'compare' && log.leased.length === 0) {
        const { canon, dup } = pairFds();
        const c = canon.find(held);
        const d = dup.find(held);
        log.leased.push(c !== undefined && d !== undefined);
        leased = c !== undefined && d !== undefined ? [c, d] : undefined;
        if (cfg.window === 'lease' && !log.acted) act(p);
      } else if (step === 'exchange' && when === 'before') {
        if (cfg.window === 'exchange' && !log.acted) act(p);
      } else if (step === 'exchange' && when === 'after') {
        exchanged = true;
        rcharAtExchange ??= rchar();
        if (cfg.window === 'settle' && !log.acted) act(p);
      } else if (step === 'unlink' && rcharAtExchange !== undefined && log.readBytesAfterExchange === null) {
        log.readBytesAfterExchange = rchar() - rcharAtExchange;
      }
    });
  }
  process.on('exit', () => fs.writeFileSync(cfg.log, JSON.stringify(log)));
}
