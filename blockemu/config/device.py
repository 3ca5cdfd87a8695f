"""The sections every device has: [device], [store], [timing] and [write_cache]."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from blockemu.config.base import choice, non_negative, positive

DEVICE_TYPES = ("ufs", "zns", "zns_ftl", "zram")
# x86-64 user space is 2**47 bytes; the memory store maps the whole device at once.
MAX_CAPACITY_MIB = 2**47 // 2**20
STORE_BACKENDS = ("memory", "file")
TIMING_MODES = ("virtual", "realtime")


@dataclass(frozen=True)
class DeviceSection:
    # Which model serves the data; each type has its own section (ufs.py, zns.py, zram.py).
    type: str = "ufs"
    # Logical capacity exported to the host.
    capacity_mib: int = 8192
    # Shown in metrics labels and the control API.
    name: str = "ufs0"

    def check(self) -> dict[str, str | None]:
        return {
            "type": choice(self.type, DEVICE_TYPES),
            "capacity_mib": positive(self.capacity_mib) or (
                None if self.capacity_mib <= MAX_CAPACITY_MIB else f"must be <= {MAX_CAPACITY_MIB} (128 TiB, "
                "as much as a process can map)"),
            "name": None if self.name.isidentifier() else "must be letters, digits and _",
        }


@dataclass(frozen=True)
class StoreSection:
    """Where the bytes (and, for "file", the device's state) live; blockemu/store/."""

    # "memory": a sparse anonymous mapping, gone when the server stops.
    # "file": data and device state persist in ``path`` (docs/persistence.md).
    backend: str = "memory"
    # backend = "file": an existing, writable directory for this one device;
    # relative paths are taken from the directory blockemu serve runs in.
    path: str = ""
    # backend = "file": fsync at every commit, so that what a flush
    # acknowledged survives a host crash too; false keeps only what a crash
    # of the server (kill -9) needs, and commits cost less.
    fsync: bool = True

    def check(self) -> dict[str, str | None]:
        problems: dict[str, str | None] = {"backend": choice(self.backend, STORE_BACKENDS)}
        if self.backend == "file":
            problems["path"] = _store_directory(self.path)
        elif self.path:
            problems["path"] = 'is only used with backend = "file"; remove it or set backend = "file"'
        problems["fsync"] = None
        return problems


def _store_directory(path: str) -> str | None:
    allowed = "must be an existing, writable directory"
    if not path:
        return f'is required when backend = "file": it {allowed}'
    if "\0" in path:
        return f"{allowed} (no NUL characters)"
    where = Path(path)
    if not where.exists():
        return f"does not exist; it {allowed} (create it first)"
    if not where.is_dir():
        return f"is not a directory; it {allowed}"
    if not os.access(where, os.W_OK | os.X_OK):
        return f"is not writable by this user; it {allowed}"
    return None


@dataclass(frozen=True)
class TimingSection:
    # "virtual": requests complete at once, modeled time is only accounted.
    # "realtime": each request completes at its modeled time (× time_scale).
    mode: str = "virtual"
    # Real seconds per modeled second in realtime mode; > 1 slows the device
    # down so that a slow host (or a VM) can still show modeled behaviour.
    time_scale: float = 1.0

    def check(self) -> dict[str, str | None]:
        return {"mode": choice(self.mode, TIMING_MODES), "time_scale": positive(self.time_scale)}

@dataclass(frozen=True)
class WriteCacheSection:
    """The volatile write cache that power-cut emulation can lose (blockemu/layers/write_cache.py)."""

    # Most bytes written since the last flush that a power cut may lose;
    # when more are pending the cache is written back, as by a flush.  Real
    # caches range from a few MiB of controller SRAM to DRAM of hundreds of
    # MiB; 64 MiB bounds the pre-images kept in memory.  0 = write-through.
    size_mib: int = 64

    def check(self) -> dict[str, str | None]:
        return {"size_mib": non_negative(self.size_mib)}


PRECONDITION_MODES = ("none", "full")


@dataclass(frozen=True)
class PreconditionSection:
    """Write the device before it serves, so that reads find data as on a used device (blockemu/precondition.py).

    A real device is full of data before any trace starts; an empty model
    answers reads of never-written sectors from the map alone (no NAND
    read).  SSD simulators precondition for this (MQSim fills the device to
    steady state before timing).  The data is laid out as [aging] says.
    ``blockemu replay --precondition`` also has ``trace`` (what the trace
    reads before writing).
    """

    # none: start empty; full: every logical sector written before serving.
    mode: str = "none"

    def check(self) -> dict[str, str | None]:
        return {"mode": choice(self.mode, PRECONDITION_MODES)}

