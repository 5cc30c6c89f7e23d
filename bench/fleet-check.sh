#!/bin/bash
# End-to-end check of the core on a real fleet (issue "vunify core", Done when).
#
#   bench/fleet-check.sh [FLEET]      (default FLEET: /var/tmp/fleet, built if missing)
#
# On a fresh copy of FLEET it: predicts with --dry-run, compares with the
# independent oracle and util-linux hardlink, links, measures the allocated
# blocks of distinct inodes before and after (find -printf %i %b), compares
# sha256 + owner/group/mode/mtime + xattrs of every path before and after
# (find, sha256sum, getfattr: not vunify's code), runs again expecting no
# links and exit 0, and on a second copy checks the default excludes keep
# /etc/passwd, /var/lib/dpkg/status and /root/.bashrc on their own inodes.
# Prints what it measured; exits non-zero on the first failed check.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
FLEET=${1:-/var/tmp/fleet}
WORK=${WORK:-/var/tmp/vunify-fleet-check}
# Its own state directory (hash key, hash cache), never the host's /var/lib/vunify.
STATE=${STATE:-$WORK.state}
VUNIFY="node $here/dist/bin.js --state-dir $STATE"
[ -d "$FLEET" ] || bash "$here/../shared/fleet/make-fleet.sh" "$FLEET" 1
fail() { echo "FAIL: $*" >&2; exit 1; }

# sync: ext4 allocates extent blocks at writeback, and st_blocks counts them.
fresh() { rm -rf "$WORK" "$STATE"; mkdir -p "$WORK"; cp -a "$FLEET"/. "$WORK"/; sync; }
blocks() { find "$WORK" -type f -printf '%i %b\n' | sort -u | awk '{s+=$2} END {printf "%.0f\n", s*512}'; }
state() { # one line per path: mode owner group size mtime sha256 xattrs (never the inode)
  # Directory sizes and mtimes are blanked: adding a temporary name changes them (ext4
  # grows a full directory by a block and never shrinks it), as any link or rename does.
  (cd "$WORK" && find . -printf '%y|%m|%U|%G|%s|%T@|%p\0' | tr '\0' '\n' | awk -F'|' '$1=="d"{$5=""; $6=""} {print}' OFS='|' | LC_ALL=C sort) > "$1.meta"
  (cd "$WORK" && find . -type f -print0 | sort -z | xargs -0 -P2 -n 2000 sha256sum | sort -k2) > "$1.sha"
  (cd "$WORK" && getfattr -R -P -h -d -m - -e hex . 2>/dev/null) > "$1.xattr"
}

fresh
echo "fleet: $(ls "$WORK" | wc -l) guests, $(find "$WORK" -type f | wc -l) regular files"
before_blocks=$(blocks)
state /tmp/vunify-before

t0=$(date +%s.%N)
$VUNIFY --dry-run --no-default-excludes --json "$WORK"/* > /tmp/vunify-dry.json
t1=$(date +%s.%N)
predicted=$(node -p "require('/tmp/vunify-dry.json').summary.freeableBytes")
predicted_disk=$(node -p "require('/tmp/vunify-dry.json').summary.freeableDiskBytes")
echo "vunify --dry-run: freeableBytes=$predicted freeableDiskBytes=$predicted_disk ($(echo "$t1 - $t0" | bc) s)"
if [ -f "$here/bench/oracle.py" ]; then
  oracle=$(python3 "$here/bench/oracle.py" --json "$WORK"/* | python3 -c 'import json,sys; print(json.load(sys.stdin)["freeableBytes"])')
  echo "independent oracle: freeableBytes=$oracle"
  [ "$oracle" = "$predicted" ] || fail "dry run predicts $predicted, oracle says $oracle"
fi
echo "util-linux hardlink -n --respect-xattrs: $(hardlink -n --respect-xattrs "$WORK"/* 2>&1 | grep -E '^(Saved|Linked)' | tr -s ' ' | paste -sd';')"
[ -f "$here/bench/hardlink-exact.sh" ] && echo "util-linux hardlink, exact: $(bash "$here/bench/hardlink-exact.sh" "$WORK"/*) bytes (it compares mtime in whole seconds only)"

t0=$(date +%s.%N)
set +e; $VUNIFY --no-default-excludes --json "$WORK"/* > /tmp/vunify-link.json; rc=$?; set -e
t1=$(date +%s.%N)
[ $rc = 0 ] || fail "linking run exited $rc"
sync
after_blocks=$(blocks)
freed=$((before_blocks - after_blocks))
echo "linking run: $(node -p "const s=require('/tmp/vunify-link.json').summary; 'linksMade='+s.linksMade+' freedBytes='+s.freedBytes+' freedDiskBytes='+s.freedDiskBytes") ($(echo "$t1 - $t0" | bc) s)"
echo "allocated blocks of distinct inodes: before=$before_blocks after=$after_blocks freed=$freed"
[ "$freed" = "$predicted_disk" ] || fail "freed $freed bytes on disk, dry run predicted $predicted_disk"

state /tmp/vunify-after
for k in meta sha xattr; do
  cmp -s /tmp/vunify-before.$k /tmp/vunify-after.$k || { diff /tmp/vunify-before.$k /tmp/vunify-after.$k > /tmp/vunify-diff.$k || true; head /tmp/vunify-diff.$k; fail "$k changed"; }
done
echo "every path kept its content, owner, group, mode, mtime and xattrs ($(wc -l < /tmp/vunify-before.meta) paths compared)"

set +e; $VUNIFY --no-default-excludes --json "$WORK"/* > /tmp/vunify-rerun.json; rc=$?; set -e
again=$(node -p "require('/tmp/vunify-rerun.json').summary.linksMade")
[ $rc = 0 ] && [ "$again" = 0 ] || fail "second run: exit $rc, $again links"
echo "second run: exit 0, 0 links"

fresh
$VUNIFY -q "$WORK"/* || fail "default-excludes run failed"
for f in etc/passwd var/lib/dpkg/status root/.bashrc; do
  n=$(for g in "$WORK"/*; do stat -c %i "$g/$f"; done | sort -u | wc -l)
  l=$(for g in "$WORK"/*; do stat -c %h "$g/$f"; done | sort -u | paste -sd,)
  [ "$n" = "$(ls "$WORK" | wc -l)" ] && [ "$l" = 1 ] || fail "/$f was unified despite the default excludes"
  echo "default excludes: /$f keeps its own inode in all $n guests"
done
rm -rf "$WORK" "$STATE"
echo "fleet-check: all checks passed"
