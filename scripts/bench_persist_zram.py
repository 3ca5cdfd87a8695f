#!/usr/bin/env python3
"""What persistence costs for zram (configs/zram.toml, 1 GiB disksize), in process, no NBD.

zram's pages live compressed in the model, so a commit writes a checkpoint of
all of them (blockemu/layers/checkpoint.py, CheckpointLayer).  With WRITTEN_MIB of
a swap-like page mix stored (codecs.calibration_pages: text, small integers,
pointers, a quarter incompressible; --compressible-only leaves that quarter
out), this measures, with ``[store] backend =
"file"`` in a fresh directory (under --dir, default the system's temporary
directory):

* the checkpoint: its size, and how much of it is compressed pages;
* a commit: one 4 KiB write then a flush (median of --flushes), fsync on and
  off taking turns, and the part of it spent taking the snapshot in memory;
* filling the device, file store vs memory store (the data path itself
  writes nothing to disk: it only notes that a commit is due);
* a restart after a kill: the serve pre-check (check_config_store) and
  opening the store with the model restored.

    .venv/bin/python scripts/bench_persist_zram.py [--flushes 20] [--compressible-only] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from blockemu.config import load_config  # noqa: E402
from blockemu.devices.zram.codecs import PAGE, Codec, calibration_pages  # noqa: E402
from blockemu.devices.zram.device import ZramDevice  # noqa: E402
from blockemu.experiments.report import format_table  # noqa: E402
from blockemu.layers.checkpoint import CheckpointLayer, device_state  # noqa: E402
from blockemu.runtime import DeviceRuntime  # noqa: E402
from blockemu.stack import check_config_store  # noqa: E402

MIB = 1024 * 1024
SEED = 1
WRITTEN_MIB = 256
WRITE_MIB = 1  # per request while filling
UNIQUE_PAGES = 4096  # the mix repeats after this many pages; each page is compressed on its own anyway
# Pinned costs: the modeled times do not matter here, and calibration would add seconds to start-up.
COSTS = ["zram.cost_us=lz4=4/1.4, zstd=14/5"]


def runtime_for(directory: Path | None, fsync: bool = True) -> DeviceRuntime:
    overrides = list(COSTS)
    if directory is not None:
        overrides += ["store.backend=file", f"store.path={directory}", f"store.fsync={'true' if fsync else 'false'}"]
    return DeviceRuntime(load_config(REPO / "configs" / "zram.toml", overrides))


def layer_of(runtime: DeviceRuntime) -> CheckpointLayer:
    return runtime.stack.get(CheckpointLayer)


def fill(runtimes: dict[str, DeviceRuntime], pages: list[bytes]) -> dict[str, float]:
    """Seconds each runtime takes to write WRITTEN_MIB of the mix in WRITE_MIB requests (no flush).

    The runtimes take turns request by request: the machine may be shared.
    """
    per_request = WRITE_MIB * MIB // PAGE
    spent = dict.fromkeys(runtimes, 0.0)
    for request in range(WRITTEN_MIB // WRITE_MIB):
        first = request * per_request
        data = memoryview(b"".join(pages[(first + i) % len(pages)] for i in range(per_request)))
        for name, runtime in runtimes.items():
            started = time.perf_counter()
            runtime.write(request * WRITE_MIB * MIB, data)
            spent[name] += time.perf_counter() - started
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flushes", type=int, default=20)
    parser.add_argument("--dir", default=None, help="where to create the store directory")
    parser.add_argument("--compressible-only", action="store_true",
                        help="leave the incompressible quarter of the page mix out")
    args = parser.parse_args()
    pages = calibration_pages(UNIQUE_PAGES, seed=SEED)
    if args.compressible_only:
        pages = [page for i, page in enumerate(pages) if i % 4 != 3]  # calibration_pages' noise is every 4th
    lz4 = Codec("lz4")
    ratio = len(pages) * PAGE / sum(min(len(lz4.compress(p)), PAGE) for p in pages)
    rows: list[tuple[str, str]] = [("page mix, lz4 ratio", f"{ratio:.2f}")]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        store = Path(tmp)
        memory, runtime = runtime_for(None), runtime_for(store)
        filled = fill({"memory": memory, "file": runtime}, pages)
        for name, seconds in filled.items():
            rows.append((f"fill {WRITTEN_MIB} MiB in {WRITE_MIB} MiB writes, {name} store",
                         f"{seconds:.2f} s ({WRITTEN_MIB / seconds:.0f} MiB/s)"))
        memory.close()
        started = time.perf_counter()
        runtime.flush()
        rows.append((f"first commit of {WRITTEN_MIB} MiB written (fsync = true)",
                     f"{time.perf_counter() - started:.2f} s"))
        layer = layer_of(runtime)
        stat = runtime.describe()["zram"]["mm_stat"]
        objects = device_state(layer.next)["zram_objects"].nbytes
        size = (store / "state").stat().st_size
        rows.append(("checkpoint size", f"{size / MIB:.1f} MiB (compressed pages {objects / MIB:.1f} MiB, "
                                        f"compr_data_size {stat['compr_data_size'] / MIB:.1f} MiB, "
                                        f"{len(runtime.stack.get(ZramDevice).entries)} slots)"))
        rng = random.Random(SEED)
        commits: dict[bool, list[float]] = {True: [], False: []}
        snapshots: list[float] = []
        for _ in range(args.flushes):
            for fsync in (True, False):  # taking turns: the machine may be shared
                layer.durable.fsync = fsync
                runtime.write(rng.randrange(WRITTEN_MIB * MIB // PAGE) * PAGE, memoryview(pages[rng.randrange(64)]))
                started = time.perf_counter()
                runtime.flush()
                commits[fsync].append(time.perf_counter() - started)
            started = time.perf_counter()
            device_state(layer.next)
            snapshots.append(time.perf_counter() - started)
        for fsync in (True, False):
            rows.append((f"commit (4 KiB write + flush), fsync = {str(fsync).lower()}, median",
                         f"{statistics.median(commits[fsync]) * 1000:.0f} ms"))
        rows.append(("  of which the snapshot in memory, median", f"{statistics.median(snapshots) * 1000:.0f} ms"))
        runtime.write(0, memoryview(pages[1]))  # never committed
        layer.durable.close()  # a kill: no commit
        config = load_config(REPO / "configs" / "zram.toml",
                             [*COSTS, "store.backend=file", f"store.path={store}"])
        started = time.perf_counter()
        check_config_store(config)
        rows.append(("restart: serve's pre-check of the store", f"{time.perf_counter() - started:.2f} s"))
        started = time.perf_counter()
        again = runtime_for(store)
        rows.append(("restart: open the store and restore the model", f"{time.perf_counter() - started:.2f} s"))
        assert again.describe()["zram"]["mm_stat"]["orig_data_size"] == WRITTEN_MIB * MIB
        again.close()
    print(format_table([{"measured": name, "value": value} for name, value in rows], ["measured", "value"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
