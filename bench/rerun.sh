#!/bin/bash
# Incremental reruns with the hash cache (issue 4: periodic operation).
#
#   bash bench/rerun.sh [FLEET]     (FLEET default /var/tmp/fleet, never modified)
#   ROUNDS=5 WORK=/var/tmp/x bash bench/rerun.sh
#
# On a `cp -a` copy of FLEET (WORK, deleted at the end unless KEEP=1):
#  1. vunify unifies the copy and fills its hash cache (state in WORK.state);
#     jdupes -r -p -L then links whatever else it considers duplicates, so
#     both tools face the same unchanged, unified fleet;
#  2. ROUNDS rounds, alternating: vunify rerun (default options, cache on),
#     jdupes -r -p -L rerun; wall seconds each, medians and their ratio;
#     plus one vunify rerun with --no-cache, for what the cache saves;
#  3. one new guest: `cp -a` of WORK/web1 to WORK/added1 (new inodes), then a
#     vunify run: what it hashed (report.hashed) and read (/proc/self/io),
#     against the sizes of the new guest's files that it linked (from stat).
# Warm page cache (no drop_caches on a shared machine): the numbers compare
# work done, not disk speed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
FLEET=$(realpath "${1:-/var/tmp/fleet}")
WORK=${WORK:-/var/tmp/vunify-rerun-$$}
STATE=$WORK.state
ROUNDS=${ROUNDS:-3}
cleanup() { [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK" "$STATE"; }
trap cleanup EXIT
bash "$here/bench/ensure-dist.sh" >/dev/null
[ -d "$WORK" ] || cp -a "$FLEET" "$WORK"
vunify() { node "$here/bench/io-run.mjs" --state-dir "$STATE" "$@"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
secs() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; echo "$(date +%s.%N) - $s" | bc; }

echo "== first run (unify, fill the cache), then jdupes -r -p -L once"
vunify --json "$WORK/*" 2>"$WORK.io" | node -e 'const r=JSON.parse(require("fs").readFileSync(0,"utf8"));console.log(JSON.stringify({summary:{files:r.summary.filesScanned,linksMade:r.summary.linksMade,freed:r.summary.freedBytes},hashed:r.hashed,ms:r.durations.total}))'
cat "$WORK.io"
jdupes -q -r -p -L "$WORK"/* >/dev/null 2>&1 || true

echo "== reruns on the unchanged, unified fleet ($ROUNDS rounds, alternating)"
: >"$WORK.v"; : >"$WORK.j"
for r in $(seq "$ROUNDS"); do
  secs vunify -q "$WORK/*" >>"$WORK.v"
  secs jdupes -q -r -p -L "$WORK"/* >>"$WORK.j"
done
v=$(median <"$WORK.v"); j=$(median <"$WORK.j")
echo "vunify rerun:  $(tr '\n' ' ' <"$WORK.v")-> median $v s"
echo "jdupes rerun:  $(tr '\n' ' ' <"$WORK.j")-> median $j s"
echo "ratio vunify/jdupes: $(echo "scale=3; $v / $j" | bc)"
echo "-- one vunify rerun, cache on, and one with --no-cache: what was hashed and read"
vunify --json "$WORK/*" 2>&1 >"$WORK.r" | tr '\n' ' '; node -e 'const r=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));console.log(JSON.stringify({hashed:r.hashed,durations:r.durations}))' "$WORK.r"
vunify --json --no-cache "$WORK/*" 2>&1 >"$WORK.r" | tr '\n' ' '; node -e 'const r=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));console.log(JSON.stringify({hashed:r.hashed,durations:r.durations}))' "$WORK.r"

echo "== one new guest: cp -a $WORK/web1 $WORK/added1"
cp -a "$WORK/web1" "$WORK/added1"
vunify --json "$WORK/*" 2>&1 >"$WORK.r" | tr '\n' ' '; node -e 'const r=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));console.log(JSON.stringify({hashed:r.hashed,linksMade:r.summary.linksMade,freed:r.summary.freedBytes,errors:r.summary.errors,durations:r.durations}))' "$WORK.r"
# Independent of vunify: files of the new guest that now share web1's inode, and their bytes.
(cd "$WORK/added1" && find . -type f -printf '%i %s %P\n') | while read -r ino size rel; do
  [ "$(stat -c %i "$WORK/web1/$rel" 2>/dev/null)" = "$ino" ] && echo "$size"
done | awk '{n++; b+=$1} END {printf "new guest files now sharing web1'"'"'s inode (stat): %d files, %d bytes\n", n, b}'
echo "new guest, all regular files (find): $(find "$WORK/added1" -type f | wc -l) files, $(find "$WORK/added1" -type f -printf '%s\n' | awk '{b+=$1} END {print b}') bytes"
rm -f "$WORK.io" "$WORK.v" "$WORK.j" "$WORK.r"
