"""Persistent devices through DeviceRuntime: a kill after a commit, a restart, the same data and state.

A "kill" here closes the file store's descriptors without committing, which
leaves the directory as a ``kill -9`` of the server would (the kernel keeps
what the process wrote); tests/integration/test_persist_serve.py does the
real thing.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blockemu.config import config_from_mapping
from blockemu.control.metrics import make_registry
from blockemu.devices.base import ApiError, DeviceError
from blockemu.layers.checkpoint import CheckpointLayer
from blockemu.layers.write_cache import PowerCutLayer
from blockemu.runtime import DeviceRuntime
from blockemu.stack import check_config_store
from blockemu.store import StoreError
from blockemu.store.file import decode_checkpoint, encode_checkpoint
from tests.conftest import SMALL_UFS, api, pattern, read

MIB = 1024 * 1024
SECTOR = 4096
# Parts of GET /api/v1/device that belong to the running server, not the device.
RUNTIME_KEYS = ("timing", "faults", "io", "queue_depth", "store", "write_cache")


def ufs_raw(path: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {name: dict(table) for name, table in SMALL_UFS.items()}
    raw["store"] = {"backend": "file", "path": str(path), "fsync": False}
    for name, table in sections.items():
        raw.setdefault(name, {}).update(table)
    return raw


def zns_raw(path: Path) -> dict[str, Any]:
    return {"device": {"type": "zns", "name": "zns_test", "capacity_mib": 16},
            "zns": {"zone_size_mib": 2, "zone_capacity_mib": 1, "conventional_zones": 2, "max_open_zones": 3,
                    "max_active_zones": 4},
            "store": {"backend": "file", "path": str(path)}}


def zns_ftl_raw(path: Path) -> dict[str, Any]:
    return {"device": {"type": "zns_ftl", "name": "log_test", "capacity_mib": 32},
            "zns": {"zone_size_mib": 1, "max_open_zones": 6, "max_active_zones": 8, "parallel_units": 4},
            "zns_ftl": {"overprovision_percent": 25.0, "gc_start_free_zones": 3, "gc_reserve_free_zones": 1,
                        "gc_policy": "zone_aware"},
            "store": {"backend": "file", "path": str(path), "fsync": False}}


def start(raw: dict[str, Any]) -> DeviceRuntime:
    return DeviceRuntime(config_from_mapping(raw, "<test>"))


def kill(runtime: DeviceRuntime) -> None:
    layer = runtime.stack.find(PowerCutLayer)
    assert isinstance(layer, PowerCutLayer) and layer.durable is not None
    layer.durable.close()  # no commit, nothing written back: what a SIGKILL leaves


def image(runtime: DeviceRuntime) -> bytes:
    return read(runtime, 0, runtime.device.size_bytes)


def device_part(runtime: DeviceRuntime) -> dict[str, Any]:
    return {k: v for k, v in runtime.describe().items() if k not in RUNTIME_KEYS}


def step(runtime: DeviceRuntime) -> None:
    """One slice of background work (HID, GC), at its modeled time."""
    with runtime.lock:
        done = runtime.device.background_step(runtime.clock.now_ns())
    if done is not None:
        runtime.clock.wait_until(done)


def test_ufs_data_mapping_and_hid_state_survive_a_kill(tmp_path: Path) -> None:
    runtime = start(ufs_raw(tmp_path))
    for i in range(64):  # 8 files of 256 KiB written interleaved: fragmented
        for f in range(8):
            runtime.write(f * MIB + i * SECTOR, memoryview(pattern(f * 64 + i)))
    runtime.trim(7 * MIB, 128 * 1024)
    api(runtime, "PUT", ["hid", "defrag_trigger"], b"enable")
    for _ in range(3):  # analysis starts, finishes, the first 1 MiB step of the defragmentation
        step(runtime)
    assert api(runtime, "GET", ["hid"], b"")["state"] == "defrag_in_progress"
    runtime.flush()
    state, committed = device_part(runtime), image(runtime)
    assert 0 < state["hid"]["progress_ratio"] < 100 and state["fragmentation"]["mapped_bytes"] > 0

    runtime.write(0, memoryview(pattern(200, 2 * MIB)))  # over flushed data and into unwritten space
    runtime.write(20 * MIB + 512, memoryview(b"partial"))
    runtime.trim(MIB, MIB)
    step(runtime)  # more defragmentation, never committed
    assert image(runtime) != committed and device_part(runtime) != state
    kill(runtime)

    again = start(ufs_raw(tmp_path))
    assert device_part(again) == state
    assert image(again) == committed
    again.run_background_until_idle()  # the defragmentation carries on from where it was committed
    assert api(again, "GET", ["hid"], b"")["state"] == "defrag_completed"
    assert image(again) == committed
    again.close()


def test_zns_zones_and_data_survive_a_kill(tmp_path: Path) -> None:
    runtime = start(zns_raw(tmp_path))
    zone = 2 * MIB
    runtime.write(0, memoryview(pattern(1, 8 * SECTOR)))  # conventional
    runtime.write(2 * zone, memoryview(pattern(2, 3 * SECTOR)))  # zone 2: implicitly open
    api(runtime, "POST", ["zones", "3", "append"], pattern(3, 2 * SECTOR))
    api(runtime, "POST", ["zones", "3", "close"], b"")
    api(runtime, "POST", ["zones", "4", "open"], b"")  # explicitly open, empty
    runtime.write(5 * zone, memoryview(pattern(5, SECTOR)))
    api(runtime, "POST", ["zones", "5", "finish"], b"")
    runtime.write(6 * zone, memoryview(pattern(6, SECTOR)))
    api(runtime, "POST", ["zones", "6", "reset"], b"")
    api(runtime, "POST", ["zones", "7", "fault"], b"read_only")
    runtime.flush()
    state, committed = device_part(runtime), image(runtime)
    zones = api(runtime, "GET", ["zones"], b"")
    assert [z["condition"] for z in zones] == ["not_write_pointer"] * 2 + [
        "implicitly_open", "closed", "explicitly_open", "full", "empty", "read_only"]

    runtime.write(2 * zone + 3 * SECTOR, memoryview(pattern(9, SECTOR)))
    runtime.write(SECTOR, memoryview(pattern(10)))  # conventional overwrite
    api(runtime, "POST", ["zones", "5", "reset"], b"")
    api(runtime, "POST", ["zones", "3", "finish"], b"")
    api(runtime, "POST", ["zones", "6", "append"], pattern(11))
    kill(runtime)

    again = start(zns_raw(tmp_path))
    assert api(again, "GET", ["zones"], b"") == zones
    assert device_part(again) == state
    assert image(again) == committed
    again.write(2 * zone + 3 * SECTOR, memoryview(pattern(12)))  # at the committed write pointer
    assert api(again, "GET", ["zones", "2"], b"")["wp"] == 2 * zone + 4 * SECTOR
    again.close()


def test_zns_ftl_map_survives_a_kill_through_gc(tmp_path: Path) -> None:
    runtime = start(zns_ftl_raw(tmp_path))
    blocks = runtime.device.size_bytes // SECTOR
    rng = random.Random(5)
    for lba in range(0, blocks, 64):
        runtime.write(lba * SECTOR, memoryview(b"".join(pattern(lba + i) for i in range(min(64, blocks - lba)))))
    for n in range(2000):  # churn: garbage collection moves blocks and resets zones
        runtime.write(rng.randrange(blocks) * SECTOR, memoryview(pattern(n + 3)))
        if n % 50 == 0:
            step(runtime)
    runtime.flush()
    state, committed = device_part(runtime), image(runtime)
    assert state["gc"]["zones_collected"] > 0
    for n in range(1000):
        runtime.write(rng.randrange(blocks) * SECTOR, memoryview(pattern(n + 99)))
    runtime.run_background_until_idle()
    kill(runtime)

    again = start(zns_ftl_raw(tmp_path))
    assert device_part(again) == state
    assert image(again) == committed
    assert isinstance(again.stack.find(PowerCutLayer), PowerCutLayer)
    again.stack.model.log.check_consistency()  # type: ignore[attr-defined]
    again.close()


def test_fua_commits_everything_before_it_on_a_file_store(tmp_path: Path) -> None:
    runtime = start(ufs_raw(tmp_path))
    runtime.write(0, memoryview(pattern(1)))
    runtime.write(SECTOR, memoryview(pattern(2)), fua=True)
    runtime.write(2 * SECTOR, memoryview(pattern(3)))
    kill(runtime)
    again = start(ufs_raw(tmp_path))
    assert read(again, 0, 3 * SECTOR) == pattern(1) + pattern(2) + bytes(SECTOR)
    again.close()


def test_a_clean_stop_writes_the_cache_back(tmp_path: Path) -> None:
    runtime = start(ufs_raw(tmp_path))
    runtime.write(0, memoryview(pattern(1)))
    runtime.close()
    again = start(ufs_raw(tmp_path))
    assert read(again, 0) == pattern(1)
    again.close()


def test_what_survived_a_power_cut_survives_a_kill(tmp_path: Path) -> None:
    runtime = start(ufs_raw(tmp_path))
    runtime.write(0, memoryview(pattern(1, MIB)))
    runtime.flush()
    runtime.write(0, memoryview(pattern(2, MIB)))
    result = api(runtime, "POST", ["powercut"], b'{"mode": "torn", "seed": 4}')
    after_cut = image(runtime)
    assert 0 < result["kept_sectors"] < 256
    kill(runtime)
    again = start(ufs_raw(tmp_path))
    assert image(again) == after_cut
    again.close()


def durable_of(runtime: DeviceRuntime) -> Any:
    layer = runtime.stack.find(PowerCutLayer)
    assert isinstance(layer, PowerCutLayer)
    return layer.durable


def test_a_write_through_change_is_committed_and_on_ufs_not_journaled(tmp_path: Path) -> None:
    raw = ufs_raw(tmp_path, write_cache={"size_mib": 1})
    runtime = start(raw)
    runtime.write(0, memoryview(pattern(1, 3 * MIB)))  # larger than the cache
    kill(runtime)
    again = start(raw)
    assert read(again, 0, 3 * MIB) == pattern(1, 3 * MIB)
    records = durable_of(again).undo_records
    again.trim(0, 3 * MIB)  # destroys 3 MiB of written data without copying it first
    assert durable_of(again).undo_records == records and durable_of(again).journaling
    again.write(0, memoryview(pattern(2)))  # a small change is journaled as ever
    assert durable_of(again).undo_records == records + 1
    kill(again)
    third = start(raw)
    assert read(third, 0, 3 * MIB) == bytes(3 * MIB)
    third.close()


def test_a_write_through_change_on_a_zoned_device_is_journaled(tmp_path: Path) -> None:
    raw = zns_raw(tmp_path)
    raw["write_cache"] = {"size_mib": 1}
    runtime = start(raw)
    runtime.write(0, memoryview(pattern(1, 2 * MIB)))  # conventional zone 0
    runtime.flush()
    runtime.write(2 * MIB, memoryview(pattern(2)))  # the cache is no longer empty
    records, writebacks = durable_of(runtime).undo_records, runtime.describe()["write_cache"]["writebacks"]
    runtime.write_zeroes(0, MIB)  # more than the cache can still hold: written through
    assert runtime.describe()["write_cache"]["writebacks"] == writebacks + 1
    assert durable_of(runtime).undo_records > records  # the zeroed data went to the journal first
    runtime.close()


def test_checkpoints_are_written_only_when_something_changed(tmp_path: Path) -> None:
    runtime = start(ufs_raw(tmp_path))
    checkpoints = runtime.describe()["store"]["checkpoints"]
    assert checkpoints == 1  # the new store's initial state
    runtime.flush()
    read(runtime, 0)
    api(runtime, "GET", ["hid"], b"")
    runtime.run_background_until_idle()
    runtime.flush()
    assert runtime.describe()["store"]["checkpoints"] == 1
    runtime.write(0, memoryview(pattern(1)))
    runtime.flush()
    runtime.flush()
    store = runtime.describe()["store"]
    assert store["checkpoints"] == 2 and store["generation"] == 2 and store["undo_bytes"] == 0
    runtime.write(0, memoryview(pattern(2)))
    registry = make_registry(runtime)
    assert registry.get_sample_value("blockemu_store_checkpoints_total", {"device": "ufs_test"}) == 2
    assert registry.get_sample_value("blockemu_store_undo_bytes", {"device": "ufs_test"}) == 40 + SECTOR
    runtime.close()


def test_another_geometry_is_refused_and_service_times_may_change(tmp_path: Path) -> None:
    start(ufs_raw(tmp_path)).close()
    with pytest.raises(StoreError, match=r"state: written for \[ufs\] dies = 4, the configuration has 8"):
        start(ufs_raw(tmp_path, ufs={"dies": 8}))
    with pytest.raises(StoreError, match=r"written for \[hid\] window_kib = 256, the configuration has 512"):
        start(ufs_raw(tmp_path, hid={"window_kib": 512}))
    start(ufs_raw(tmp_path, ufs={"read_setup_us": 20.0}, timing={"mode": "realtime"})).close()


def test_a_saved_state_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    start(zns_raw(tmp_path)).close()
    state_file = tmp_path / "state"
    saved = decode_checkpoint(state_file.read_bytes(), "state")
    saved.arrays["zns_wp"] = saved.arrays["zns_wp"] + 3 * MIB  # past every zone's capacity
    parts = encode_checkpoint(saved.generation, saved.geometry, saved.arrays)
    state_file.write_bytes(b"".join(bytes(p) for p in parts))
    message = r"state: the saved state does not fit this device \(saved state of zone 0 .*\); refusing to start$"
    with pytest.raises(StoreError, match=message):
        start(zns_raw(tmp_path))
    with pytest.raises(StoreError, match=message):  # what serve checks before starting nbdkit
        check_config_store(config_from_mapping(zns_raw(tmp_path), "<test>"))


def test_snapshots_leave_out_what_can_be_recomputed(tmp_path: Path) -> None:
    runtime = start(ufs_raw(tmp_path))
    runtime.write(0, memoryview(pattern(1, MIB)))
    runtime.flush()
    runtime.close()
    saved = decode_checkpoint((tmp_path / "state").read_bytes(), "state").arrays
    assert "p2l" not in saved and "valid" not in saved
    assert saved["l2p"].dtype == np.int64  # widened again on load
    header_and_map = 64 * MIB // SECTOR * 4  # the map, stored as 32-bit integers
    assert header_and_map < (tmp_path / "state").stat().st_size < header_and_map + 16 * 1024
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    start(zns_ftl_raw(log_dir)).close()
    assert "log_valid" not in decode_checkpoint((log_dir / "state").read_bytes(), "s").arrays


# ----------------------------------------------------------------------- zram
def zram_raw(path: Path, **zram: Any) -> dict[str, Any]:
    return {"device": {"type": "zram", "name": "zram_test", "capacity_mib": 16},
            # Pinned costs: describe() reports them, and calibration differs run to run.
            "zram": {"policy": "multi", "recomp_algorithms": "zstd", "cost_us": "lz4=4/1, zstd=15/5", **zram},
            "store": {"backend": "file", "path": str(path), "fsync": False}}


def kill_zram(runtime: DeviceRuntime) -> None:
    layer = runtime.stack.find(CheckpointLayer)
    assert isinstance(layer, CheckpointLayer)
    layer.durable.close()  # no commit: what a SIGKILL leaves


def text(tag: int, pages: int = 1) -> bytes:
    """Compressible pages that are not same pages."""
    return b"".join((f"page {tag}.{i}: some swapped-out heap ".encode() * 200)[:SECTOR] for i in range(pages))


def zram_view(runtime: DeviceRuntime) -> dict[str, Any]:
    return {"device": device_part(runtime), "mm_stat": api(runtime, "GET", ["zram", "mm_stat"], b""),
            "io_stat": api(runtime, "GET", ["zram", "io_stat"], b""),
            "recomp_algorithm": api(runtime, "GET", ["zram", "recomp_algorithm"], b"")}


def test_zram_pages_index_and_counters_survive_a_kill(tmp_path: Path) -> None:
    runtime = start(zram_raw(tmp_path))
    assert isinstance(runtime.stack.find(CheckpointLayer), CheckpointLayer)
    runtime.write(0, memoryview(text(1, 64)))
    runtime.write(MIB, memoryview(random.Random(1).randbytes(16 * SECTOR)))  # huge pages
    runtime.write(2 * MIB, memoryview(bytes(8 * SECTOR) + b"\x5a" * SECTOR))  # same pages
    runtime.write(3 * MIB + 100, memoryview(b"partial" * 100))
    runtime.trim(16 * SECTOR, 8 * SECTOR)
    api(runtime, "PUT", ["zram", "idle"], b"all")
    api(runtime, "PUT", ["zram", "recompress"], b"type=idle max_pages=20")
    api(runtime, "PUT", ["zram", "recomp_algorithm"], b"algo=lz4hc priority=2")
    api(runtime, "PUT", ["zram", "mem_limit"], b"1M")
    with pytest.raises(DeviceError):  # over mem_limit: counted in io_stat failed_writes
        runtime.write(4 * MIB, memoryview(random.Random(2).randbytes(2 * MIB)))
    runtime.flush()
    state, committed = zram_view(runtime), image(runtime)
    stat = state["device"]["zram"]["mm_stat"]
    assert stat["huge_pages"] == 16 and stat["same_pages"] == 9 and stat["mem_limit"] == MIB
    assert state["io_stat"].split()[1] == "1" and state["io_stat"].split()[3] == "8"
    assert runtime.describe()["store"]["checkpoints"] == 2  # the new store's, and this flush's

    runtime.write(0, memoryview(text(2, 8)))  # over committed pages and into unwritten ones
    runtime.write(5 * MIB, memoryview(text(3, 8)))
    runtime.trim(MIB, 4 * SECTOR)
    api(runtime, "PUT", ["zram", "comp_algorithm"], b"zstd")
    api(runtime, "PUT", ["zram", "recompress"], b"type=huge")
    api(runtime, "PUT", ["zram", "compact"], b"1")
    api(runtime, "PUT", ["zram", "mem_limit"], b"0")
    assert image(runtime) != committed and zram_view(runtime)["mm_stat"] != state["mm_stat"]
    kill_zram(runtime)

    again = start(zram_raw(tmp_path))
    assert image(again) == committed
    assert zram_view(again) == state
    again.close()


def test_zram_fua_commits_staged_pages_and_a_clean_stop_commits(tmp_path: Path) -> None:
    raw = zram_raw(tmp_path, async_workers=2, staging_pages=64, batch_pages=4)
    runtime = start(raw)  # not started: no executor, staged pages wait for a drain
    runtime.write(0, memoryview(text(1, 16)))
    assert runtime.describe()["zram"]["staged_pages"] == 16
    runtime.write(MIB, memoryview(text(2)), fua=True)  # commits everything before it, staged pages too
    runtime.write(2 * MIB, memoryview(text(3, 4)))
    kill_zram(runtime)
    again = start(raw)
    assert read(again, 0, 16 * SECTOR) == text(1, 16) and read(again, MIB) == text(2)
    assert read(again, 2 * MIB, 4 * SECTOR) == bytes(4 * SECTOR)
    again.write(2 * MIB, memoryview(text(4, 4)))
    again.close()  # an orderly stop keeps what was written, staged or not
    third = start(raw)
    assert read(third, 2 * MIB, 4 * SECTOR) == text(4, 4)
    third.close()


def test_zram_checkpoints_only_when_something_changed(tmp_path: Path) -> None:
    runtime = start(zram_raw(tmp_path))
    runtime.write(0, memoryview(text(1, 4)))
    runtime.flush()
    checkpoints = runtime.describe()["store"]["checkpoints"]
    read(runtime, 0, 4 * SECTOR)
    api(runtime, "GET", ["zram"], b"")
    with pytest.raises(ApiError):
        api(runtime, "PUT", ["zram", "mem_limit"], b"lots")  # refused: changes nothing
    runtime.flush()
    assert runtime.describe()["store"]["checkpoints"] == checkpoints
    api(runtime, "PUT", ["zram", "idle"], b"all")
    runtime.flush()
    assert runtime.describe()["store"]["checkpoints"] == checkpoints + 1
    undo = runtime.describe()["store"]["undo_bytes"]
    assert undo == 0  # the pages are in the checkpoint, not the data file: nothing to journal
    runtime.close()


def test_zram_settings_bind_the_store_and_a_bad_checkpoint_is_refused(tmp_path: Path) -> None:
    runtime = start(zram_raw(tmp_path))
    runtime.write(0, memoryview(text(1, 4)))
    runtime.close()
    for setting, value, was in (("recomp_algorithms", "lz4hc", "'zstd'"), ("comp_algorithm", "zstd", "'lz4'"),
                                ("mem_limit_mib", 8, "0")):
        with pytest.raises(StoreError, match=rf"state: written for \[zram\] {setting} = {was}, the configuration"):
            start(zram_raw(tmp_path, **{setting: value}))
    start(zram_raw(tmp_path, policy="single", async_workers=2, cpu_units=4)).close()  # not geometry
    state_file = tmp_path / "state"
    saved = decode_checkpoint(state_file.read_bytes(), "state")
    saved.arrays["zram_slots"] = saved.arrays["zram_slots"] + 16 * MIB  # pages beyond the device
    parts = encode_checkpoint(saved.generation, saved.geometry, saved.arrays)
    state_file.write_bytes(b"".join(bytes(p) for p in parts))
    message = r"state: the saved state does not fit this device \(saved zram slots reach beyond .*\); refusing"
    with pytest.raises(StoreError, match=message):
        check_config_store(config_from_mapping(zram_raw(tmp_path), "<test>"))
    with pytest.raises(StoreError, match=message):
        start(zram_raw(tmp_path))
    blob = bytearray(state_file.read_bytes())
    blob[-100] ^= 0x01  # in the compressed pages
    state_file.write_bytes(bytes(blob))
    with pytest.raises(StoreError, match=r"state: checksum mismatch .*: the checkpoint is corrupt; refusing to start"):
        check_config_store(config_from_mapping(zram_raw(tmp_path), "<test>"))
