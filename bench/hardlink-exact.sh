#!/usr/bin/env bash
# hardlink-exact.sh - exact byte count that util-linux `hardlink` would save.
#
# Usage:
#   bash bench/hardlink-exact.sh [--json] [--log FILE] [--freed FILE] [--] ROOT...
#   HARDLINK_OPTS="-t" bash bench/hardlink-exact.sh ROOT...   # extra flags
#
#   --json        print a JSON object instead of the human summary
#   --log FILE    keep hardlink's raw -vvv output in FILE
#   --freed FILE  write "size<TAB>dev:ino<TAB>path" for every inode hardlink
#                 would free (for diffing against oracle.py --dump-classes)
#
# HOW
#   `hardlink -n --respect-xattrs` only prints "Saved: 1.82 GiB" (rounded,
#   stats.saved is a double formatted by size_to_human_string).  We run
#       LC_ALL=C hardlink -n -vvv --respect-xattrs $HARDLINK_OPTS ROOT...
#   (always a dry run: -n, nothing is modified) and replay its own accounting
#   from its output:
#     * -vvv prints, while scanning, one line per regular file
#       "  N: [dev/ino/nlink] /abs/path"  -> path -> (dev, ino, st_nlink)
#     * -v prints one line per link it would make
#       "[DryRun] Linking MASTER to OTHER (-7.76 KiB)"
#   In file_link() hardlink does  b->st.st_nlink--; if it reaches 0 then
#   stats.saved += a->st.st_size  (all links of OTHER's inode are moved in
#   consecutive lines).  We do the same: start each OTHER inode at its scanned
#   st_nlink, decrement per Linking line, and when it reaches 0 add the
#   master's st_size (read with lstat on the master path; the human size in
#   the Linking line is checked against it).  The exact total is then checked
#   against hardlink's own rounded "Saved:" line.  The line is split at the
#   " to " that makes both halves known scanned paths, so " to " inside names
#   is fine; names containing '\n' cannot be parsed and make the script fail.
#
# POLICY DIFFERENCES hardlink 2.38.1 (defaults + --respect-xattrs) vs vunify
#   1. mtime: hardlink DOES respect mtime by default (-t/--ignore-time turns it
#      off), but compares st_mtime in whole SECONDS; vunify compares
#      st_mtime_ns.  Files equal except for the sub-second part of mtime are
#      linked by hardlink and not by vunify (hardlink saves more).
#   2. mode: hardlink compares the whole st_mode (type + permission bits);
#      vunify st_mode & 07777.  Same thing for regular files.  Owner: both
#      compare uid and gid.  xattrs: with -X hardlink compares all names and
#      values returned by llistxattr/lgetxattr (all namespaces visible to the
#      caller) - same as vunify.  Without -X hardlink ignores xattrs.
#   3. links outside the roots: hardlink does NOT skip such inodes; it still
#      relinks their paths ("Linked" counts them) but adds nothing to Saved
#      because st_nlink never reaches 0.  vunify counts them as never freeable
#      too, but prefers to KEEP such an inode.  hardlink keeps the NEWEST
#      file (largest st_mtime, ties: smallest st_ino; -O oldest, -m/-M by
#      nlink) regardless of outside links, so when a class contains an inode
#      with outside links that is not the newest, hardlink saves one inode
#      less than vunify (the kept newest one could have been freed).
#   4. size 0: hardlink's default --minimum-size is 1, so empty files are
#      skipped (but counted in its "Files:" line); vunify also skips them.
#   5. walk: hardlink uses nftw(FTW_PHYS) on realpath(ROOT): it does not
#      follow symlinks but DOES descend into other mounted file systems (it
#      then links only within one st_dev); vunify does not cross mounts.
#      Files hardlink cannot open/read are silently not linked.
#   6. keeping: vunify keeps one inode per class; hardlink greedy-links every
#      compatible equal file to the first ("master") of the size bucket, so
#      with equality being an equivalence relation the classes are the same
#      and only the choice of the kept inode differs (see 3).
#   7. content: hardlink compares bytes (memcmp, or kernel sha256 per block
#      when AF_ALG is available); vunify/oracle compare sha256 of the file.
set -euo pipefail

json=0 log="" freed=""
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json=1; shift ;;
    --log) log="$2"; shift 2 ;;
    --freed) freed="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    --) shift; break ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--json] [--log FILE] [--freed FILE] ROOT..." >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out=${log:-$tmp/hardlink.out}

start=$EPOCHREALTIME
# shellcheck disable=SC2086
LC_ALL=C hardlink -n -vvv --respect-xattrs ${HARDLINK_OPTS:-} "$@" >"$out" 2>"$tmp/err"
end=$EPOCHREALTIME
if [ -s "$tmp/err" ]; then
  echo "hardlink stderr:" >&2; head -20 "$tmp/err" >&2
fi

HL_OUT="$out" HL_JSON="$json" HL_FREED="$freed" HL_START="$start" HL_END="$end" \
HL_VERSION="$(hardlink -V)" HL_OPTS="-n -vvv --respect-xattrs ${HARDLINK_OPTS:-}" \
python3 - <<'PY'
import json, os, re, sys

out = os.environ["HL_OUT"]
scan_re = re.compile(rb"^ *\d+: \[(\d+)/(\d+)/(\d+)\] (.*)$")
link_prefix = b"[DryRun] Linking "
size_re = re.compile(rb" \(-([0-9.]+ ?[KMGTPE]?i?B?)\)$")
UNITS = {b"B": 1, b"KiB": 1 << 10, b"MiB": 1 << 20, b"GiB": 1 << 30, b"TiB": 1 << 40}

paths = {}          # path bytes -> (dev, ino, nlink)
links = []          # (master, other, human)
summary = {}
bad = []
with open(out, "rb") as f:
    for line in f:
        line = line.rstrip(b"\n")
        m = scan_re.match(line)
        if m:
            paths[m.group(4)] = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
            continue
        if line.startswith(link_prefix):
            body = line[len(link_prefix):]
            sm = size_re.search(body)
            if not sm:
                bad.append(line); continue
            human = sm.group(1)
            body = body[:sm.start()]
            links.append((body, human))
            continue
        for k in (b"Files:", b"Linked:", b"Saved:", b"Method:", b"Duration:"):
            if line.startswith(k):
                summary[k.decode().rstrip(":")] = line[len(k):].strip().decode()

def split_pair(body):
    i = body.find(b" to ")
    while i >= 0:
        a, b = body[:i], body[i + 4:]
        if a in paths and b in paths:
            return a, b
        i = body.find(b" to ", i + 1)
    return None

left = {}           # (dev, ino) -> remaining nlink of an OTHER inode
saved = 0
freed_inodes = []
outside_kept = 0    # linked inodes whose nlink never reached 0
human_mismatch = 0
sizes = {}
for body, human in links:
    pr = split_pair(body)
    if pr is None:
        bad.append(body); continue
    a, b = pr
    kb = paths[b][:2]
    if kb not in left:
        left[kb] = paths[b][2]
    left[kb] -= 1
    if a not in sizes:
        sizes[a] = os.lstat(a).st_size
    sz = sizes[a]
    # sanity: hardlink's printed human size of the master
    num, unit = re.match(rb"([0-9.]+) ?(\w+)", human).groups()
    approx = float(num) * UNITS.get(unit, 1)
    if abs(approx - sz) > 0.006 * max(sz, 1) + 1:
        human_mismatch += 1
    if left[kb] == 0:
        saved += sz
        freed_inodes.append((sz, kb, b))
outside_kept = sum(1 for v in left.values() if v > 0)

# cross-check against hardlink's own rounded figure
rounded_ok = None
m = re.match(r"([0-9.]+) ?(\w+)", summary.get("Saved", ""))
if m:
    val = float(m.group(1)) * UNITS.get(m.group(2).encode(), 1)
    unit = UNITS.get(m.group(2).encode(), 1)
    rounded_ok = abs(val - saved) <= 0.01 * unit

if os.environ.get("HL_FREED"):
    with open(os.environ["HL_FREED"], "wb") as f:
        for sz, (dev, ino), p in freed_inodes:
            f.write(b"%d\t%d:%d\t%s\n" % (sz, dev, ino, p))

res = {
    "savedBytes": saved,
    "freedInodes": len(freed_inodes),
    "linkedPaths": len(links),
    "linkedInodes": len(left),
    "linkedButNotFreedInodes": outside_kept,
    "scannedRegularFiles": len(paths),
    "hardlinkSummary": summary,
    "roundedSavedAgrees": rounded_ok,
    "humanSizeMismatches": human_mismatch,
    "unparsedLines": len(bad),
    "hardlinkVersion": os.environ["HL_VERSION"],
    "hardlinkOptions": os.environ["HL_OPTS"].strip(),
    "seconds": round(float(os.environ["HL_END"]) - float(os.environ["HL_START"]), 3),
}
if os.environ["HL_JSON"] == "1":
    print(json.dumps(res, indent=1))
else:
    print(saved)
    print("# %s: would save %d bytes (%.2f GiB; hardlink says %s), %d inodes freed,"
          " %d paths linked (%d inodes, %d of them keep other links), %.1fs"
          % (res["hardlinkOptions"], saved, saved / 2**30, summary.get("Saved"),
             len(freed_inodes), len(links), len(left), outside_kept, res["seconds"]),
          file=sys.stderr)
for l in bad[:5]:
    print("unparsed: %r" % l, file=sys.stderr)
sys.exit(1 if bad or rounded_ok is False else 0)
PY
