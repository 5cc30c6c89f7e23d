# Watches a mount for opens (fanotify FAN_OPEN_PERM, with the opening
# thread's id) and holds each open HOLD seconds before allowing it: two
# threads with opens held at once in one directory are two threads in one
# directory at a time (native/link.c: never, its directory locks keep a
# pair's directory to one thread from its opening to its unlink). Prints
# "ready" once watching, then, once the file STOP exists, a JSON line:
# events, distinct threads, and each overlap (directory, the two threads).
import ctypes, json, os, select, struct, sys, time

mnt, stop, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
FAN_CLOEXEC, FAN_NONBLOCK, FAN_CLASS_CONTENT, FAN_REPORT_TID = 0x1, 0x2, 0x4, 0x100
FAN_MARK_ADD, FAN_MARK_MOUNT, FAN_OPEN_PERM, FAN_ALLOW = 0x1, 0x10, 0x10000, 0x1
fd = libc.fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_TID, os.O_RDONLY)
if fd < 0 or libc.fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_OPEN_PERM, -100, mnt.encode()) < 0:
    print(json.dumps({"error": os.strerror(ctypes.get_errno())}), flush=True)
    sys.exit(1)
print("ready", flush=True)
pending, events, tids, overlaps = [], 0, set(), []
while True:
    done = os.path.exists(stop)
    ready, _, _ = select.select([fd], [], [], 0.002)
    if ready:
        try:
            buf = os.read(fd, 65536)
        except BlockingIOError:
            buf = b""
        off = 0
        while off + 24 <= len(buf):
            length, _, _, _, mask, efd, tid = struct.unpack_from("IBBHQii", buf, off)
            off += length
            try:
                d = os.path.dirname(os.readlink(f"/proc/self/fd/{efd}"))
            except OSError:
                d = ""
            for _, _, t2, d2 in pending:
                if d2 == d and t2 != tid:
                    overlaps.append([d, t2, tid])
            pending.append((time.monotonic() + hold, efd, tid, d))
            events += 1
            tids.add(tid)
    now = time.monotonic()
    left = []
    for item in pending:
        if done or item[0] <= now:
            os.write(fd, struct.pack("iI", item[1], FAN_ALLOW))
            os.close(item[1])
        else:
            left.append(item)
    pending = left
    if done and not pending and not ready:
        break
print(json.dumps({"events": events, "threads": len(tids), "overlaps": overlaps}), flush=True)
