#!/bin/bash
# Capacity report on the fleet: check that per-guest freeable bytes add up to
# the dry run's freeableBytes, time both (N runs each, interleaved; medians),
# and estimate a held-out guest with --candidate. Read-only on the fleet.
#   bench/capacity.sh [FLEET=/var/tmp/fleet] [N=3] [HOLDOUT=web3]
set -euo pipefail
cd "$(dirname "$0")/.."
fleet=${1:-/var/tmp/fleet}; n=${2:-3}; holdout=${3:-web3}
out=$(mktemp -d)
# Its own state directory (hash key, cache): never the host's /var/lib/vunify.
st=(--state-dir "$out/state")
bash bench/ensure-dist.sh
for i in $(seq "$n"); do
  /usr/bin/time -f %e -o "$out/dry.$i.t" node dist/bin.js "${st[@]}" --dry-run --json --no-default-excludes "$fleet"/* > "$out/dry.$i.json"
  /usr/bin/time -f %e -o "$out/cap.$i.t" node dist/bin.js report "${st[@]}" --json --no-default-excludes "$fleet"/* > "$out/cap.$i.json"
done
/usr/bin/time -f %e -o "$out/man.t" node dist/bin.js report "${st[@]}" -q --manifest "$out/fleet.manifest.gz" --no-default-excludes "$fleet"/*
node dist/bin.js report "${st[@]}" --json --no-default-excludes --candidate "$fleet/$holdout" "$fleet"/* > "$out/cand.json"
node dist/bin.js report "${st[@]}" --merge --json "$out/fleet.manifest.gz" > "$out/merge.json"
node - "$out" "$n" "$holdout" <<'JS'
const fs = require('fs');
const [out, n] = [process.argv[2], +process.argv[3]];
const med = (xs) => xs.sort((a, b) => a - b)[xs.length >> 1];
const t = (k) => med([...Array(n)].map((_, i) => +fs.readFileSync(`${out}/${k}.${i + 1}.t`, 'utf8')));
const dry = JSON.parse(fs.readFileSync(`${out}/dry.1.json`)), cap = JSON.parse(fs.readFileSync(`${out}/cap.1.json`));
const sum = cap.guests.reduce((s, g) => s + g.freeableBytes, 0);
console.log(`dry run freeableBytes      ${dry.summary.freeableBytes}`);
console.log(`report Σ guest freeable    ${sum}  ${sum === dry.summary.freeableBytes ? 'AGREE' : 'DIFFER'}`);
console.log(`wall time, median of ${n}: dry run ${t('dry')} s, report ${t('cap')} s; report --manifest ${fs.readFileSync(out + '/man.t', 'utf8').trim()} s`);
console.log(`report stage ms (run 1): ${JSON.stringify(cap.durations)}; dry run: ${JSON.stringify(dry.durations)}`);
console.log(`report hashed ${cap.totals.hashedInodes} inodes, ${cap.totals.hashedBytes} bytes; kept apart ${JSON.stringify(cap.totals.keptApart)}`);
const c = JSON.parse(fs.readFileSync(`${out}/cand.json`)).candidates[0];
console.log(`candidate ${c.path}: ${c.files} files, ${c.bytes} bytes; sharable ${c.sharableBytes} (${c.sharablePercent}%), would free ${c.freeableBytes}, kept apart ${c.keptApartBytes}`);
const m = JSON.parse(fs.readFileSync(`${out}/merge.json`));
console.log(`manifest ${fs.statSync(out + '/fleet.manifest.gz').size} bytes gz; merge of 1 host: disk ${m.totals.diskBytes}, unified ${m.totals.unifiedBytes}`);
JS
echo "outputs in $out"
