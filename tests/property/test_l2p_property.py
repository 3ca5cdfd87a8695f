"""The L2P cache and WriteBooster change timing only: never what the host reads, nor where data lies."""

from __future__ import annotations

import contextlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockemu.devices.ufs.device import NothingToAgeError, UfsDevice
from blockemu.store import MemoryStore
from tests.conftest import small_ufs_config

SPAN = 6 * 2**20  # a dozen 512 KiB map units: more than the tiny caches hold
# 1 KiB map pages of 8-byte entries: 128 LPNs (512 KiB) per unit; 2 KiB of SRAM holds two.
TINY = {"l2p_cache_kib": 2, "l2p_map_page_kib": 1, "l2p_entry_bytes": 8}

offsets = st.integers(0, SPAN - 1)
operation = st.one_of(
    st.tuples(st.just("write"), offsets, st.integers(1, 300_000), st.integers(0, 255)),
    st.tuples(st.just("read"), offsets, st.integers(0, 300_000), st.just(0)),
    st.tuples(st.just("trim"), offsets, st.integers(0, 300_000), st.just(0)),
    st.tuples(st.just("age"), st.integers(0, 100), st.sampled_from([4, 64]), st.integers(0, 9)),
    st.tuples(st.just("defrag"), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("idle"), st.just(0), st.just(0), st.just(0)),
)


def build(**ufs: object) -> UfsDevice:
    config = small_ufs_config(ufs={**ufs, "wb_buffer_mib": 1} if ufs.get("wb_enabled") else ufs)
    return UfsDevice(config, MemoryStore(config.capacity_bytes))


def extents(ppns: np.ndarray) -> int:
    """Runs contiguous both logically and physically: the entries of an extent map."""
    mapped = ppns >= 0
    joins = mapped[1:] & mapped[:-1] & (np.diff(ppns) == 1)
    return int(mapped.sum() - joins.sum())


def drain(dev: UfsDevice, now: int) -> int:
    while (nxt := dev.background_step(now)) is not None:
        now = max(now, nxt)
    return now


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, min_size=1, max_size=30))
def test_cache_and_writebooster_never_change_data_or_mapping(ops: list[tuple[str, int, int, int]]) -> None:
    plain = build()
    variants = [build(**TINY, l2p_mode="page"), build(**TINY, l2p_mode="extent", wb_enabled=True)]
    devices = [plain, *variants]
    now = 0
    for op, a, b, c in ops:
        b = min(b, SPAN - a) if op in ("write", "read", "trim") else b
        now += 1_000_000
        for dev in devices:
            if op == "write":
                data = bytes([c]) * b
                dev.write(a, memoryview(data), False, now)
            elif op == "trim":
                dev.trim(a, b, now)
            elif op == "age":
                with contextlib.suppress(NothingToAgeError):
                    dev.age(a, b, c)
            elif op == "defrag":
                dev.hid.write("defrag_trigger", "enable")
                drain(dev, now)
            elif op == "idle":
                drain(dev, now)  # WriteBooster folds
        if op == "read":
            got = []
            for dev in devices:
                buf = bytearray(b)
                dev.read(a, memoryview(buf), now)
                got.append(bytes(buf))
            assert got[1:] == got[:1] * len(variants)
        for dev in variants:
            assert np.array_equal(dev.ftl.l2p, plain.ftl.l2p), "the cache must not change the mapping"
            assert dev.l2p is not None
            assert dev.l2p.used_bytes == sum(dev.l2p.lru.values()) <= dev.l2p.capacity_bytes
    extent = variants[1]
    assert extent.l2p is not None
    size = extent.l2p.unit_sectors
    for unit in range(extent.l2p.units):
        ppns = extent.ftl.l2p[unit * size : (unit + 1) * size]
        assert extent.ftl.unit_extents(unit) == extents(ppns)
        if unit in extent.l2p.lru:
            assert extent.l2p.lru[unit] == extent.l2p.cost(unit)
