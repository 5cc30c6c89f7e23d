# A FUSE filesystem that lists names longer than NAME_MAX (255 bytes), as
# FUSE (up to 1024), CIFS, vfat or ntfs3 with UTF-8 can, without any FUSE
# package: the kernel protocol on /dev/fuse, read-only, just enough for a
# walk (INIT, LOOKUP, GETATTR, OPENDIR, READDIR, RELEASEDIR; ENOSYS else).
#
# The tree: DEPTH directories named 'd' * 255 in a chain, and in each, also
# one file named 'f' * LONG (the bytes a guest controls) and one file 'ok'.
# Prints "ready" once mounted; serves until unmounted (or killed).
import ctypes
import os
import struct
import sys

target, depth, long_len = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open('/dev/fuse', os.O_RDWR)
libc = ctypes.CDLL(None, use_errno=True)
opts = f'fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other'.encode()
if libc.mount(b'vunify-long-names', target.encode(), b'fuse', 0, opts) != 0:
    sys.stderr.write(f'mount {target}: {os.strerror(ctypes.get_errno())}\n')
    sys.exit(1)
print('ready', flush=True)

DIR, LONG, OK = 'd' * 255, 'f' * long_len, 'ok'
# node ids: 1 the root (level 0); level k dir = 10*k+1; its files 10*k+2 (long), 10*k+3 (ok)
def attr(node):
    is_dir = node % 10 == 1
    mode = (0o040755 if is_dir else 0o100644)
    size = 0 if is_dir else 3
    # ino size blocks atime mtime ctime atimens mtimens ctimens mode nlink uid gid rdev blksize flags
    return struct.pack('<QQQQQQIIIIIIIIII', node, size, 0, 1, 1, 1, 0, 0, 0, mode, 2 if is_dir else 1, 0, 0, 0, 4096, 0)

def reply(unique, err=0, body=b''):
    os.write(fd, struct.pack('<IiQ', 16 + len(body), -err, unique) + body)

def children(node):
    level = (node - 1) // 10
    out = [(10 * level + 2, LONG, 8), (10 * level + 3, OK, 8)]
    if level < depth:
        out.append((10 * (level + 1) + 1, DIR, 4))
    return out

while True:
    try:
        req = os.read(fd, 1 << 20)
    except OSError:
        break  # unmounted
    ln, op, unique, node = struct.unpack_from('<IIQQ', req)
    body = req[40:ln]
    if op == 26:  # INIT
        major, minor = struct.unpack_from('<II', body)
        reply(unique, 0, struct.pack('<IIIIHHIIHHI', 7, 31, 0, 0, 16, 12, 4096, 1, 0, 0, 0) + b'\0' * 28)
    elif op == 1:  # LOOKUP
        name = body.split(b'\0', 1)[0].decode()
        hit = [c for c in children(node) if c[1] == name]
        if not hit:
            reply(unique, 2)
        else:
            reply(unique, 0, struct.pack('<QQQQII', hit[0][0], 0, 1, 1, 0, 0) + attr(hit[0][0]))
    elif op == 3:  # GETATTR
        reply(unique, 0, struct.pack('<QII', 1, 0, 0) + attr(node))
    elif op == 27:  # OPENDIR
        reply(unique, 0, struct.pack('<QIi', 0, 0, 0))
    elif op == 28:  # READDIR
        _fh, offset, size = struct.unpack_from('<QQI', body)
        out = b''
        for i, (ino, name, typ) in enumerate(children(node)):
            if i < offset:
                continue
            nb = name.encode()
            ent = struct.pack('<QQII', ino, i + 1, len(nb), typ) + nb
            ent += b'\0' * (-len(ent) % 8)
            if len(out) + len(ent) > size:
                break
            out += ent
        reply(unique, 0, out)
    elif op in (2, 42):  # FORGET, BATCH_FORGET: no reply
        pass
    elif op == 29:  # RELEASEDIR
        reply(unique)
    else:
        reply(unique, 38)  # ENOSYS
