"""A UFS 4.x device: FTL, NAND service times, HID and aging.

Service-time model (all constants in ``[ufs]``, see blockemu/config/ufs.py for sources):

* A read needs one tR (``read_setup_us``) per multi-plane NAND page it touches
  on each die, plus the transfer of the sectors it reads from that die.  The
  die transfer rate is derived so that a long contiguous read reaches
  ``seq_read_mbps`` with all dies streaming:
  ``group_bytes / (seq_read / dies) = tR + group_bytes / die_rate``.
  A physically fragmented read touches more NAND pages, so it pays more tRs
  and spreads worse over dies: that is why it is several times slower.
* A write programs sectors at the log head, striped over dies, at
  ``seq_write_mbps / dies`` per die.
* Every command adds ``command_overhead_us`` of controller time; reads of
  unmapped sectors cost only that (the FTL answers zeros).
* Dies are :class:`~blockemu.timing.UnitTimeline` units, so concurrent host
  requests, garbage collection and HID defragmentation queue behind each other.
* With a limited L2P cache (``l2p_cache_kib``, blockemu/devices/ufs/l2p.py) a
  request first needs the map units of its sectors: each miss reads a map page
  (one tR plus its transfer, on die ``unit % dies``) before the data read or
  program starts; dirty units evicted are programmed back (counted in write
  amplification).  Map pages live outside the data log (DFTL's translation
  blocks); their own garbage collection is not modeled.
* With WriteBooster (``wb_enabled``, blockemu/devices/ufs/writebooster.py)
  host writes program at ``seq_write_mbps`` while the SLC buffer has room and
  at ``tlc_write_mbps`` once it is full; when the dies are idle, background
  steps fold the buffer to TLC (an SLC read plus a TLC program per sector, on
  every die), so host I/O arriving meanwhile waits behind them.  GC and HID
  moves program at the TLC rate.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import numpy as np

from blockemu.api import API_PREFIX, JsonBody, Route, obj
from blockemu.config import Config
from blockemu.devices.base import (
    ApiError,
    Capabilities,
    MetricFamily,
    describe_identity,
    out_of_range,
)
from blockemu.devices.ufs.ftl import SECTOR, FlashTranslationLayer, Geometry
from blockemu.devices.ufs.hid import (
    HID_GROUP,
    AnalysisResult,
    HidController,
    HidState,
)
from blockemu.devices.ufs.l2p import ExtentMapCache, l2p_metrics, make_map_cache
from blockemu.devices.ufs.writebooster import WB_GROUP, WriteBooster, wb_metrics
from blockemu.store import Store
from blockemu.timing import UnitTimeline

# How much HID rewrites per background step: small enough that host I/O
# interleaves with defragmentation, large enough to keep the overhead low.
DEFRAG_STEP_BYTES = 1024 * 1024
# How much one background WriteBooster fold step moves from SLC to TLC: as a
# defrag step, small enough for host I/O to interleave.
FOLD_STEP_SECTORS = 1024 * 1024 // SECTOR


class UfsDevice:
    kind = "ufs"

    def __init__(self, config: Config, store: Store) -> None:
        ufs = config.ufs
        self.config = config
        self.name = config.device.name
        self.size_bytes = config.capacity_bytes
        # The vector replay engine prices requests itself, without the L2P
        # cache or WriteBooster: it serves only the plain model.
        self.capabilities = Capabilities(vector_replay=ufs.l2p_cache_kib == 0 and not ufs.wb_enabled)
        self.store = store
        self.geometry = Geometry(
            dies=ufs.dies,
            planes_per_die=ufs.planes_per_die,
            sectors_per_nand_page=ufs.nand_page_kib * 1024 // SECTOR,
            pages_per_block=ufs.pages_per_block,
        )
        self.ftl = FlashTranslationLayer(
            self.size_bytes // SECTOR, self.geometry, ufs.overprovision_percent, ufs.gc_reserve_superblocks
        )
        self.ftl.on_relocate = self._charge_relocation
        self.ftl.on_erase = self._charge_erase
        self.dies = UnitTimeline(ufs.dies)

        group_bytes = self.geometry.sectors_per_group * SECTOR
        group_ns_streaming = group_bytes / (ufs.seq_read_mbps * 1e6 / ufs.dies) * 1e9
        self.tr_ns = int(ufs.read_setup_us * 1000)
        self.read_ns_per_sector = (group_ns_streaming - self.tr_ns) / self.geometry.sectors_per_group
        self.write_ns_per_sector = SECTOR / (ufs.seq_write_mbps * 1e6 / ufs.dies) * 1e9
        self.overhead_ns = int(ufs.command_overhead_us * 1000)
        self.flush_ns = int(ufs.flush_us * 1000)
        self.trim_ns = int(ufs.trim_us * 1000)
        self.erase_ns = int(ufs.erase_us * 1000)
        self._one_sector_read_ns = int(self.tr_ns + self.read_ns_per_sector)
        self._one_sector_write_ns = int(self.write_ns_per_sector)
        # Plain ints for the one-sector paths (a dataclass property per use adds up).
        self._sectors_per_group = self.geometry.sectors_per_group
        self._dies = ufs.dies

        self.l2p = make_map_cache(self.ftl, ufs.l2p_mode, ufs.l2p_cache_kib * 1024, ufs.l2p_map_page_kib * 1024,
                                  ufs.l2p_entry_bytes, ufs.l2p_extent_entry_bytes)
        self._l2p_shift = self.l2p.shift if self.l2p is not None else 0
        self._l2p_extents = isinstance(self.l2p, ExtentMapCache)
        map_sectors = max(1, ufs.l2p_map_page_kib * 1024 // SECTOR)
        self.map_read_ns = int(self.tr_ns + map_sectors * self.read_ns_per_sector)
        self.map_write_ns = int(map_sectors * self.write_ns_per_sector)
        self._map_sectors = map_sectors
        self.wb = (WriteBooster(ufs.wb_buffer_mib * 1024 * 1024, True, ufs.wb_flush_enabled, ufs.wb_flush_threshold,
                                ufs.wb_slc_pe_cycles) if ufs.wb_enabled else None)
        self.tlc_write_ns_per_sector = SECTOR / (ufs.tlc_write_mbps * 1e6 / ufs.dies) * 1e9
        self._one_sector_tlc_write_ns = int(self.tlc_write_ns_per_sector)
        # Writes that are not the host's (GC, HID) skip the SLC buffer.
        self._internal_write_ns = self.tlc_write_ns_per_sector if self.wb is not None else self.write_ns_per_sector

        self.hid_config = config.hid
        self.window_sectors = config.hid.window_kib * 1024 // SECTOR
        self.hid = HidController(self, config.hid.defrag_size)
        self._defrag_queue: list[int] = []
        self._now = 0  # arrival time of the request being served, for GC charges
        self._layout_cache: tuple[int, int, int] | None = None  # generation, fragmented, mapped

        # Counters for metrics.
        self.reads_with_media = 0
        self.read_physical_runs = 0
        self.read_tr_total = 0

        aging = config.aging
        if aging.fragmentation_percent > 0:
            self.age(
                aging.fragmentation_percent, aging.fragment_kib, aging.seed, aging.span_percent, mapped_only=False
            )

    # ------------------------------------------------------------------ costs
    def _read_costs(self, ppns: np.ndarray) -> list[tuple[int, int]]:
        mapped = ppns[ppns >= 0]
        if len(mapped) == 0:
            return []
        spg = self.geometry.sectors_per_group
        dies = self.geometry.dies
        groups = mapped // spg
        tr_per_die = np.bincount(np.unique(groups) % dies, minlength=dies)
        sectors_per_die = np.bincount(groups % dies, minlength=dies)
        self.read_tr_total += int(tr_per_die.sum())
        return [
            (die, int(tr_per_die[die] * self.tr_ns + sectors_per_die[die] * self.read_ns_per_sector))
            for die in np.flatnonzero(sectors_per_die).tolist()
        ]

    def _write_costs(self, ppns: np.ndarray, slc: int | None = None) -> list[tuple[int, int]]:
        """Program costs per die: the first ``slc`` sectors at the SLC (host) rate, the rest at the TLC rate
        (``slc`` None: all at the host rate; internal writes pass 0)."""
        dies = self.geometry.dies
        die_of = (ppns // self.geometry.sectors_per_group) % dies
        if slc is None or slc >= len(ppns):
            per_die = np.bincount(die_of, minlength=dies) * self.write_ns_per_sector
        else:
            per_die = (np.bincount(die_of[:slc], minlength=dies) * self.write_ns_per_sector
                       + np.bincount(die_of[slc:], minlength=dies) * self._internal_write_ns)
        return [(die, int(per_die[die])) for die in np.flatnonzero(per_die).tolist()]

    def _charge_relocation(self, old_ppns: np.ndarray, new_ppns: np.ndarray) -> None:
        self.dies.occupy(self._now, self._read_costs(old_ppns))
        self.dies.occupy(self._now, self._write_costs(new_ppns, 0))
        if self.l2p is not None:
            self._charge_map_moves(self.ftl.p2l[new_ppns], self._now)

    # ------------------------------------------------------------- L2P cache
    def _map_start(self, first: int, last: int, now_ns: int, dirty: bool) -> int:
        """Load the map units of LPNs first..last; return when the data access can start."""
        l2p = self.l2p
        assert l2p is not None
        shift = self._l2p_shift
        unit = first >> shift
        start = now_ns
        if unit == last >> shift:
            if l2p.access(unit, dirty):
                start = self.dies.occupy_one(now_ns, unit % self._dies, self.map_read_ns)
        else:
            for unit in l2p.access_range(first, last, dirty):
                start = max(start, self.dies.occupy_one(now_ns, unit % self._dies, self.map_read_ns))
        if l2p.pending_writebacks:
            self._charge_writebacks(now_ns)
        return start

    def _charge_writebacks(self, now_ns: int) -> None:
        """Program the dirty map pages the cache evicted (DFTL's write-back)."""
        assert self.l2p is not None
        for unit in self.l2p.pending_writebacks:
            self.dies.occupy_one(now_ns, unit % self._dies, self.map_write_ns)
        self.l2p.pending_writebacks.clear()

    def _charge_map_moves(self, lpns: np.ndarray, now_ns: int) -> int:
        """GC or HID moved ``lpns``: their units are loaded (if missing) and dirtied, and re-priced."""
        l2p = self.l2p
        assert l2p is not None
        done = now_ns
        for unit in l2p.access_lpns(lpns, dirty=True):
            done = max(done, self.dies.occupy_one(now_ns, unit % self._dies, self.map_read_ns))
        if self._l2p_extents and len(lpns):
            l2p.refresh(int(lpns.min()) >> self._l2p_shift, int(lpns.max()) >> self._l2p_shift)
        if l2p.pending_writebacks:
            self._charge_writebacks(now_ns)
        return done

    def _charge_erase(self, superblock: int) -> None:
        self.dies.occupy(self._now, [(die, self.erase_ns) for die in range(self.geometry.dies)])

    # --------------------------------------------------------------- data path
    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size_bytes:
            raise out_of_range(offset, length, self.size_bytes)

    def read(self, offset: int, buf: memoryview, now_ns: int) -> int:
        length = len(buf)
        if offset < 0 or offset + length > self.size_bytes:
            raise out_of_range(offset, length, self.size_bytes)
        self.store.read_into(offset, buf)
        if length == 0:
            return now_ns + self.overhead_ns
        first = offset // SECTOR
        last = (offset + length - 1) // SECTOR
        l2p = self.l2p
        if l2p is not None:
            unit = first >> self._l2p_shift
            if unit == last >> self._l2p_shift and unit in l2p.lru:  # _map_start's hit, inline: the common case
                l2p.lru.move_to_end(unit)
                l2p.hits += 1
            else:
                now_ns = self._map_start(first, last, now_ns, False)
        if first == last:
            ppn = self.ftl.lookup(first)
            if ppn < 0:
                return now_ns + self.overhead_ns
            self.reads_with_media += 1
            self.read_physical_runs += 1
            self.read_tr_total += 1
            die = (ppn // self._sectors_per_group) % self._dies
            return self.dies.occupy_one(now_ns, die, self._one_sector_read_ns) + self.overhead_ns
        ppns = self.ftl.l2p[first : last + 1]
        runs = self.ftl.physical_runs(ppns)
        if runs:
            self.reads_with_media += 1
            self.read_physical_runs += runs
        return self.dies.occupy(now_ns, self._read_costs(ppns)) + self.overhead_ns

    def write(self, offset: int, data: memoryview, fua: bool, now_ns: int) -> int:
        length = len(data)
        if offset < 0 or offset + length > self.size_bytes:
            raise out_of_range(offset, length, self.size_bytes)
        self.store.write(offset, data)
        done = now_ns
        if length:
            first = offset // SECTOR
            last = (offset + length - 1) // SECTOR
            if first == last and self.l2p is None and self.wb is None:
                # _program's one-sector case, inline: most writes are one sector.
                self._now = now_ns
                ppn = self.ftl.program_one(first)
                die = (ppn // self._sectors_per_group) % self._dies
                done = self.dies.occupy_one(now_ns, die, self._one_sector_write_ns)
            else:
                done = self._program(first, last, now_ns)
        return done + self.overhead_ns + (self.flush_ns if fua else 0)

    def _program(self, first: int, last: int, now_ns: int) -> int:
        """Program host sectors first..last (map units loaded first, the SLC buffer if it has room)."""
        self._now = now_ns
        l2p = self.l2p
        start = now_ns
        if l2p is not None:
            unit = first >> self._l2p_shift
            if unit == last >> self._l2p_shift and unit in l2p.lru:  # _map_start's hit, inline
                l2p.lru.move_to_end(unit)
                l2p.hits += 1
                l2p.dirty.add(unit)
            else:
                start = self._map_start(first, last, now_ns, True)
        slc = self.wb.admit(last - first + 1) if self.wb is not None else None
        if first == last:
            ppn = self.ftl.program_one(first)
            die = (ppn // self._sectors_per_group) % self._dies
            cost = self._one_sector_write_ns if slc is None or slc else self._one_sector_tlc_write_ns
            done = self.dies.occupy_one(start, die, cost)
            if self._l2p_extents:
                cast(ExtentMapCache, l2p).refresh_one(first >> self._l2p_shift)
        else:
            ppns = self.ftl.program(np.arange(first, last + 1, dtype=np.int64))
            done = self.dies.occupy(start, self._write_costs(ppns, slc))
            if self._l2p_extents:
                cast(ExtentMapCache, l2p).refresh(first >> self._l2p_shift, last >> self._l2p_shift)
        return done

    def _full_sectors(self, offset: int, length: int) -> tuple[int, int]:
        first = -(-offset // SECTOR)
        end = (offset + length) // SECTOR
        return first, max(0, end - first)

    def trim(self, offset: int, length: int, now_ns: int) -> int:
        self._check(offset, length)
        # Only whole sectors are unmapped; NBD trim is advisory, and zeroing
        # them lets the memory store give their pages back.
        first, count = self._full_sectors(offset, length)
        if count:
            self.store.zero(first * SECTOR, count * SECTOR)
            now_ns = self._unmap(first, count, now_ns)
        return now_ns + self.trim_ns + self.overhead_ns

    def _unmap(self, first: int, count: int, now_ns: int) -> int:
        """Unmap whole sectors; with a limited L2P cache their units are loaded and dirtied first."""
        start = self._map_start(first, first + count - 1, now_ns, True) if self.l2p is not None else now_ns
        self.ftl.unmap(first, count)
        if self._l2p_extents:
            assert self.l2p is not None
            self.l2p.refresh(first >> self._l2p_shift, (first + count - 1) >> self._l2p_shift)
        return start

    def write_zeroes(self, offset: int, length: int, fua: bool, now_ns: int) -> int:
        self._check(offset, length)
        self.store.zero(offset, length)
        first, count = self._full_sectors(offset, length)
        if count:
            now_ns = self._unmap(first, count, now_ns)
        done = now_ns + self.trim_ns + self.overhead_ns
        # Partial sectors at either edge are really programmed.
        for edge in {offset // SECTOR, (offset + length - 1) // SECTOR} if length else set():
            if not first <= edge < first + count:
                done = max(done, self._program(edge, edge, now_ns) + self.overhead_ns)
        return done + (self.flush_ns if fua else 0)

    def flush(self, now_ns: int) -> int:
        self.store.flush()
        return now_ns + self.flush_ns

    # ----------------------------------------------------- background and HID
    def background_step(self, now_ns: int) -> int | None:
        hid_next = self.hid.step(now_ns, DEFRAG_STEP_BYTES)
        if hid_next is not None or self.wb is None or not self.wb.fold_wanted():
            return hid_next
        busy = self.dies.idle_at()
        if busy > now_ns:
            return busy  # fold only when the command queue is empty (fWriteBoosterBufferFlushEn)
        return self._fold_step(now_ns)

    def _fold_step(self, now_ns: int) -> int:
        """Fold one step of the SLC buffer to TLC: read it back and program it, on every die."""
        assert self.wb is not None
        sectors = self.wb.fold(FOLD_STEP_SECTORS)
        dies, spg = self._dies, self._sectors_per_group
        per_die = -(-sectors // dies)
        cost = int(-(-per_die // spg) * self.tr_ns + per_die * (self.read_ns_per_sector + self.tlc_write_ns_per_sector))
        return self.dies.occupy(now_ns, [(die, cost) for die in range(dies)])

    def hid_analysis_cost_ns(self) -> int:
        mapped_gib = self.ftl.mapped_sectors * SECTOR / 2**30
        return int(self.hid_config.analysis_us_per_gib * 1000 * max(mapped_gib, 1 / 1024))

    def hid_analyse(self) -> AnalysisResult:
        windows, mapped = self.ftl.fragmented_windows(
            self.window_sectors, self.hid_config.min_run_kib * 1024 // SECTOR
        )
        self._defrag_queue = windows.tolist()[::-1]  # popped from the end: logical order
        return AnalysisResult(fragmented_bytes=int(mapped.sum()) * SECTOR)

    def hid_defrag_step(self, now_ns: int, budget_bytes: int) -> tuple[int, int]:
        """Rewrite whole fragmented windows contiguously at the log head."""
        self._now = now_ns
        moved = 0
        done = now_ns
        while self._defrag_queue and moved < budget_bytes:
            window = self._defrag_queue.pop()
            first = window * self.window_sectors
            lpns = np.arange(first, min(first + self.window_sectors, self.ftl.logical_sectors), dtype=np.int64)
            old = self.ftl.l2p[lpns]
            lpns = lpns[old >= 0]
            if not len(lpns):
                continue
            done = max(done, self.dies.occupy(now_ns, self._read_costs(old[old >= 0])))
            if self.l2p is not None:
                done = max(done, self._charge_map_moves(lpns, now_ns))
            new = self.ftl.program(lpns, internal=True)
            done = max(done, self.dies.occupy(now_ns, self._write_costs(new, 0)))
            if self._l2p_extents:
                assert self.l2p is not None
                self.l2p.refresh(int(lpns[0]) >> self._l2p_shift, int(lpns[-1]) >> self._l2p_shift)
            moved += len(lpns) * SECTOR
        return moved, done

    # ------------------------------------------------------------------ aging
    def age(
        self,
        fragmentation_percent: float,
        fragment_kib: int = 4,
        seed: int = 1,
        span_percent: float = 100.0,
        mapped_only: bool = True,
    ) -> dict[str, Any]:
        """Scatter the physical layout of a share of the data, as years of use would.

        Windows (HID's analysis unit) are picked at random until they hold
        ``fragmentation_percent`` of the data in the span; their pieces of
        ``fragment_kib`` are then rewritten interleaved with each other, as if
        many files had grown at once, and the other windows sequentially.
        Only the mapping changes: the host reads exactly the same bytes.
        """
        if not 0 <= fragmentation_percent <= 100:
            raise ValueError(f"fragmentation_percent must be between 0 and 100, got {fragmentation_percent}")
        if fragment_kib < 4 or fragment_kib & (fragment_kib - 1):
            raise ValueError(f"fragment_kib must be a power of two >= 4, got {fragment_kib}")
        if not 0 < span_percent <= 100:
            raise ValueError(f"span_percent must be in (0, 100], got {span_percent}")
        rng = np.random.default_rng(seed)
        span = int(self.ftl.logical_sectors * span_percent / 100)
        wsec = self.window_sectors
        windows = -(-span // wsec)
        grid = np.arange(windows * wsec, dtype=np.int64).reshape(windows, wsec)
        in_span = grid < span
        if mapped_only:
            in_span &= self.ftl.l2p[np.minimum(grid, self.ftl.logical_sectors - 1)] >= 0
        weight = in_span.sum(axis=1)
        total = int(weight.sum())
        if mapped_only and total == 0:
            raise NothingToAgeError(
                "nothing to age: no data is written in the aged span yet; write data first "
                "(e.g. nbdcopy, fio) or age every sector as a pre-aged device would be (ctl age --all, "
                '"mapped_only": false)')
        order = rng.permutation(np.flatnonzero(weight))
        cumulative = np.cumsum(weight[order])
        chosen_count = int(np.searchsorted(cumulative, total * fragmentation_percent / 100.0, side="left"))
        if fragmentation_percent > 0:
            chosen_count = min(len(order), chosen_count + 1)
        chosen = np.sort(order[:chosen_count])
        piece = min(wsec, fragment_kib * 1024 // SECTOR)
        # Interleave: piece k of every chosen window, then piece k+1 of every one...
        # in a new random order each round, as files growing at once append in
        # no fixed order.  (A fixed order would put a window's pieces a
        # constant stride apart, all on one die when the stride is a multiple
        # of the die rotation.)
        rounds = wsec // piece
        shape = (len(chosen), rounds, piece)
        order_per_round = np.argsort(rng.random((rounds, len(chosen))), axis=1)
        round_index = np.arange(rounds)[:, None]
        scattered = grid[chosen].reshape(shape)[order_per_round, round_index].reshape(-1)
        scattered_mask = in_span[chosen].reshape(shape)[order_per_round, round_index].reshape(-1)
        rest = np.setdiff1d(np.flatnonzero(weight), chosen)
        sequential = grid[rest].reshape(-1)
        sequential_mask = in_span[rest].reshape(-1)
        self.ftl.program(scattered[scattered_mask], internal=True)
        self.ftl.program(sequential[sequential_mask], internal=True)
        if self.l2p is not None:
            # Aging stands for years of use, not for requests: no map traffic
            # is charged, but cached units are re-priced to the new layout.
            self.l2p.refresh_all()
        return {
            "aged_bytes": total * SECTOR,
            "scattered_bytes": int(scattered_mask.sum()) * SECTOR,
            "fragment_kib": fragment_kib,
        }

    # ------------------------------------------------------------------ state
    def snapshot_state(self) -> dict[str, np.ndarray]:
        """The FTL and the HID state machine, with the windows a defragmentation still has to do;
        the L2P cache's contents and the SLC buffer's fill where the model has them."""
        return {**self.ftl.state(), **self.hid.state_arrays(),
                "hid_defrag_queue": np.array(self._defrag_queue, dtype=np.int64),
                **(self.l2p.state_arrays() if self.l2p is not None else {}),
                **(self.wb.state_arrays() if self.wb is not None else {})}

    def restore_state(self, state: dict[str, np.ndarray]) -> None:
        self.ftl.load_state(state)
        if "hid_state" in state:  # traces written before HID state was saved carry only the FTL
            queue = state["hid_defrag_queue"]
            windows = -(-self.ftl.logical_sectors // self.window_sectors)
            if len(queue) and not (int(queue.min()) >= 0 and int(queue.max()) < windows):
                raise ValueError("saved HID defragmentation queue names windows beyond this device")
            self.hid.load_state_arrays(state)
            self._defrag_queue = queue.tolist()
        # Saved by a model with a limited cache or WriteBooster; a model
        # without them (or a state saved without them) starts them empty.
        if self.l2p is not None and "l2p_units" in state:
            self.l2p.load_state_arrays(state)
        if self.wb is not None and "wb_state" in state:
            self.wb.load_state_arrays(state)

    # Counters describe() and the metrics report; checkpoints keep them, traces do not.
    _READ_COUNTERS = ("reads_with_media", "read_physical_runs", "read_tr_total")

    def snapshot_counters(self) -> dict[str, np.ndarray]:
        return {"ufs_read_counters": np.array([getattr(self, name) for name in self._READ_COUNTERS],
                                              dtype=np.int64), **self.hid.counter_arrays(),
                **(self.l2p.counter_arrays() if self.l2p is not None else {}),
                **(self.wb.counter_arrays() if self.wb is not None else {})}

    def restore_counters(self, state: dict[str, np.ndarray]) -> None:
        values = state["ufs_read_counters"].tolist()
        if len(values) != len(self._READ_COUNTERS):
            raise ValueError(f"saved UFS counters have {len(values)} entries, expected {len(self._READ_COUNTERS)}")
        for name, value in zip(self._READ_COUNTERS, values, strict=True):
            setattr(self, name, int(value))
        self.hid.load_counter_arrays(state)
        if self.l2p is not None:
            self.l2p.load_counter_arrays(state)
        if self.wb is not None:
            self.wb.load_counter_arrays(state)

    # ------------------------------------------------------------ inspection
    def layout(self) -> tuple[int, int]:
        """(fragmented bytes, mapped bytes) by HID's definition, cached per mapping change."""
        cached = self._layout_cache
        if cached is not None and cached[0] == self.ftl.generation:
            return cached[1], cached[2]
        _, mapped = self.ftl.fragmented_windows(self.window_sectors, self.hid_config.min_run_kib * 1024 // SECTOR)
        result = (int(mapped.sum()) * SECTOR, self.ftl.mapped_sectors * SECTOR)
        self._layout_cache = (self.ftl.generation, *result)
        return result

    def fragmentation(self) -> dict[str, Any]:
        fragmented, mapped = self.layout()
        return {
            "fragmented_bytes": fragmented,
            "mapped_bytes": mapped,
            "fragmented_percent": round(100.0 * fragmented / mapped, 3) if mapped else 0.0,
            "window_kib": self.hid_config.window_kib,
            "min_run_kib": self.hid_config.min_run_kib,
            "mean_physical_runs_per_read": self.mean_runs_per_read,
        }

    @property
    def mean_runs_per_read(self) -> float:
        return self.read_physical_runs / self.reads_with_media if self.reads_with_media else 0.0

    @property
    def map_sectors_programmed(self) -> int:
        """Sectors of dirty map pages written back by the L2P cache."""
        return self.l2p.map_writes * self._map_sectors if self.l2p is not None else 0

    @property
    def write_amplification(self) -> float:
        """NAND programs per host program: GC and HID moves, map write-backs and WriteBooster folds count."""
        host = self.ftl.host_sectors_programmed
        folded = self.wb.folded_sectors if self.wb is not None else 0
        nand = host + self.ftl.internal_sectors_programmed + self.map_sectors_programmed + folded
        return nand / host if host else 1.0

    def l2p_snapshot(self) -> dict[str, Any]:
        if self.l2p is None:
            return {"mode": "unlimited", "capacity_bytes": 0, "map_bytes": self.ftl.logical_sectors
                    * self.config.ufs.l2p_entry_bytes}
        return {**self.l2p.snapshot(), "map_bytes": self.ftl.logical_sectors * self.config.ufs.l2p_entry_bytes,
                "map_bytes_programmed": self.map_sectors_programmed * SECTOR}

    def describe(self) -> dict[str, Any]:
        return {
            **describe_identity(self.name, self.kind, self.size_bytes, self.capabilities),
            "ftl": {
                "dies": self.geometry.dies,
                "superblocks": self.ftl.superblocks,
                "superblock_bytes": self.geometry.sectors_per_superblock * SECTOR,
                "free_superblocks": self.ftl.free_superblocks,
                "physical_bytes": self.ftl.physical_sectors * SECTOR,
                "host_bytes_programmed": self.ftl.host_sectors_programmed * SECTOR,
                "internal_bytes_programmed": self.ftl.internal_sectors_programmed * SECTOR,
                "gc_bytes_relocated": self.ftl.gc_sectors_relocated * SECTOR,
                "erases": self.ftl.erases,
                "write_amplification": round(self.write_amplification, 4),
            },
            "fragmentation": self.fragmentation(),
            "hid": self.hid.snapshot(),
            "l2p": self.l2p_snapshot(),
            "writebooster": self.wb.snapshot() if self.wb is not None else {"present": False},
        }

    # ------------------------------------------------------------ control API
    def routes(self) -> list[Route]:
        return [
            *HID_GROUP.routes(self.hid),
            *(WB_GROUP.routes(self.wb) if self.wb is not None else []),
            Route("POST", f"{API_PREFIX}/age", self._age_request, "Induce fragmentation", body=AGE_BODY,
                  errors=(400, 409)),
            Route("GET", f"{API_PREFIX}/fragmentation", self.fragmentation, "Fragmentation summary"),
        ]

    def _age_request(self, **request: Any) -> Any:
        if self.hid.state is HidState.DEFRAG_IN_PROGRESS:
            raise ApiError(409, "cannot age while HID defragmentation is in progress")
        try:
            return self.age(**request)
        except NothingToAgeError as err:
            raise ApiError(409, str(err)) from None
        except ValueError as err:
            raise ApiError(400, str(err)) from None

    # ---------------------------------------------------------------- metrics
    def metrics(self) -> Iterator[MetricFamily]:
        fragmented, mapped = self.layout()
        yield MetricFamily("blockemu_ufs_fragmented_bytes", "gauge",
                           "Mapped bytes in fragmented windows (HID's definition)", [({}, fragmented)])
        yield MetricFamily("blockemu_ufs_mapped_bytes", "gauge", "Bytes currently mapped by the FTL", [({}, mapped)])
        yield MetricFamily("blockemu_ufs_read_physical_runs", "counter",
                           "Physically contiguous runs read by host reads that touched NAND",
                           [({}, self.read_physical_runs)])
        yield MetricFamily("blockemu_ufs_media_reads", "counter", "Host reads that touched NAND",
                           [({}, self.reads_with_media)])
        yield MetricFamily("blockemu_ufs_mean_physical_runs_per_read", "gauge",
                           "Mean physically contiguous runs per host read", [({}, self.mean_runs_per_read)])
        yield MetricFamily("blockemu_ufs_nand_reads", "counter", "NAND tR operations for host reads",
                           [({}, self.read_tr_total)])
        yield MetricFamily("blockemu_ufs_programmed_bytes", "counter", "Bytes programmed to NAND",
                           [({"source": "host"}, self.ftl.host_sectors_programmed * SECTOR),
                            ({"source": "internal"}, self.ftl.internal_sectors_programmed * SECTOR)])
        yield MetricFamily("blockemu_ufs_gc_relocated_bytes", "counter", "Bytes relocated by garbage collection",
                           [({}, self.ftl.gc_sectors_relocated * SECTOR)])
        yield MetricFamily("blockemu_ufs_erases", "counter", "Superblock erases", [({}, self.ftl.erases)])
        yield MetricFamily("blockemu_ufs_free_superblocks", "gauge", "Free superblocks",
                           [({}, self.ftl.free_superblocks)])
        yield MetricFamily("blockemu_ufs_write_amplification", "gauge", "NAND programs per host program",
                           [({}, self.write_amplification)])
        yield MetricFamily("blockemu_ufs_die_busy_seconds", "counter", "Modeled busy time per NAND die",
                           [({"die": str(d)}, ns / 1e9) for d, ns in enumerate(self.dies.busy_ns)])
        yield MetricFamily("blockemu_hid_state", "gauge", "HID state (1 for the current one)",
                           [({"state": s.value}, 1.0 if s is self.hid.state else 0.0) for s in HidState])
        yield MetricFamily("blockemu_hid_progress_ratio", "gauge", "HID progress_ratio (0-100)",
                           [({}, self.hid.progress_ratio)])
        yield MetricFamily("blockemu_hid_fragmented_size_bytes", "gauge", "HID fragmented_size from the last analysis",
                           [({}, self.hid.fragmented_size)])
        yield MetricFamily("blockemu_hid_defrag_moved_bytes", "counter", "Bytes rewritten inside the device by HID",
                           [({}, self.hid.defrag_bytes_total)])
        yield MetricFamily("blockemu_hid_analyses", "counter", "HID analyses completed",
                           [({}, self.hid.analyses_total)])
        yield from l2p_metrics(self.l2p)
        yield from wb_metrics(self.wb)

    def close(self) -> None:
        self.store.close()


class NothingToAgeError(ValueError):
    """Aging written data only, on a device (or span) where nothing is written."""


AGE_BODY = JsonBody(obj({
    "fragmentation_percent": {"type": "number", "minimum": 0, "maximum": 100},
    "fragment_kib": {"type": "integer"}, "seed": {"type": "integer"},
    "span_percent": {"type": "number"}, "mapped_only": {"type": "boolean"}}, "fragmentation_percent"),
    usage='body must be JSON, e.g. {"fragmentation_percent": 60}')

