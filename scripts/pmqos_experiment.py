#!/usr/bin/env python3
"""PM-QoS queue-depth governor study; the same as ``blockemu experiment pmqos``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blockemu.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", "pmqos", *sys.argv[1:]]))
