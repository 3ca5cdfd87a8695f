"""Random writes, reads, trims, zeroes and GC steps on the zoned log against a reference bytearray."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockemu.config import config_from_mapping
from blockemu.devices.zns_log.device import ZnsFtlDevice
from blockemu.devices.zns_log.log import BLOCK
from blockemu.store import MemoryStore

# 16 zones of 1 MiB, 40 % kept back: 2457 exported blocks, so large writes
# fill it within an example and GC has to run.
CONFIG = config_from_mapping({
    "device": {"type": "zns_ftl", "name": "log_prop", "capacity_mib": 16},
    "zns": {"zone_size_mib": 1, "max_open_zones": 6, "max_active_zones": 6},
    "zns_ftl": {"gc_policy": "zone_aware", "copy_method": "simple_copy", "overprovision_percent": 40.0,
                "gc_start_free_zones": 2, "gc_step_blocks": 16},
}, "<property>")

offsets = st.integers(0, 9 * 1024 * 1024)
lengths = st.integers(0, 1024 * 1024)
operation = st.one_of(
    # Fill the whole device, then scattered 4 KiB overwrites: what makes GC relocate.
    st.tuples(st.just("fill"), st.just(0), st.just(0), st.integers(1, 255)),
    st.tuples(st.just("churn"), st.integers(0, 2**31), st.integers(100, 1500), st.integers(1, 255)),
    st.tuples(st.just("write"), offsets, lengths, st.integers(1, 255)),
    st.tuples(st.just("write"), offsets, st.integers(1, 9000), st.integers(1, 255)),
    st.tuples(st.just("read"), offsets, lengths, st.just(0)),
    st.tuples(st.just("trim"), offsets, lengths, st.just(0)),
    st.tuples(st.just("zero"), offsets, st.integers(0, 20000), st.just(0)),
    st.tuples(st.just("gc"), st.just(0), st.integers(1, 20), st.just(0)),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, min_size=1, max_size=30))
def test_zoned_log_matches_reference(ops: list[tuple[str, int, int, int]]) -> None:
    dev = ZnsFtlDevice(CONFIG, MemoryStore(CONFIG.capacity_bytes))
    size = dev.size_bytes
    reference = bytearray(size)
    now = 0
    # Start full, so that overwrites leave partly valid zones for GC to relocate.
    for op, a, b, c in [("fill", 0, 0, 0x11), *ops]:
        offset = min(a, size)
        length = min(b, size - offset)
        if op == "fill":
            for start in range(0, size, 1024 * 1024):
                chunk = bytes([c]) * min(1024 * 1024, size - start)
                now = dev.write(start, memoryview(chunk), False, now)
            reference[:] = bytes([c]) * size
        elif op == "churn":
            rng = random.Random(a)
            for _ in range(b):
                at = rng.randrange(size // BLOCK) * BLOCK
                data = bytes([c, rng.randrange(256)]) * (BLOCK // 2)
                now = dev.write(at, memoryview(data), False, now)
                reference[at : at + BLOCK] = data
        elif op == "write":
            data = bytes([c]) * length
            now = dev.write(offset, memoryview(data), False, now)
            reference[offset : offset + length] = data
        elif op == "read":
            buf = bytearray(length)
            dev.read(offset, memoryview(buf), now)
            assert buf == reference[offset : offset + length]
        elif op == "trim":
            dev.trim(offset, length, now)
            # Whole blocks inside the range are forgotten and read as zeros.
            first = -(-offset // BLOCK) * BLOCK
            end = (offset + length) // BLOCK * BLOCK
            if end > first:
                reference[first:end] = bytes(end - first)
        elif op == "zero":
            now = dev.write_zeroes(offset, length, False, now)
            reference[offset : offset + length] = bytes(length)
        elif op == "gc":
            for _ in range(b):
                done = dev.background_step(now)
                if done is None:
                    break
                now = done
        dev.log.check_consistency()
        assert dev.log.write_amplification >= 1.0
    whole = bytearray(size)
    dev.read(0, memoryview(whole), now)
    assert whole == reference
