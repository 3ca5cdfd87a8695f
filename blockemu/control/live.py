"""What the live page (``GET /``, blockemu/control/web/) polls: small JSON views of a served device.

Routes, all ``GET`` and all declared in the route table like any other:

- ``/api/v1/live``: which views this device has and how often the page polls;
- ``/api/v1/live/sample``: cumulative counters now (requests, bytes and the
  modeled-latency histogram per operation, queue depth, modeled time) and
  the device kind's own numbers (HID and fragmentation, the L2P mapping
  cache and WriteBooster, zone conditions and
  GC, zram's mm_stat and pages per algorithm, the power layer's frequency,
  governor decisions and energy).  The page takes differences between two
  samples for rates and latency percentiles, so the server keeps no history;
- ``/api/v1/live/fragmentation-map`` (UFS): a logical range against its
  physical placement, each sector with the length of the physical run it
  lies in;
- ``/api/v1/live/zram`` (zram): stored pages and bytes per algorithm, same,
  huge and idle pages.

Each view copies what it needs under the device lock and does the rest
without it, so an open page never stalls the data path for long: the
counters are a few dozen integers, the fragmentation map a slice of the
L2P table, the zram census a list of the page entries.  The one costly
number, UFS's fragmented bytes (a pass over the whole L2P table, tens of
milliseconds on an 8 GiB device), is recomputed only after
:data:`FRAGMENTATION_SPACING` times its own last cost has passed, so that it
holds the lock at most 1% of the time (every second or so on a small device,
every few seconds on a large one).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from blockemu.api import API_PREFIX, Route
from blockemu.devices.ufs.device import UfsDevice
from blockemu.devices.ufs.ftl import SECTOR
from blockemu.devices.zns.device import ZnsDevice
from blockemu.devices.zns_log.device import ZnsFtlDevice
from blockemu.devices.zram.core import COMPRESSED, KIND_NAMES, SAME
from blockemu.devices.zram.device import ZramDevice
from blockemu.layers.power import PowerModel
from blockemu.runtime import LATENCY_BUCKETS, DeviceRuntime

LIVE = f"{API_PREFIX}/live"
# How often the page asks for a sample, and for the heavier maps (ms).
POLL_MS = 1000
MAP_POLL_MS = 2000
# UFS's fragmented bytes cost a pass over the whole L2P table: recomputed after this many times its
# last cost (lock held at most 1/100 of the time), and not more often than each sample.
FRAGMENTATION_SPACING = 100
FRAGMENTATION_MIN_S = POLL_MS / 1000 / 2
# The fragmentation map shows this many sectors (32 MiB of 4 KiB sectors): enough for a few HID
# windows (512 KiB by default), small enough to send every two seconds.
MAP_SECTORS = 8192
# Governor decisions (frequency transitions) sent with each sample: the most recent ones.
DECISIONS_KEPT = 64


class LiveViews:
    """The live page's JSON views of one served device (a :class:`DeviceRuntime`)."""

    def __init__(self, runtime: DeviceRuntime, clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self._wall = clock
        parts = runtime.stack.parts
        self.ufs = next((p for p in parts if isinstance(p, UfsDevice)), None)
        self.zns = next((p for p in parts if isinstance(p, ZnsDevice | ZnsFtlDevice)), None)
        self.zram = next((p for p in parts if isinstance(p, ZramDevice)), None)
        self.power = next((p for p in parts if isinstance(p, PowerModel)), None)
        self._fragmentation: dict[str, Any] | None = None
        self._fragmentation_next = 0.0
        self._fragmentation_lock = threading.Lock()

    @property
    def views(self) -> list[str]:
        """The page's panels for this device, in the order it shows them."""
        views = ["io"]
        if self.ufs is not None:
            views.append("ufs")
        if self.zns is not None:
            views.append("zones")
        if isinstance(self.zns, ZnsFtlDevice):
            views.append("gc")
        if self.zram is not None:
            views.append("zram")
        if self.power is not None:
            views.append("power")
        return views

    def routes(self) -> list[Route]:
        routes = [
            Route("GET", LIVE, self.describe, "What the live page shows for this device", errors=()),
            Route("GET", f"{LIVE}/sample", self.sample,
                  "Counters now, for the live page's timelines (cumulative; the page takes differences)",
                  errors=()),
        ]
        if self.ufs is not None:
            routes.append(Route("GET", f"{LIVE}/fragmentation-map", self.fragmentation_map,
                                "A logical range against its physical placement, with run lengths", errors=()))
        if self.zram is not None:
            routes.append(Route("GET", f"{LIVE}/zram", self.zram_census,
                                "Stored pages and bytes per algorithm; same, huge and idle pages", errors=()))
        return routes

    # ------------------------------------------------------------------ views
    def describe(self) -> dict[str, Any]:
        device = self.runtime.device
        return {
            "name": device.name,
            "kind": device.kind,
            "size_bytes": device.size_bytes,
            "views": self.views,
            "poll_ms": POLL_MS,
            "map_poll_ms": MAP_POLL_MS,
            "latency_buckets_s": list(LATENCY_BUCKETS),
        }

    def sample(self) -> dict[str, Any]:
        runtime = self.runtime
        with runtime.lock:
            stats = runtime.stats
            ops = {op: {"requests": s.requests, "bytes": s.bytes, "errors": s.errors,
                        "latency_counts": list(s.latency_counts)} for op, s in stats.ops.items()}
            sample: dict[str, Any] = {
                "modeled_s": runtime.clock.now_ns() / 1e9,
                "queue_depth": stats.queue_depth,
                "queue_depth_peak": stats.queue_depth_peak,
                "ops": ops,
            }
            if self.ufs is not None:
                ftl = self.ufs.ftl
                sample["ufs"] = {
                    # Bumped on every mapping change: the page fetches the map again only when it moved.
                    "layout_generation": ftl.generation,
                    "hid": self.ufs.hid.snapshot(),
                    "free_superblocks": ftl.free_superblocks,
                    "gc_bytes_relocated": ftl.gc_sectors_relocated * SECTOR,
                    "write_amplification": round(self.ufs.write_amplification, 4),
                    # The mapping cache's counters and occupancy, and the WriteBooster's sysfs attributes
                    # with its byte counters: both a few integers.
                    "l2p": self.ufs.l2p_snapshot(),
                    "writebooster": self.ufs.wb.snapshot() if self.ufs.wb is not None else {"present": False},
                }
            if self.zns is not None:
                described = self.zns.describe()
                sample["zns"] = {k: described["zns"][k] for k in (
                    "open_zones", "active_zones", "conditions", "zone_resets", "zone_finishes", "appends",
                    "copy_commands", "copied_bytes", "host_write_bytes")}
                if "gc" in described:
                    sample["gc"] = described["gc"]
            if self.zram is not None:
                sample["zram"] = {"mm_stat": self.zram.snapshot()["mm_stat"],
                                  "staged_pages": len(self.zram.staging),
                                  "pages_by_algorithm": self.zram.pages_by_algorithm()}
            if self.power is not None:
                power = self.power
                power.advance(runtime.clock.now_ns())
                sample["power"] = {
                    "governor": power.governor.name,
                    "cur_freq": power.cur_freq,
                    "target_freq": power.freqs[power.target],
                    "queue_depth": power.last_queue_depth,
                    "energy_joules": power.energy_joules,
                    "total_trans": power.total_trans,
                    "decisions": [[t / 1e9, f] for t, f in power.freq_log[-DECISIONS_KEPT:]],
                }
        # Outside the lock: the wall time the page plots against, and the throttled fragmentation.
        sample["wall_s"] = self._wall()
        if self.ufs is not None:
            sample["ufs"]["fragmentation"] = self._fragmentation_summary()
        return sample

    def _fragmentation_summary(self) -> dict[str, Any]:
        assert self.ufs is not None
        # One page at a time recomputes it; the others take the last result.
        with self._fragmentation_lock:
            start = time.monotonic()
            if self._fragmentation is None or start >= self._fragmentation_next:
                with self.runtime.lock:
                    self._fragmentation = self.ufs.fragmentation()
                cost = time.monotonic() - start
                self._fragmentation_next = start + max(FRAGMENTATION_MIN_S, FRAGMENTATION_SPACING * cost)
            return self._fragmentation

    def fragmentation_map(self) -> dict[str, Any]:
        """:data:`MAP_SECTORS` logical sectors from the first mapped HID window on, with their physical pages.

        ``ppn`` is each sector's physical page (-1: unmapped), ``run`` the
        length in sectors of the physically contiguous run it belongs to
        (0: unmapped): long runs read in one NAND operation, short ones are
        what HID gathers.
        """
        ufs = self.ufs
        assert ufs is not None
        window = ufs.window_sectors
        with self.runtime.lock:
            l2p = ufs.ftl.l2p
            mapped = np.flatnonzero(l2p >= 0)
            first = int(mapped[0]) // window * window if len(mapped) else 0
            first = max(0, min(first, len(l2p) - MAP_SECTORS))
            ppn = l2p[first:first + MAP_SECTORS].copy()
            generation = ufs.ftl.generation
            physical_sectors = ufs.ftl.physical_sectors
            hid = ufs.hid.snapshot()
        return {
            "layout_generation": generation,
            "first_sector": first,
            "sector_bytes": SECTOR,
            "window_sectors": window,
            "physical_sectors": physical_sectors,
            "ppn": ppn.tolist(),
            "run": run_lengths(ppn).tolist(),
            "hid": hid,
        }

    def zram_census(self) -> dict[str, Any]:
        """Pages and bytes by algorithm (or same/huge), and idle pages: a walk over a copy of the page table."""
        zram = self.zram
        assert zram is not None
        with self.runtime.lock:
            entries = list(zram.entries.values())
            staged = len(zram.staging)
            priorities = {codec.key: priority for priority, codec in enumerate(zram.algorithms) if codec is not None}
        pages: dict[str, int] = {}
        stored: dict[str, int] = {}
        idle = 0
        for entry in entries:
            # The keys mm_stat's accounting uses (ZramCore._account): the codec, or same/huge.
            key = entry.codec.key if entry.kind == COMPRESSED and entry.codec else KIND_NAMES[entry.kind]
            pages[key] = pages.get(key, 0) + 1
            stored[key] = stored.get(key, 0) + entry.size
            idle += entry.idle
        return {
            "priorities": priorities,
            "pages": pages,
            "bytes": stored,
            "same_pages": pages.get(KIND_NAMES[SAME], 0),
            "huge_pages": pages.get("huge", 0),
            "idle_pages": idle,
            "staged_pages": staged,
            "stored_pages": len(entries),
        }


def run_lengths(ppn: np.ndarray) -> np.ndarray:
    """For each entry of a logically ordered PPN list, the length of its physically contiguous run (0: unmapped)."""
    if len(ppn) == 0:
        return np.zeros(0, dtype=np.int64)
    mapped = ppn >= 0
    starts = np.ones(len(ppn), dtype=bool)
    starts[1:] = ~(mapped[1:] & mapped[:-1] & (np.diff(ppn) == 1))
    run_id = np.cumsum(starts) - 1
    lengths = np.bincount(run_id)[run_id]
    return np.where(mapped, lengths, 0)
