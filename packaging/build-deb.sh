#!/bin/bash
# Builds the Debian package vunify_<version>_<arch>.deb with dpkg-deb and
# prints its path as the last line (npm run deb). Usage:
#
#   packaging/build-deb.sh [OUTDIR]        (default OUTDIR: packaging/out)
#
# Needs a tree set up by `npm ci` (typescript, and the addon it built in
# build/Release), dpkg-dev (dpkg-shlibdeps) and binutils (strip). The
# JavaScript is compiled afresh from src/ into the package, the production
# modules come from package-lock.json (`npm ci --omit=dev`, which the npm
# cache usually serves), and the man page and unit files are generated from
# the same sources `npm install -g .` uses, so the package cannot drift from
# them: vunify(8) from --help, the units from systemd/ with /usr/bin paths.
# Timestamps are the changelog's date, so rebuilding gives the same package.
set -euo pipefail
umask 022
cd "$(dirname "$0")/.."
SRC=$PWD
DEB=$SRC/packaging/deb
OUT=${1:-$SRC/packaging/out}

die() { echo "build-deb: $*" >&2; exit 1; }

version=$(node -p 'require("./package.json").version')
changelog_version=$(sed -n '1s/^vunify (\([^)]*\)).*/\1/p' "$DEB/changelog")
[ "$version" = "$changelog_version" ] ||
  die "package.json says $version but packaging/deb/changelog's first entry is $changelog_version: add a changelog entry"
date_rfc=$(sed -n 's/^ -- .*>  //p' "$DEB/changelog" | head -1)
epoch=$(date -d "$date_rfc" +%s)
export SOURCE_DATE_EPOCH=$epoch
arch=$(dpkg --print-architecture)
addon=$SRC/build/Release/vunify.node
[ -f "$addon" ] || die "$addon is missing: run npm ci first (it builds the native addon)"
[ -x node_modules/.bin/tsc ] || die "node_modules/.bin/tsc is missing: run npm ci first"
for tool in dpkg-deb dpkg-shlibdeps strip; do
  command -v "$tool" >/dev/null || die "$tool is missing: apt-get install dpkg-dev binutils"
done

STAGE=$(mktemp -d /tmp/vunify-deb.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT
ROOT=$STAGE/debian/vunify   # where dpkg-shlibdeps expects the package tree
LIB=$ROOT/usr/lib/vunify
DOC=$ROOT/usr/share/doc/vunify

# The program: fresh JavaScript (no source maps: the sources are not shipped),
# a package.json for "type": "module" and --version, the addon where
# src/os/sys.ts looks for it (../../build/Release from dist/os/), stripped.
install -d "$LIB/dist" "$LIB/build/Release"
node_modules/.bin/tsc -p tsconfig.json --outDir "$LIB/dist" --sourceMap false
cp -r src/report/sql "$LIB/dist/report/sql"   # the fleet merge's queries (npm run build copies them too)
node -e '
  const p = require("./package.json");
  const keep = { name: p.name, version: p.version, description: p.description, license: p.license, type: p.type, private: true, dependencies: p.dependencies };
  process.stdout.write(JSON.stringify(keep, null, 2) + "\n");
' >"$LIB/package.json"
install -m 644 "$addon" "$LIB/build/Release/vunify.node"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$LIB/build/Release/vunify.node"

# Production modules only, exactly as locked; their install scripts are not
# run (none of them has one that matters, and ours would rebuild the addon).
install -d "$STAGE/prod"
cp package.json package-lock.json "$STAGE/prod/"
(cd "$STAGE/prod" && npm ci --omit=dev --ignore-scripts --prefer-offline --no-audit --no-fund --silent >&2)
rm -f "$STAGE/prod/node_modules/.package-lock.json"
mv "$STAGE/prod/node_modules" "$LIB/node_modules"
# Their copyright lines and licenses go into the copyright file (read from
# the modules' own license files first); then what only a developer reads
# goes: documentation, type declarations, source maps, test folders.
node "$DEB/copyright-deps.mjs" "$LIB/node_modules" >"$STAGE/copyright-deps"
find "$LIB/node_modules" -depth \( -type d \( -name test -o -name tests -o -name __tests__ -o -name .github \) -exec rm -rf {} + \) -o \
  \( -type f \( -name '*.md' -o -name '*.markdown' -o -iname 'licen[cs]e*' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \) -delete \)
find "$LIB/node_modules" -depth -type d -empty -delete
# Prebuilt native code shipped inside registry packages (DuckDB's engine,
# loaded only by the fleet merge and Parquet manifests): stripped like ours.
find "$LIB/node_modules" -type f \( -name '*.node' -o -name '*.so' -o -name '*.so.*' \) \
  -exec strip --strip-unneeded --remove-section=.comment --remove-section=.note {} +

install -D -m 755 "$DEB/vunify.sh" "$ROOT/usr/bin/vunify"

# Units: the same files `npm install -g .` users copy, with the packaged paths.
install -d "$ROOT/usr/lib/systemd/system"
for unit in vunify.service vunify.timer; do
  sed -e 's|/usr/local/bin/vunify|/usr/bin/vunify|g' \
      -e 's|^Documentation=.*|Documentation=man:vunify(8)|' \
      -e 's|/etc/systemd/system/vunify|/usr/lib/systemd/system/vunify|g' \
      "systemd/$unit" >"$ROOT/usr/lib/systemd/system/$unit"
  ! grep -n '/usr/local' "$ROOT/usr/lib/systemd/system/$unit" >&2 ||
    die "systemd/$unit: a /usr/local path is left after rewriting it for the package; extend the sed above"
done
grep -qx 'ExecStart=/usr/bin/vunify --config /etc/vunify/vunify.conf' "$ROOT/usr/lib/systemd/system/vunify.service" ||
  die "packaged vunify.service does not run /usr/bin/vunify --config /etc/vunify/vunify.conf"

# The state directory (/var/lib/vunify, 0700) is made by postinst, not
# shipped: dpkg would warn on every removal that it is not empty, and lintian
# flags a shipped 0700 directory. postrm decides on purge what of it goes.
install -D -m 644 systemd/vunify.conf "$ROOT/etc/vunify/vunify.conf"
install -D -m 644 "$DEB/lintian-overrides" "$ROOT/usr/share/lintian/overrides/vunify"

# Documentation: the README and docs/ (--help points at them), the changelog,
# the copyright file with a stanza per bundled module, and vunify(8).
install -d "$DOC/docs" "$ROOT/usr/share/man/man8"
gzip -9n <README.md >"$DOC/README.md.gz"
for f in docs/*.md; do gzip -9n <"$f" >"$DOC/docs/$(basename "$f").gz"; done
gzip -9n <"$DEB/changelog" >"$DOC/changelog.gz"
{ cat "$DEB/copyright.in"; echo; cat "$STAGE/copyright-deps"; } >"$DOC/copyright"
node "$DEB/make-man.mjs" "$LIB/dist/bin.js" "$version" "$(date -u -d "@$epoch" +%Y-%m-%d)" | gzip -9n >"$ROOT/usr/share/man/man8/vunify.8.gz"

# Depends: the node that runs it (the addon uses N-API, stable across Node
# versions) and the libraries the shipped native code links, as dpkg-shlibdeps computes it.
install -d "$STAGE/debian" "$ROOT/DEBIAN"   # DEBIAN/ marks the package root for it
printf 'Source: vunify\n\nPackage: vunify\nArchitecture: any\n' >"$STAGE/debian/control"
# Every shipped ELF object counts: the addon, and DuckDB's engine (libstdc++).
shlibs=$(cd "$STAGE" && find debian/vunify/usr/lib/vunify -type f \( -name '*.node' -o -name '*.so' \) -print0 | sort -z | xargs -0 dpkg-shlibdeps -O --warnings=0)
shlibs=${shlibs#shlibs:Depends=}
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no library dependency for the addon"
depends="nodejs (>= 20), $shlibs"

# Ownership is root's (dpkg-deb --root-owner-group); modes are set here so
# the package does not depend on the build machine's umask or checkout.
find "$ROOT" -type d -exec chmod 755 {} +
find "$ROOT" -type f -exec chmod 644 {} +
# bin.js keeps its "#!/usr/bin/env node" line for `npm install -g`; the
# package runs it through /usr/bin/vunify, but a script stays executable.
chmod 755 "$ROOT/usr/bin/vunify" "$LIB/dist/bin.js"

installed_size=$(du -sk --apparent-size --exclude=DEBIAN "$ROOT" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@INSTALLED_SIZE@|$installed_size|" -e "s|@DEPENDS@|$depends|" \
  "$DEB/control.in" >"$ROOT/DEBIAN/control"
install -m 644 "$DEB/conffiles" "$ROOT/DEBIAN/conffiles"
for s in postinst prerm postrm; do install -m 755 "$DEB/$s" "$ROOT/DEBIAN/$s"; done
(cd "$ROOT" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$ROOT/DEBIAN/md5sums"
chmod 644 "$ROOT/DEBIAN/md5sums"
find "$ROOT" -exec touch -h -d "@$epoch" {} +

mkdir -p "$OUT"
deb=$OUT/vunify_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$deb" >&2
realpath "$deb"
