#!/usr/bin/env python3
"""What a 4 KiB write costs in each layer of a served UFS device, in-process.

Builds the runtime ``blockemu serve`` builds (configs/ufs41.toml, virtual
timing, 1 GiB), fills it once, then times random 4 KiB writes over 256 MiB
entering at each layer in turn, from the outside in: the runtime (lock, queue
depth, clock, statistics), the power-cut layer, the UFS model on its
journaled store (the pre-image copy), the journaled store alone, the memory
store alone (the one copy every plugin pays), and the FTL's mapping alone.
Each is the best of --rounds passes, each pass after a flush (an empty write
cache); the differences between lines are what each layer adds.  No nbdkit:
this is the model's share of a request, which scripts/bench_nbd.py measures
end to end.

    .venv/bin/python scripts/bench_layers.py [--writes 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from blockemu.config import load_config  # noqa: E402
from blockemu.devices.ufs.device import UfsDevice  # noqa: E402
from blockemu.experiments.report import format_table  # noqa: E402
from blockemu.layers.write_cache import JournaledStore, PowerCutLayer  # noqa: E402
from blockemu.runtime import DeviceRuntime  # noqa: E402

MIB = 1024 * 1024
PAGE = 4096


def best_us(flush: Callable[[], None], call: Callable[..., Any], offsets: list[int], rounds: int,
            *extra: Any) -> float:
    page = memoryview(bytes(PAGE))
    best = float("inf")
    for _ in range(rounds):
        # Every pass starts with an empty write cache, so that each pays the
        # same pre-image copies whichever layer it enters at.
        flush()
        start = time.perf_counter()
        for offset in offsets:
            call(offset, page, *extra)
        best = min(best, (time.perf_counter() - start) / len(offsets) * 1e6)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=100_000, help="writes per pass (default 100000)")
    parser.add_argument("--rounds", type=int, default=3, help="passes per layer; the best is kept (default 3)")
    args = parser.parse_args()
    if args.writes <= 0 or args.rounds <= 0:
        sys.exit("bench_layers: --writes and --rounds must be > 0")
    config = load_config(REPO / "configs" / "ufs41.toml", ["device.capacity_mib=1024", "timing.mode=virtual"])
    runtime = DeviceRuntime(config)
    print("bench_layers: filling 1 GiB ...", file=sys.stderr, flush=True)
    fill = memoryview(bytes(MIB))
    for offset in range(0, 1024 * MIB, MIB):
        runtime.write(offset, fill)
    runtime.flush()
    rng = random.Random(1)
    offsets = [rng.randrange(256 * MIB // PAGE) * PAGE for _ in range(args.writes)]
    powercut = runtime.stack.get(PowerCutLayer)
    ufs = runtime.stack.get(UfsDevice)
    journal = ufs.store
    assert isinstance(journal, JournaledStore)
    memory = journal.inner
    ftl = ufs.ftl
    layers: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = [
        ("DeviceRuntime.write", runtime.write, ()),
        ("PowerCutLayer.write", powercut.write, (False, 0)),
        ("UfsDevice.write on JournaledStore", ufs.write, (False, 0)),
        ("JournaledStore.write", journal.write, ()),
        ("MemoryStore.write", memory.write, ()),
        ("Ftl.program_one", lambda offset, _page: ftl.program_one(offset // PAGE), ()),
    ]
    rows = []
    for name, call, extra in layers:
        print(f"bench_layers: {name} ...", file=sys.stderr, flush=True)
        cost_us = best_us(runtime.flush, call, offsets, args.rounds, *extra)
        rows.append({"layer": name, "us_per_write": f"{cost_us:.2f}"})
    print(format_table(rows, ["layer", "us_per_write"]))
    runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
