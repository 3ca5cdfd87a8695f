#!/bin/sh
# Soak every device type at once (scripts/soak.py): fio verify, control-API
# churn and power cuts.  Not in CI by default; CI runs a 2-minute version
# (tests/integration/test_soak.py).  Usage: scripts/soak.sh [--duration 1800] [--seed 1]
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
exec "$here/.venv/bin/python" "$here/scripts/soak.py" "$@"
