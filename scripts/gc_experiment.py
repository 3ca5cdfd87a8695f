#!/usr/bin/env python3
"""GC study of the host-side zoned log: victim policy × copy method (host copy or Simple Copy).

Same as ``blockemu experiment gc``; see blockemu/experiments/gc.py for the
workload.  Usage: scripts/gc_experiment.py [--quick] [--out DIR] [--seed N]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blockemu.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", "gc", *sys.argv[1:]]))
