"""The controller's L2P mapping cache: DFTL's cached page map, and an extent (multi-granularity) mode.

A UFS controller cannot hold the whole logical-to-physical map in SRAM (a
256 GB part needs 256 MiB of 4-byte entries); it keeps the map on NAND in
*map pages* and caches some of them, as DFTL does (Gupta et al., ASPLOS 2009).
HPB exists in the UFS standard for the same reason.

The logical space is cut into aligned *map units*: the LPNs whose entries fill
one map page (``map_page_bytes / entry_bytes`` LPNs: 1024, or 4 MiB of data,
for 4 KiB pages of 4-byte entries).  A request needs the map units of every
sector it touches:

* hit: the unit is cached (moved to the LRU's most recent end);
* miss: the unit's map page is read from NAND first (the device charges one
  tR plus the page's transfer on the die that holds it, before the data read);
* a write (or a move by GC or HID) dirties the unit; a dirty unit evicted to
  make room is written back — one map-page program, counted in write
  amplification.

Modes (``l2p_mode``), one small class each behind :class:`MapCache`:

* ``page``: every unit costs a whole map page of SRAM, however its data lies.
* ``extent``: a unit is held as extents — one entry of ``extent_entry_bytes``
  per physically contiguous run (ZMS's multi-granularity map, LeaFTL's
  segments) — or as its page map when that is smaller.  Contiguous data then
  costs a few bytes and scattered data a whole page.  On NAND the units are
  packed in LPN order, so one map-page read brings in the missed unit and the
  units after it, as many as fit in the page: contiguous data misses far less.
  A unit's cost follows its data: when writes, GC or HID split or merge its
  extents, the cached copy shrinks or grows (and may evict others).

``l2p_cache_kib = 0`` keeps the old behaviour: the whole map in SRAM, free.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

import numpy as np

from blockemu.config.ufs import L2P_MODES
from blockemu.devices.base import MetricFamily
from blockemu.devices.ufs.ftl import FlashTranslationLayer


class MapCache:
    """An LRU of map units under a byte budget; subclasses say what a unit costs."""

    mode = ""

    def __init__(self, ftl: FlashTranslationLayer, capacity_bytes: int, map_page_bytes: int,
                 entry_bytes: int, extent_entry_bytes: int = 8) -> None:
        if capacity_bytes < map_page_bytes:
            raise ValueError(f"an L2P cache of {capacity_bytes} bytes cannot hold one {map_page_bytes}-byte map page")
        unit_sectors = map_page_bytes // entry_bytes
        if unit_sectors < 1 or unit_sectors & (unit_sectors - 1):
            raise ValueError(f"map_page_bytes / entry_bytes must be a power of two, got {unit_sectors}")
        self.ftl = ftl
        self.capacity_bytes = capacity_bytes
        self.extent_bytes = extent_entry_bytes  # what one extent entry takes (extent mode)
        self.page_bytes = map_page_bytes
        self.unit_sectors = unit_sectors
        self.shift = unit_sectors.bit_length() - 1
        self.units = -(-ftl.logical_sectors // unit_sectors)
        # Unit -> bytes it holds, least recent first; and the dirty units.  Public
        # because the device's one-unit paths take a hit inline (UfsDevice.read).
        self.lru: OrderedDict[int, int] = OrderedDict()
        self.dirty: set[int] = set()
        self.used_bytes = 0
        # Write-backs not yet charged on a die by the device (it drains the list).
        self.pending_writebacks: list[int] = []
        # Counters.
        self.hits = 0
        self.misses = 0
        self.map_reads = 0
        self.map_writes = 0
        self.evictions = 0

    # ---------------------------------------------------------------- access
    def access(self, unit: int, dirty: bool) -> int:
        """Touch ``unit`` (``dirty``: its mapping changes); return the map pages read from NAND (0: a hit)."""
        lru = self.lru
        if unit in lru:
            lru.move_to_end(unit)
            self.hits += 1
            if dirty:
                self.dirty.add(unit)
            return 0
        self.misses += 1
        self.map_reads += 1
        self._load(unit)
        if dirty:
            self.dirty.add(unit)
        return 1

    def access_range(self, first_lpn: int, last_lpn: int, dirty: bool) -> list[int]:
        """Touch the units of LPNs ``first_lpn..last_lpn``; return the units whose map page was read."""
        shift = self.shift
        return [u for u in range(first_lpn >> shift, (last_lpn >> shift) + 1) if self.access(u, dirty)]

    def access_lpns(self, lpns: np.ndarray, dirty: bool) -> list[int]:
        """Touch the units of arbitrary LPNs (GC and HID moves); return the units read."""
        return [u for u in np.unique(lpns >> self.shift).tolist() if self.access(u, dirty)]

    def _load(self, unit: int) -> None:
        self._insert(unit, self.cost(unit))

    def _insert(self, unit: int, cost: int) -> None:
        self._make_room(cost, keep=unit)
        self.lru[unit] = cost
        self.used_bytes += cost

    def _make_room(self, cost: int, keep: int) -> None:
        lru = self.lru
        while self.used_bytes + cost > self.capacity_bytes and lru:
            victim, held = next(iter(lru.items()))
            if victim == keep:
                lru.move_to_end(victim)
                if len(lru) == 1:
                    return
                continue
            del lru[victim]
            self.used_bytes -= held
            self.evictions += 1
            if victim in self.dirty:
                self.dirty.discard(victim)
                self.map_writes += 1
                self.pending_writebacks.append(victim)

    # --------------------------------------------------------------- costing
    def cost(self, unit: int) -> int:
        """SRAM bytes ``unit`` takes when cached."""
        return self.page_bytes

    def refresh(self, first_unit: int, last_unit: int) -> None:
        """The mapping of these units changed: re-price the cached ones (extent mode)."""

    def refresh_all(self) -> None:
        self.refresh(0, self.units - 1)

    # ------------------------------------------------------------ inspection
    @property
    def cached_units(self) -> int:
        return len(self.lru)

    @property
    def dirty_units(self) -> int:
        return len(self.dirty)

    @property
    def miss_ratio(self) -> float:
        total = self.hits + self.misses
        return self.misses / total if total else 0.0

    def counters(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "map_reads": self.map_reads,
                "map_writes": self.map_writes, "evictions": self.evictions}

    def snapshot(self) -> dict[str, object]:
        return {"mode": self.mode, "capacity_bytes": self.capacity_bytes, "map_page_bytes": self.page_bytes,
                "unit_bytes": self.unit_sectors * 4096, "cached_units": self.cached_units,
                "cached_bytes": self.used_bytes, "dirty_units": self.dirty_units,
                "miss_ratio": round(self.miss_ratio, 6), **self.counters()}

    # ------------------------------------------------------------------ state
    _COUNTERS = ("hits", "misses", "map_reads", "map_writes", "evictions")

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Cached units in LRU order (least recent first) and their dirty flags."""
        units = np.array(list(self.lru), dtype=np.int64)
        return {"l2p_units": units,
                "l2p_dirty": np.array([u in self.dirty for u in units.tolist()], dtype=bool)}

    def load_state_arrays(self, state: dict[str, np.ndarray]) -> None:
        units = state["l2p_units"].tolist()
        if units and not (min(units) >= 0 and max(units) < self.units):
            raise ValueError("saved L2P cache names map units beyond this device")
        self.lru.clear()
        self.dirty.clear()
        self.used_bytes = 0
        for unit, dirty in zip(units, state["l2p_dirty"].tolist(), strict=True):
            self._insert(unit, self.cost(unit))
            if dirty:
                self.dirty.add(unit)
        self.pending_writebacks.clear()

    def counter_arrays(self) -> dict[str, np.ndarray]:
        return {"l2p_counters": np.array([getattr(self, n) for n in self._COUNTERS], dtype=np.int64)}

    def load_counter_arrays(self, state: dict[str, np.ndarray]) -> None:
        if "l2p_counters" in state:
            for name, value in zip(self._COUNTERS, state["l2p_counters"].tolist(), strict=True):
                setattr(self, name, int(value))


class PageMapCache(MapCache):
    """DFTL: a cached unit is a whole map page."""

    mode = "page"


class ExtentMapCache(MapCache):
    """Multi-granularity: a unit costs one entry per physical extent, at most a page map."""

    mode = "extent"

    def __init__(self, ftl: FlashTranslationLayer, capacity_bytes: int, map_page_bytes: int,
                 entry_bytes: int, extent_entry_bytes: int = 8) -> None:
        super().__init__(ftl, capacity_bytes, map_page_bytes, entry_bytes, extent_entry_bytes)
        ftl.track_extents(self.unit_sectors)

    def cost(self, unit: int) -> int:
        extents = self.ftl.unit_extents(unit)
        return min(max(extents, 1) * self.extent_bytes, self.page_bytes)

    def _load(self, unit: int) -> None:
        # One map page holds this unit and the packed units after it.
        budget = self.page_bytes
        lru = self.lru
        nxt = unit
        while nxt < self.units:
            cost = self.cost(nxt)
            if nxt != unit and cost > budget:
                break
            budget -= cost
            if nxt not in lru:
                self._insert(nxt, cost)
            if nxt != unit:
                lru.move_to_end(unit)  # the missed unit stays the most recent
            nxt += 1

    def refresh(self, first_unit: int, last_unit: int) -> None:
        lru = self.lru
        for unit in range(first_unit, last_unit + 1):
            held = lru.get(unit)
            if held is None:
                continue
            cost = self.cost(unit)
            if cost != held:
                lru[unit] = cost
                self.used_bytes += cost - held
        if self.used_bytes > self.capacity_bytes:
            self._make_room(0, keep=last_unit)

    def refresh_all(self) -> None:
        for unit in list(self.lru):
            self.refresh(unit, unit)

    def refresh_one(self, unit: int) -> None:
        """``refresh(unit, unit)`` for the one-sector write path, with the cost computed inline."""
        held = self.lru.get(unit)
        if held is None:
            return
        ftl = self.ftl
        extents = ftl._unit_mapped_view[unit] - ftl._unit_joins_view[unit]
        cost = min((extents if extents > 1 else 1) * self.extent_bytes, self.page_bytes)
        if cost != held:
            self.lru[unit] = cost
            self.used_bytes += cost - held
            if self.used_bytes > self.capacity_bytes:
                self._make_room(0, keep=unit)


# The modes, by the name ``l2p_mode`` gives (blockemu/config/ufs.py L2P_MODES lists the same names).
MAP_CACHES: dict[str, type[MapCache]] = {"page": PageMapCache, "extent": ExtentMapCache}


def make_map_cache(ftl: FlashTranslationLayer, mode: str, capacity_bytes: int, map_page_bytes: int,
                   entry_bytes: int, extent_entry_bytes: int) -> MapCache | None:
    """The cache ``mode`` names, or None for an unlimited map (``capacity_bytes`` 0)."""
    if capacity_bytes == 0:
        return None
    cls = MAP_CACHES.get(mode)
    if cls is None:
        raise ValueError(f"l2p_mode must be one of {', '.join(L2P_MODES)}, got {mode!r}")
    return cls(ftl, capacity_bytes, map_page_bytes, entry_bytes, extent_entry_bytes)

def l2p_metrics(l2p: MapCache | None) -> Iterator[MetricFamily]:
    """``blockemu_ufs_l2p_*``: the mapping cache (nothing with an unlimited map)."""
    if l2p is None:
        return
    for name, kind, text, value in (
        ("hits", "counter", "L2P map-unit lookups served from SRAM", l2p.hits),
        ("misses", "counter", "L2P map-unit lookups that read a map page from NAND", l2p.misses),
        ("map_reads", "counter", "Map pages read from NAND", l2p.map_reads),
        ("map_writes", "counter", "Dirty map pages written back to NAND", l2p.map_writes),
        ("evictions", "counter", "Map units evicted from the cache", l2p.evictions),
        ("cached_bytes", "gauge", "SRAM bytes held by cached map units", l2p.used_bytes),
        ("capacity_bytes", "gauge", "SRAM bytes for the L2P cache", l2p.capacity_bytes),
        ("cached_units", "gauge", "Map units in the cache", l2p.cached_units),
        ("dirty_units", "gauge", "Cached map units not yet written back", l2p.dirty_units),
    ):
        yield MetricFamily(f"blockemu_ufs_l2p_{name}", kind, text, [({"mode": l2p.mode}, value)])
