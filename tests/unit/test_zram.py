"""The zram model: data path, pool accounting, kernel attributes, policies, timing, async staging."""

from __future__ import annotations

import errno
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blockemu.config import ConfigError, config_from_mapping
from blockemu.devices.base import ApiError, DeviceError
from blockemu.devices.zram.codecs import (
    CODEC_NAMES,
    PAGE,
    Codec,
    CodecError,
    InlineBatchCompressor,
    ThreadPoolBatchCompressor,
    parse_cost_overrides,
)
from blockemu.devices.zram.core import same_pattern
from blockemu.devices.zram.device import ZramDevice
from blockemu.devices.zram.policy import (
    DeviceSignals,
    HeuristicPolicy,
    MultiPolicy,
    PageSignals,
    PolicySettings,
    SinglePolicy,
    create_policy,
)
from blockemu.devices.zram.sysfs import ZramValueError, memparse
from blockemu.devices.zram.zsmalloc import ZsPool
from blockemu.runtime import DeviceRuntime
from blockemu.store import MemoryStore
from tests.conftest import api

MIB = 1024 * 1024
# Pinned costs: modeled times in these tests do not depend on the host.
COSTS = "lz4=4/1, lz4hc=20/1, zstd=15/5"


def zram_config(**zram: Any) -> Any:
    settings: dict[str, Any] = {"cost_us": COSTS, **zram}
    mode = settings.pop("mode", "virtual")
    return config_from_mapping({"device": {"type": "zram", "name": "zram_test", "capacity_mib": 16},
                                "timing": {"mode": mode}, "zram": settings}, "<test>")


def make(**zram: Any) -> ZramDevice:
    config = zram_config(**zram)
    return ZramDevice(config, MemoryStore(config.capacity_bytes))


def text_page(seed: int) -> bytes:
    """A compressible page that is not one repeated 8-byte word (that would be a same page)."""
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    out = bytearray()
    n = seed
    while len(out) < PAGE:
        out += f"{words[n % 5]} {n} ".encode()
        n += 1 + seed % 3
    return bytes(out[:PAGE])


def write(dev: ZramDevice, offset: int, data: bytes, now: int = 0) -> int:
    return dev.write(offset, memoryview(data), False, now)


def read(dev: ZramDevice, offset: int, length: int, now: int = 0) -> bytes:
    buf = bytearray(length)
    dev.read(offset, memoryview(buf), now)
    return bytes(buf)


def mm_stat(dev: ZramDevice) -> list[int]:
    return [int(x) for x in dev.read_attribute("mm_stat").split()]


# ------------------------------------------------------------------ codecs
@pytest.mark.parametrize("name", CODEC_NAMES)
def test_every_codec_round_trips_text_random_and_zero_pages(name: str) -> None:
    codec = Codec(name)
    for page in (text_page(1), os.urandom(PAGE), bytes(PAGE)):
        assert codec.decompress(codec.compress(page)) == page
    assert len(codec.compress(text_page(2))) < PAGE // 2


def test_codec_levels_are_validated_and_corrupt_data_is_an_error() -> None:
    assert Codec("zstd", 19).key == "zstd:19"
    with pytest.raises(CodecError, match="lz4hc level must be between 1 and 12"):
        Codec("lz4hc", 13)
    with pytest.raises(CodecError, match="unknown algorithm 'lzo'"):
        Codec("lzo")
    with pytest.raises(CodecError, match="corrupt"):
        Codec("zstd").decompress(b"\x00garbage")


def test_cost_overrides_parse_and_reject_bad_text() -> None:
    costs = parse_cost_overrides("lz4=2.5/0.5, zstd:7=30/8")
    assert costs["lz4:1"].compress_ns == 2500 and costs["zstd:7"].decompress_ns == 8000
    for bad in ("lz4=2.5", "lz4=a/b", "lzo=1/1", "lz4=-1/1"):
        with pytest.raises(CodecError):
            parse_cost_overrides(bad)


def test_batch_back_ends_agree_on_one_contiguous_buffer() -> None:
    from concurrent.futures import ThreadPoolExecutor

    pages = [text_page(i) for i in range(7)] + [os.urandom(PAGE)]
    codecs = [Codec("lz4"), Codec("zstd")] * 4
    buffer = memoryview(b"".join(pages))
    inline = InlineBatchCompressor().compress_batch(buffer, codecs)
    with ThreadPoolExecutor(3) as pool:
        threaded = ThreadPoolBatchCompressor(pool, 3).compress_batch(buffer, codecs)
    assert [d for d, _ in inline] == [d for d, _ in threaded]
    assert [c.decompress(d) for c, (d, _) in zip(codecs, threaded, strict=True)] == pages
    with pytest.raises(ValueError, match="expected 8 pages"):
        InlineBatchCompressor().compress_batch(buffer[:100], codecs)


# ---------------------------------------------------------------- zsmalloc
def test_pool_follows_zsmalloc_size_classes_of_linux_6_12() -> None:
    pool = ZsPool()  # CONFIG_ZSMALLOC_CHAIN_SIZE=8, as Debian's and GKI's 6.12 kernels
    # zs_malloc() looks the class up for size + ZS_HANDLE_SIZE (8).
    assert pool.class_index(24) == 0 and pool.class_index(25) == 1
    assert pool.classes[pool.class_index(100)].size == 112  # 108 → the 112-byte class
    # calculate_zspage_chain_size(): least absolute waste over 1..8 pages.
    cls = pool.classes[pool.class_index(100)]
    assert (cls.pages_per_zspage, cls.objs_per_zspage) == (7, 256)  # 7 × 4096 = 256 × 112, no waste
    kib = pool.classes[pool.class_index(1000)]
    assert (kib.size, kib.pages_per_zspage, kib.objs_per_zspage) == (1024, 1, 4)  # a power of two: 1 page
    # The largest class that is not huge is 3632 (9 objects in 8 pages): huge_class_size = 3632 - 7.
    assert pool.huge_class_size == 3625
    assert pool.classes[pool.class_index(3624)].size == 3632
    assert pool.classes[pool.class_index(3625)].size == PAGE == pool.classes[-1].size
    # Classes with the same geometry are merged into the larger one (can_merge):
    # 777..808-byte objects share the 816-byte class, 5 objects to one page.
    assert pool.class_index(777) == pool.class_index(808) != pool.class_index(776)
    assert len(pool.classes) == 119
    # Older kernels' 4-page chains: fewer classes survive, and a lower huge threshold.
    assert (ZsPool(4).huge_class_size, len(ZsPool(4).classes)) == (3257, 69)
    with pytest.raises(ValueError, match=re.escape("4..16 pages")):
        ZsPool(3)


def test_pool_accounts_zspages_and_refills_the_fullest_first() -> None:
    pool = ZsPool()
    handles = [pool.malloc(100) for _ in range(300)]  # 256 per 7-page zspage
    assert pool.total_pages == 2 * 7 and pool.total_pages * PAGE >= 300 * 100
    merged = [pool.malloc(size) for size in (777, 790, 808)]  # one merged class: one page holds all three
    assert pool.total_pages == 2 * 7 + 1
    # A third zspage of the 112 class, then free most of the second: the
    # fullest partial zspage (fullness group, zs_malloc's find_get_zspage) is refilled first.
    handles += [pool.malloc(100) for _ in range(256)]
    assert pool.total_pages == 3 * 7 + 1
    for handle in handles[256:500]:
        pool.free(handle)  # zspage 1 keeps 12 of 256 (group _10), zspage 2 is full
    pool.free(handles[-1])  # zspage 2 now 255 of 256 (group _99)
    new = pool.malloc(100)
    assert pool._objects[new][1] == pool._objects[handles[-2]][1]
    for handle in [*handles[:256], *handles[500:-1], *merged, new]:
        pool.free(handle)
    assert pool.total_pages == 0 and pool.objects == 0


def test_compaction_frees_sparse_zspages_and_keeps_every_object() -> None:
    pool = ZsPool()
    handles = [pool.malloc(1000) for _ in range(400)]
    for handle in handles[::3] + handles[1::3]:
        pool.free(handle)
    before = pool.total_pages
    kept = handles[2::3]
    freed = pool.compact()
    assert freed > 0 and pool.total_pages == before - freed and pool.pages_compacted == freed
    cls = pool.classes[pool.class_index(1000)]
    assert pool.total_pages == -(-len(kept) // cls.objs_per_zspage) * cls.pages_per_zspage
    for handle in kept:
        pool.free(handle)
    assert pool.total_pages == 0


# ------------------------------------------------------------ data path
@pytest.mark.parametrize("policy", ["single", "multi", "heuristic"])
@pytest.mark.parametrize("async_workers", [0, 2])
def test_data_round_trips_aligned_and_unaligned(policy: str, async_workers: int) -> None:
    dev = make(policy=policy, async_workers=async_workers, staging_pages=4, batch_pages=2)
    pages = [text_page(i) for i in range(6)] + [os.urandom(PAGE), b"\x5a" * PAGE, bytes(PAGE)]
    payload = b"".join(pages)
    write(dev, 3 * PAGE, payload)
    assert read(dev, 3 * PAGE, len(payload)) == payload
    patch = b"patched!" * 100
    write(dev, 3 * PAGE + 1000, patch)
    expected = bytearray(payload)
    expected[1000 : 1000 + len(patch)] = patch
    assert read(dev, 3 * PAGE, len(payload)) == bytes(expected)
    assert read(dev, 0, 3 * PAGE) == bytes(3 * PAGE)
    dev.drain(0)
    assert not dev.offload_pending()
    assert read(dev, 3 * PAGE, len(payload)) == bytes(expected)


def test_same_pages_take_no_pool_memory_and_huge_pages_are_stored_raw() -> None:
    dev = make()
    assert same_pattern(b"\x01\x02\x03\x04\x05\x06\x07\x08" * 512) is not None
    write(dev, 0, b"\x00" * PAGE + b"\x07" * PAGE + b"\x01\x02\x03\x04\x05\x06\x07\x08" * 512)
    stat = mm_stat(dev)
    assert stat[0] == 3 * PAGE and stat[5] == 3 and stat[2] == 0 and stat[1] == 0
    noise = os.urandom(PAGE)
    write(dev, 3 * PAGE, noise)
    stat = mm_stat(dev)
    assert stat[7] == 1 and stat[8] == 1  # huge_pages, huge_pages_since
    assert stat[1] == PAGE and stat[2] == PAGE
    assert read(dev, 3 * PAGE, PAGE) == noise
    write(dev, 3 * PAGE, text_page(3))
    stat = mm_stat(dev)
    assert stat[7] == 0 and stat[8] == 1  # huge_pages_since only grows


def test_mm_stat_has_the_kernel_layout_and_mem_used_covers_compressed_data() -> None:
    dev = make()
    write(dev, 0, b"".join(text_page(i) for i in range(50)))
    text = dev.read_attribute("mm_stat")
    assert text.endswith("\n") and len(text.split()) == 9
    # "%8llu %8llu ..." in the kernel: right-aligned in 8 columns, one space apart.
    assert text == " ".join("%8d" % int(v) for v in text.split()) + "\n"  # noqa: UP031
    orig, compr, used, limit, used_max, same, compacted, huge, huge_since = mm_stat(dev)
    assert orig == 50 * PAGE and 0 < compr < orig and used >= compr and used_max >= used and limit == 0
    assert same == 0 and compacted == 0 and huge == 0 and huge_since == 0
    assert dev.read_attribute("io_stat") == "       0        0 0        0\n"


def test_notify_free_does_not_depend_on_whether_pages_were_compressed_yet() -> None:
    dev = make(async_workers=1, staging_pages=64)
    write(dev, 0, b"".join(text_page(i) for i in range(8)))  # staged, not compressed: no executor here
    assert dev.offload_pending()
    dev.trim(0, 8 * PAGE, 0)
    assert dev.read_attribute("io_stat").split()[3] == "8"
    assert read(dev, 0, 8 * PAGE) == bytes(8 * PAGE)


def test_trim_frees_whole_pages_and_counts_notify_free() -> None:
    dev = make()
    write(dev, 0, b"".join(text_page(i) for i in range(4)))
    dev.trim(PAGE + 100, 2 * PAGE, 0)  # covers page 2 fully, pages 1 and 3 partly
    assert read(dev, 2 * PAGE, PAGE) == bytes(PAGE)
    assert read(dev, PAGE, PAGE) == text_page(1) and read(dev, 3 * PAGE, PAGE) == text_page(3)
    assert dev.read_attribute("io_stat").split()[3] == "1"
    dev.trim(10 * PAGE, 3 * PAGE, 0)  # never written: the kernel counts these too
    assert dev.read_attribute("io_stat").split()[3] == "4"
    dev.write_zeroes(100, PAGE, False, 0)
    assert read(dev, 0, 2 * PAGE) == text_page(0)[:100] + bytes(PAGE) + text_page(1)[100:]


def test_out_of_range_requests_are_refused() -> None:
    dev = make()
    with pytest.raises(DeviceError) as info:
        write(dev, 16 * MIB - 100, bytes(200))
    assert info.value.errno == errno.EINVAL


# ---------------------------------------------------------------- mem_limit
def test_mem_limit_write_fails_with_eio_and_leaves_prior_data_and_the_failed_range_intact() -> None:
    dev = make(mem_limit_mib=1)
    stored: dict[int, bytes] = {}
    index = 0
    with pytest.raises(DeviceError) as info:
        while True:
            page = os.urandom(PAGE)  # huge pages: one pool page each
            write(dev, index * PAGE, page)
            stored[index] = page
            index += 1
    assert info.value.errno == errno.EIO  # zram_write_page's -ENOMEM ends the bio with BLK_STS_IOERR
    assert len(stored) == 256  # 1 MiB of one-page objects
    before = dev.read_attribute("mm_stat")
    # A multi-page write that overlaps existing pages fails as a whole.
    with pytest.raises(DeviceError):
        write(dev, 250 * PAGE, os.urandom(20 * PAGE))
    assert dev.read_attribute("mm_stat") == before
    for i, page in stored.items():
        assert read(dev, i * PAGE, PAGE) == page
    assert dev.read_attribute("io_stat").split()[1] == "2"  # failed_writes
    dev.trim(0, 10 * PAGE, 0)
    write(dev, 0, os.urandom(PAGE))  # room again


def test_mem_limit_with_async_staging_counts_staged_pages() -> None:
    dev = make(mem_limit_mib=1, async_workers=1, staging_pages=1024)
    write(dev, 0, os.urandom(200 * PAGE))
    with pytest.raises(DeviceError) as info:
        write(dev, 200 * PAGE, os.urandom(100 * PAGE))
    assert info.value.errno == errno.EIO
    assert read(dev, 200 * PAGE, PAGE) == bytes(PAGE)


# ---------------------------------------------------------- attributes
def test_algorithm_attributes_read_like_the_kernel() -> None:
    dev = make(comp_algorithm="zstd", recomp_algorithms="")
    assert dev.read_attribute("comp_algorithm") == "lz4 lz4hc [zstd] \n"
    assert dev.read_attribute("recomp_algorithm") == ""
    dev.write_attribute("recomp_algorithm", "algo=lz4hc priority=2\n")
    dev.write_attribute("recomp_algorithm", "algo=zstd")
    assert dev.read_attribute("recomp_algorithm") == "#1: lz4 lz4hc [zstd] \n#2: lz4 [lz4hc] zstd \n"
    dev.write_attribute("algorithm_params", "algo=zstd level=9")
    assert dev.algorithms[0] is not None and dev.algorithms[0].key == "zstd:9"
    dev.write_attribute("algorithm_params", "priority=2 level=12")
    assert dev.algorithms[2] is not None and dev.algorithms[2].key == "lz4hc:12"
    dev.write_attribute("comp_algorithm", "lz4")
    assert dev.read_attribute("comp_algorithm") == "[lz4] lz4hc zstd \n"
    assert dev.read_attribute("disksize") == f"{16 * MIB}\n" and dev.read_attribute("initstate") == "1\n"


@pytest.mark.parametrize(
    ("attribute", "text", "message"),
    [
        ("comp_algorithm", "lzo", "unknown algorithm 'lzo'"),
        ("comp_algorithm", "", "unknown algorithm ''"),
        ("recomp_algorithm", "zstd", "expected key=value"),
        ("recomp_algorithm", "algo=zstd priority=4", "priority must be 1..3"),
        ("recomp_algorithm", "algo=zstd priority=one", "non-negative decimal integer"),
        ("recomp_algorithm", "priority=1", "algo= is required"),
        ("recomp_algorithm", "algo=brotli", "unknown algorithm 'brotli'"),
        ("recomp_algorithm", "algo=zstd algo=lz4", "algo given twice"),
        ("algorithm_params", "algo=zstd level=99", "zstd level must be between 1 and 22"),
        ("algorithm_params", "level=3", "priority= or algo= is required"),
        ("algorithm_params", "priority=3 level=3", "no algorithm at priority 3"),
        ("algorithm_params", "algo=lz4hc level=3", "'lz4hc' is not configured"),
        ("algorithm_params", "priority=1 dict=/etc/passwd", "dict= is not supported"),
        ("idle", "sometimes", "idle (seconds, or 'all')"),
        ("idle", "-5", "non-negative decimal integer"),
        ("recompress", "type=cold", "type must be idle, huge or huge_idle"),
        ("recompress", "type=idle max_pages=lots", "max_pages must be"),
        ("recompress", "threshold=4096", "threshold must be below"),
        ("recompress", "type=idle colour=blue", "unknown key 'colour'"),
        ("recompress", "type=", "expected key=value"),
        ("recompress", "algo=lz4hc", "not a configured recomp_algorithm"),
        ("recompress", "priority=3", "no recomp_algorithm at priority 3"),
        ("mem_limit", "lots", "optional K, M, G or T suffix"),
        ("mem_limit", "-1M", "must be >= 0"),
        ("mem_used_max", "5", "accepts only 0"),
        ("mm_stat", "0", "read-only"),
        ("nonsense", "1", "unknown zram attribute"),
    ],
)
def test_malformed_attribute_writes_fail_and_change_nothing(attribute: str, text: str, message: str) -> None:
    dev = make(policy="multi", recomp_algorithms="zstd")
    write(dev, 0, b"".join(text_page(i) for i in range(8)) + os.urandom(PAGE))
    before = (dev.snapshot(), [c.key if c else None for c in dev.algorithms], dev.limit_pages,
              [(e.idle, e.priority, e.size) for e in dev.entries.values()])
    with pytest.raises(ZramValueError, match=re.escape(message)):
        dev.write_attribute(attribute, text)
    after = (dev.snapshot(), [c.key if c else None for c in dev.algorithms], dev.limit_pages,
             [(e.idle, e.priority, e.size) for e in dev.entries.values()])
    assert after == before


def test_memparse_accepts_the_kernel_suffixes() -> None:
    assert memparse("0", "x") == 0 and memparse("4096", "x") == 4096
    assert memparse("64K", "x") == 65536 and memparse("2m", "x") == 2 * MIB and memparse("1G", "x") == 2**30


def test_idle_then_recompress_shrinks_idle_pages_without_changing_data() -> None:
    dev = make(policy="single", recomp_algorithms="zstd")
    pages = [text_page(i) for i in range(20)]
    for i, page in enumerate(pages):
        write(dev, i * PAGE, page, now=i * 1_000_000_000)
    dev.background_step(30 * 10**9)
    read(dev, 0, PAGE, now=30 * 10**9)  # the newest access makes page 0 recent
    dev.write_attribute("idle", "15")  # pages last touched 15 s or more before now
    idle = sorted(i for i, e in dev.entries.items() if e.idle)
    assert idle == list(range(1, 16))
    compr_before = mm_stat(dev)[1]
    dev.write_attribute("recompress", "type=idle max_pages=10")
    assert dev.stats.recompressed_pages == 10
    assert mm_stat(dev)[1] < compr_before
    assert {e.codec.name for i, e in dev.entries.items() if e.codec and 1 <= i <= 10} == {"zstd"}
    assert b"".join(read(dev, i * PAGE, PAGE) for i in range(20)) == b"".join(pages)
    dev.write_attribute("idle", "all")
    dev.write_attribute("recompress", "type=idle")
    assert {e.priority for e in dev.entries.values()} == {1}
    assert b"".join(read(dev, i * PAGE, PAGE) for i in range(20)) == b"".join(pages)


def test_recompress_huge_only_touches_huge_pages() -> None:
    dev = make(recomp_algorithms="zstd")
    write(dev, 0, text_page(1) + os.urandom(PAGE))
    dev.write_attribute("recompress", "type=huge")
    assert dev.stats.recompress_attempts == 1  # the random page; it stays huge
    assert dev.entries[1].incompressible and dev.entries[0].priority == 0


def test_compact_attribute_frees_pages_after_scattered_frees() -> None:
    dev = make()
    pages = [text_page(i)[:2000] + os.urandom(2096) for i in range(200)]  # ~2.1 KB objects
    write(dev, 0, b"".join(pages))
    dev.trim(0, 200 * PAGE, 0)
    write(dev, 0, b"".join(pages))
    for i in range(0, 200, 2):
        dev.trim(i * PAGE, PAGE, 0)
    used_before = mm_stat(dev)[2]
    dev.write_attribute("compact", "1")
    orig, compr, used, *_rest = mm_stat(dev)
    compacted = mm_stat(dev)[6]
    assert orig == 100 * PAGE and compacted > 0 and used == used_before - compacted * PAGE and used >= compr
    assert all(read(dev, i * PAGE, PAGE) == pages[i] for i in range(1, 200, 2))


def test_reset_and_disksize_follow_the_kernel() -> None:
    dev = make(policy="multi", recomp_algorithms="zstd")
    write(dev, 0, b"".join(text_page(i) for i in range(8)))
    dev.write_attribute("mem_limit", "8M")
    assert dev.read_attribute("initstate") == "1\n" and dev.read_attribute("disksize") == f"{16 << 20}\n"
    with pytest.raises(ZramValueError, match="initialized device"):  # disksize_store: -EBUSY
        dev.write_attribute("disksize", "8M")
    for bad in ("0", "yes", "-1", "65536"):
        with pytest.raises(ZramValueError, match="reset"):
            dev.write_attribute("reset", bad)
    dev.write_attribute("reset", "1")
    # zram_reset_device(): no pages, zeroed statistics, no limit, the default algorithm alone, disksize 0.
    assert dev.read_attribute("initstate") == "0\n" and dev.read_attribute("disksize") == "0\n"
    assert mm_stat(dev) == [0] * 9 and dev.read_attribute("io_stat").split() == ["0"] * 4
    assert dev.read_attribute("comp_algorithm") == "[lz4] lz4hc zstd \n"
    assert dev.read_attribute("recomp_algorithm") == ""
    with pytest.raises(DeviceError) as info:
        read(dev, 0, PAGE)
    assert info.value.errno == errno.EIO and "write disksize first" in str(info.value)
    for attribute, value in (("idle", "all"), ("compact", "1"), ("recompress", "type=idle")):
        with pytest.raises(ZramValueError, match="not initialized"):
            dev.write_attribute(attribute, value)
    dev.write_attribute("comp_algorithm", "zstd")
    with pytest.raises(ZramValueError, match="exceeds the served capacity"):
        dev.write_attribute("disksize", "17M")
    dev.write_attribute("disksize", "4095K")  # PAGE_ALIGNed up
    assert dev.read_attribute("disksize") == f"{4 << 20}\n" and dev.read_attribute("initstate") == "1\n"
    write(dev, 0, text_page(1))
    assert read(dev, 0, PAGE) == text_page(1) and dev.entries[0].codec == Codec("zstd")
    with pytest.raises(DeviceError) as info:
        write(dev, (4 << 20) - PAGE, bytes(2 * PAGE))  # beyond disksize: the kernel's capacity
    assert info.value.errno == errno.EIO
    with pytest.raises(DeviceError) as info:
        write(dev, 16 << 20, bytes(PAGE))  # beyond what the frontend serves: malformed
    assert info.value.errno == errno.EINVAL
    with pytest.raises(ApiError) as api_info:
        api(dev, "PUT", ["zram", "disksize"], b"1M")
    assert api_info.value.status == 409


def test_mem_limit_and_mem_used_max_writes() -> None:
    dev = make()
    write(dev, 0, os.urandom(4 * PAGE))
    dev.write_attribute("mem_limit", "8K")
    assert mm_stat(dev)[3] == 8192
    dev.trim(0, 4 * PAGE, 0)
    assert mm_stat(dev)[4] == 4 * PAGE
    dev.write_attribute("mem_used_max", "0")
    assert mm_stat(dev)[4] == 0


# --------------------------------------------------------------- control API
def test_api_reads_text_writes_text_and_maps_errors_to_statuses() -> None:
    dev = make()
    assert api(dev, "GET", ["zram", "comp_algorithm"], b"") == "[lz4] lz4hc zstd \n"
    state = api(dev, "PUT", ["zram", "recomp_algorithm"], b"algo=zstd priority=1\n")
    assert state["recomp_algorithm"] == {"1": "zstd:3"}
    assert api(dev, "GET", ["zram"], b"")["mm_stat"]["orig_data_size"] == 0
    for method, path, body, status in [
        ("PUT", ["zram", "comp_algorithm"], b"lzo", 400),
        ("PUT", ["zram", "comp_algorithm"], b"\xff", 400),
        ("GET", ["zram", "recompress"], b"", 405),
        ("PUT", ["zram", "mm_stat"], b"1", 405),
        ("GET", ["zram", "nope"], b"", 404),
        ("DELETE", ["zram", "idle"], b"", 405),
        ("POST", ["zram"], b"", 405),
        ("GET", ["hid"], b"", 404),
    ]:
        with pytest.raises(ApiError) as info:
            api(dev, method, path, body)
        assert info.value.status == status, (method, path)


def test_metrics_report_measured_and_modeled_cpu_per_algorithm() -> None:
    dev = make()
    write(dev, 0, text_page(1))
    read(dev, 0, PAGE)
    families = {f.name: f for f in dev.metrics()}
    cpu = {(s[0]["algo"], s[0]["op"]): s[1] for s in families["blockemu_zram_cpu_seconds"].samples}
    assert cpu[("lz4:1", "compress")] > 0 and cpu[("lz4:1", "decompress")] > 0
    modeled = {(s[0]["algo"], s[0]["op"]): s[1] for s in families["blockemu_zram_modeled_cpu_seconds"].samples}
    assert modeled[("lz4:1", "compress")] == pytest.approx(4e-6)
    assert families["blockemu_zram_orig_data_bytes"].samples[0][1] == PAGE


# ------------------------------------------------------------------ policies
def test_policies_are_created_by_name() -> None:
    settings = PolicySettings()
    assert isinstance(create_policy("single", settings), SinglePolicy)
    assert isinstance(create_policy("multi", settings), MultiPolicy)
    assert isinstance(create_policy("heuristic", settings), HeuristicPolicy)
    with pytest.raises(ValueError, match="allowed: single, multi, heuristic"):
        create_policy("random", settings)


def test_heuristic_rules_in_order() -> None:
    policy = HeuristicPolicy(PolicySettings(hot_reads=2, hot_window_s=10, incompressible_ratio=0.9,
                                            busy_threshold=0.5))
    now = 100 * 10**9
    idle_device = DeviceSignals(now_ns=now, busy=0.0, max_priority=1)
    cold = PageSignals(reads=0, last_read_ns=None, probe_ratio=0.3)
    hot = PageSignals(reads=3, last_read_ns=now - 10**9, probe_ratio=0.3)
    stale_hot = PageSignals(reads=3, last_read_ns=now - 60 * 10**9, probe_ratio=0.3)
    noise = PageSignals(reads=0, last_read_ns=None, probe_ratio=0.98)
    assert policy.write_priority(cold, idle_device) == 1
    assert policy.write_priority(hot, idle_device) == 0
    assert policy.write_priority(stale_hot, idle_device) == 1
    assert policy.write_priority(noise, idle_device) == 0
    assert policy.write_priority(cold, DeviceSignals(now_ns=now, busy=0.6, max_priority=1)) == 0
    assert policy.write_priority(cold, DeviceSignals(now_ns=now, busy=0.0, max_priority=0)) == 0
    assert policy.recompress_priority(PageSignals(0, None, 0.3, stored_priority=0), idle_device) == 1
    assert policy.recompress_priority(PageSignals(3, now, 0.3, stored_priority=0), idle_device) is None
    assert not policy.background_allowed(DeviceSignals(now_ns=now, busy=0.6, max_priority=1))


def test_multi_policy_recompresses_idle_pages_in_the_background() -> None:
    dev = make(policy="multi", recomp_algorithms="zstd", idle_recompress_after_s=10)
    pages = [text_page(i) for i in range(10)]
    write(dev, 0, b"".join(pages), now=0)
    assert dev.background_step(5 * 10**9) is None  # nothing idle yet
    assert {e.priority for e in dev.entries.values()} == {0}
    done = dev.background_step(11 * 10**9)
    assert done is not None and done > 11 * 10**9  # the recompression costs modeled CPU time
    assert {e.priority for e in dev.entries.values()} == {1}
    assert dev.background_step(12 * 10**9) is None
    assert read(dev, 0, 10 * PAGE) == b"".join(pages)


def test_single_policy_never_recompresses_on_its_own() -> None:
    dev = make(policy="single", recomp_algorithms="zstd", idle_recompress_after_s=1)
    write(dev, 0, text_page(1))
    assert dev.background_step(100 * 10**9) is None


# -------------------------------------------------------------------- timing
def test_virtual_timing_charges_the_cost_model_on_one_cpu() -> None:
    dev = make(cpu_units=1, request_overhead_us=1.0, page_copy_us=0.5)
    assert write(dev, 0, text_page(1) + text_page(2), now=1000) == 1000 + 1000 + 2 * 4000
    # The second request queues behind the first on the only CPU.
    assert write(dev, 2 * PAGE, text_page(3), now=1000) == 1000 + 9000 + 1000 + 4000
    buf = bytearray(PAGE)
    assert dev.read(0, memoryview(buf), 10**6) == 10**6 + 1000 + 1000
    assert dev.read(8 * PAGE, memoryview(buf), 10**6) == 10**6 + 1000  # unwritten: no CPU


def test_virtual_timing_is_reproducible() -> None:
    def run() -> list[int]:
        dev = make(policy="heuristic", recomp_algorithms="zstd")
        times = []
        for i in range(30):
            times.append(write(dev, (i % 7) * PAGE, text_page(i), now=i * 3000))
            times.append(dev.read((i % 5) * PAGE, memoryview(bytearray(PAGE)), i * 3000 + 1000))
        return times

    assert run() == run()


def test_realtime_timing_uses_measured_cpu_time() -> None:
    dev = make(mode="realtime", comp_algorithm="zstd", cost_us="zstd=0/0", request_overhead_us=0.0,
               page_copy_us=0.0)
    payload = b"".join(text_page(i) for i in range(16))
    done = write(dev, 0, payload, now=0)
    measured = dev.stats.codecs["zstd:3"].compress_cpu_ns
    assert measured > 0 and done == measured


def test_calibrated_costs_are_positive_and_used_without_overrides() -> None:
    dev = make(cost_us="")
    for codec in (Codec("lz4"), Codec("zstd")):
        cost = dev.cost_model.add(codec)
        assert cost.compress_ns > 0 and cost.decompress_ns > 0
    assert "lz4:1=" in dev.cost_model.as_text()


# --------------------------------------------------------------------- async
def test_async_write_is_acknowledged_once_staged_and_reads_come_from_staging() -> None:
    dev = make(async_workers=1, cpu_units=1, request_overhead_us=1.0, page_copy_us=0.5)
    done = write(dev, 0, text_page(1) + text_page(2), now=0)
    assert done == 1000 + 2 * 500
    assert dev.offload_pending() and len(dev.staging) == 2
    assert read(dev, 0, 2 * PAGE, now=done) == text_page(1) + text_page(2)
    assert dev.stats.staged_reads == 2
    # Flush completes when the modeled worker has compressed both pages.
    assert dev.flush(done) == done + 2 * 4000 + 1000
    job = dev.offload_take(done)
    assert job is not None and len(job.buffer) == 2 * PAGE and job.indices == [0, 1]
    job.run()
    dev.offload_finish(job, done)
    assert not dev.offload_pending() and mm_stat(dev)[0] == 2 * PAGE
    assert read(dev, 0, 2 * PAGE) == text_page(1) + text_page(2)


def test_async_result_for_a_page_rewritten_in_flight_is_dropped() -> None:
    dev = make(async_workers=1)
    write(dev, 0, text_page(1))
    job = dev.offload_take(0)
    assert job is not None
    write(dev, 0, text_page(2))  # rewritten while the job runs
    job.run()
    dev.offload_finish(job, 0)
    assert dev.stats.stale_results == 1 and dev.offload_pending()
    assert read(dev, 0, PAGE) == text_page(2)
    dev.drain(0)
    assert read(dev, 0, PAGE) == text_page(2) and not dev.offload_pending()


def test_async_staging_is_bounded_with_back_pressure() -> None:
    dev = make(async_workers=1, staging_pages=8, batch_pages=4, cpu_units=1, request_overhead_us=0.0,
               page_copy_us=0.0)
    first = write(dev, 0, b"".join(text_page(i) for i in range(8)), now=0)
    assert first == 0  # fits: acknowledged at once
    second = write(dev, 8 * PAGE, b"".join(text_page(i) for i in range(8, 12)), now=0)
    # Modeled: waits until the worker has compressed 4 of the first 8 pages (all 8 finish together).
    assert second == 8 * 4000
    assert dev.stats.backpressure_batches == 1 and len(dev.staging) <= 8
    assert read(dev, 0, 12 * PAGE) == b"".join(text_page(i) for i in range(12))


def test_runtime_executor_compresses_staged_pages_and_flush_waits() -> None:
    config = zram_config(async_workers=2, staging_pages=64, batch_pages=8)
    runtime = DeviceRuntime(config)
    runtime.start()
    try:
        pages = [text_page(i) for i in range(100)]
        for i, page in enumerate(pages):
            runtime.write(i * PAGE, memoryview(page))
        runtime.flush()
        device = runtime.stack.model
        assert isinstance(device, ZramDevice)
        assert not device.offload_pending() and device.stats.async_batches >= 100 // 8
        buf = bytearray(100 * PAGE)
        runtime.read(0, memoryview(buf))
        assert bytes(buf) == b"".join(pages)
    finally:
        runtime.close()


def test_runtime_without_threads_drains_staging_in_flush() -> None:
    runtime = DeviceRuntime(zram_config(async_workers=1))
    runtime.write(0, memoryview(text_page(1)))
    device = runtime.stack.model
    assert isinstance(device, ZramDevice) and device.offload_pending()
    runtime.flush()
    assert not device.offload_pending()
    runtime.close()


# -------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("zram", "expected"),
    [
        ({"policy": "random"}, "[zram] policy = 'random': must be one of single, multi, heuristic"),
        ({"comp_algorithm": "lzo"}, "[zram] comp_algorithm = 'lzo': must be one of lz4, lz4hc, zstd"),
        ({"comp_algorithm": "lz4hc", "comp_level": 13}, "lz4hc level must be between 1 and 12"),
        ({"recomp_algorithms": "zstd,lz4hc,zstd:9,lz4"}, "at most 3 algorithms"),
        ({"recomp_algorithms": "zstd:x"}, "level in 'zstd:x' must be an integer"),
        ({"cost_us": "zstd=1"}, "expected ALGO[:LEVEL]=COMPRESS_US/DECOMPRESS_US"),
        ({"async_workers": -1}, "[zram] async_workers = -1: must be >= 0"),
        ({"staging_pages": 0}, "[zram] staging_pages = 0: must be > 0"),
    ],
)
def test_bad_zram_config_is_one_line(zram: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"device": {"type": "zram"}, "zram": zram}, "test.toml")
    assert "\n" not in str(info.value) and expected in str(info.value)


def test_shipped_zram_config_loads_and_serves_a_device() -> None:
    from pathlib import Path

    from blockemu.config import load_config

    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "zram.toml")
    assert config.device.type == "zram" and config.zram.policy == "multi"
    started = time.monotonic()
    runtime = DeviceRuntime(config)
    assert time.monotonic() - started < 5
    assert runtime.device.size_bytes == 1024 * MIB
    runtime.close()


def test_runtime_falls_back_to_inline_compression_when_its_pool_breaks() -> None:
    runtime = DeviceRuntime(zram_config(async_workers=2, staging_pages=16, batch_pages=4))
    runtime.start()
    try:
        assert runtime._offload_executor is not None
        runtime._offload_executor.shutdown()  # submitting now raises: the job must still be done
        pages = [text_page(i) for i in range(20)]
        for i, page in enumerate(pages):
            runtime.write(i * PAGE, memoryview(page))
        runtime.flush()
        device = runtime.stack.model
        assert isinstance(device, ZramDevice) and not device.offload_pending()
        buf = bytearray(20 * PAGE)
        runtime.read(0, memoryview(buf))
        assert bytes(buf) == b"".join(pages)
    finally:
        runtime.close()


def test_process_guard_locks_memory_and_opts_out_of_the_oom_killer_or_says_why() -> None:
    import subprocess
    import sys

    script = (
        "import json\n"
        "from blockemu.process_guard import protect_server_process\n"
        "problems = protect_server_process()\n"
        "buf = bytearray(8 << 20)\n"  # touched after mlockall(MCL_FUTURE | MCL_ONFAULT): locked
        "status = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
        "print(json.dumps(problems)); print(int(status['VmLck'].split()[0]))\n"
        "print(open('/proc/self/oom_score_adj').read().strip())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            cwd=str(Path(__file__).resolve().parents[2]))
    assert result.returncode == 0, result.stderr
    problems_text, locked_kib, oom = result.stdout.splitlines()
    problems = json.loads(problems_text)
    if not any(p.startswith("mlockall") for p in problems):
        assert int(locked_kib) >= 8 * 1024
    if not any(p.startswith("oom_score_adj") for p in problems):
        assert oom.strip() == "-1000"


def test_lock_memory_is_a_zram_setting_the_device_exposes() -> None:
    assert make(lock_memory=True).lock_memory is True
    assert make().lock_memory is False


def test_multi_walks_the_recompression_chain_in_priority_order() -> None:
    # lz4hc (priority 1) is tried first and kept when it lands in a smaller size class; zstd is not needed.
    dev = make(policy="multi", recomp_algorithms="lz4hc:12,zstd:19", idle_recompress_after_s=1)
    pages = [text_page(i) for i in range(8)]
    write(dev, 0, b"".join(pages), now=0)
    while dev.background_step(10 * 10**9) is not None:
        pass
    priorities = {e.priority for e in dev.entries.values()}
    assert priorities <= {1, 2} and 1 in priorities
    assert dev.stats.codecs["lz4hc:12"].compress_pages == 8
    assert read(dev, 0, 8 * PAGE) == b"".join(pages)


# --------------------------------------------------------------- persistence
def saved_and_loaded(contents: dict[str, Any]) -> dict[str, Any]:
    """``contents`` through the file store's checkpoint format, as a restart reads it."""
    from blockemu.store.file import decode_checkpoint, encode_checkpoint

    parts = encode_checkpoint(1, {}, contents)
    return decode_checkpoint(b"".join(bytes(p) for p in parts), "state").arrays


def slot_view(dev: ZramDevice) -> list[tuple[Any, ...]]:
    """Each slot's index state, in page-table order, with times as ages (a restart's clock starts at 0)."""
    return [(index, e.kind, e.priority, e.codec.key if e.codec else None, e.size, e.handle, e.idle,
             e.incompressible, e.reads, dev._now - e.last_access_ns,
             None if e.last_read_ns is None else dev._now - e.last_read_ns, e.probe_ratio, e.data, e.pattern)
            for index, e in dev.entries.items()]


def busy_device(**zram: Any) -> ZramDevice:
    """A device whose index has every kind of slot, two primary algorithms, recompressed and idle pages."""
    dev = make(policy="multi", recomp_algorithms="lz4hc,zstd", **zram)
    now = 0
    for i in range(40):  # compressible, then noise (huge), then same pages
        now = write(dev, i * PAGE, text_page(i), now)
    write(dev, 40 * PAGE, os.urandom(4 * PAGE), now)
    write(dev, 44 * PAGE, b"\x07" * PAGE + bytes(PAGE), now)
    write(dev, 46 * PAGE + 100, b"partial" * 10, now)  # read-modify-write of an unwritten page
    read(dev, 0, 8 * PAGE, now + 10**9)  # read counts and times
    dev.write_attribute("idle", "all")
    dev.write_attribute("recompress", "type=idle max_pages=10 priority=2")  # zstd, slots 0..9
    dev.write_attribute("recompress", "type=huge")  # noise stays huge: marked incompressible
    dev.write_attribute("comp_algorithm", "zstd")  # pages written from now on use zstd at priority 0
    for i in range(50, 210):  # one size class (448 bytes, 64 objects per 7-page zspage): three zspages
        write(dev, i * PAGE, text_page(7), now + 2 * 10**9)
    for i in range(50, 210, 2):  # frees every other object: half-empty zspages to compact
        dev.trim(i * PAGE, PAGE, now)
    dev.trim(10 * PAGE, 5 * PAGE, now)
    write(dev, 3 * PAGE, text_page(300), now)  # rewritten: last in the page table, which recompress follows
    dev.write_attribute("compact", "1")
    dev.write_attribute("mem_limit", "8M")
    read(dev, 60 * PAGE, PAGE, now + 3 * 10**9)
    dev.drain(now + 3 * 10**9)
    return dev


def test_contents_round_trip_into_a_fresh_device() -> None:
    dev = busy_device()
    assert {e.kind for e in dev.entries.values()} == {0, 1, 2} and dev.pool.pages_compacted > 0
    assert any(e.incompressible for e in dev.entries.values())
    assert {e.codec.key for e in dev.entries.values() if e.codec} == {"lz4:1", "zstd:3"}
    fresh = make(policy="multi", recomp_algorithms="lz4hc,zstd")
    fresh.restore_contents(saved_and_loaded(dev.snapshot_contents()))
    fresh.restore_counters(saved_and_loaded(dev.snapshot_counters()))
    assert slot_view(fresh) == slot_view(dev) and list(dev.entries) != sorted(dev.entries)
    # Background recompression's queue, oldest access first (reads below reorder it).
    assert list(fresh._idle_candidates) == list(dev._idle_candidates) != sorted(dev._idle_candidates)
    saved_now = dev._now
    assert read(fresh, 0, 128 * PAGE) == read(dev, 0, 128 * PAGE, saved_now)  # each at its own "now"
    assert slot_view(fresh) == slot_view(dev)
    for attribute in ("mm_stat", "io_stat", "comp_algorithm", "recomp_algorithm"):
        assert fresh.read_attribute(attribute) == dev.read_attribute(attribute), attribute
    assert fresh.snapshot() == dev.snapshot() and fresh.pages_by_algorithm() == dev.pages_by_algorithm()
    # The pool's layout came back too: the same writes fill the same zspages.
    # The restored device's clock starts at zero where the saved one stood.
    for target, now in ((dev, saved_now + 10**9), (fresh, 10**9)):
        write(target, 100 * PAGE, b"".join(text_page(i) for i in range(200, 230)), now)
        target.trim(0, 4 * PAGE, now)
        target.write_attribute("idle", "1")  # pages not touched in the last second: the same ones
        target.write_attribute("recompress", "type=idle max_pages=5")
        target.write_attribute("compact", "1")
    assert mm_stat(fresh) == mm_stat(dev) and slot_view(fresh) == slot_view(dev)


def test_an_empty_device_round_trips() -> None:
    fresh = make()
    fresh.restore_contents(saved_and_loaded(make().snapshot_contents()))
    assert not fresh.entries and mm_stat(fresh) == mm_stat(make())


def test_a_snapshot_includes_staged_and_in_flight_pages() -> None:
    dev = make(async_workers=2, staging_pages=64, batch_pages=4)
    write(dev, 0, b"".join(text_page(i) for i in range(10)))
    job = dev.offload_take(0)  # four pages taken by a worker, still running
    assert job is not None and len(dev.staging) == 10
    contents = saved_and_loaded(dev.snapshot_contents())
    assert not dev.staging and len(contents["zram_slots"]) == 10
    job.run()
    dev.offload_finish(job, 0)  # the worker's results arrive stale: the snapshot took its pages
    assert dev.stats.stale_results == 4 and len(dev.entries) == 10
    fresh = make(async_workers=2)
    fresh.restore_contents(contents)
    assert read(fresh, 0, 10 * PAGE) == read(dev, 0, 10 * PAGE) == b"".join(text_page(i) for i in range(10))


def test_pool_layout_round_trips_and_refuses_inconsistency() -> None:
    pool = ZsPool()
    handles = [pool.malloc(size) for size in [100] * 90 + [3000] * 5 + [40] * 7]
    for handle in handles[::4]:
        pool.free(handle)
    state = pool.state_arrays()
    again = ZsPool()
    again.load_state_arrays(state)
    assert again.total_pages == pool.total_pages and again.objects == pool.objects
    assert [pool.malloc(100) for _ in range(5)] == [again.malloc(100) for _ in range(5)]
    assert pool.state_arrays()["zs_objects"].tolist() == again.state_arrays()["zs_objects"].tolist()
    assert pool.compact() == again.compact() > 0
    broken = dict(state, zs_partial=state["zs_partial"][1:])
    with pytest.raises(ValueError, match="partial zspages do not match"):
        ZsPool().load_state_arrays(broken)
    crowded = state["zs_objects"].copy()
    crowded[:, 2] = crowded[0, 2]  # every object in one zspage
    with pytest.raises(ValueError, match="holds objects of two size classes"):
        ZsPool().load_state_arrays(dict(state, zs_objects=crowded))


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s.update(zram_slots=s["zram_slots"] + 10**9), "beyond the device"),
    (lambda s: s.update(zram_kind=np.full_like(s["zram_kind"], 7)), "unknown kind"),
    (lambda s: s.update(zram_object_offsets=s["zram_object_offsets"][:-1]), "offsets do not cover"),
    (lambda s: s.update(zram_size=s["zram_size"] + 1), "lengths do not match"),
    (lambda s: s.update(zram_codec_keys=np.array(["lzo:1"] * len(s["zram_codec_keys"]))), "unknown algorithm"),
    (lambda s: s.update(zram_handle=s["zram_handle"] + 1), "slots and pool objects do not match"),
    (lambda s: s.update(zram_algorithms=s["zram_algorithms"][:2]), "4 priorities"),
    (lambda s: s.update(zram_idle_order=np.array([10**6])), "idle candidates"),
    (lambda s: s.pop("zram_objects"), "zram_objects"),
])
def test_contents_that_do_not_fit_are_refused_and_change_nothing(change: Any, message: str) -> None:
    contents = saved_and_loaded(busy_device().snapshot_contents())
    change(contents)
    fresh = make(policy="multi", recomp_algorithms="lz4hc,zstd")
    with pytest.raises((ValueError, KeyError), match=message):
        fresh.restore_contents(contents)
    assert not fresh.entries and fresh.pool.objects == 0 and mm_stat(fresh) == mm_stat(make())
