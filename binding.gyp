{
  "targets": [
    {
      "target_name": "vunify",
      "sources": [
        "native/args.c",
        "native/records.c",
        "native/lookup.c",
        "native/files.c",
        "native/xattr.c",
        "native/copy.c",
        "native/hash.c",
        "native/xxh3.c",
        "native/sha256.c",
        "native/extents.c",
        "native/memory.c",
        "native/fsattr.c",
        "native/walk.c",
        "native/glob.c",
        "native/lease.c",
        "native/link.c",
        "native/module.c"
      ],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11", "-fvisibility=hidden",
                 "-D_FORTIFY_SOURCE=2", "-fstack-protector-strong"],
      "ldflags": ["-Wl,-z,relro", "-Wl,-z,now"]
    }
  ]
}
