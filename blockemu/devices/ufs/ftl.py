"""A page-mapped, log-structured flash translation layer.

The FTL maps 4 KiB logical sectors (LPNs) to physical sectors (PPNs).  Only
the mapping lives here: bytes are stored by logical address elsewhere, so
garbage collection and defragmentation move mapping entries, never data.

Physical layout.  PPNs are numbered in the order the controller programs
them: a multi-plane NAND page (``planes × nand_page`` bytes, "a tR group") is
filled first, then the next die's, round-robin over all dies, and so on
through a *superblock* (one erase block per plane on every die).  A host
stream written alone therefore lands on consecutive PPNs and reads back with
one tR per group on every die in parallel; two streams written interleaved
alternate PPNs and need a tR for every sector they read.  That is the
fragmentation that HID repairs.

Superblocks are allocated from a FIFO free list; when only the reserve is left
a greedy garbage collector (fewest valid sectors) relocates a victim's valid
sectors in physical order and erases it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SECTOR = 4096
UNMAPPED = -1


@dataclass(frozen=True)
class Geometry:
    dies: int
    planes_per_die: int
    sectors_per_nand_page: int
    pages_per_block: int

    @property
    def sectors_per_group(self) -> int:
        """Sectors read by one multi-plane tR on one die."""
        return self.planes_per_die * self.sectors_per_nand_page

    @property
    def sectors_per_superblock(self) -> int:
        return self.dies * self.sectors_per_group * self.pages_per_block


# Called with the PPNs garbage collection read and the PPNs it programmed.
RelocateHook = Callable[[np.ndarray, np.ndarray], None]
EraseHook = Callable[[int], None]


class FlashTranslationLayer:
    def __init__(
        self,
        logical_sectors: int,
        geometry: Geometry,
        overprovision_percent: float,
        gc_reserve_superblocks: int,
    ) -> None:
        self.geometry = geometry
        self.logical_sectors = logical_sectors
        sbs = geometry.sectors_per_superblock
        logical_sbs = -(-logical_sectors // sbs)
        spare_sbs = max(
            int(np.ceil(logical_sbs * overprovision_percent / 100.0)),
            # GC must always find a victim with an invalid sector: keep at
            # least two superblocks beyond the reserve and the open one.
            gc_reserve_superblocks + 2,
        )
        self.superblocks = logical_sbs + spare_sbs
        self.physical_sectors = self.superblocks * sbs
        self.gc_reserve = gc_reserve_superblocks
        self._sbs = sbs  # a plain int: the hot path reads it on every program
        self.l2p = np.full(logical_sectors, UNMAPPED, dtype=np.int64)
        self.p2l = np.full(self.physical_sectors, UNMAPPED, dtype=np.int64)
        self.valid = np.zeros(self.superblocks, dtype=np.int64)
        # Extent bookkeeping per map unit (see track_extents); 0: off.
        self.unit_shift = 0
        self.unit_mapped = np.zeros(0, dtype=np.int64)
        self.unit_joins = np.zeros(0, dtype=np.int64)
        self._bind_views()
        self._free: deque[int] = deque(range(self.superblocks))
        self._is_free = np.ones(self.superblocks, dtype=bool)
        self._open = self._free.popleft()
        self._is_free[self._open] = False
        self._open_offset = 0
        self._in_gc = False
        self.on_relocate: RelocateHook | None = None
        self.on_erase: EraseHook | None = None
        # Counters (sectors unless named otherwise).
        self.host_sectors_programmed = 0
        self.internal_sectors_programmed = 0
        self.gc_sectors_relocated = 0
        self.erases = 0
        self.mapped_sectors = 0
        # Bumped on every mapping change, so costly analyses can be cached.
        self.generation = 0

    # ---------------------------------------------------------------- extents
    def track_extents(self, unit_sectors: int) -> None:
        """Keep, per aligned unit of ``unit_sectors`` LPNs, its mapped sectors and its *joins*.

        A join is a pair of logically adjacent mapped LPNs whose PPNs are
        adjacent too, so a unit's extents (physically contiguous runs, the
        entries of a multi-granularity map) are ``mapped - joins``.  Every
        program, unmap and load keeps both exact; the L2P cache's extent mode
        reads them to price a unit.
        """
        if unit_sectors <= 0 or unit_sectors & (unit_sectors - 1):
            raise ValueError(f"unit_sectors must be a power of two, got {unit_sectors}")
        self.unit_shift = unit_sectors.bit_length() - 1
        units = -(-self.logical_sectors // unit_sectors)
        self.unit_mapped = np.zeros(units, dtype=np.int64)
        self.unit_joins = np.zeros(units, dtype=np.int64)
        self._recount_units(np.arange(units, dtype=np.int64))
        self._bind_views()

    def unit_extents(self, unit: int) -> int:
        return int(self._unit_mapped_view[unit] - self._unit_joins_view[unit])

    def _recount_units(self, units: np.ndarray) -> None:
        """Count mapped sectors and joins of ``units`` from the map (vectorised paths)."""
        if not self.unit_shift or not len(units):
            return
        size = 1 << self.unit_shift
        lpns = (units[:, None] << self.unit_shift) + np.arange(size, dtype=np.int64)
        inside = lpns < self.logical_sectors
        grid = np.where(inside, self.l2p[np.minimum(lpns, self.logical_sectors - 1)], UNMAPPED)
        mapped = grid >= 0
        self.unit_mapped[units] = mapped.sum(axis=1)
        self.unit_joins[units] = (mapped[:, 1:] & mapped[:, :-1] & (np.diff(grid, axis=1) == 1)).sum(axis=1)

    def _rejoin_one(self, lpn: int, old: int, new: int) -> None:
        """Update the extent counts of ``lpn``'s unit when its PPN goes from ``old`` to ``new``."""
        unit = lpn >> self.unit_shift
        l2p = self._l2p_view
        mask = (1 << self.unit_shift) - 1
        delta = 0
        if lpn & mask:
            left = l2p[lpn - 1]
            if left >= 0:
                delta += (new >= 0 and new == left + 1) - (old >= 0 and old == left + 1)
        if lpn & mask != mask and lpn + 1 < self.logical_sectors:
            right = l2p[lpn + 1]
            if right >= 0:
                delta += (new >= 0 and right == new + 1) - (old >= 0 and right == old + 1)
        self._unit_joins_view[unit] += delta
        self._unit_mapped_view[unit] += (new >= 0) - (old >= 0)

    def _bind_views(self) -> None:
        """Memoryviews of the maps, for the one-sector path.

        Indexing a memoryview gives and takes plain ints, about three times
        faster than numpy's scalar indexing; the arrays stay the maps (the
        vectorised paths use them), the views only look at the same memory.
        Called again whenever an array is replaced.
        """
        self._l2p_view = self.l2p.data
        self._p2l_view = self.p2l.data
        self._valid_view = self.valid.data
        self._unit_mapped_view = self.unit_mapped.data
        self._unit_joins_view = self.unit_joins.data

    def __getstate__(self) -> dict[str, object]:
        # Memoryviews cannot be copied (copy.deepcopy of a device, as the
        # PM-QoS experiment does); they are bound again on the copy.
        state = self.__dict__.copy()
        for name in ("_l2p_view", "_p2l_view", "_valid_view", "_unit_mapped_view", "_unit_joins_view"):
            del state[name]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._bind_views()

    # ------------------------------------------------------------------ lookup
    def lookup(self, lpn: int) -> int:
        return self._l2p_view[lpn]

    def lookup_range(self, first_lpn: int, count: int) -> np.ndarray:
        return self.l2p[first_lpn : first_lpn + count]

    def die_of(self, ppn: int) -> int:
        return (ppn // self.geometry.sectors_per_group) % self.geometry.dies

    @property
    def free_superblocks(self) -> int:
        return len(self._free)

    # ---------------------------------------------------------------- program
    def program_one(self, lpn: int, internal: bool = False) -> int:
        """Map one LPN to the next physical sector (the 4 KiB hot path)."""
        sbs = self._sbs
        if self._open_offset == sbs:
            self._advance_open()
        ppn = self._open * sbs + self._open_offset
        l2p = self._l2p_view
        p2l = self._p2l_view
        valid = self._valid_view
        old = l2p[lpn]
        if old >= 0:
            p2l[old] = UNMAPPED
            valid[old // sbs] -= 1
        else:
            self.mapped_sectors += 1
        if self.unit_shift:
            self._rejoin_one(lpn, old, ppn)
        l2p[lpn] = ppn
        p2l[ppn] = lpn
        valid[self._open] += 1
        self._open_offset += 1
        self.generation += 1
        if internal:
            self.internal_sectors_programmed += 1
        else:
            self.host_sectors_programmed += 1
        return ppn

    def program(self, lpns: np.ndarray, internal: bool = False, distinct: bool = True) -> np.ndarray:
        """Map LPNs, in order, to the next physical sectors; return the PPNs.

        With ``distinct=False`` an LPN may appear several times (a replayed
        stream of writes): each occurrence is programmed, the last one wins.
        """
        total = len(lpns)
        out = np.empty(total, dtype=np.int64)
        sbs = self.geometry.sectors_per_superblock
        done = 0
        while done < total:
            if self._open_offset == sbs:
                self._advance_open()
            take = min(sbs - self._open_offset, total - done)
            base = self._open * sbs + self._open_offset
            new = np.arange(base, base + take, dtype=np.int64)
            chunk = lpns[done : done + take]
            if not distinct:
                # Keep only each LPN's last occurrence; the earlier copies are
                # programmed but stale at once.
                _, from_end = np.unique(chunk[::-1], return_index=True)
                last = take - 1 - from_end
                chunk, new_live = chunk[last], new[last]
            else:
                new_live = new
            old = self.l2p[chunk]
            stale = old[old >= 0]
            if len(stale):
                self.p2l[stale] = UNMAPPED
                self.valid -= np.bincount(stale // sbs, minlength=self.superblocks)
            self.mapped_sectors += len(chunk) - len(stale)
            self.l2p[chunk] = new_live
            self.p2l[new_live] = chunk
            self.valid[self._open] += len(chunk)
            self._open_offset += take
            out[done : done + take] = new
            done += take
        self._recount_units(np.unique(lpns >> self.unit_shift) if self.unit_shift else lpns[:0])
        self.generation += 1
        if internal:
            self.internal_sectors_programmed += total
        else:
            self.host_sectors_programmed += total
        return out

    def unmap(self, first_lpn: int, count: int) -> None:
        lpns = np.arange(first_lpn, first_lpn + count, dtype=np.int64)
        old = self.l2p[lpns]
        stale = old[old >= 0]
        if len(stale):
            self.p2l[stale] = UNMAPPED
            self.valid -= np.bincount(
                stale // self.geometry.sectors_per_superblock, minlength=self.superblocks
            )
            self.mapped_sectors -= len(stale)
        self.l2p[lpns] = UNMAPPED
        if self.unit_shift and count:
            self._recount_units(np.arange(first_lpn >> self.unit_shift,
                                          ((first_lpn + count - 1) >> self.unit_shift) + 1, dtype=np.int64))
        self.generation += 1

    # ------------------------------------------------------- garbage collection
    def _advance_open(self) -> None:
        if not self._in_gc and len(self._free) <= self.gc_reserve:
            self._collect()
            if self._open_offset < self.geometry.sectors_per_superblock:
                return  # GC left room in the superblock it relocated into.
        self._open = self._free.popleft()
        self._is_free[self._open] = False
        self._open_offset = 0

    def _collect(self) -> None:
        sbs = self.geometry.sectors_per_superblock
        self._in_gc = True
        try:
            while len(self._free) <= self.gc_reserve:
                candidates = np.where(self._is_free, sbs + 1, self.valid)
                candidates[self._open] = sbs + 1
                victim = int(np.argmin(candidates))
                if candidates[victim] >= sbs:
                    raise RuntimeError("FTL full: no superblock with an invalid sector to collect")
                start = victim * sbs
                owners = self.p2l[start : start + sbs]
                old_ppns = np.flatnonzero(owners >= 0) + start
                lpns = self.p2l[old_ppns].copy()
                new_ppns = self.program(lpns, internal=True) if len(lpns) else lpns
                self.gc_sectors_relocated += len(lpns)
                if self.on_relocate is not None and len(lpns):
                    self.on_relocate(old_ppns, new_ppns)
                self._erase(victim)
        finally:
            self._in_gc = False

    def _erase(self, superblock: int) -> None:
        self.valid[superblock] = 0
        self._free.append(superblock)
        self._is_free[superblock] = True
        self.erases += 1
        if self.on_erase is not None:
            self.on_erase(superblock)

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to rebuild this FTL (p2l and valid counts are derived)."""
        return {
            "l2p": self.l2p.copy(),
            "free": np.array(self._free, dtype=np.int64),
            "open": np.array([self._open, self._open_offset], dtype=np.int64),
            "counters": np.array([self.host_sectors_programmed, self.internal_sectors_programmed,
                                  self.gc_sectors_relocated, self.erases], dtype=np.int64),
        }

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        l2p = state["l2p"]
        if l2p.shape != self.l2p.shape:
            raise ValueError(f"state has {len(l2p)} logical sectors, this FTL {len(self.l2p)}")
        if l2p.max(initial=-1) >= self.physical_sectors:
            raise ValueError("state maps beyond this FTL's physical space (different geometry?)")
        self.l2p = l2p.astype(np.int64).copy()
        self.p2l = np.full(self.physical_sectors, UNMAPPED, dtype=np.int64)
        mapped = np.flatnonzero(self.l2p >= 0)
        self.p2l[self.l2p[mapped]] = mapped
        sbs = self.geometry.sectors_per_superblock
        self.valid = np.bincount(self.l2p[mapped] // sbs, minlength=self.superblocks).astype(np.int64)
        self._bind_views()
        self._free = deque(int(sb) for sb in state["free"])
        self._is_free = np.zeros(self.superblocks, dtype=bool)
        self._is_free[list(self._free)] = True
        self._open, self._open_offset = (int(v) for v in state["open"])
        (self.host_sectors_programmed, self.internal_sectors_programmed,
         self.gc_sectors_relocated, self.erases) = (int(v) for v in state["counters"])
        self.mapped_sectors = len(mapped)
        if self.unit_shift:
            self._recount_units(np.arange(len(self.unit_mapped), dtype=np.int64))
        self.generation += 1

    # ----------------------------------------------------------- fragmentation
    @staticmethod
    def physical_runs(ppns: np.ndarray) -> int:
        """How many physically contiguous pieces a logically ordered PPN list has."""
        mapped = ppns[ppns >= 0]
        if len(mapped) == 0:
            return 0
        return 1 + int(np.count_nonzero(np.diff(mapped) != 1))

    def window_layout(self, window_sectors: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per aligned logical window: mapped sectors, physical runs, logical extents."""
        count = -(-self.logical_sectors // window_sectors)
        padded = np.full(count * window_sectors, UNMAPPED, dtype=np.int64)
        padded[: self.logical_sectors] = self.l2p
        grid = padded.reshape(count, window_sectors)
        mapped = grid >= 0
        mapped_per_window = mapped.sum(axis=1)
        both = mapped[:, 1:] & mapped[:, :-1]
        physically_next = both & (np.diff(grid, axis=1) == 1)
        runs = mapped_per_window - physically_next.sum(axis=1)
        extents = mapped_per_window - both.sum(axis=1)
        return mapped_per_window, runs, extents

    def fragmented_windows(self, window_sectors: int, min_run_sectors: int) -> tuple[np.ndarray, np.ndarray]:
        """Windows worth rewriting, and how many mapped sectors each holds.

        A window is fragmented when its physical layout has more pieces than its
        logical extents force (so rewriting it would help) and its mean
        physical run is shorter than ``min_run_sectors``.
        """
        mapped, runs, extents = self.window_layout(window_sectors)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_run = np.where(runs > 0, mapped / np.maximum(runs, 1), 0)
        fragmented = (runs > extents) & (mean_run < min_run_sectors)
        windows = np.flatnonzero(fragmented)
        return windows, mapped[windows]
