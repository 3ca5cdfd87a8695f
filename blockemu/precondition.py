"""Preconditioning: write the device before timing starts, laid out as [aging] says.

A real device was full of data before a trace was captured; an empty model
answers reads of never-written sectors from its map alone, at no media cost
(issue: an Android app trace replayed with read p50 8 µs, where a UFS 4.1
NAND read takes ≥ 50 µs).  SSD simulators precondition for this (MQSim
fills the device to steady state before timing).

Modes: ``full`` writes every logical sector; ``trace`` (replay only) writes
every sector the trace reads before it writes it.  The sectors are
programmed into the UFS FTL directly (as internal writes, no modeled time):
sequentially, then, when ``[aging] fragmentation_percent`` > 0, scattered by
the device's own aging (:meth:`UfsDevice.age` over the written sectors).
Sectors already written (a restored device, or [aging] at start-up, which
writes its span) are left as they are.  Only the UFS model has a physical
layout to precondition; other devices are refused with the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from blockemu.config import Config
from blockemu.devices.base import Device
from blockemu.devices.ufs.device import UfsDevice
from blockemu.devices.ufs.ftl import SECTOR

MODES = ("none", "full", "trace")
# Trace op codes that put data at a sector (blockemu.trace.OP_CODES: write, trim, zero) or read it.
_READ, _WRITES = 0, (1, 3, 4)


class PreconditionError(ValueError):
    """Preconditioning asked of a device it does not apply to."""


@dataclass(frozen=True)
class PreconditionReport:
    mode: str
    bytes_written: int
    seconds: float
    fragmentation_percent: float | None  # reached, as GET /device's fragmentation reports it
    target_fragmentation_percent: float

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "bytes_written": self.bytes_written, "seconds": round(self.seconds, 3),
                "fragmentation_percent": self.fragmentation_percent,
                "target_fragmentation_percent": self.target_fragmentation_percent}

    def line(self) -> str:
        reached = "n/a" if self.fragmentation_percent is None else f"{self.fragmentation_percent:.1f}%"
        return (f"precondition {self.mode}: wrote {self.bytes_written / 2**20:.1f} MiB in {self.seconds:.2f} s, "
                f"fragmentation {reached} (asked {self.target_fragmentation_percent:g}%)")


def read_before_write_sectors(records: np.ndarray, logical_sectors: int, sector: int = SECTOR) -> np.ndarray:
    """Which logical sectors the trace's first access to is a read: a bool mask."""
    ops = records["op"]
    touching = (ops == _READ) | np.isin(ops, _WRITES)
    touching &= records["length"] > 0
    offsets = records["offset"][touching].astype(np.int64)
    lengths = records["length"][touching].astype(np.int64)
    reads = ops[touching] == _READ
    first = offsets // sector
    count = (offsets + lengths - 1) // sector - first + 1
    sectors = np.repeat(first, count) + (np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count))
    is_read = np.repeat(reads, count)
    # np.unique's index is each sector's first occurrence, in trace order.
    unique, where = np.unique(sectors, return_index=True)
    mask = np.zeros(logical_sectors, dtype=bool)
    read_first = unique[is_read[where]]
    mask[read_first[read_first < logical_sectors]] = True
    return mask


def precondition(device: Device, config: Config, mode: str, records: np.ndarray | None = None) -> PreconditionReport:
    """Write ``device`` as ``mode`` says, before any request is timed; report what was done."""
    if mode not in MODES:
        raise PreconditionError(f"precondition must be one of {', '.join(MODES)}, got {mode!r}")
    target = config.aging.fragmentation_percent
    if mode == "none":
        return PreconditionReport(mode, 0, 0.0, None, target)
    if not isinstance(device, UfsDevice):
        raise PreconditionError(f"precondition {mode} applies to ufs devices (their FTL layout); a "
                                f"{config.device.type} device has none to fill: use --precondition none")
    started = time.perf_counter()
    ftl = device.ftl
    if mode == "full":
        wanted = np.ones(ftl.logical_sectors, dtype=bool)
    else:
        if records is None:
            raise PreconditionError("precondition trace needs a trace")
        wanted = read_before_write_sectors(records, ftl.logical_sectors)
    todo = np.flatnonzero(wanted & (ftl.l2p < 0))
    if len(todo):
        ftl.program(todo, internal=True)
        if target > 0:
            # Aging rewrites what is mapped: with [aging] at start-up, that is its span plus these sectors.
            aging = config.aging
            device.age(target, aging.fragment_kib, aging.seed, 100.0, mapped_only=True)
    reached = float(device.fragmentation()["fragmented_percent"])
    return PreconditionReport(mode, len(todo) * SECTOR, time.perf_counter() - started, reached, target)
