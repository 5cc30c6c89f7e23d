/*
 * Packed stat records: what fstatx and statAt hand back. One Buffer with a
 * fixed-size header (struct stat_rec), rather than a JavaScript object,
 * because building objects through N-API cost more than the statx call; src/os/sys.ts decodes them with the offsets
 * stat_layout() exports, so the layout is written down once, here.
 */
#include "vunify.h"

#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/sysmacros.h>

int type_of_mode(mode_t m) {
  switch (m & S_IFMT) {
  case S_IFREG: return T_REG;
  case S_IFDIR: return T_DIR;
  case S_IFLNK: return T_LNK;
  case S_IFIFO: return T_FIFO;
  case S_IFSOCK: return T_SOCK;
  case S_IFCHR: return T_CHR;
  case S_IFBLK: return T_BLK;
  default: return T_OTHER;
  }
}

int type_of_dtype(unsigned char d) {
  switch (d) {
  case DT_REG: return T_REG;
  case DT_DIR: return T_DIR;
  case DT_LNK: return T_LNK;
  case DT_FIFO: return T_FIFO;
  case DT_SOCK: return T_SOCK;
  case DT_CHR: return T_CHR;
  case DT_BLK: return T_BLK;
  default: return -1; /* DT_UNKNOWN: ask statx */
  }
}

uint64_t statx_dev(const struct statx *st) { return makedev(st->stx_dev_major, st->stx_dev_minor); }

void fill_record(struct stat_rec *r, int type, const struct statx *st, int err) {
  r->type = (uint8_t)type;
  r->mode = r->uid = r->gid = r->nlink = r->mtime_nsec = r->ctime_nsec = 0;
  r->ino = r->dev = r->size = r->blocks = r->mnt_id = 0;
  r->mtime_sec = r->ctime_sec = 0;
  if (type == T_ERR) {
    r->mode = (uint32_t)err;
  } else if (st) {
    r->mode = st->stx_mode;
    r->uid = st->stx_uid;
    r->gid = st->stx_gid;
    r->nlink = st->stx_nlink;
    r->ino = st->stx_ino;
    r->dev = statx_dev(st);
    r->size = st->stx_size;
    r->blocks = st->stx_blocks;
    r->mtime_sec = st->stx_mtime.tv_sec;
    r->mtime_nsec = st->stx_mtime.tv_nsec;
    r->ctime_nsec = st->stx_ctime.tv_nsec;
    r->ctime_sec = st->stx_ctime.tv_sec;
#ifdef STATX_MNT_ID
    r->mnt_id = (st->stx_mask & STATX_MNT_ID) ? st->stx_mnt_id : 0;
#endif
  }
}

int out_record(outbuf *o, int type, const struct statx *st, int err, const char *name, size_t name_len) {
  size_t rec = (sizeof(struct stat_rec) + name_len + RECORD_ALIGN - 1) & ~(size_t)(RECORD_ALIGN - 1);
  if (name_len > UINT16_MAX || out_reserve(o, rec)) return -1;
  struct stat_rec r = {0};
  r.rec_len = (uint32_t)rec;
  r.name_len = (uint16_t)name_len;
  fill_record(&r, type, st, err);
  char *p = o->data + o->len;
  memcpy(p, &r, sizeof r);
  memcpy(p + sizeof r, name, name_len);
  memset(p + sizeof r + name_len, 0, rec - sizeof r - name_len);
  o->len += rec;
  return 0;
}

#ifdef STATX_MNT_ID
#define STATX_WANT (STATX_BASIC_STATS | STATX_MNT_ID)
#else
#define STATX_WANT STATX_BASIC_STATS
#endif

int do_statx(int dirfd, const char *name, int flags, struct statx *st) {
  return statx(dirfd, name, flags | AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, STATX_WANT, st);
}

int fd_statx(int fd, struct statx *st) { return statx(fd, "", AT_EMPTY_PATH, STATX_WANT, st); }

napi_value stat_layout(napi_env env) {
  napi_value l = layout_new(env, sizeof(struct stat_rec));
  FIELD(env, l, struct stat_rec, rec_len, "recordLength");
  FIELD(env, l, struct stat_rec, type, "type");
  FIELD(env, l, struct stat_rec, name_len, "nameLength");
  FIELD(env, l, struct stat_rec, mode, "mode");
  FIELD(env, l, struct stat_rec, uid, "uid");
  FIELD(env, l, struct stat_rec, gid, "gid");
  FIELD(env, l, struct stat_rec, nlink, "nlink");
  FIELD(env, l, struct stat_rec, ino, "ino");
  FIELD(env, l, struct stat_rec, dev, "dev");
  FIELD(env, l, struct stat_rec, size, "size");
  FIELD(env, l, struct stat_rec, blocks, "blocks");
  FIELD(env, l, struct stat_rec, mtime_sec, "mtimeSec");
  FIELD(env, l, struct stat_rec, mtime_nsec, "mtimeNsec");
  FIELD(env, l, struct stat_rec, ctime_nsec, "ctimeNsec");
  FIELD(env, l, struct stat_rec, ctime_sec, "ctimeSec");
  FIELD(env, l, struct stat_rec, mnt_id, "mntId");
  return l;
}

napi_value file_types(napi_env env) {
  napi_value types, v;
  napi_create_object(env, &types);
#define AS_PROPERTY(name, value, js) \
  napi_create_int32(env, name, &v);  \
  napi_set_named_property(env, types, js, v);
  FILE_TYPES(AS_PROPERTY)
#undef AS_PROPERTY
  return types;
}
