{
  "targets": [
    {
      "target_name": "vunify",
      "sources": ["native/vunify.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11",
                 "-D_FORTIFY_SOURCE=2", "-fstack-protector-strong"],
      "ldflags": ["-Wl,-z,relro", "-Wl,-z,now"]
    }
  ]
}
