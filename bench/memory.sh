#!/bin/bash
# Memory saving on the fleet, measured against vunify's prediction.
#
#   bench/memory.sh [FLEET=/var/tmp/fleet] [GUESTS="dev1 dev2 py1 py2 py3 web1 web2"]
#
# Copies the guests (cp -a; the fleet itself is never changed) to a temporary
# directory and starts real services in them, chrooted: two python3 per py
# guest, two perl per dev guest, php-fpm (master and pool), nginx (in its own
# network namespace, so every guest can bind port 80) and a php CLI per web
# guest. Then it measures Σ Pss_File (smaps_rollup, read here for every
# process whose /proc/PID/root lies in the copies) before unifying, after
# unifying, and after restarting the services `vunify report --memory` lists,
# and prints vunify's prediction (reclaimableAfterRestartBytes, taken before
# and after unifying) beside the measured drop.
# Exits 1 when the prediction made after unifying is off by more than a
# factor of two, 2 when the setup fails. Every process it starts is killed by
# pid at exit, and the copies are removed.
set -euo pipefail
cd "$(dirname "$0")/.."
fleet=${1:-/var/tmp/fleet}
guests=${2:-dev1 dev2 py1 py2 py3 web1 web2}
bash bench/ensure-dist.sh
# ensure-dist.sh looks at src/*.ts only; the memory report lives below it.
if [ -n "$(find src -name '*.ts' -newer dist/report/memory.js 2>/dev/null)" ] || [ ! -e dist/report/memory.js ]; then npx tsc -p . >&2; fi

work=$(mktemp -d /var/tmp/vunify-memory-bench.XXXXXX)
declare -A cmd guest_of
pids=()
cleanup() {
  set +e # clean up everything, whatever fails
  # Our services by pid: TERM lets php-fpm and nginx stop their workers;
  # whatever is left after that (workers included) gets KILL, by pid.
  local left=() p
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || continue
    left+=("$p" $(ps -o pid= --ppid "$p" || true))
    kill -TERM "$p" 2>/dev/null || true
  done
  sleep 1
  for p in "${left[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for g in $guests; do
  [ -d "$fleet/$g" ] || { echo "bench: $fleet/$g: no such guest" >&2; exit 2; }
  cp -a "$fleet/$g" "$work/$g"
done
roots=()
for g in $guests; do roots+=("$work/$g"); done

E=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C)
# A service: a command line run chrooted in a guest. Ready when it printed
# "ready" (the sleepers) or has forked its workers (php-fpm, nginx).
start() { # start KEY
  local key=$1 g=${guest_of[$1]} log="$work/$1.log"
  # The subshell execs the service (env, unshare and chroot exec too), so $! is its pid.
  ( eval "exec ${E[*]} ${cmd[$key]}" ) >"$log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  eval "pid_$key=$pid"
  for _ in $(seq 200); do
    if grep -q ready "$log" 2>/dev/null || [ -n "$(ps -o pid= --ppid "$pid")" ]; then sleep 0.2; return; fi
    kill -0 "$pid" 2>/dev/null || { echo "bench: $key in $g exited: $(cat "$log")" >&2; exit 2; }
    sleep 0.1
  done
  echo "bench: $key in $g never became ready" >&2; exit 2
}
keys=()
add() { local key="$1_$2"; guest_of[$key]=$1; cmd[$key]=$3; keys+=("$key"); }
for g in $guests; do
  r="$work/$g"
  case $g in
    py*) add "$g" py1 "chroot $r /usr/bin/python3 -c 'import yaml, ssl, json, hashlib, time; print(\"ready\", flush=True); time.sleep(3600)'"
         add "$g" py2 "chroot $r /usr/bin/python3 -c 'import email.parser, http.client, sqlite3, time; print(\"ready\", flush=True); time.sleep(3600)'" ;;
    dev*) add "$g" pl1 "chroot $r /usr/bin/perl -MPOSIX -MFile::Find -MData::Dumper -e '\$|=1; print qq(ready\\n); sleep 3600'"
          add "$g" pl2 "chroot $r /usr/bin/perl -MStorable -MList::Util -e '\$|=1; print qq(ready\\n); sleep 3600'" ;;
    web*) add "$g" fpm "chroot $r /usr/sbin/php-fpm8.2 -F -y /etc/php/8.2/fpm/php-fpm.conf"
          add "$g" nginx "unshare --net chroot $r /usr/sbin/nginx -g 'daemon off;'"
          add "$g" php "chroot $r /usr/bin/php8.2 -r 'echo \"ready\\n\"; sleep(3600);'" ;;
  esac
done
for k in "${keys[@]}"; do start "$k"; done

# Σ Pss_File (bytes) and the number of processes whose root is in the copies.
pss() {
  local t=0 n=0 p r v
  for d in /proc/[0-9]*; do
    r=$(readlink "$d/root" 2>/dev/null) || continue
    case $r in "$work"/*) ;; *) continue ;; esac
    v=$(awk '/^Pss_File:/{print $2}' "$d/smaps_rollup" 2>/dev/null) || continue
    t=$((t + ${v:-0} * 1024)); n=$((n + 1))
  done
  echo "$t $n"
}
report() { # report NAME: JSON to $work/NAME.json, wall seconds to $work/NAME.t
  /usr/bin/time -f %e -o "$work/$1.t" node dist/bin.js report --state-dir "$work/state" --memory --json "${roots[@]}" >"$work/$1.json"
}

read -r pss0 n0 < <(pss)
report pre
/usr/bin/time -f %e -o "$work/unify.t" node dist/bin.js -q --state-dir "$work/state" "${roots[@]}"
read -r pss1 n1 < <(pss)
report post
node dist/bin.js report --state-dir "$work/state" --memory "${roots[@]}" | sed -n '/^Memory (/,$p' >"$work/post.txt"

# Restart every service with a listed process (a listed php-fpm or nginx
# worker restarts its master): stop it by pid, wait, start it again.
listed=$(node -e 'for (const p of JSON.parse(require("fs").readFileSync(process.argv[1])).memory.restart) console.log(p.pid)' "$work/post.json")
restarted=0
for k in "${keys[@]}"; do
  pv=pid_$k; pid=${!pv}
  family=" $pid $( (ps -o pid= --ppid "$pid" || true) | tr "\n" " ") "
  hit=
  for l in $listed; do case $family in *" $l "*) hit=1 ;; esac; done
  [ -n "$hit" ] || continue
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  start "$k"; restarted=$((restarted + 1))
done
read -r pss2 n2 < <(pss)
report after

node - "$work" "$pss0" "$pss1" "$pss2" "$n0" "$n1" "$n2" "$restarted" "${#keys[@]}" <<'JS'
const fs = require('fs');
const [work, p0, p1, p2, n0, n1, n2, restarted, services] = process.argv.slice(2).map((v, i) => (i ? Number(v) : v));
const j = (n) => JSON.parse(fs.readFileSync(`${work}/${n}.json`)).memory;
const t = (n) => fs.readFileSync(`${work}/${n}.t`, 'utf8').trim();
const [pre, post, after] = ['pre', 'post', 'after'].map(j);
const mib = (b) => (b / 2 ** 20).toFixed(1) + ' MiB';
const drop = p1 - p2;
const ratio = (x) => (drop > 0 ? (x / drop).toFixed(2) : 'n/a');
console.log(fs.readFileSync(`${work}/post.txt`, 'utf8').trimEnd());
console.log('');
console.log(`guest processes: ${n0} before, ${n1} after unifying, ${n2} after restarting ${restarted} of ${services} services`);
console.log(`Σ Pss_File   before ${mib(p0)}   after unifying ${mib(p1)}   after restart ${mib(p2)}`);
console.log(`measured drop at restart:            ${mib(drop)} (${drop} B)`);
console.log(`vunify prediction after unifying:    ${mib(post.totals.reclaimableAfterRestartBytes)} (${post.totals.reclaimableAfterRestartBytes} B), ratio ${ratio(post.totals.reclaimableAfterRestartBytes)}; ${post.totals.processesToRestart} processes listed`);
console.log(`vunify prediction before unifying:   ${mib(pre.totals.reclaimableAfterRestartBytes)} (${pre.totals.reclaimableAfterRestartBytes} B), ratio ${ratio(pre.totals.reclaimableAfterRestartBytes)}; ${pre.totals.processesToRestart} processes listed`);
console.log(`after restart: ${after.totals.processesToRestart} processes listed, ${mib(after.totals.reclaimableAfterRestartBytes)} predicted`);
console.log(`page cache before unifying: duplicate sets ${mib(pre.pageCache.residentBytes)} resident, ${mib(pre.pageCache.duplicateResidentBytes)} in more than one copy`);
console.log(`report --memory wall time: ${t('pre')} s before, ${t('post')} s after unifying (${post.guests.length} guests); unify ${t('unify')} s`);
const r = drop > 0 ? post.totals.reclaimableAfterRestartBytes / drop : Infinity;
if (!(r >= 0.5 && r <= 2)) {
  console.log(`FAIL: prediction off by more than a factor of two (ratio ${r})`);
  process.exit(1);
}
console.log('OK: prediction within a factor of two of the measured drop');
JS
