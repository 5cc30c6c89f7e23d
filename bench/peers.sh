#!/bin/bash
# vunify against its peers, end to end on the fleet: the fleet targets of
# issue 13 (scale) and issue 14 (the linker).
#
#   npm run bench:peers                      (builds dist/ first when stale)
#   BENCH_ROUNDS=5 bash bench/peers.sh [FLEET]   (FLEET default /var/tmp/fleet)
#
# FLEET is built with ../shared/fleet/make-fleet.sh when missing, and is never
# modified: linking runs get fresh `cp -a` copies under /var/tmp/vunify-bench-*.
# After one untimed pass that reads every file (warm page cache), it times with
# /usr/bin/time (wall s, peak RSS), BENCH_ROUNDS rounds (default 3), tools
# alternating within each round (the order rotates every round):
#
#   report only, on FLEET:  vunify --dry-run --no-cache --no-default-excludes --json,
#                           hardlink -n --respect-xattrs, jdupes -r -m -p,
#                           rdfind -dryrun true, rmlint -o summary,
#                           read floor: find -print0 | xargs -0 -P2 xxh64sum
#   linking, each on its own fresh copy:
#                           vunify --no-default-excludes --state-dir TMP,
#                           hardlink --respect-xattrs, jdupes -r -p -L
#   reruns, on each tool's own unified copy:
#                           vunify --dry-run, vunify, hardlink, jdupes -L
#   then a new guest on vunify's unified copy (issue 14): `cp -a FLEET/web1
#   COPY/new-web1` (BENCH_NEW_GUEST=NAME for another guest than web1; the
#   fleet's original, so its own duplicates are separate inodes, as a guest
#   made from an image), and a linking run over the fleet plus it
#   (vunify's state dir from the linking run and reruns: the cache a host
#   has), through bench/io-run.mjs, which prints what the process read
#   (/proc/self/io rchar); against `du -s --apparent-size -B1` of the new guest.
#
# and prints a markdown table (medians, peak RSS, ratio to the best peer and to
# the target's reference, what each tool found) plus the targets, to stdout and
# to bench/results/peers-<date>.md (BENCH_OUT=FILE to change). Ratios come from
# the medians of this run only.
#
# vunify runs from a snapshot of dist/ taken at the start (bench/ensure-dist.sh
# rebuilds dist/ first when src/ is newer), so one run measures one build.
#
# Targets (ratios of this run's medians; peers-table.mjs checks them):
#   issue 13: dry run --no-cache <= 0.5x jdupes -r -m -p and <= 1.5x the read floor;
#             vunify's rerun over its unified copy <= 0.4x jdupes -r -p -L's over its own;
#   issue 14: linking run <= 0.5x jdupes -r -p -L (each on a fresh copy, alternating);
#             the new guest's run reads (rchar) <= 3.2x the new guest's apparent size.
#
# Exit status: 0 all ratio targets met; 1 a target missed (each is named);
# 2 the benchmark itself failed (a run exited non-zero, build failed, no space).
# rmlint gets `-o summary` so that it does not write its 50 MB rmlint.sh and
# rmlint.json (it still scans and hashes everything; those outputs cost it
# ~1-3 s more here); rdfind runs in a scratch directory, where it writes its
# 9 MB results.txt. A full run at BENCH_ROUNDS=3 takes ~10-12 minutes here,
# half of it copying and deleting copies (the fleet's fs is mounted -o discard).
set -uo pipefail
# Node reads the CA bundle this names at every start (~50 ms of CPU here);
# a shell may export it, a systemd unit or cron job does not, and vunify
# makes no TLS connection: run every tool as the nightly job would.
unset NODE_EXTRA_CA_CERTS
here=$(cd "$(dirname "$0")/.." && pwd)
FLEET=$(realpath -m "${1:-${FLEET:-/var/tmp/fleet}}")
ROUNDS=${BENCH_ROUNDS:-3}
DATE=$(date +%F)
OUT=${BENCH_OUT:-$here/bench/results/peers-$DATE.md}
die() { echo "bench:peers: $*" >&2; exit 2; }
log() { echo "$*" >&2; }

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
for t in hardlink jdupes rdfind rmlint xxh64sum node; do command -v "$t" >/dev/null || die "$t not installed"; done
[ -x /usr/bin/time ] || die "/usr/bin/time not installed (apt-get install time)"
if [ ! -d "$FLEET" ]; then
  log "building the fleet in $FLEET"
  bash "$here/../shared/fleet/make-fleet.sh" "$FLEET" 1 >&2 || die "make-fleet.sh failed"
fi

GUESTS=()
for g in "$FLEET"/*; do [ -d "$g" ] && [ ! -L "$g" ] && GUESTS+=("$(basename "$g")"); done
[ ${#GUESTS[@]} -ge 2 ] || die "$FLEET holds fewer than two guests"
NEWG=${BENCH_NEW_GUEST:-web1}
[ -d "$FLEET/$NEWG" ] && [ ! -L "$FLEET/$NEWG" ] || die "no guest $NEWG in $FLEET to copy as the new guest (BENCH_NEW_GUEST=NAME)"
fleet_kib=$(du -sk "$FLEET" | cut -f1)
free_kib=$(df -Pk /var/tmp | awk 'NR==2 {print $4}')
[ "$free_kib" -gt $((fleet_kib * 4 + 2 * 1024 * 1024)) ] || die "need $((fleet_kib * 4 / 1024 / 1024 + 2)) GiB free in /var/tmp for copies, have $((free_kib / 1024 / 1024)) GiB"

WORK=$(mktemp -d /var/tmp/vunify-bench-XXXXXX)
cleanup() {
  local rc=$? p
  for p in $(jobs -p); do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  [ -d "$WORK" ] && { log "removing $WORK"; rm -rf "$WORK"; }
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK/cwd" "$WORK/out" "$WORK/trash" "$WORK/state"
# one build for the whole run, even if src/ and dist/ change meanwhile
distline=$(bash "$here/bench/ensure-dist.sh" --snapshot "$WORK/snap") || exit 2
log "$distline"
SAMPLES=$WORK/samples.tsv
FOUND=$WORK/found.tsv
IO=$WORK/io.tsv
: >"$SAMPLES"
: >"$FOUND"
: >"$IO"
VUNIFY=(node "$WORK/snap/dist/bin.js")
# io-run.mjs imports ../dist/cli/main.js from where it lies: the snapshot's
mkdir -p "$WORK/snap/bench" && cp "$here/bench/io-run.mjs" "$WORK/snap/bench/" || die "cannot copy io-run.mjs"
IORUN=(node "$WORK/snap/bench/io-run.mjs")

in_dir() { local d=$1; printf '%s\n' "${GUESTS[@]/#/$d/}"; }
mapfile -t G < <(in_dir "$FLEET")

# What a run found, from its output (kept from its first round).
found() { # name outfile errfile
  local name=$1 o=$2 e=$3 s=
  case $name in
    vunify*) s=$(node -e '
      const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")), s = r.summary;
      const t = r.durations ? Object.entries(r.durations).map(([k, v]) => k + " " + (v / 1000).toFixed(1)).join(", ") : "";
      console.log((r.dryRun ? s.linksPlanned + " links planned, " + s.freeableBytes : s.linksMade + " links made, " + s.freedBytes) +
        " bytes; " + s.filesScanned + " files; errors " + s.errors + (t ? "; s: " + t : ""));' "$o" 2>/dev/null) ;;
    hardlink*) s=$(grep -E '^(Linked|Saved|Files):' "$o" | tr -s ' ' | paste -sd';' | sed 's/;/; /g') ;;
    jdupes*) s=$(grep -iE 'duplicate files' "$o" | head -1)
      [ -n "$s" ] || s="prints nothing" ;;
    rdfind*) s=$(grep -E 'not unique|can be reduced' "$o" | sed 's/^(DRYRUN MODE) //' | paste -sd' ') ;;
    rmlint*) s=$(grep -E '^==> (In total|This equals)' "$o" | sed 's/^==> //' | paste -sd' ') ;;
    *) s= ;;
  esac
  printf '%s\t%s\n' "$name" "${s//$'\t'/ }" >>"$FOUND"
}

# measure GROUP NAME ROUND CMD...: one timed run in the scratch cwd.
measure() {
  local group=$1 name=$2 r=$3
  shift 3
  local o
  o=$WORK/out/$(tr -c 'A-Za-z0-9' '_' <<<"$name").$r
  LAST_OUT=$o
  (cd "$WORK/cwd" && exec /usr/bin/time -f '%e %M %U %S' -o "$o.time" "$@" >"$o.out" 2>"$o.err")
  local rc=$?
  local wall rss user sys
  read -r wall rss user sys < <(tail -n1 "$o.time")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$group" "$name" "$r" "$rc" "$wall" "$rss" "$user" "$sys" >>"$SAMPLES"
  printf '  round %s  %-34s %7s s %8s MiB  (user %s s, sys %s s)%s\n' "$r" "$name" "$wall" "$((rss / 1024))" "$user" "$sys" \
    "$([ "$rc" = 0 ] || echo "  EXIT $rc: $(tail -n2 "$o.err" | tr '\n' ' ')")" >&2
  [ "$r" = 1 ] && found "$name" "$o.out" "$o.err"
  rm -rf "${WORK:?}/cwd" && mkdir "$WORK/cwd"
}
rotate() { # rotate N items...: the items, starting at index N mod count
  local n=$1
  shift
  local a=("$@") i
  for ((i = 0; i < ${#a[@]}; i++)); do echo "${a[$(((i + n) % ${#a[@]}))]}"; done
}

log "fleet: $FLEET, ${#GUESTS[@]} guests, $(find "$FLEET" -type f | wc -l) regular files, $((fleet_kib / 1024)) MiB; $ROUNDS rounds; work dir $WORK"
t0=$SECONDS
# Every tool starts from one cache state: the kernel's clean caches dropped
# (page cache, dentries and inodes), then the fleet read once. Without the
# drop, what earlier work left (the scale bench's millions of files) decides
# the run: on this VM the dentry hash table was sized at boot for a small
# memory (131,072 buckets, dmesg) and millions of stale dentries make every
# name lookup several times dearer; and a fresh copy goes onto the page
# cache's inactive list behind gigabytes of other trees, so part of it is
# read back from the disk. BENCH_NO_DROP=1 keeps the caches as they are.
if [ "${BENCH_NO_DROP:-0}" != 1 ] && [ -w /proc/sys/vm/drop_caches ]; then
  sync && echo 3 >/proc/sys/vm/drop_caches && log "dropped the page, dentry and inode caches ($(cut -f1 /proc/sys/fs/dentry-state) dentries left)"
fi
find "${G[@]}" -type f -print0 | xargs -0 -P2 cat >/dev/null 2>&1
"${VUNIFY[@]}" --version >/dev/null || die "dist/bin.js does not run"
log "warm-up: read every file once ($((SECONDS - t0)) s)"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report only
report_run() { # name round
  case $1 in
    # --no-cache: a cold report, as the peers have no cache (reruns below use it).
    'vunify --dry-run') measure report "$1" "$2" "${VUNIFY[@]}" --dry-run --no-cache --no-default-excludes --json --state-dir "$WORK/state/dry" "${G[@]}" ;;
    'hardlink -n --respect-xattrs') measure report "$1" "$2" hardlink -n --respect-xattrs "${G[@]}" ;;
    'jdupes -r -m -p') measure report "$1" "$2" jdupes -r -m -p "${G[@]}" ;;
    'rdfind -dryrun true') measure report "$1" "$2" rdfind -dryrun true "${G[@]}" ;;
    'rmlint -o summary') measure report "$1" "$2" rmlint -o summary "${G[@]}" ;;
    'read floor: xargs -P2 xxh64sum') measure report "$1" "$2" sh -c 'find "$@" -type f -print0 | xargs -0 -P2 xxh64sum >/dev/null 2>&1' sh "${G[@]}" ;;
  esac
}
REPORT=('vunify --dry-run' 'hardlink -n --respect-xattrs' 'jdupes -r -m -p' 'rdfind -dryrun true' 'rmlint -o summary' 'read floor: xargs -P2 xxh64sum')
for ((r = 1; r <= ROUNDS; r++)); do
  log "report-only round $r/$ROUNDS"
  while IFS= read -r name; do report_run "$name" "$r"; done < <(rotate $((r - 1)) "${REPORT[@]}")
done

# ---------------------------------------------------------------- linking + reruns
LINKERS=(vunify hardlink jdupes)
link_run() { # tool round
  local c=$WORK/copy-$1
  mapfile -t C < <(in_dir "$c")
  case $1 in
    vunify) measure link 'vunify' "$2" "${VUNIFY[@]}" --no-default-excludes --json --state-dir "$WORK/state/$1" "${C[@]}" ;;
    hardlink) measure link 'hardlink --respect-xattrs' "$2" hardlink --respect-xattrs "${C[@]}" ;;
    jdupes) measure link 'jdupes -r -p -L' "$2" jdupes -r -p -L "${C[@]}" ;;
  esac
  sync # the freed blocks' writeback (and discard) before the next timed run
  if [ "$2" = 1 ]; then # what it really freed: allocated blocks of distinct inodes, before and after
    local after name
    after=$(du -sk "$c" | cut -f1)
    name=$(tail -n1 "$SAMPLES" | cut -f2)
    printf '%s\t%s\n' "$name" "du: $(((${DU_BEFORE[$1]} - after) / 1024)) MiB freed on disk" >>"$FOUND"
  fi
}
declare -A DU_BEFORE
RERUNS=(vunify-dry vunify hardlink jdupes)
rerun() { # which round
  local c=$WORK/copy-${1%-dry}
  mapfile -t C < <(in_dir "$c")
  case $1 in
    # The cache its linking run left (as on a host), not the host's own in /var/lib/vunify.
    vunify-dry) measure rerun 'vunify --dry-run (rerun)' "$2" "${VUNIFY[@]}" --dry-run --no-default-excludes --json --state-dir "$WORK/state/vunify" "${C[@]}" ;;
    vunify) measure rerun 'vunify (rerun)' "$2" "${VUNIFY[@]}" --no-default-excludes --json --state-dir "$WORK/state/$1" "${C[@]}" ;;
    hardlink) measure rerun 'hardlink --respect-xattrs (rerun)' "$2" hardlink --respect-xattrs "${C[@]}" ;;
    jdupes) measure rerun 'jdupes -r -p -L (rerun)' "$2" jdupes -r -p -L "${C[@]}" ;;
  esac
  sync
}
# Issue 14: after unifying, a run over the fleet plus one new guest reads
# what? (rchar of the whole process: hashing, comparisons, the cache file)
new_guest() { # round
  local c=$WORK/copy-vunify n=new-$NEWG apparent line
  cp -a "$FLEET/$NEWG" "$c/$n" || die "cp -a $FLEET/$NEWG failed"
  sync
  apparent=$(du -s --apparent-size -B1 "$c/$n" | cut -f1)
  mapfile -t C < <(in_dir "$c")
  measure newguest "vunify (fleet + $n)" "$1" "${IORUN[@]}" --no-default-excludes --json --state-dir "$WORK/state/vunify" "${C[@]}" "$c/$n"
  line=$(grep '^{"rchar"' "$LAST_OUT.err" | tail -n1)
  local rchar read_bytes
  rchar=$(node -e 'console.log(JSON.parse(process.argv[1]).rchar)' "$line" 2>/dev/null)
  read_bytes=$(node -e 'console.log(JSON.parse(process.argv[1]).read_bytes)' "$line" 2>/dev/null)
  [[ $rchar =~ ^[0-9]+$ ]] || { log "  no rchar from io-run.mjs: $(tail -n2 "$LAST_OUT.err" | tr '\n' ' ')"; rchar=; }
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$NEWG" "$apparent" "$rchar" "$read_bytes" >>"$IO"
  log "  new guest $n: apparent size $apparent bytes; the run read (rchar) ${rchar:-?} bytes"
  sync
}
for ((r = 1; r <= ROUNDS; r++)); do
  log "linking round $r/$ROUNDS: fresh copies of the fleet"
  t0=$SECONDS
  # the last round's copies are deleted (slow with -o discard) while the new ones are written
  (rm -rf "${WORK:?}/trash" && mkdir "$WORK/trash") &
  pids=($!)
  for t in "${LINKERS[@]}"; do
    mkdir "$WORK/copy-$t"
    cp -a "$FLEET"/. "$WORK/copy-$t"/ &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || die "copying or removing copies failed"; done
  sync
  for t in "${LINKERS[@]}"; do rm -rf "${WORK:?}/state/$t" && mkdir "$WORK/state/$t"; done
  if [ "$r" = 1 ]; then for t in "${LINKERS[@]}"; do DU_BEFORE[$t]=$(du -sk "$WORK/copy-$t" | cut -f1); done; fi
  log "  copies ready ($((SECONDS - t0)) s, untimed)"
  while IFS= read -r t; do link_run "$t" "$r"; done < <(rotate $((r - 1)) "${LINKERS[@]}")
  while IFS= read -r t; do rerun "$t" "$r"; done < <(rotate $((r - 1)) "${RERUNS[@]}")
  new_guest "$r"
  for t in "${LINKERS[@]}"; do mv "$WORK/copy-$t" "$WORK/trash/copy-$t"; done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- the table
mkdir -p "$(dirname "$OUT")"
model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
mem=$(awk '/^MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)
fs=$(findmnt -n -o FSTYPE,OPTIONS -T "$FLEET" | awk '{print $1 ($2 ~ /(^|,)discard(,|$)/ ? ", mounted with discard" : "")}')
machine="$(nproc) cores ($model), $mem GiB, Linux $(uname -r), $fs"
node "$here/bench/peers-table.mjs" \
  --samples "$SAMPLES" --found "$FOUND" --io "$IO" --date "$(date '+%F %H:%M')" --machine "$machine" \
  --fleet "$FLEET: ${#GUESTS[@]} guests, $(find "$FLEET" -type f | wc -l) regular files, $((fleet_kib / 1024)) MiB" \
  --rounds "$ROUNDS" --dist "${distline#dist: }" --load "1/5/15-min load average $load_start at the start, $load_end at the end" \
  >"$WORK/table.md"
rc=$?
cp "$WORK/table.md" "$OUT"
cat "$WORK/table.md"
log "written to $OUT"
exit $rc
