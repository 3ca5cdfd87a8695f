"""The L2P mapping cache: exact hits, misses, evictions, write-backs and extent pricing."""

from __future__ import annotations

import numpy as np
import pytest

from blockemu.config import ConfigError
from blockemu.config.ufs import L2P_MODES
from blockemu.devices.ufs.device import UfsDevice
from blockemu.devices.ufs.ftl import SECTOR, FlashTranslationLayer, Geometry
from blockemu.devices.ufs.l2p import MAP_CACHES, ExtentMapCache, PageMapCache, make_map_cache
from blockemu.store import MemoryStore
from tests.conftest import small_ufs_config

GEOMETRY = Geometry(dies=2, planes_per_die=1, sectors_per_nand_page=4, pages_per_block=4)  # 32-sector superblocks
PAGE = 64  # bytes per map page: 16 four-byte entries, so a unit is 16 LPNs


def make_ftl(logical: int = 256) -> FlashTranslationLayer:
    return FlashTranslationLayer(logical, GEOMETRY, overprovision_percent=25, gc_reserve_superblocks=1)


def brute_extents(ftl: FlashTranslationLayer, unit: int, size: int = 16) -> int:
    ppns = ftl.l2p[unit * size : (unit + 1) * size]
    mapped = ppns >= 0  # runs contiguous both logically and physically
    return int(mapped.sum() - (mapped[1:] & mapped[:-1] & (np.diff(ppns) == 1)).sum())


def test_page_mode_hit_miss_and_lru_eviction() -> None:
    cache = PageMapCache(make_ftl(), capacity_bytes=2 * PAGE, map_page_bytes=PAGE, entry_bytes=4)
    assert cache.unit_sectors == 16
    assert cache.access(0, dirty=False) == 1  # miss: one map page read
    assert cache.access(0, dirty=False) == 0  # hit
    assert cache.access(1, dirty=False) == 1
    assert cache.access(0, dirty=False) == 0  # 0 is now the most recent
    assert cache.access(2, dirty=False) == 1  # evicts 1, the least recent
    assert list(cache.lru) == [0, 2]
    assert cache.access(1, dirty=False) == 1  # a miss again; evicts 0
    assert cache.counters() == {"hits": 2, "misses": 4, "map_reads": 4, "map_writes": 0, "evictions": 2}
    assert cache.used_bytes == 2 * PAGE and cache.cached_units == 2
    assert cache.pending_writebacks == []  # clean units go without a write


def test_dirty_unit_is_written_back_on_eviction_only() -> None:
    cache = PageMapCache(make_ftl(), capacity_bytes=2 * PAGE, map_page_bytes=PAGE, entry_bytes=4)
    cache.access(0, dirty=True)
    cache.access(1, dirty=False)
    assert cache.map_writes == 0 and cache.dirty_units == 1
    cache.access(2, dirty=False)  # evicts dirty 0
    assert cache.map_writes == 1 and cache.pending_writebacks == [0]
    cache.access(3, dirty=False)  # evicts clean 1
    assert cache.map_writes == 1 and cache.pending_writebacks == [0]
    assert cache.access_range(16 * 2, 16 * 4 - 1, dirty=False) == []  # units 2 and 3: both hits


def test_extent_unit_costs_follow_the_data_when_it_moves() -> None:
    ftl = make_ftl()
    cache = ExtentMapCache(ftl, capacity_bytes=4 * PAGE, map_page_bytes=PAGE, entry_bytes=4, extent_entry_bytes=8)
    ftl.program(np.arange(0, 16, dtype=np.int64))  # unit 0: one extent
    for i in range(16):  # units 1 and 2 grow interleaved: 16 extents each
        ftl.program_one(16 + i)
        ftl.program_one(32 + i)
    assert [ftl.unit_extents(u) for u in range(3)] == [1, 16, 16]
    assert cache.cost(0) == 8 and cache.cost(1) == PAGE  # extents, or the page map when that is smaller
    cache.access(0, dirty=False)
    # One map page read brings unit 0 and the packed units after it that fit: unit 1 needs a page of its own.
    assert list(cache.lru) == [0] and cache.used_bytes == 8
    # An overwrite in the middle splits unit 0 into three extents ...
    ftl.program_one(5)
    assert ftl.unit_extents(0) == 3 == brute_extents(ftl, 0)
    cache.refresh(0, 0)
    assert cache.used_bytes == 24
    # ... and rewriting it contiguously (what HID does) merges it again.
    ftl.program(np.arange(0, 16, dtype=np.int64), internal=True)
    cache.refresh(0, 0)
    assert ftl.unit_extents(0) == 1 and cache.used_bytes == 8
    # Unmapping half leaves one extent; unmapping all leaves none (priced as one entry).
    ftl.unmap(8, 8)
    assert ftl.unit_extents(0) == 1
    ftl.unmap(0, 8)
    assert ftl.unit_extents(0) == 0 and cache.cost(0) == 8


def test_extent_miss_prefetches_contiguous_units_in_one_map_read() -> None:
    ftl = make_ftl()
    ftl.program(np.arange(256, dtype=np.int64))  # everything contiguous: 16 units of one extent
    cache = ExtentMapCache(ftl, capacity_bytes=4 * PAGE, map_page_bytes=PAGE, entry_bytes=4, extent_entry_bytes=8)
    assert cache.access(0, dirty=False) == 1
    assert cache.cached_units == PAGE // 8  # one page holds eight one-extent units
    assert [cache.access(u, dirty=False) for u in range(8)] == [0] * 8
    assert cache.map_reads == 1 and cache.misses == 1 and cache.hits == 8


def test_extent_counts_stay_exact_under_random_writes_gc_and_unmaps() -> None:
    ftl = make_ftl()
    ftl.track_extents(16)
    rng = np.random.default_rng(5)
    for step in range(3000):
        lpn = int(rng.integers(0, 256))
        if step % 97 == 0:
            ftl.unmap(lpn, int(rng.integers(1, 20)) if lpn < 236 else 1)
        elif step % 13 == 0:
            count = int(rng.integers(1, min(40, 256 - lpn) + 1))
            ftl.program(np.arange(lpn, lpn + count, dtype=np.int64))
        else:
            ftl.program_one(lpn)  # enough overwrites to run garbage collection many times
    assert ftl.erases > 0
    assert [ftl.unit_extents(u) for u in range(16)] == [brute_extents(ftl, u) for u in range(16)]
    assert ftl.unit_mapped.sum() == ftl.mapped_sectors


def test_unlimited_is_no_cache_and_bad_sizes_are_refused() -> None:
    ftl = make_ftl()
    assert make_map_cache(ftl, "page", 0, PAGE, 4, 8) is None
    with pytest.raises(ValueError, match="cannot hold one"):
        make_map_cache(ftl, "page", 32, PAGE, 4, 8)
    with pytest.raises(ValueError, match="l2p_mode must be one of page, extent"):
        make_map_cache(ftl, "hash", 4 * PAGE, PAGE, 4, 8)
    assert set(MAP_CACHES) == set(L2P_MODES)
    with pytest.raises(ConfigError, match="l2p_mode"):
        small_ufs_config(ufs={"l2p_cache_kib": 64, "l2p_mode": "hash"})
    with pytest.raises(ConfigError, match="l2p_cache_kib"):
        small_ufs_config(ufs={"l2p_cache_kib": 2, "l2p_map_page_kib": 4})


# ------------------------------------------------------------------ device
def make_device(**ufs: object) -> UfsDevice:
    config = small_ufs_config(ufs=ufs)
    return UfsDevice(config, MemoryStore(config.capacity_bytes))


def test_a_miss_reads_the_map_page_before_the_data() -> None:
    dev = make_device(l2p_cache_kib=4, l2p_map_page_kib=4)  # one map unit (4 MiB of data) fits
    assert dev.l2p is not None and not dev.capabilities.vector_replay
    dev.write(0, memoryview(bytes(SECTOR)), False, 0)
    dev.write(8 * 2**20, memoryview(bytes(SECTOR)), False, 0)  # unit 2: evicts unit 0
    start = 10**12
    done = dev.read(0, memoryview(bytearray(SECTOR)), start)
    assert done - start == dev.map_read_ns + dev._one_sector_read_ns + dev.overhead_ns
    assert dev.map_read_ns == dev.tr_ns + int(dev.read_ns_per_sector)  # a 4 KiB map page: tR + one sector
    start *= 2
    done = dev.read(0, memoryview(bytearray(SECTOR)), start)  # now a hit
    assert done - start == dev._one_sector_read_ns + dev.overhead_ns
    assert dev.describe()["l2p"]["misses"] == 3 and dev.describe()["l2p"]["hits"] == 1


def test_map_write_backs_count_in_write_amplification() -> None:
    dev = make_device(l2p_cache_kib=4)
    for unit in range(6):  # each write dirties a unit, and evicts the one before
        dev.write(unit * 4 * 2**20, memoryview(bytes(SECTOR)), False, 0)
    assert dev.l2p is not None and dev.l2p.map_writes == 5
    assert dev.write_amplification == (6 + 5) / 6
    names = {family.name for family in dev.metrics()}
    assert {"blockemu_ufs_l2p_hits", "blockemu_ufs_l2p_misses", "blockemu_ufs_l2p_map_reads",
            "blockemu_ufs_l2p_map_writes", "blockemu_ufs_l2p_cached_bytes"} <= names


def test_state_round_trips_cache_contents() -> None:
    dev = make_device(l2p_cache_kib=8, l2p_mode="extent")
    dev.write(0, memoryview(bytes(2**20)), False, 0)
    dev.write(20 * 2**20, memoryview(bytes(SECTOR)), False, 0)
    assert dev.l2p is not None
    before = list(dev.l2p.lru.items()), set(dev.l2p.dirty)
    copy = make_device(l2p_cache_kib=8, l2p_mode="extent")
    copy.restore_state(dev.snapshot_state())
    copy.restore_counters(dev.snapshot_counters())
    assert copy.l2p is not None
    assert (list(copy.l2p.lru.items()), set(copy.l2p.dirty)) == before
    assert copy.l2p.counters() == dev.l2p.counters()
