#!/usr/bin/env python3
"""Replay throughput: requests per wall-clock second, vector engine vs scalar engine.

Generates a seeded trace of 4 KiB requests (70% random reads, 30% random
writes, open-loop arrivals at 200 K requests per modeled second) over an
aged UFS device, replays it with both engines on the same config, checks that
both computed the same completion times, and prints the rates and their ratio.

    .venv/bin/python scripts/bench_replay.py [--requests 2000000] [--config configs/ufs41.toml]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from blockemu.config import load_config  # noqa: E402
from blockemu.replay import replay  # noqa: E402
from blockemu.trace import OP_CODES, TRACE_DTYPE, Trace  # noqa: E402


def random_4k_trace(count: int, span_bytes: int, seed: int) -> Trace:
    rng = np.random.default_rng(seed)
    records = np.zeros(count, dtype=TRACE_DTYPE)
    records["t_ns"] = np.cumsum(rng.exponential(5_000, size=count)).astype(np.int64)
    records["op"] = np.where(rng.random(count) < 0.7, OP_CODES["read"], OP_CODES["write"])
    records["offset"] = rng.integers(0, span_bytes // 4096, size=count) * 4096
    records["length"] = 4096
    records["qd"] = 1
    return Trace(records, {}, {})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2_000_000)
    parser.add_argument("--scalar-requests", type=int, default=200_000, help="the scalar engine replays a prefix")
    parser.add_argument("--config", default=str(REPO / "configs" / "ufs41.toml"))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    # The vector engine prices the plain model only: no L2P cache, no WriteBooster (docs/ufs.md).
    config = load_config(args.config, ["aging.fragmentation_percent=50", "ufs.l2p_cache_kib=0",
                                       "ufs.wb_enabled=false"])
    trace = random_4k_trace(args.requests, config.capacity_bytes, args.seed)
    vector = replay(config, trace, engine="vector")
    prefix = Trace(trace.records[: args.scalar_requests], {}, {})
    scalar = replay(config, prefix, engine="scalar")
    same = np.array_equal(scalar.completions_ns, vector.completions_ns[: args.scalar_requests])
    v_rate = len(trace) / vector.wall_s
    s_rate = len(prefix) / scalar.wall_s
    print(f"{'engine':8s}{'requests':>12s}{'wall s':>10s}{'requests/s':>14s}")
    print(f"{'vector':8s}{len(trace):12d}{vector.wall_s:10.2f}{v_rate:14.0f}")
    print(f"{'scalar':8s}{len(prefix):12d}{scalar.wall_s:10.2f}{s_rate:14.0f}")
    print(f"vector/scalar: {v_rate / s_rate:.1f}x; identical completions on the common prefix: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
