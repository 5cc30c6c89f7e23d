# A FUSE mount that never answers, without any FUSE package: open
# /dev/fuse, mount(2) a "fuse" filesystem at argv[1] on that descriptor, and
# never read it, so the kernel's INIT request and every request after it
# wait forever (killably). Prints "ready" once mounted, then sleeps until
# killed; the test unmounts with `umount -l` and kills this process (which
# closes the descriptor and aborts the connection).
import ctypes
import os
import sys
import time

target = sys.argv[1]
fd = os.open('/dev/fuse', os.O_RDWR)
libc = ctypes.CDLL(None, use_errno=True)
opts = f'fd={fd},rootmode=40000,user_id=0,group_id=0'.encode()
if libc.mount(b'vunify-hung', target.encode(), b'fuse', 0, opts) != 0:
    e = ctypes.get_errno()
    sys.stderr.write(f'mount {target}: {os.strerror(e)}\n')
    sys.exit(1)
print('ready', flush=True)
while True:
    time.sleep(3600)
