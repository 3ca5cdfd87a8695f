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
  1 MiB sequential writes, memory vs file, µs per request.

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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from blockemu.config import load_config  # noqa: E402
from blockemu.runtime import DeviceRuntime  # noqa: E402
from blockemu.write_cache import PowerCutLayer  # noqa: E402

MIB = 1024 * 1024
SEED = 1
AGING = ["aging.fragmentation_percent=50"]


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
    layer = runtime.device
    assert isinstance(layer, PowerCutLayer) and layer.durable is not None
    layer.durable.close()  # no commit: what SIGKILL leaves behind


def commit_ms(runtime: DeviceRuntime, flushes: int) -> float:
    rng = random.Random(SEED)
    times = []
    for _ in range(flushes):
        runtime.write(rng.randrange(2048) * 4096, memoryview(b"c" * 4096))
        times.append(timed(runtime.flush))
    return statistics.median(times) * 1000


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
        started = time.perf_counter()
        memory = runtime_for(None)
        rows.append(("start-up, memory store (aging included)", f"{time.perf_counter() - started:.2f} s"))
        (base / "a").mkdir()
        started = time.perf_counter()
        runtime = runtime_for(base / "a")
        rows.append(("start-up, new file store (aging + first checkpoint)", f"{time.perf_counter() - started:.2f} s"))
        rows.append(("checkpoint size", f"{(base / 'a' / 'state').stat().st_size / MIB:.1f} MiB"))
        rows.append(("commit (4 KiB write + flush), fsync = true, median",
                     f"{commit_ms(runtime, args.flushes):.1f} ms"))
        written = 256 * MIB
        for at in range(0, written, 32 * MIB):
            runtime.write(at, memoryview(random.Random(at).randbytes(32 * MIB)))
            memory.write(at, memoryview(random.Random(at).randbytes(32 * MIB)))
        runtime.flush()
        rng = random.Random(SEED)
        picks = [rng.randrange(written // 4096) * 4096 for _ in range(20_000)]
        rows.append(("4 KiB random overwrite, memory",
                     f"{per_request_us(memory, 20_000, 4096, picks.__getitem__):.1f} µs"))
        rows.append(("4 KiB random overwrite, file (pre-image logged)",
                     f"{per_request_us(runtime, 20_000, 4096, picks.__getitem__):.1f} µs"))
        fresh = 1024 * MIB
        rows.append(("1 MiB sequential write to unwritten space, memory",
                     f"{per_request_us(memory, 256, MIB, lambda i: fresh + i * MIB):.0f} µs"))
        rows.append(("1 MiB sequential write to unwritten space, file",
                     f"{per_request_us(runtime, 256, MIB, lambda i: fresh + i * MIB):.0f} µs"))
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
        (base / "b").mkdir()
        quick = runtime_for(base / "b", fsync=False)
        rows.append(("commit (4 KiB write + flush), fsync = false, median",
                     f"{commit_ms(quick, args.flushes):.1f} ms"))
        quick.close()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
