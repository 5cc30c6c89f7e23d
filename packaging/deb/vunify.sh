#!/bin/sh
# /usr/bin/vunify: run the packaged vunify with Debian's node, never a node
# found first on an administrator's PATH (vunify runs as root).
# Debian's node loads /etc/ssl/certs/ca-certificates.crt as extra CA
# certificates when crypto starts, and warns on every run where
# ca-certificates (only recommended) is missing; vunify makes no TLS
# connections, so it asks for none.
NODE_EXTRA_CA_CERTS=
export NODE_EXTRA_CA_CERTS
exec /usr/bin/node /usr/lib/vunify/dist/bin.js "$@"
