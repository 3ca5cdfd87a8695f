"""zram against a reference bytearray: round trips, recompression, mem_limit, malformed attributes, checkpoints."""

from __future__ import annotations

import errno
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockemu.config import config_from_mapping
from blockemu.devices.base import DeviceError
from blockemu.devices.zram.codecs import CODEC_NAMES, LEVEL_RANGES, PAGE, Codec
from blockemu.devices.zram.device import ZramDevice
from blockemu.devices.zram.sysfs import ATTRIBUTES, ZramValueError
from blockemu.store import MemoryStore

SPAN_PAGES = 24
COSTS = "lz4=4/1, lz4hc=20/1, zstd=15/5"


def _noise(seed: int) -> bytes:
    return np.random.default_rng(seed).bytes(PAGE)


def _alphabet(args: tuple[bytes, int]) -> bytes:
    alphabet, seed = args
    choice = np.random.default_rng(seed).integers(0, len(alphabet), PAGE)
    return bytes(np.frombuffer(alphabet, dtype=np.uint8)[choice])


# Pages of every shape, from small recipes: arbitrary bytes (zero-padded),
# noise, tiled fragments, small alphabets, one repeated word, one byte value.
pages = st.one_of(
    st.binary(max_size=PAGE).map(lambda b: b + bytes(PAGE - len(b))),
    st.integers(0, 2**32).map(_noise),
    st.binary(min_size=1, max_size=64).map(lambda b: (b * (PAGE // len(b) + 1))[:PAGE]),
    st.tuples(st.binary(min_size=1, max_size=6), st.integers(0, 2**16)).map(_alphabet),
    st.binary(min_size=8, max_size=8).map(lambda w: w * (PAGE // 8)),
    st.integers(0, 255).map(lambda b: bytes([b]) * PAGE),
    st.tuples(st.binary(min_size=1, max_size=16), st.integers(0, 2**16), st.integers(1, PAGE - 1)).map(
        lambda t: ((t[0] * PAGE)[: t[2]] + _noise(t[1]))[:PAGE]),
)


@settings(max_examples=60, deadline=None)
@given(page=pages, name=st.sampled_from(CODEC_NAMES), level_choice=st.integers(0, 3))
def test_any_page_round_trips_through_every_codec(page: bytes, name: str, level_choice: int) -> None:
    low, high = LEVEL_RANGES[name]
    level = [low, min(high, 3), min(high, 9), high][level_choice] if name != "lz4" else [1, 2, 8, 64][level_choice]
    codec = Codec(name, level)
    assert codec.decompress(codec.compress(page)) == page


def make(**zram: Any) -> ZramDevice:
    config = config_from_mapping({"device": {"type": "zram", "name": "zram_prop", "capacity_mib": 1},
                                  "zram": {"cost_us": COSTS, **zram}}, "<property>")
    return ZramDevice(config, MemoryStore(config.capacity_bytes))


offsets = st.integers(0, SPAN_PAGES * PAGE - 1)
operation = st.one_of(
    st.tuples(st.just("write"), offsets, st.lists(pages, min_size=1, max_size=3), st.integers(0, 4095)),
    st.tuples(st.just("read"), offsets, st.integers(1, 3 * PAGE), st.just(0)),
    st.tuples(st.just("trim"), offsets, st.integers(0, 3 * PAGE), st.just(0)),
    st.tuples(st.just("zero"), offsets, st.integers(0, 3 * PAGE), st.just(0)),
    st.tuples(st.just("attr"), st.sampled_from([
        ("idle", "all"), ("recompress", "type=idle"), ("recompress", "type=huge"), ("recompress", ""),
        ("recompress", "type=huge_idle threshold=64 max_pages=3"), ("compact", "1"),
        ("algorithm_params", "priority=1 level=12"), ("comp_algorithm", "zstd"), ("comp_algorithm", "lz4"),
    ]), st.just(0), st.just(0)),
    st.tuples(st.just("background"), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("drain"), st.just(0), st.just(0), st.just(0)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=st.sampled_from(["single", "multi", "heuristic"]),
    async_workers=st.sampled_from([0, 2]),
    ops=st.lists(operation, min_size=1, max_size=25),
)
def test_model_matches_reference_and_recompression_never_changes_data(
    policy: str, async_workers: int, ops: list[tuple[str, Any, Any, Any]]
) -> None:
    dev = make(policy=policy, async_workers=async_workers, staging_pages=3, batch_pages=2,
               recomp_algorithms="lz4hc,zstd", idle_recompress_after_s=0.0)
    size = SPAN_PAGES * PAGE + 3 * PAGE * 4
    reference = bytearray(size)
    now = 0
    for op, a, b, c in ops:
        now += 1_000_000
        if op == "write":
            data = b"".join(b)[c:] if len(b) > 1 else b[0][: PAGE - c]
            dev.write(a, memoryview(data), False, now)
            reference[a : a + len(data)] = data
        elif op == "read":
            buf = bytearray(b)
            dev.read(a, memoryview(buf), now)
            assert bytes(buf) == bytes(reference[a : a + b])
        elif op == "trim":
            # Trim frees whole pages only: they read back as zeros.
            dev.trim(a, b, now)
            first, end = -(-a // PAGE), (a + b) // PAGE
            if first < end:
                reference[first * PAGE : end * PAGE] = bytes((end - first) * PAGE)
        elif op == "zero":
            dev.write_zeroes(a, b, False, now)
            reference[a : a + b] = bytes(b)
        elif op == "attr":
            dev.write_attribute(*a)
        elif op == "background":
            dev.background_step(now)
        else:
            dev.drain(now)
        stat = [int(x) for x in dev.read_attribute("mm_stat").split()]
        assert stat[2] >= stat[1]  # mem_used_total >= compr_data_size
        assert stat[4] >= stat[2]  # mem_used_max >= mem_used_total: the peak is never behind
        # The incrementally kept counts agree with a full recount of the page table.
        entries = dev.entries.values()
        assert stat[5] == sum(1 for e in entries if e.codec is None and e.size == 0)  # same_pages
        assert stat[7] == sum(1 for e in entries if e.size == PAGE and e.codec is None)  # huge_pages
        assert stat[1] == sum(e.size for e in entries) + PAGE * len(dev.staging)
        assert stat[2] == (dev.pool.total_pages + len(dev.staging)) * PAGE
        assert sum(v for k, v in dev.pages_by_algorithm().items() if k != "staged") == len(dev.entries)
    dev.drain(now)
    dev.write_attribute("idle", "all")
    dev.write_attribute("recompress", "")
    buf = bytearray(size)
    dev.read(0, memoryview(buf), now)
    assert bytes(buf) == bytes(reference)


def apply(dev: ZramDevice, op: str, a: Any, b: Any, c: Any, now: int) -> None:
    """One operation of the ``operation`` strategy, reads included (their results are not checked here)."""
    if op == "write":
        dev.write(a, memoryview(b"".join(b)[c:] if len(b) > 1 else b[0][: PAGE - c]), False, now)
    elif op == "read":
        dev.read(a, memoryview(bytearray(b)), now)
    elif op == "trim":
        dev.trim(a, b, now)
    elif op == "zero":
        dev.write_zeroes(a, b, False, now)
    elif op == "attr":
        dev.write_attribute(*a)
    elif op == "background":
        dev.background_step(now)
    else:
        dev.drain(now)


def image(dev: ZramDevice, now: int) -> bytes:
    buf = bytearray(dev.size_bytes)
    dev.read(0, memoryview(buf), now)
    return bytes(buf)


# Not heuristic: it asks how busy the modeled CPUs are, and modeled time
# (their backlog) is not saved, so the two devices may rightly choose apart.
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=st.sampled_from(["single", "multi"]),
    async_workers=st.sampled_from([0, 2]),
    before=st.lists(operation, min_size=1, max_size=20),
    after=st.lists(operation, max_size=10),
)
def test_a_checkpointed_device_restores_and_then_behaves_the_same(
    policy: str, async_workers: int, before: list[tuple[str, Any, Any, Any]], after: list[tuple[str, Any, Any, Any]]
) -> None:
    from blockemu.store.file import decode_checkpoint, encode_checkpoint

    settings_ = {"policy": policy, "async_workers": async_workers, "staging_pages": 3, "batch_pages": 2,
                 "recomp_algorithms": "lz4hc,zstd", "idle_recompress_after_s": 0.0}
    dev = make(**settings_)
    now = 0
    for op, a, b, c in before:
        now += 1_000_000
        apply(dev, op, a, b, c, now)
    state = {**dev.snapshot_contents(), **dev.snapshot_counters()}
    saved = decode_checkpoint(b"".join(bytes(p) for p in encode_checkpoint(1, {}, state)), "state").arrays
    fresh = make(**settings_)
    fresh.restore_contents(saved)
    fresh.restore_counters(saved)
    # A restored device's clock starts at zero where the saved one stood: the same ages.
    offset = now
    assert fresh.read_attribute("mm_stat") == dev.read_attribute("mm_stat")
    assert fresh.read_attribute("io_stat") == dev.read_attribute("io_stat")
    for op, a, b, c in after:
        now += 1_000_000
        apply(dev, op, a, b, c, now)
        apply(fresh, op, a, b, c, now - offset)
        assert fresh.read_attribute("mm_stat") == dev.read_attribute("mm_stat")
    dev.drain(now)
    fresh.drain(now - offset)
    assert fresh.read_attribute("mm_stat") == dev.read_attribute("mm_stat")
    assert image(fresh, now - offset) == image(dev, now)


# Mostly pages that take pool memory (noise is stored huge, a page each), so
# that multi-page writes straddle the limit often.
pool_pages = st.one_of(st.integers(0, 2**32).map(_noise), pages)


@settings(max_examples=40, deadline=None)
@given(
    limit_pages=st.integers(1, 40),
    async_workers=st.sampled_from([0, 1]),
    writes=st.lists(st.tuples(st.integers(0, 60), st.lists(pool_pages, min_size=1, max_size=4)), min_size=1,
                    max_size=30),
)
def test_mem_limit_refusal_leaves_all_prior_data_intact(limit_pages: int, async_workers: int,
                                             writes: list[tuple[int, list[bytes]]]) -> None:
    dev = make(mem_limit_mib=0, async_workers=async_workers, staging_pages=8)
    dev.write_attribute("mem_limit", str(limit_pages * PAGE))
    reference = bytearray(64 * PAGE + 4 * PAGE)
    for index, data_pages in writes:
        data = b"".join(data_pages)
        try:
            dev.write(index * PAGE, memoryview(data), False, 0)
        except DeviceError as err:
            assert err.errno == errno.EIO
        else:
            reference[index * PAGE : index * PAGE + len(data)] = data
        buf = bytearray(len(reference))
        dev.read(0, memoryview(buf), 0)
        assert bytes(buf) == bytes(reference)
        if not async_workers:
            assert int(dev.read_attribute("mm_stat").split()[2]) <= limit_pages * PAGE


@settings(max_examples=150, deadline=None)
@given(attribute=st.sampled_from(ATTRIBUTES), text=st.one_of(
    st.text(max_size=40),
    st.lists(st.tuples(st.sampled_from(["algo", "priority", "level", "type", "threshold", "max_pages", "dict", "x"]),
                       st.sampled_from(["", "0", "1", "3", "4", "99", "-1", "zstd", "lzo", "idle", "huge", "a b"])),
             max_size=4).map(lambda kv: " ".join(f"{k}={v}" for k, v in kv)),
))
def test_attribute_writes_either_apply_or_fail_cleanly(attribute: str, text: str) -> None:
    dev = make(recomp_algorithms="zstd")
    dev.write(0, memoryview(b"hello zram " * 372 + b"1234"), False, 0)
    before = (dev.snapshot(), [c.key if c else None for c in dev.algorithms], dev.limit_pages,
              [(e.idle, e.priority, e.size, e.incompressible) for e in dev.entries.values()])
    try:
        dev.write_attribute(attribute, text)
    except ZramValueError as err:
        assert "\n" not in str(err)
        after = (dev.snapshot(), [c.key if c else None for c in dev.algorithms], dev.limit_pages,
                 [(e.idle, e.priority, e.size, e.incompressible) for e in dev.entries.values()])
        assert after == before
    buf = bytearray(PAGE)
    dev.read(0, memoryview(buf), 0)
    assert bytes(buf) == b"hello zram " * 372 + b"1234"
