#!/bin/sh
# /usr/bin/vunify: run the packaged vunify with Debian's node, never a node
# found first on an administrator's PATH (vunify runs as root).
exec /usr/bin/node /usr/lib/vunify/dist/bin.js "$@"
