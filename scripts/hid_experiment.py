#!/usr/bin/env python3
"""The HID study (same as `blockemu experiment hid`); see blockemu/experiments/hid.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blockemu.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", "hid", *sys.argv[1:]]))
