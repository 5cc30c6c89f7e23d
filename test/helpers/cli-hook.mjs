// Preloaded into the CLI under test (`node --import cli-hook.mjs dist/bin.js`)
// by the scenario tests, to put an event at an exact point of a run instead
// of hoping a timer lands there. Changes to guest trees (a link, an
// exchange or rename, an unlink) are counted by the addon's fault hook
// (sys.setLinkFault, native/link.c), whether the linker made them in its
// native batches or through the sys seam (dist/os/sys.js, a plain object
// every module shares). Configured by VUNIFY_TEST_HOOK (JSON):
//
//   sys       absolute path of the build's os/sys.js (required)
//   count     write the number of such changes the run made to this file at exit
//   kill      { n, when: 'before' | 'after' }: SIGKILL the run itself just
//             before or just after its n-th such change (1-based)
//   exchange  act just before the first RENAME_EXCHANGE whose directory is
//             below `under` and whose path relative to `under` matches the
//             regular expression `match` (if given): the moment after the
//             linker's last check:
//             { under, action: 'symlink', decoy, strip }: move the file at
//               the name aside and put in its place a symlink to the same
//               relative path, its first `strip` components dropped, below
//               `decoy`; put the file back when the run exits
//             { under, action: 'request', request, ack, resume }: write the
//               path (relative to `under`) to `request` and wait for `ack`
//               to appear (a guest process acts on the file meanwhile);
//               create `resume` once the linker is done with that file
//               (its temporary name unlinked, the next link begun, or exit)
//   done      write 'acted' to this file once the exchange action ran
//
// The exchange action and `resume` happen at the same points whether the
// linker's addon (sys.setLinkHook: just before its link and exchange, just
// after its unlink) or its JS path (the sys seam's calls) makes the step.
//
// Without VUNIFY_TEST_HOOK it does nothing.
import fs from 'node:fs';
import path from 'node:path';

const raw = process.env.VUNIFY_TEST_HOOK;
if (raw) {
  const cfg = JSON.parse(raw);
  const { sys } = await import(cfg.sys);
  const RENAME_EXCHANGE = 2;
  const sab = new Int32Array(new SharedArrayBuffer(4));
  if (cfg.kill) sys.setLinkFault({ step: 'change', nth: cfg.kill.n, when: cfg.kill.when, kill: true });
  let acted = false;
  let resumePending = false;
  const resume = () => {
    if (!resumePending) return;
    resumePending = false;
    fs.writeFileSync(cfg.exchange.resume, '');
  };
  const restores = [];
  const dirOf = (fd) => fs.readlinkSync(`/proc/self/fd/${fd}`);

  const exchange = (dirFd, name) => {
    const dir = dirOf(dirFd);
    if (!dir.startsWith(cfg.exchange.under + '/')) return;
    const p = path.join(dir, name.toString());
    const rel = path.relative(cfg.exchange.under, p);
    if (cfg.exchange.match && !new RegExp(cfg.exchange.match).test(rel)) return;
    acted = true;
    if (cfg.exchange.action === 'symlink') {
      const away = `${p}~hook`;
      fs.renameSync(p, away);
      fs.symlinkSync(path.join(cfg.exchange.decoy, ...rel.split('/').slice(cfg.exchange.strip ?? 0)), p);
      restores.push(() => fs.renameSync(away, p));
    } else {
      fs.writeFileSync(`${cfg.exchange.request}.tmp`, rel);
      fs.renameSync(`${cfg.exchange.request}.tmp`, cfg.exchange.request);
      // Bounded, so a guest that never answers cannot hang the run; the
      // test then finds no 'acted' and fails.
      const until = Date.now() + 30_000;
      while (!fs.existsSync(cfg.exchange.ack)) {
        if (Date.now() > until) return;
        Atomics.wait(sab, 0, 0, 1);
      }
      fs.unlinkSync(cfg.exchange.ack);
      resumePending = !!cfg.exchange.resume;
    }
    if (cfg.done) fs.writeFileSync(cfg.done, 'acted');
  };

  if (cfg.exchange) {
    sys.setLinkHook((step, when, dirFd, name) => {
      if (step === 'link') resume();
      else if (step === 'exchange' && when === 'before' && !acted) exchange(dirFd, name);
      else if (step === 'unlink') resume();
    });
  }
  for (const op of ['linkAt', 'renameAt', 'unlinkAt']) {
    const real = sys[op];
    sys[op] = (...a) => {
      if (op === 'linkAt') resume();
      if (cfg.exchange && !acted && op === 'renameAt' && a[4] === RENAME_EXCHANGE) exchange(a[0], a[3]);
      const r = real(...a);
      if (op === 'unlinkAt') resume();
      return r;
    };
  }
  process.on('exit', () => {
    resume();
    for (const r of restores.splice(0)) r();
    if (cfg.count) fs.writeFileSync(cfg.count, String(sys.changesMade()));
  });
}
