"""The HID study's model-only path and its counters: where a copy's device time goes.

``blockemu experiment hid --model-only`` needs no VM: the UFS model is driven
in-process, closed loop in virtual time.  The source file is written
sequentially at LBA 0, then for each fragmentation level: aging to the level,
background work drained (HID, WriteBooster folding), a timed copy, HID
(``defrag_trigger``), the same copy again.  A copy reads the source and writes
the destination in ``COPY_REQUEST_KIB`` requests, one read then one write, as
``cp`` does through the page cache at queue depth one; the destination is
trimmed afterwards (F2FS discards a deleted file).

The same counters are read from the VM path's replays (:func:`copy_counters`):
NAND tRs, L2P misses and map reads, commands.  Together they split a speedup
into its mechanisms: fewer NAND page reads (contiguous data shares tRs), fewer
map misses (contiguous data needs fewer extent entries), and the command count
(the same before and after: HID moves data inside the device, the host's
requests do not change).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from blockemu.config import Config
from blockemu.devices.ufs.device import UfsDevice
from blockemu.store.null import NullStore

MIB = 1024 * 1024
# The model-only copy's request size: a stated assumption (the VM path replays
# the kernel's own requests instead).
COPY_REQUEST_KIB = 512
# SRAM sizes of the sweep, KiB (0: unlimited), around ConZone's 1 MiB for UFS
# 4.0: from four map pages to four times ConZone's size.
SWEEP_SRAM_KIB = (16, 64, 256, 1024, 4096, 0)
# Untimed copies before the first timed one (see model_levels).
WARMUP_COPIES = 2


def copy_counters(dev: UfsDevice) -> dict[str, int]:
    """Cumulative counters a copy's cost is made of (subtract two readings)."""
    l2p = dev.l2p
    return {
        "nand_reads": dev.read_tr_total,
        "map_misses": l2p.misses if l2p is not None else 0,
        "map_hits": l2p.hits if l2p is not None else 0,
        "map_reads": l2p.map_reads if l2p is not None else 0,
        "map_writes": l2p.map_writes if l2p is not None else 0,
        "tlc_direct_sectors": dev.wb.tlc_direct_sectors if dev.wb is not None else 0,
    }


def counters_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in after}


def miss_rate(delta: dict[str, int]) -> float:
    lookups = delta["map_misses"] + delta["map_hits"]
    return delta["map_misses"] / lookups if lookups else 0.0


def _drain(dev: UfsDevice, now: int) -> int:
    """Run background work (HID, folding) to the end; return the time it ends."""
    while (nxt := dev.background_step(now)) is not None:
        now = max(now, nxt)
    return max(now, dev.dies.idle_at())


def _copy(dev: UfsDevice, size_bytes: int, now: int) -> tuple[int, int, int]:
    """Closed-loop copy of [0, size) to [size, 2 size); return (end ns, commands, ns spent reading)."""
    step = COPY_REQUEST_KIB * 1024
    buf = memoryview(bytearray(step))
    commands = 0
    reading = 0
    for offset in range(0, size_bytes, step):
        length = min(step, size_bytes - offset)
        done = dev.read(offset, buf[:length], now)
        reading += done - now
        now = dev.write(size_bytes + offset, buf[:length], False, done)
        commands += 2
    return now, commands, reading


def _timed_copy(dev: UfsDevice, size_bytes: int, now: int) -> tuple[dict[str, Any], int]:
    now = _drain(dev, now)
    before = copy_counters(dev)
    end, commands, reading = _copy(dev, size_bytes, now)
    delta = counters_delta(copy_counters(dev), before)
    dev.trim(size_bytes, size_bytes, end)
    return {"modeled_s": (end - now) / 1e9, "read_mbps": size_bytes / reading * 1e3, "commands": commands, **delta,
            "miss_rate": miss_rate(delta)}, end


def model_levels(config: Config, size_mib: int, levels: list[float], fragment_kib: int, seed: int,
                 say: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """Before/after-HID copies per level on one device, in virtual time."""
    dev = UfsDevice(config, NullStore(config.capacity_bytes))  # time and state only, no bytes
    size = size_mib * MIB
    rng = np.random.default_rng(seed)
    chunk = rng.integers(0, 256, MIB, dtype=np.uint8).tobytes()
    now = 0
    for offset in range(0, size, MIB):
        now = dev.write(offset, memoryview(chunk), False, now)
    # Untimed copies first, as the VM path does: the log then wraps and garbage
    # collection runs in its steady state during every timed copy, instead of
    # only in the later ones.
    for _ in range(WARMUP_COPIES):
        _, now = _timed_copy(dev, size, now)
    rows = []
    for level in levels:
        say(f"model-only: level {level:g}%")
        dev.age(level, fragment_kib, seed)
        frag_before = dev.fragmentation()["fragmented_percent"]
        before, now = _timed_copy(dev, size, now)
        dev.hid.write("defrag_trigger", "enable")
        hid_start = now
        now = _drain(dev, now)
        frag_after = dev.fragmentation()["fragmented_percent"]
        after, now = _timed_copy(dev, size, now)
        rows.append({
            "level_percent": level, "fragmented_percent_before": frag_before,
            "fragmented_percent_after": frag_after, "hid_modeled_s": (now - hid_start) / 1e9,
            **{f"{k}_before": v for k, v in before.items()}, **{f"{k}_after": v for k, v in after.items()},
            "modeled_speedup": before["modeled_s"] / after["modeled_s"],
        })
    return rows


def sram_sweep(config: Config, size_mib: int, level: float, fragment_kib: int, seed: int,
               sizes_kib: tuple[int, ...] = SWEEP_SRAM_KIB,
               say: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """The copy's speedup at one level against the L2P cache's SRAM size."""
    rows = []
    for kib in sizes_kib:
        say(f"model-only SRAM sweep: {f'{kib} KiB' if kib else 'unlimited'}")
        swept = replace(config, ufs=replace(config.ufs, l2p_cache_kib=kib))
        (row,) = model_levels(swept, size_mib, [level], fragment_kib, seed)
        rows.append({"l2p_cache_kib": kib, "l2p_mode": config.ufs.l2p_mode if kib else "unlimited", **row})
    return rows
