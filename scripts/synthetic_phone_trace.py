#!/usr/bin/env python3
"""A seeded, synthetic stand-in for a phone app's block trace, as CSV.

No public block trace is reachable from this project's machines (only the
Debian and PyPI registries are, and neither ships one), so this writes a CSV
shaped like the published Android app traces: columns process, device, R/W,
sector (512 B), size (sectors) and timestamp (s).  Like them, most reads
fall on data written before the capture (app code and assets spread over the
span), while writes go to a few hot regions (databases, logs).

    .venv/bin/python scripts/synthetic_phone_trace.py OUT.csv [--requests 100000] [--span-gib 6] [--seed 1]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--span-gib", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    n = args.requests
    span_sectors = int(args.span_gib * 2**30) // 512
    reads = rng.random(n) < 0.75
    # Reads: 4-128 KiB anywhere in the span (installed apps); writes: 4-16 KiB in 8 hot 64 MiB regions.
    read_size = rng.choice([8, 16, 32, 64, 128, 256], size=n, p=[0.4, 0.2, 0.15, 0.1, 0.1, 0.05])
    write_size = rng.choice([8, 16, 32], size=n, p=[0.6, 0.3, 0.1])
    hot = rng.integers(0, span_sectors - 2**17, size=8)
    write_at = hot[rng.integers(0, 8, size=n)] + rng.integers(0, 2**17 - 64, size=n) // 8 * 8
    read_at = rng.integers(0, span_sectors - 256, size=n) // 8 * 8
    sector = np.where(reads, read_at, write_at)
    size = np.where(reads, read_size, write_size)
    times = np.cumsum(rng.exponential(200e-6, size=n))
    apps = np.array(["com.android.chrome", "com.google.android.youtube", "com.instagram.android"])
    process = apps[rng.integers(0, len(apps), size=n)]
    with open(args.out, "w") as f:
        f.write("process,device,rw,sector,sectors,timestamp\n")
        f.writelines(f"{p},sda,{'R' if r else 'W'},{s},{z},{t:.6f}\n"
                     for p, r, s, z, t in zip(process.tolist(), reads.tolist(), sector.tolist(), size.tolist(),
                                              times.tolist(), strict=True))
    print(f"{args.out}: {n} requests over {args.span_gib} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
