{
  "targets": [
    {
      "target_name": "vunify",
      "sources": ["native/vunify.c", "native/fsattr.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11"]
    }
  ]
}
