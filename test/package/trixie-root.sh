#!/bin/bash
# Makes DEST a fresh, clean Debian trixie root for the package test: a copy
# of a minbase debootstrap kept in CACHE (made once: about 40 s and 200 MB;
# the mirror is the host's own apt source, as ../shared/fleet/make-fleet.sh
# finds it). CACHE/archives keeps the .debs apt downloads inside copies, so
# later runs install nodejs without downloading it again.
#
#   trixie-root.sh CACHE DEST
set -euo pipefail
CACHE=${1:?usage: trixie-root.sh CACHE DEST}
DEST=${2:?usage: trixie-root.sh CACHE DEST}
MIRROR=${VUNIFY_TRIXIE_MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

mkdir -p "$(dirname "$CACHE")"
exec 9>"$CACHE.lock"
flock 9   # two test runs share one cache; the second waits for the first to make it
if [ ! -e "$CACHE/.complete" ]; then
  rm -rf "$CACHE"
  mkdir -p "$CACHE"
  echo "trixie-root: debootstrap --variant=minbase trixie from $MIRROR into $CACHE/root" >&2
  if ! debootstrap --variant=minbase trixie "$CACHE/root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
    tail -20 "$CACHE/debootstrap.log" >&2
    exit 1
  fi
  rm -f "$CACHE/root/var/cache/apt/archives/"*.deb
  mkdir -p "$CACHE/archives"
  touch "$CACHE/.complete"
fi
[ ! -e "$DEST" ] || { echo "trixie-root: $DEST exists" >&2; exit 2; }
cp -a "$CACHE/root" "$DEST"
cp "$CACHE/archives/"*.deb "$DEST/var/cache/apt/archives/" 2>/dev/null || true
