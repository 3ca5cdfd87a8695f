#!/usr/bin/env python3
"""zram study: app launch under background load, per compression policy, sync vs async.

Same as ``blockemu experiment zram``; see blockemu/experiments/zram.py for the
workload.  Usage: scripts/zram_experiment.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blockemu.experiments import zram


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    zram.add_arguments(parser)
    return zram.main(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
