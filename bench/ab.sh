#!/bin/bash
# Before/after one performance change: alternate two (or more) builds of
# vunify on the fleet and print each run and the medians.
#
#   bash bench/ensure-dist.sh --snapshot /tmp/before     (on the old code)
#   bash bench/ensure-dist.sh --snapshot /tmp/after      (on the new code)
#   BENCH_ROUNDS=5 bash bench/ab.sh link /tmp/before /tmp/after
#
# MODE is `dry` (vunify --dry-run --no-cache on the fleet, warm page cache)
# or `link` (a linking run on a fresh `cp -a` copy of the fleet for every
# run; /var/tmp needs room for one copy). BENCH_GUESTS="base1 dev1 ..."
# picks fewer guests for a quicker comparison. Rounds alternate the builds,
# the order rotating each round. Prints wall s, user s, sys s, peak RSS and
# vunify's own stage durations, then the median wall time of each build and
# its ratio to the first. The fleet itself is never modified.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
MODE=${1:?usage: bench/ab.sh dry|link SNAPSHOT_DIR SNAPSHOT_DIR...}
shift
[ $# -ge 1 ] || { echo "usage: bench/ab.sh dry|link SNAPSHOT_DIR SNAPSHOT_DIR..." >&2; exit 2; }
[[ $MODE == dry || $MODE == link ]] || { echo "bench/ab.sh: MODE must be dry or link" >&2; exit 2; }
for s in "$@"; do [ -e "$s/dist/bin.js" ] || { echo "bench/ab.sh: $s/dist/bin.js missing (bench/ensure-dist.sh --snapshot $s)" >&2; exit 2; }; done
FLEET=${FLEET:-/var/tmp/fleet}
ROUNDS=${BENCH_ROUNDS:-3}
[ -d "$FLEET" ] || bash "$here/../shared/fleet/make-fleet.sh" "$FLEET" 1 >&2
read -r -a GUESTS <<<"${BENCH_GUESTS:-$(cd "$FLEET" && echo *)}"

WORK=$(mktemp -d /var/tmp/vunify-ab-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
find "${GUESTS[@]/#/$FLEET/}" -type f -print0 | xargs -0 -P2 cat >/dev/null 2>&1 # warm the page cache
SAMPLES=$WORK/samples

run() { # snapshot round
  # Its own state directory (the hash key the dry run needs): never the host's.
  local snap=$1 r=$2 dir=$FLEET args=(--dry-run --no-cache --state-dir "$WORK/state-dry")
  if [ "$MODE" = link ]; then
    dir=$WORK/copy
    rm -rf "$dir" "$WORK/state"
    mkdir "$dir"
    cp -a "${GUESTS[@]/#/$FLEET/}" "$dir/"
    sync
    args=(--state-dir "$WORK/state")
  fi
  /usr/bin/time -f '%e %U %S %M' -o "$WORK/time" node "$snap/dist/bin.js" "${args[@]}" --no-default-excludes --json "${GUESTS[@]/#/$dir/}" >"$WORK/out" 2>"$WORK/err" ||
    { echo "bench/ab.sh: $snap exited $?: $(tail -n2 "$WORK/err")" >&2; exit 2; }
  local wall user sys rss stages
  read -r wall user sys rss <"$WORK/time"
  stages=$(node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    console.log(Object.entries(r.durations).map(([k, v]) => k + " " + (v / 1000).toFixed(2)).join(", ") +
      "; " + (r.dryRun ? r.summary.linksPlanned + " planned" : r.summary.linksMade + " made"))' "$WORK/out")
  printf '%s\t%s\n' "$snap" "$wall" >>"$SAMPLES"
  printf 'round %s  %-24s %6s s  user %5s  sys %5s  %4s MiB  (%s)\n' "$r" "$snap" "$wall" "$user" "$sys" "$((rss / 1024))" "$stages"
}

echo "bench/ab.sh $MODE: ${#GUESTS[@]} guests of $FLEET, $ROUNDS rounds, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
snaps=("$@")
for ((r = 1; r <= ROUNDS; r++)); do
  for ((i = 0; i < ${#snaps[@]}; i++)); do run "${snaps[$(((i + r - 1) % ${#snaps[@]}))]}" "$r"; done
done
node -e '
  const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map((l) => l.split("\t"));
  const med = (a) => { a = [...a].sort((x, y) => x - y); const m = a.length >> 1; return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2; };
  let first;
  for (const s of process.argv.slice(2)) {
    const m = med(rows.filter((r) => r[0] === s).map((r) => +r[1]));
    first ??= m;
    console.log(`median ${s.padEnd(24)} ${m.toFixed(2)} s  ${(m / first).toFixed(2)}x`);
  }' "$SAMPLES" "$@"
