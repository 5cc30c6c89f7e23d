#!/bin/bash
# Issue 14's new-guest target alone (peers.sh measures it too, among
# everything else): after unifying, what does a linking run over the fleet
# plus one new guest read?
#
#   bash bench/new-guest.sh [FLEET]        (FLEET default /var/tmp/fleet, never modified)
#   VUNIFY_DIR=/path/to/checkout bash bench/new-guest.sh   (run that checkout's dist/; default this one)
#   BENCH_NEW_GUEST=web2, BENCH_GUESTS="web2 web3" (a subset of the fleet), WORK=DIR, KEEP=1
#
# Steps: `cp -a` the fleet (or BENCH_GUESTS) into WORK/copy; a linking run with
# a fresh state dir (unify); a second linking run with it (fills the cache
# with the unified inodes, as a nightly rerun does: entries changed within a
# second of a run are not cached); `cp -a FLEET/web1 WORK/copy/new-web1` (the
# fleet's original, so its own duplicates are separate inodes, as a guest made
# from an image); then the linking run over all of it through io-run.mjs,
# which prints the process's /proc/self/io rchar. Prints rchar ÷ `du -s
# --apparent-size -B1` of the new guest and what the run hashed and linked.
# Exit 0 when the ratio is <= 3.2, 1 when above, 2 when the benchmark failed.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
VDIR=$(realpath "${VUNIFY_DIR:-$here}")
FLEET=$(realpath -m "${1:-/var/tmp/fleet}")
NEWG=${BENCH_NEW_GUEST:-web1}
WORK=${WORK:-/var/tmp/vunify-new-guest-$$}
die() { echo "bench:new-guest: $*" >&2; exit 2; }
[ -f "$VDIR/dist/bin.js" ] || die "no $VDIR/dist/bin.js: npm run build there first"
[ -d "$FLEET/$NEWG" ] || die "no guest $NEWG in $FLEET"
[ -e "$WORK" ] && die "$WORK exists"
mkdir -p "$WORK/copy" "$WORK/state" || die "cannot make $WORK"
[ "${KEEP:-}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
if [ -n "${BENCH_GUESTS:-}" ]; then
  for g in $BENCH_GUESTS; do cp -a "$FLEET/$g" "$WORK/copy/$g" || die "cp -a $g failed"; done
else
  cp -a "$FLEET"/. "$WORK/copy"/ || die "cp -a $FLEET failed"
fi
G=("$WORK/copy"/*)
V=(node "$VDIR/dist/bin.js" --no-default-excludes --json --state-dir "$WORK/state")
"${V[@]}" "${G[@]}" >"$WORK/unify.json" || die "unifying run failed"
sleep 1.1 # past the cache's racy second for the last links' ctimes
"${V[@]}" "${G[@]}" >"$WORK/rerun.json" || die "rerun failed"
cp -a "$FLEET/$NEWG" "$WORK/copy/new-$NEWG" || die "cp -a $NEWG failed"
sync
apparent=$(du -s --apparent-size -B1 "$WORK/copy/new-$NEWG" | cut -f1)
node "$VDIR/bench/io-run.mjs" --no-default-excludes --json --state-dir "$WORK/state" "${G[@]}" "$WORK/copy/new-$NEWG" >"$WORK/new.json" 2>"$WORK/new.err" ||
  die "the new guest's run failed: $(tail -n3 "$WORK/new.err")"
rchar=$(node -e 'const l = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter((x) => x.startsWith("{\"rchar\"")).pop(); console.log(JSON.parse(l).rchar)' "$WORK/new.err") || die "no rchar line"
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")), s = r.summary;
  console.log(`dist: ${process.argv[2]}; ${r.roots.length} roots, new guest ${process.argv[3]}`);
  console.log(`hashed ${r.hashed.files} files, ${r.hashed.bytes} bytes (cache hits ${r.hashed.cacheHits}); ${s.linksMade} links of ${s.linksPlanned} planned, ${s.freedBytes} bytes freed; ${s.errors} errors; content splits ${JSON.stringify(s.contentSplits ?? {})}`);
' "$WORK/new.json" "$VDIR" "$NEWG"
ratio=$(node -e 'console.log((Number(process.argv[1]) / Number(process.argv[2])).toFixed(3))' "$rchar" "$apparent")
echo "new guest apparent size $apparent bytes; the run read (rchar) $rchar bytes: ${ratio}x (target <= 3.2x)"
node -e 'process.exit(Number(process.argv[1]) <= 3.2 ? 0 : 1)' "$ratio"
