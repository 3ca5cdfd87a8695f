"""The volatile write cache and power cuts, through DeviceRuntime: exact bytes and state after a cut."""

from __future__ import annotations

import json
import random

import pytest

from blockemu.config import ConfigError, config_from_mapping
from blockemu.devices.base import ApiError
from blockemu.layers.write_cache import JournaledStore, PowerCutLayer
from blockemu.runtime import DeviceRuntime
from blockemu.store import MemoryStore
from tests.conftest import api, pattern, read, small_ufs_config

MIB = 1024 * 1024
SECTOR = 4096


def cut(runtime: DeviceRuntime, **request: object) -> dict[str, object]:
    result: dict[str, object] = api(runtime, "POST", ["powercut"], json.dumps(request).encode())
    return result


def ufs_runtime(**write_cache: int) -> DeviceRuntime:
    return DeviceRuntime(small_ufs_config(write_cache=write_cache) if write_cache else small_ufs_config())


def zns_runtime() -> DeviceRuntime:
    raw = {"device": {"type": "zns", "name": "zns_test", "capacity_mib": 16},
           "zns": {"zone_size_mib": 2, "zone_capacity_mib": 1, "conventional_zones": 2, "max_open_zones": 2,
                   "max_active_zones": 3}}
    return DeviceRuntime(config_from_mapping(raw, "<test>"))


def test_drop_loses_exactly_the_unflushed_writes() -> None:
    runtime = ufs_runtime()
    runtime.write(0, memoryview(pattern(1)))
    runtime.write(SECTOR, memoryview(pattern(2)))
    runtime.flush()
    runtime.write(SECTOR, memoryview(pattern(3)))  # overwrites flushed data
    runtime.write(5 * SECTOR, memoryview(pattern(4)))  # never written before
    runtime.write(2 * SECTOR + 100, memoryview(b"x" * 10))  # partial sector
    result = cut(runtime, mode="drop")
    assert result["dropped_sectors"] == 3 and result["kept_sectors"] == 0
    assert read(runtime, 0) == pattern(1)
    assert read(runtime, SECTOR) == pattern(2)
    assert read(runtime, 2 * SECTOR) == bytes(SECTOR)
    assert read(runtime, 5 * SECTOR) == bytes(SECTOR)
    # The device serves on, and a second cut with nothing pending loses nothing.
    runtime.write(7 * SECTOR, memoryview(pattern(5)))
    runtime.flush()
    assert cut(runtime)["dropped_sectors"] == 0
    assert read(runtime, 7 * SECTOR) == pattern(5)
    runtime.close()


def test_fua_writes_are_durable_at_once_and_only_they() -> None:
    runtime = ufs_runtime()
    runtime.write(0, memoryview(pattern(1)), fua=True)
    runtime.write(SECTOR, memoryview(pattern(2)))
    runtime.write_zeroes(8 * SECTOR, SECTOR)
    runtime.write(9 * SECTOR, memoryview(pattern(3)))
    runtime.write_zeroes(9 * SECTOR, SECTOR, fua=True)
    cut(runtime)
    assert read(runtime, 0) == pattern(1)
    assert read(runtime, SECTOR) == bytes(SECTOR)
    assert read(runtime, 9 * SECTOR) == bytes(SECTOR)
    runtime.close()


def test_trim_and_zeroes_are_undone_too() -> None:
    runtime = ufs_runtime()
    runtime.write(0, memoryview(pattern(9, 4 * SECTOR)))
    runtime.flush()
    runtime.trim(0, 2 * SECTOR)
    runtime.write_zeroes(2 * SECTOR, SECTOR)
    assert read(runtime, 0, 3 * SECTOR) == bytes(3 * SECTOR)
    cut(runtime)
    assert read(runtime, 0, 4 * SECTOR) == pattern(9, 4 * SECTOR)
    runtime.close()


def test_torn_keeps_a_seeded_subset_of_whole_sectors() -> None:
    def torn_result(seed: int) -> list[bytes]:
        runtime = ufs_runtime()
        runtime.write(0, memoryview(pattern(1, 64 * SECTOR)))
        runtime.flush()
        runtime.write(0, memoryview(pattern(2, 64 * SECTOR)))
        result = cut(runtime, mode="torn", seed=seed)
        sectors = [read(runtime, i * SECTOR) for i in range(64)]
        runtime.close()
        assert result["dropped_sectors"] + result["kept_sectors"] == 64  # type: ignore[operator]
        assert sectors.count(pattern(2)) == result["kept_sectors"]
        return sectors

    first = torn_result(7)
    # Each sector is either all old or all new, and both kinds occur.
    assert set(first) == {pattern(1), pattern(2)}
    assert torn_result(7) == first
    assert torn_result(8) != first


def test_a_full_cache_is_written_back_as_by_a_flush() -> None:
    runtime = ufs_runtime(size_mib=1)
    runtime.write(0, memoryview(pattern(1, MIB - SECTOR)))
    assert api(runtime, "GET", ["powercut"], b"")["writebacks"] == 0
    runtime.write(MIB, memoryview(pattern(2, 2 * SECTOR)))  # 1 MiB + 1 sector pending: written back
    status = api(runtime, "GET", ["powercut"], b"")
    assert status["writebacks"] == 1 and status["dirty_bytes"] == 0
    runtime.write(2 * MIB, memoryview(pattern(3)))
    cut(runtime)
    assert read(runtime, 0) == pattern(1) and read(runtime, MIB) == pattern(2)
    assert read(runtime, 2 * MIB) == bytes(SECTOR)
    runtime.close()


def test_write_through_cache_loses_nothing() -> None:
    runtime = ufs_runtime(size_mib=0)
    runtime.write(0, memoryview(pattern(1)))
    assert cut(runtime)["dropped_sectors"] == 0
    assert read(runtime, 0) == pattern(1)
    runtime.close()


def test_zns_cut_rolls_back_write_pointers_and_zone_resets() -> None:
    runtime = zns_runtime()
    zone2 = 4 * MIB
    runtime.write(zone2, memoryview(pattern(1)))
    runtime.flush()
    before = api(runtime, "GET", ["zones"], b"")
    runtime.write(zone2 + SECTOR, memoryview(pattern(2)))
    runtime.write(3 * 2 * MIB, memoryview(pattern(3)))  # zone 3, opened after the flush
    api(runtime, "POST", ["zones", "2", "reset"], b"")
    assert read(runtime, zone2) == bytes(SECTOR)
    result = cut(runtime)
    assert result["state_rolled_back"] is True
    assert api(runtime, "GET", ["zones"], b"") == before
    assert read(runtime, zone2) == pattern(1)
    assert read(runtime, zone2 + SECTOR) == bytes(SECTOR)
    # Writing continues at the restored write pointer.
    runtime.write(zone2 + SECTOR, memoryview(pattern(4)))
    assert read(runtime, zone2 + SECTOR) == pattern(4)
    with pytest.raises(ApiError, match="torn power cuts are not supported on zns"):
        cut(runtime, mode="torn")
    runtime.close()


def test_zns_fua_commits_everything_before_it() -> None:
    runtime = zns_runtime()
    zone2 = 4 * MIB
    runtime.write(zone2, memoryview(pattern(1)))
    runtime.write(zone2 + SECTOR, memoryview(pattern(2)), fua=True)
    runtime.write(zone2 + 2 * SECTOR, memoryview(pattern(3)))
    cut(runtime)
    assert read(runtime, zone2, 2 * SECTOR) == pattern(1) + pattern(2)
    assert api(runtime, "GET", ["zones", "2"], b"")["wp"] == zone2 + 2 * SECTOR
    runtime.close()


def test_zns_ftl_cut_restores_the_logs_map() -> None:
    raw = {"device": {"type": "zns_ftl", "name": "log_test", "capacity_mib": 32},
           "zns": {"zone_size_mib": 1, "max_open_zones": 6, "max_active_zones": 8, "parallel_units": 4},
           "zns_ftl": {"overprovision_percent": 25.0, "gc_start_free_zones": 3, "gc_reserve_free_zones": 1}}
    runtime = DeviceRuntime(config_from_mapping(raw, "<test>"))
    rng = random.Random(3)
    blocks = runtime.device.size_bytes // SECTOR
    durable: dict[int, bytes] = {}
    for lba in range(0, blocks, 64):  # fill, so that the churn below needs GC
        payload = b"".join(pattern(lba + i) for i in range(min(64, blocks - lba)))
        runtime.write(lba * SECTOR, memoryview(payload))
        durable.update({lba + i: pattern(lba + i) for i in range(min(64, blocks - lba))})
    runtime.flush()
    gc_before = runtime.describe()["gc"]["gc_bytes_relocated"]
    for step in range(3000):
        runtime.write(rng.randrange(blocks) * SECTOR, memoryview(pattern(step + 7)))
        if step % 100 == 0:
            runtime.run_background_until_idle()
    assert runtime.describe()["gc"]["gc_bytes_relocated"] > gc_before
    cut(runtime)
    for lba in range(blocks):
        assert read(runtime, lba * SECTOR) == durable[lba], lba
    runtime.close()


def test_zram_is_served_without_the_layer() -> None:
    config = config_from_mapping({"device": {"type": "zram", "name": "zram_test", "capacity_mib": 16}}, "<test>")
    runtime = DeviceRuntime(config)
    assert runtime.stack.find(PowerCutLayer) is None
    with pytest.raises(ApiError, match="no such endpoint /api/v1/powercut") as refused:
        cut(runtime)
    assert refused.value.status == 404
    runtime.close()


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"mode": "melt"}', b'{"seed": "1"}', b'{"seed": true}',
                                  b'{"mode": "drop", "extra": 1}', b"\xff"])
def test_bad_requests_are_refused_and_change_nothing(body: bytes) -> None:
    runtime = ufs_runtime()
    runtime.write(0, memoryview(pattern(1)))
    with pytest.raises(ApiError) as refused:
        api(runtime, "POST", ["powercut"], body)
    assert refused.value.status == 400
    assert read(runtime, 0) == pattern(1)
    assert api(runtime, "GET", ["powercut"], b"")["dirty_bytes"] == SECTOR
    with pytest.raises(ApiError) as wrong_method:
        api(runtime, "PUT", ["powercut"], b"{}")
    assert wrong_method.value.status == 405
    runtime.close()


def test_metrics_and_description_report_the_cache() -> None:
    runtime = ufs_runtime()
    runtime.write(0, memoryview(pattern(1, 2 * SECTOR)))
    families = {family.name: family for family in runtime.device.metrics()}
    assert families["blockemu_write_cache_dirty_bytes"].samples == [({}, 2 * SECTOR)]
    cut(runtime, mode="torn", seed=1)
    families = {family.name: family for family in runtime.device.metrics()}
    assert dict((labels["mode"], v) for labels, v in families["blockemu_powercuts_total"].samples) == {
        "drop": 0, "torn": 1}
    dropped = families["blockemu_powercut_dropped_sectors_total"].samples[0][1]
    kept = families["blockemu_powercut_kept_sectors_total"].samples[0][1]
    assert dropped + kept == 2
    assert runtime.describe()["write_cache"]["powercuts"] == {"drop": 0, "torn": 1}
    runtime.close()


def test_journal_commits_a_range_and_reverts_the_rest() -> None:
    journal = JournaledStore(MemoryStore(16 * SECTOR), SECTOR)
    journal.write(0, pattern(1, 3 * SECTOR))
    assert journal.commit(SECTOR, 1) == 1  # any byte of a sector commits the whole sector
    assert journal.revert(lambda sector: False) == (2, 0)
    buf = bytearray(3 * SECTOR)
    journal.read_into(0, memoryview(buf))
    assert bytes(buf) == bytes(SECTOR) + pattern(1) + bytes(SECTOR)
    with pytest.raises(ValueError, match="must be > 0 and divide"):
        JournaledStore(MemoryStore(16 * SECTOR), 3000)


def test_layer_is_in_place_and_config_is_validated() -> None:
    runtime = ufs_runtime()
    assert isinstance(runtime.stack.find(PowerCutLayer), PowerCutLayer)
    runtime.close()
    with pytest.raises(ConfigError, match=r"\[write_cache\] size_mib = -1: must be >= 0"):
        small_ufs_config(write_cache={"size_mib": -1})


def test_a_change_larger_than_the_cache_is_written_through_not_remembered() -> None:
    # mkfs discards the whole device at once: keeping pre-images of all of it
    # would take the device's size in memory.  It is written through instead.
    runtime = ufs_runtime(size_mib=1)
    layer = runtime.stack.find(PowerCutLayer)
    assert isinstance(layer, PowerCutLayer)
    runtime.write(0, memoryview(pattern(1)))  # pending in the cache
    store = layer.journal.inner
    read_for_pre_images: list[int] = []
    original_read_into = store.read_into

    def counting_read_into(offset: int, buf: memoryview) -> None:
        read_for_pre_images.append(len(buf))
        original_read_into(offset, buf)

    store.read_into = counting_read_into  # type: ignore[method-assign]
    runtime.trim(0, 64 * MIB)
    store.read_into = original_read_into  # type: ignore[method-assign]
    assert sum(read_for_pre_images) == 0, "no pre-images may be taken of a written-through change"
    assert layer.journal.dirty_bytes == 0
    assert layer.writebacks == 1
    runtime.write(8 * SECTOR, memoryview(pattern(2)))  # small writes are cached again
    assert layer.journal.dirty_bytes == SECTOR
    cut(runtime, mode="drop")
    assert read(runtime, 0) == bytes(SECTOR)  # the trim was durable
    assert read(runtime, 8 * SECTOR) == bytes(SECTOR)  # the later write was not


@pytest.mark.parametrize("seed", range(5))
def test_journal_slots_match_a_reference_of_pre_images(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Slabs of three sectors: runs straddle slabs, range commits free slots
    # that later writes reuse.  The reference keeps each pre-image as bytes.
    monkeypatch.setattr(JournaledStore, "SLAB_BYTES", 3 * SECTOR)
    rng = random.Random(seed)
    sectors = 24
    journal = JournaledStore(MemoryStore(sectors * SECTOR), SECTOR)
    disk = bytearray(sectors * SECTOR)
    reference: dict[int, bytes] = {}
    for step in range(300):
        action = rng.random()
        if action < 0.7:
            offset = rng.randrange(sectors * SECTOR - 1)
            length = rng.randrange(1, min(8 * SECTOR, sectors * SECTOR - offset) + 1)
            for sector in range(offset // SECTOR, (offset + length - 1) // SECTOR + 1):
                reference.setdefault(sector, bytes(disk[sector * SECTOR : (sector + 1) * SECTOR]))
            data = bytes([step % 251 + 1]) * length
            journal.write(offset, data)
            disk[offset : offset + length] = data
        elif action < 0.85:
            offset = rng.randrange(sectors * SECTOR)
            length = rng.randrange(1, 4 * SECTOR)
            expected = 0
            for sector in range(offset // SECTOR, (offset + length - 1) // SECTOR + 1):
                expected += reference.pop(sector, None) is not None
            assert journal.commit(offset, length) == expected
        elif action < 0.9:
            assert journal.commit() == len(reference)
            reference = {}
        assert list(journal.pre_images) == list(reference)  # same sectors, in first-write order
        assert journal.dirty_bytes == len(reference) * SECTOR
    keep = random.Random(seed)
    kept = {sector for sector in reference if keep.random() < 0.5}
    decide = random.Random(seed)
    assert journal.revert(lambda sector: decide.random() < 0.5) == (len(reference) - len(kept), len(kept))
    for sector, image in reference.items():
        if sector not in kept:
            disk[sector * SECTOR : (sector + 1) * SECTOR] = image
    buf = bytearray(sectors * SECTOR)
    journal.read_into(0, memoryview(buf))
    assert buf == disk
