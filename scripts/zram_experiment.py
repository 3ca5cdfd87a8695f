#!/usr/bin/env python3
"""zram study: app launch under background load, per compression policy, sync vs async.

Same as ``blockemu experiment zram``; see blockemu/experiments/zram.py for the
workload.  Usage: scripts/zram_experiment.py [--quick] [--out DIR] [--seed N]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blockemu.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", "zram", *sys.argv[1:]]))
