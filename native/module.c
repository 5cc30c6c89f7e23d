/*
 * The module: the functions the addon exports, and `layout`, the binary
 * record layouts it shares with TypeScript (offsets and widths from
 * offsetof and sizeof on the C structs, the file type codes, the hash
 * result codes and the names of the calls a hash job can fail at, in their
 * index order). src/os/native.ts checks `layout` when it loads the addon
 * and the decoders read their offsets from it, so a layout is written down
 * once, in C, instead of copied by hand on both sides.
 */
#include "vunify.h"

#include <malloc.h>

napi_value layout_new(napi_env env, size_t header_size) {
  napi_value l, fields, v;
  napi_create_object(env, &l);
  napi_create_object(env, &fields);
  napi_create_uint32(env, (uint32_t)header_size, &v);
  napi_set_named_property(env, l, "headerSize", v);
  napi_set_named_property(env, l, "fields", fields);
  return l;
}

void layout_field(napi_env env, napi_value layout, const char *name, size_t offset, size_t width) {
  napi_value fields, f, v;
  napi_get_named_property(env, layout, "fields", &fields);
  napi_create_object(env, &f);
  napi_create_uint32(env, (uint32_t)offset, &v);
  napi_set_named_property(env, f, "offset", v);
  napi_create_uint32(env, (uint32_t)width, &v);
  napi_set_named_property(env, f, "width", v);
  napi_set_named_property(env, fields, name, f);
}

static napi_value make_layout(napi_env env) {
  napi_value layout, v;
  napi_create_object(env, &layout);
  napi_create_uint32(env, RECORD_ALIGN, &v);
  napi_set_named_property(env, layout, "recordAlign", v);
  napi_set_named_property(env, layout, "stat", stat_layout(env));
  napi_set_named_property(env, layout, "fileTypes", file_types(env));
  napi_set_named_property(env, layout, "link", link_layout(env));
  hash_layouts(env, layout);
  return layout;
}

#define FN(js, fn) {js, NULL, fn, NULL, NULL, NULL, napi_enumerable, NULL}

static napi_value Init(napi_env env, napi_value exports) {
  /* Large blocks (typed arrays' backing stores, the hash stage's batch
   * buffers) get their own mapping and go back to the system when freed.
   * glibc's default raises its mmap threshold to the size of each mapped
   * block freed (up to 32 MiB), after which the stages' arrays of a few MiB
   * came from the heap and stayed resident after the garbage collector
   * freed them: a fixed threshold keeps the run's resident set at what it
   * holds. */
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  mallopt(M_TRIM_THRESHOLD, 1024 * 1024);
  napi_property_descriptor props[] = {
      FN("openBeneath", OpenBeneath),
      FN("forceLegacyLookup", ForceLegacyLookup),
      FN("openPath", OpenPath),
      FN("closeFd", CloseFd),
      FN("closeLater", CloseLater),
      FN("closeLaterDrain", CloseLaterDrain),
      FN("sha256", Sha256),
      FN("seekData", SeekData),
      FN("hashFd", HashFd),
      FN("fstatx", Fstatx),
      FN("statAt", StatAt),
      FN("getXattrs", GetXattrs),
      FN("linkAt", LinkAt),
      FN("renameAt", RenameAt),
      FN("unlinkAt", UnlinkAt),
      FN("getFlags", GetFlags),
      FN("setFlags", SetFlags),
      FN("flock", Flock),
      FN("vserver", Vserver),
      FN("setXattr", SetXattr),
      FN("removeXattr", RemoveXattr),
      FN("copyData", CopyData),
      FN("futimens", Futimens),
      FN("fstatvfs", Fstatvfs),
      FN("hashFiles", HashFiles),
      FN("xxh64", Xxh64),
      FN("xxh3", Xxh3),
      FN("xxh3Stream", Xxh3Stream),
      FN("fsGetXattr", FsGetXattr),
      FN("dirXattrsSync", DirXattrsSync),
      FN("setProject", SetProject),
      FN("residentPages", ResidentPages),
      FN("pageSize", PageSize),
      FN("mallocTrim", MallocTrim),
      FN("walk", Walk),
      FN("globExcluded", GlobExcluded),
      FN("leasePair", LeasePair),
      FN("leaseHeld", LeaseHeld),
      FN("leaseRelease", LeaseRelease),
      FN("linkBatch", LinkBatch),
      FN("linkBatchStart", LinkBatchStart),
      FN("linkBatchWait", LinkBatchWait),
      FN("setLinkFault", SetLinkFault),
      FN("setLinkHook", SetLinkHook),
      FN("errnoError", ErrnoError),
      FN("openChecked", OpenChecked),
      {"layout", NULL, NULL, NULL, NULL, make_layout(env), napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof *props, props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
