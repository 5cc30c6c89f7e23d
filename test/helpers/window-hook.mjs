// Preloaded into the CLI under test (`node --import window-hook.mjs
// dist/bin.js`) by test/scenarios/lease-windows.test.ts: stops the run in
// one window of one link and lets a guest process act on the duplicate's
// path there, whatever the timing. It wraps the built sys seam
// (dist/os/sys.js), so the run takes the linker's JS path. Configured by VUNIFY_WINDOW_HOOK (JSON):
//
//   sys      absolute path of the build's os/sys.js (required)
//   under    the guest directory whose file is the duplicate
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
//   noLease  sys.leasePair fails with EINVAL without asking the kernel
//   log      JSON written here at exit: leasePair's results, whether and
//            how the hook resumed, and how many reads the run made after
//            the first exchange
import fs from 'node:fs';
import path from 'node:path';

const raw = process.env.VUNIFY_WINDOW_HOOK;
if (raw) {
  const cfg = JSON.parse(raw);
  const { sys } = await import(cfg.sys);
  // Its windows are the JS path's (sys.leasePair, readSync, renameAt): the
  // linker's addon, which makes those steps itself, is turned off.
  sys.nativeLinker = false;
  const RENAME_EXCHANGE = 2;
  const sab = new Int32Array(new SharedArrayBuffer(4));
  const log = { leasePair: [], acted: false, resumed: null, readsAfterExchange: 0 };
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
  process.on('exit', () => fs.writeFileSync(cfg.log, JSON.stringify(log)));
}
