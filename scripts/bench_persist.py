#!/usr/bin/env python3
"""What persistence costs on the 8 GiB UFS config (configs/ufs41.toml), in process, no NBD.

Measures, with ``[store] backend = "file"`` in a fresh directory (under
--dir, default the system's temporary directory):

* start-up of a new store (the initial checkpoint included) and the size of
  a checkpoint, with the whole logical space mapped (aged 50 %, so the map
  holds real values);
* a commit: one 4 KiB write then a flush, which writes one checkpoint
  (median of --flushes), with fsync on and off;
* a restart after a kill with 64 MiB of overwrites not committed (undo
  replay, checkpoint load, map restore);
* 4 KiB random overwrites of written data (each logs a pre-image) and
  1 MiB writes to unwritten space, memory vs file, µs per request (medians
  of interleaved rounds: the machine may be shared).

    .venv/bin/python scripts/bench_persist.py [--flushes 30] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from blockemu.config import load_config  # noqa: E402
from blockemu.experiments.report import format_table  # noqa: E402
from blockemu.layers.write_cache import PowerCutLayer  # noqa: E402
from blockemu.runtime import DeviceRuntime  # noqa: E402

MIB = 1024 * 1024
SEED = 1
AGING = ["aging.fragmentation_percent=50"]
ROUNDS = 5


def runtime_for(directory: Path | None, fsync: bool = True) -> DeviceRuntime:
    overrides = list(AGING)
    if directory is not None:
        overrides += ["store.backend=file", f"store.path={directory}", f"store.fsync={'true' if fsync else 'false'}"]
    return DeviceRuntime(load_config(REPO / "configs" / "ufs41.toml", overrides))


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def kill(runtime: DeviceRuntime) -> None:
    layer = runtime.stack.get(PowerCutLayer)
    assert layer.durable is not None
    layer.durable.close()  # no commit: what SIGKILL leaves behind


def commit_ms(runtimes: list[DeviceRuntime], flushes: int) -> list[float]:
    """Median ms of a 4 KiB write's flush on each runtime, taking turns."""
    rng = random.Random(SEED)
    times: list[list[float]] = [[] for _ in runtimes]
    for _ in range(flushes):
        offset = rng.randrange(2048) * 4096
        for runtime, spent in zip(runtimes, times, strict=True):
            runtime.write(offset, memoryview(b"c" * 4096))
            spent.append(timed(runtime.flush))
    return [statistics.median(spent) * 1000 for spent in times]


def sequential(start: int, i: int) -> int:
    return start + i * MIB


def per_request_us(runtime: DeviceRuntime, count: int, size: int, offsets: Callable[[int], int]) -> float:
    data = memoryview(random.Random(SEED).randbytes(size))
    started = time.perf_counter()
    for i in range(count):
        runtime.write(offsets(i), data)
    elapsed = time.perf_counter() - started
    runtime.flush()
    return elapsed / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flushes", type=int, default=30)
    parser.add_argument("--dir", default=None, help="where to create the store directories")
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        (base / "a").mkdir()
        started = time.perf_counter()
        runtime = runtime_for(base / "a")
        rows.append(("start-up, new file store (aging + first checkpoint)", f"{time.perf_counter() - started:.2f} s"))
        started = time.perf_counter()
        memory = runtime_for(None)
        rows.append(("start-up, memory store (aging)", f"{time.perf_counter() - started:.2f} s"))
        rows.append(("checkpoint size", f"{(base / 'a' / 'state').stat().st_size / MIB:.1f} MiB"))
        (base / "b").mkdir()
        quick = runtime_for(base / "b", fsync=False)
        with_fsync, without = commit_ms([runtime, quick], args.flushes)
        quick.close()
        rows.append(("commit (4 KiB write + flush), fsync = true, median", f"{with_fsync:.1f} ms"))
        rows.append(("commit (4 KiB write + flush), fsync = false, median", f"{without:.1f} ms"))
        written = 256 * MIB
        for at in range(0, written, 32 * MIB):
            runtime.write(at, memoryview(random.Random(at).randbytes(32 * MIB)))
            memory.write(at, memoryview(random.Random(at).randbytes(32 * MIB)))
        runtime.flush()
        rng = random.Random(SEED)
        # The two stores take turns, ROUNDS times: this machine is shared, medians of interleaved rounds compare.
        small: dict[str, list[float]] = {"memory": [], "file": []}
        large: dict[str, list[float]] = {"memory": [], "file": []}
        fresh = 1024 * MIB
        for round_ in range(ROUNDS):
            picks = [rng.randrange(written // 4096) * 4096 for _ in range(4000)]
            for name, target in (("memory", memory), ("file", runtime)):
                target.flush()  # every overwrite below is the first since a commit
                small[name].append(per_request_us(target, len(picks), 4096, picks.__getitem__))
                start = fresh + round_ * 64 * MIB
                large[name].append(per_request_us(target, 64, MIB, partial(sequential, start)))
        for name in ("memory", "file"):
            rows.append((f"4 KiB random overwrite after a commit, {name}, median",
                         f"{statistics.median(small[name]):.1f} µs"))
        for name in ("memory", "file"):
            rows.append((f"1 MiB write to unwritten space, {name}, median",
                         f"{statistics.median(large[name]):.0f} µs"))
        for at in range(0, 64 * MIB, MIB):  # 64 MiB of overwrites, never committed
            runtime.write(at, memoryview(b"u" * MIB))
        undo = runtime.describe()["store"]["undo_bytes"]
        kill(runtime)
        started = time.perf_counter()
        again = runtime_for(base / "a")
        rows.append((f"restart after a kill, {undo / MIB:.0f} MiB to undo (aging + rollback + load)",
                     f"{time.perf_counter() - started:.2f} s"))
        again.close()
        memory.close()
    print(format_table([{"measured": name, "value": value} for name, value in rows], ["measured", "value"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
