#!/usr/bin/env bash
# Fetch a real public block trace for `blockemu replay` (docs/replay.md, "A real public trace"):
# the WebSearch excerpt that MQSim ships, traces/wsrch-small.trace (SPC's WebSearch1 trace from the
# UMass Trace Repository, DiskSim ASCII format). MQSim's repository is MIT-licensed; the trace is
# not committed here because the original traces carry no licence of their own.
#
#   scripts/fetch_public_trace.sh [DEST]      (default results/traces/wsrch-small.trace)
#
# The file is pinned by commit and checked against its SHA-256; an existing DEST is only checked.
set -euo pipefail

COMMIT=b6a5e74b2bdbd929cb467ee7c73b6c317f7f5174
URL="https://raw.githubusercontent.com/CMU-SAFARI/MQSim/$COMMIT/traces/wsrch-small.trace"
SHA256=84ebefd565aeb5db3bb807ef3c609e952aeaa59c4e78e132181059d0c5ea74d1
DEST=${1:-results/traces/wsrch-small.trace}

check() {
    local got
    got=$(sha256sum "$1" | cut -d' ' -f1)
    if [ "$got" != "$SHA256" ]; then
        echo "fetch_public_trace: $1 has SHA-256 $got, expected $SHA256 (MQSim commit $COMMIT)" >&2
        return 1
    fi
}

if [ -e "$DEST" ]; then
    check "$DEST"
    echo "$DEST: present and checked"
    exit 0
fi
mkdir -p "$(dirname "$DEST")"
if ! curl -fsSL --retry 2 -o "$DEST.part" "$URL"; then
    rm -f "$DEST.part"
    echo "fetch_public_trace: cannot download $URL; copy traces/wsrch-small.trace of MQSim commit $COMMIT to $DEST" >&2
    exit 1
fi
check "$DEST.part" || { rm -f "$DEST.part"; exit 1; }
mv "$DEST.part" "$DEST"
echo "$DEST: downloaded and checked"
