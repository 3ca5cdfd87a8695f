from __future__ import annotations

import numpy as np

from blockemu.devices.ufs.ftl import UNMAPPED, FlashTranslationLayer, Geometry

GEOMETRY = Geometry(dies=2, planes_per_die=1, sectors_per_nand_page=4, pages_per_block=4)  # 32-sector superblocks


def make_ftl(logical: int = 256) -> FlashTranslationLayer:
    return FlashTranslationLayer(logical, GEOMETRY, overprovision_percent=25, gc_reserve_superblocks=1)


def check_invariants(ftl: FlashTranslationLayer) -> None:
    mapped = np.flatnonzero(ftl.l2p >= 0)
    assert np.array_equal(ftl.p2l[ftl.l2p[mapped]], mapped), "p2l must invert l2p"
    owners = np.flatnonzero(ftl.p2l >= 0)
    assert np.array_equal(ftl.l2p[ftl.p2l[owners]], owners), "every owned ppn is current"
    sbs = GEOMETRY.sectors_per_superblock
    assert np.array_equal(ftl.valid, np.bincount(owners // sbs, minlength=ftl.superblocks))
    assert ftl.mapped_sectors == len(mapped)


def test_sequential_writes_are_physically_contiguous() -> None:
    ftl = make_ftl()
    ppns = ftl.program(np.arange(10, 74, dtype=np.int64))
    assert np.array_equal(np.diff(ppns), np.ones(63))
    assert ftl.physical_runs(ftl.lookup_range(10, 64)) == 1
    check_invariants(ftl)


def test_interleaved_streams_fragment_each_other() -> None:
    ftl = make_ftl()
    for i in range(32):
        ftl.program_one(i)  # file A grows ...
        ftl.program_one(100 + i)  # ... while file B grows
    assert ftl.physical_runs(ftl.lookup_range(0, 32)) == 32
    assert ftl.physical_runs(ftl.lookup_range(100, 32)) == 32
    check_invariants(ftl)


def test_overwrite_and_unmap_keep_mapping_consistent() -> None:
    ftl = make_ftl()
    ftl.program(np.arange(0, 64, dtype=np.int64))
    first = ftl.lookup(5)
    ftl.program_one(5)
    assert ftl.lookup(5) != first
    assert ftl.p2l[first] == UNMAPPED
    ftl.unmap(0, 16)
    assert (ftl.lookup_range(0, 16) == UNMAPPED).all()
    assert ftl.mapped_sectors == 48
    check_invariants(ftl)


def test_garbage_collection_reclaims_space_and_keeps_every_mapping() -> None:
    ftl = make_ftl(logical=256)
    rng = np.random.default_rng(3)
    ftl.program(np.arange(256, dtype=np.int64))
    relocated: list[int] = []
    ftl.on_relocate = lambda old, new: relocated.append(len(old))
    for _ in range(2000):  # many times the physical space: GC must run
        ftl.program_one(int(rng.integers(0, 256)))
    assert ftl.erases > 0
    assert ftl.gc_sectors_relocated == sum(relocated)
    assert ftl.mapped_sectors == 256
    check_invariants(ftl)


def test_window_layout_counts_runs_and_extents() -> None:
    ftl = make_ftl()
    ftl.program(np.arange(0, 8, dtype=np.int64))  # window 0: one run
    for i in range(8):  # windows 1 and 2 interleaved: 8 runs each
        ftl.program_one(8 + i)
        ftl.program_one(16 + i)
    mapped, runs, extents = ftl.window_layout(8)
    assert mapped[:3].tolist() == [8, 8, 8]
    assert runs[:3].tolist() == [1, 8, 8]
    assert extents[:3].tolist() == [1, 1, 1]
    windows, sizes = ftl.fragmented_windows(8, min_run_sectors=4)
    assert windows.tolist() == [1, 2]
    assert sizes.tolist() == [8, 8]


def test_repeated_lpns_in_one_program_call_keep_the_last_write() -> None:
    ftl = make_ftl()
    ppns = ftl.program(np.array([3, 4, 3, 5, 4], dtype=np.int64), distinct=False)
    assert ftl.lookup(3) == ppns[2] and ftl.lookup(4) == ppns[4] and ftl.lookup(5) == ppns[3]
    assert ftl.p2l[ppns[0]] == UNMAPPED and ftl.p2l[ppns[1]] == UNMAPPED
    assert ftl.mapped_sectors == 3
    check_invariants(ftl)


def test_state_round_trips_into_a_fresh_ftl() -> None:
    ftl = make_ftl()
    rng = np.random.default_rng(9)
    for _ in range(500):
        ftl.program_one(int(rng.integers(0, 256)))
    copy = make_ftl()
    copy.load_state(ftl.state())
    assert np.array_equal(copy.l2p, ftl.l2p) and np.array_equal(copy.p2l, ftl.p2l)
    assert np.array_equal(copy.valid, ftl.valid) and copy.free_superblocks == ftl.free_superblocks
    assert copy.program_one(7) == ftl.program_one(7)  # same log head
    check_invariants(copy)
