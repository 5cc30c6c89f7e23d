#!/usr/bin/env python3
"""oracle.py - independent reference count of what hardlinking could free.

Usage:
    python3 bench/oracle.py [--ignore-mtime | --mtime-seconds] [--json]
                            [--threads N] [--dump-classes FILE] ROOT...

WHAT IT COMPUTES
    The maximum number of bytes that replacing identical regular files by
    hardlinks could free across the given ROOTs, under vunify's policy:

    * Walk every ROOT with os.scandir/os.lstat using bytes paths (so
      non-UTF-8 names work), never following symlinks and never entering a
      directory (nor counting a file) whose st_dev differs from the ROOT's.
      Only regular files of size >= 1 are considered.  A path reached twice
      (overlapping ROOTs) is counted once.
    * Two inodes may share one inode only if they agree on: st_dev, st_size,
      st_uid, st_gid, permission bits (st_mode & 0o7777), st_mtime_ns
      (dropped with --ignore-mtime; truncated to whole seconds with
      --mtime-seconds, which mimics util-linux hardlink), the complete set
      of extended attributes of every namespace (names and values, read
      without following symlinks), and the SHA-256 of their content.
    * Paths that already are the same (st_dev, st_ino) count as one inode.
      An inode whose st_nlink is larger than the number of its paths seen
      under the ROOTs has links outside the ROOTs and can never be freed.
    * For each class of identical, policy-compatible inodes one inode is kept
      (one with outside links if there is any, otherwise the first one in
      (root order, bytewise path) order); every other inode of the class whose
      links were all seen is freed.
        freeableBytes  = sum of st_size of the freed inodes
        freeableInodes = number of freed inodes
        links          = number of paths of all non-kept inodes of all classes
                         (paths that a linker would re-point at the kept inode,
                         including those of inodes with outside links)
        linksFreeing   = number of paths of the freed inodes only
        files / inodes = regular files (size >= 1) / distinct inodes seen
        perRoot        = freeableBytes split by the ROOT of each freed inode's
                         first path in (root order, bytewise path) order.

WHY IT IS INDEPENDENT
    It is written from scratch in Python using only the standard library
    (os, hashlib, json): it imports nothing from vunify, shares no code,
    configuration, cache or native addon with it, uses a different walker
    (os.scandir), a different hash (hashlib.sha256 over 1 MiB reads) and a
    different grouping strategy (metadata key -> content hash), so a bug in
    vunify's walker, hasher or planner would not be reproduced here.

SPEED
    Content is hashed only for inodes whose metadata key (everything above
    except the content) collides with another inode's key.  Files are read
    in 1 MiB chunks; hashing runs in a small thread pool (hashlib releases
    the GIL on large buffers).  The file system is only read, never changed.
"""

import argparse
import errno
import hashlib
import json
import os
import stat
import sys
import time
from concurrent.futures import ThreadPoolExecutor

CHUNK = 1 << 20


def warn(msg):
    sys.stderr.write("oracle: %s\n" % msg)


def read_xattrs(path):
    """Return a sorted tuple of (name, value) for every xattr of path, all
    namespaces, without following symlinks.  () if none / unsupported."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA):
            return ()
        raise
    out = []
    for n in names:
        try:
            v = os.getxattr(path, n, follow_symlinks=False)
        except OSError as e:
            if e.errno == errno.ENODATA:  #: vanished between list and get
                continue
            raise
        out.append((n, v))
    out.sort()
    return tuple(out)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
    return h.digest()


class Inode:
    __slots__ = ("dev", "ino", "size", "nlink", "meta", "paths", "xattrs")

    def __init__(self, st, meta):
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.size = st.st_size
        self.nlink = st.st_nlink
        self.meta = meta
        self.paths = []  # list of (root_index, path_bytes)
        self.xattrs = None


def walk(roots, stats):
    """Yield (root_index, path_bytes, stat_result) for regular files."""
    seen_paths = set()
    for ri, root in enumerate(roots):
        rpath = os.fsencode(os.path.realpath(root))
        try:
            rst = os.lstat(rpath)
        except OSError as e:
            warn("cannot stat root %r: %s" % (root, e))
            stats["errors"] += 1
            continue
        rdev = rst.st_dev
        if stat.S_ISREG(rst.st_mode):
            if rpath not in seen_paths:
                seen_paths.add(rpath)
                yield ri, rpath, rst
            continue
        if not stat.S_ISDIR(rst.st_mode):
            continue
        stack = [rpath]
        while stack:
            d = stack.pop()
            try:
                it = os.scandir(d)
            except OSError as e:
                warn("cannot read dir %r: %s" % (d, e))
                stats["errors"] += 1
                continue
            with it:
                for ent in it:
                    p = ent.path
                    try:
                        st = os.lstat(p)
                    except OSError as e:
                        warn("cannot lstat %r: %s" % (p, e))
                        stats["errors"] += 1
                        continue
                    if st.st_dev != rdev:
                        stats["otherDevSkipped"] += 1
                        continue
                    m = st.st_mode
                    if stat.S_ISDIR(m):
                        stack.append(p)
                    elif stat.S_ISREG(m):
                        if p in seen_paths:
                            continue
                        seen_paths.add(p)
                        yield ri, p, st


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ignore-mtime", action="store_true")
    ap.add_argument("--mtime-seconds", action="store_true",
                    help="compare mtime in whole seconds (util-linux hardlink's"
                         " policy) instead of nanoseconds; for cross-checks only")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--threads", type=int, default=max(2, min(8, (os.cpu_count() or 2) * 2)))
    ap.add_argument("--dump-classes", metavar="FILE",
                    help="write one JSON line per freed inode (for diffing)")
    ap.add_argument("roots", nargs="+")
    a = ap.parse_args()

    t0 = time.monotonic()
    stats = {"errors": 0, "otherDevSkipped": 0, "emptySkipped": 0}
    inodes = {}  # (dev, ino) -> Inode
    nfiles = 0
    for ri, p, st in walk(a.roots, stats):
        if st.st_size < 1:
            stats["emptySkipped"] += 1
            continue
        nfiles += 1
        key = (st.st_dev, st.st_ino)
        node = inodes.get(key)
        if node is None:
            meta = (st.st_dev, st.st_size, st.st_uid, st.st_gid,
                    st.st_mode & 0o7777,
                    None if a.ignore_mtime else
                    (st.st_mtime_ns // 10**9 if a.mtime_seconds else st.st_mtime_ns))
            node = Inode(st, meta)
            inodes[key] = node
        node.paths.append((ri, p))
    t_walk = time.monotonic()

    # xattrs are part of the metadata key; read them once per inode
    for node in inodes.values():
        try:
            node.xattrs = read_xattrs(node.paths[0][1])
        except OSError as e:
            warn("cannot read xattrs of %r: %s" % (node.paths[0][1], e))
            stats["errors"] += 1
            node.xattrs = ("<error>", node.dev, node.ino)  # never matches

    by_meta = {}
    for node in inodes.values():
        by_meta.setdefault((node.meta, node.xattrs), []).append(node)
    candidates = [n for grp in by_meta.values() if len(grp) > 1 for n in grp]
    t_meta = time.monotonic()

    digests = {}

    def hash_one(node):
        last = None
        for _, p in sorted(node.paths):
            try:
                return node, sha256_file(p)
            except OSError as e:
                last = e
        warn("cannot read %r: %s" % (node.paths[0][1], last))
        return node, None

    hashed_bytes = 0
    with ThreadPoolExecutor(max_workers=a.threads) as ex:
        # biggest first for better load balance
        for node, dg in ex.map(hash_one, sorted(candidates, key=lambda n: -n.size)):
            if dg is None:
                stats["errors"] += 1
            else:
                digests[(node.dev, node.ino)] = dg
                hashed_bytes += node.size
    t_hash = time.monotonic()

    classes = {}
    for grp_key, grp in by_meta.items():
        if len(grp) < 2:
            continue
        for node in grp:
            dg = digests.get((node.dev, node.ino))
            if dg is None:
                continue
            classes.setdefault((grp_key, dg), []).append(node)

    freeable_bytes = 0
    freeable_inodes = 0
    links = 0
    links_freeing = 0
    outside_blocked_inodes = 0
    outside_blocked_bytes = 0
    per_root = {r: 0 for r in a.roots}
    nclasses = 0
    dump = open(a.dump_classes, "w") if a.dump_classes else None
    for (grp_key, dg), members in classes.items():
        if len(members) < 2:
            continue
        nclasses += 1
        for n in members:
            n.paths.sort()
        members.sort(key=lambda n: n.paths[0])
        outside = [n for n in members if n.nlink > len(n.paths)]
        keep = outside[0] if outside else members[0]
        for n in members:
            if n is keep:
                continue
            links += len(n.paths)
            if n.nlink > len(n.paths):
                outside_blocked_inodes += 1
                outside_blocked_bytes += n.size
                continue
            freeable_inodes += 1
            freeable_bytes += n.size
            links_freeing += len(n.paths)
            per_root[a.roots[n.paths[0][0]]] += n.size
            if dump:
                dump.write(json.dumps({
                    "path": os.fsdecode(n.paths[0][1]),
                    "keep": os.fsdecode(keep.paths[0][1]),
                    "size": n.size, "nlink": n.nlink,
                    "npaths": len(n.paths), "sha256": dg.hex()}) + "\n")
    if dump:
        dump.close()
    t_end = time.monotonic()

    res = {
        "freeableBytes": freeable_bytes,
        "freeableInodes": freeable_inodes,
        "links": links,
        "linksFreeing": links_freeing,
        "files": nfiles,
        "inodes": len(inodes),
        "classes": nclasses,
        "outsideLinkedNotFreed": {"inodes": outside_blocked_inodes,
                                  "bytes": outside_blocked_bytes},
        "hashedInodes": len(candidates),
        "hashedBytes": hashed_bytes,
        "emptyFilesSkipped": stats["emptySkipped"],
        "otherDeviceEntriesSkipped": stats["otherDevSkipped"],
        "errors": stats["errors"],
        "ignoreMtime": a.ignore_mtime,
        "mtimeSeconds": a.mtime_seconds,
        "perRoot": per_root,
        "seconds": {"walk": round(t_walk - t0, 3),
                    "metaXattr": round(t_meta - t_walk, 3),
                    "hash": round(t_hash - t_meta, 3),
                    "total": round(t_end - t0, 3)},
    }
    if a.json:
        json.dump(res, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print("files (regular, size>=1): %d   inodes: %d   errors: %d"
              % (nfiles, len(inodes), stats["errors"]))
        print("classes of identical inodes: %d   hashed: %d inodes, %d bytes"
              % (nclasses, len(candidates), hashed_bytes))
        print("freeable: %d bytes (%.2f GiB) in %d inodes; %d paths to relink"
              " (%d of them in freed inodes)"
              % (freeable_bytes, freeable_bytes / 2**30, freeable_inodes,
                 links, links_freeing))
        if outside_blocked_inodes:
            print("not freeable (links outside roots): %d inodes, %d bytes"
                  % (outside_blocked_inodes, outside_blocked_bytes))
        for r in a.roots:
            print("  %-40s %d" % (r, per_root[r]))
        print("time: %.2fs" % (t_end - t0))
    return 1 if stats["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
