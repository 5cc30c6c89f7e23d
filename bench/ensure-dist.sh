#!/bin/bash
# Make sure dist/ is what src/ says, then print which build the benchmarks measure.
#
#   bash bench/ensure-dist.sh [--snapshot DIR]     (every bench script runs it first)
#
# dist/ is rebuilt with `npx tsc -p .` when any src/**/*.ts (or tsconfig.json) is
# newer than its dist/**/*.js, or a dist file is missing, and dist/bundle/ is
# remade (packaging/bundle.mjs). BENCH_NO_BUILD=1 skips both and measures
# dist/ as it is. Prints one line on stdout:
#   dist: <commit>[+N uncommitted src files] fingerprint <sha256 of dist/*.js, 12 hex>
# Exits 2 when the build fails (src/ may be mid-edit): nothing is measured then.
# --snapshot DIR copies that build (dist/, build/Release/vunify.node,
# package.json; node_modules linked) to DIR, so that a long benchmark keeps
# measuring one build while src/ and dist/ change under it: run DIR/dist/bin.js.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
snap=
if [ "${1:-}" = --snapshot ]; then snap=${2:?--snapshot DIR}; fi

stale=
if [ "${BENCH_NO_BUILD:-}" != 1 ]; then
  for ts in $(find src -name '*.ts'); do
    js=dist/${ts#src/}; js=${js%.ts}.js
    if [ ! -e "$js" ] || [ "$ts" -nt "$js" ] || [ tsconfig.json -nt "$js" ]; then stale="$ts"; break; fi
  done
  if [ -n "$stale" ]; then
    echo "dist/ is stale ($stale is newer): npx tsc -p ." >&2
    npx tsc -p . >&2 || { echo "bench: build failed; fix src/ or run with BENCH_NO_BUILD=1" >&2; exit 2; }
  fi
  # The bundle dist/bin.js runs (npm run build's last step), remade from this dist/: a build by tsc
  # alone leaves it stale, and bin.js would then load dist/ module by module, not what a user runs.
  node packaging/bundle.mjs 2>/dev/null || echo "bench: bundling failed (packaging/bundle.mjs); dist/bin.js runs dist/ module by module" >&2
fi
[ -e build/Release/vunify.node ] || { echo "bench: build/Release/vunify.node missing: run npm ci" >&2; exit 2; }

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain -- src native 2>/dev/null | wc -l)
[ "$dirty" = 0 ] || commit="$commit+$dirty uncommitted src files"
if [ -n "$snap" ]; then
  mkdir -p "$snap/dist" "$snap/build/Release"
  cp -pr dist/. "$snap/dist/"
  cp -p build/Release/vunify.node "$snap/build/Release/"
  cp -p package.json "$snap/"
  ln -sfn "$here/node_modules" "$snap/node_modules"
  cd "$snap"
fi
fp=$( (find dist -name '*.js' -print0 | sort -z | xargs -0 cat; cat build/Release/vunify.node) | sha256sum | cut -c1-12)
echo "dist: $commit, fingerprint $fp"
