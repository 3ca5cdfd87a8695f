"""WriteBooster: SLC/TLC accounting, folding on the dies, and the kernel's attribute files."""

from __future__ import annotations

import pytest

from blockemu.api import ApiError
from blockemu.control.routes import RouteTable
from blockemu.devices.ufs.device import FOLD_STEP_SECTORS, UfsDevice
from blockemu.devices.ufs.ftl import SECTOR
from blockemu.devices.ufs.writebooster import FlushStatus, WriteBooster
from blockemu.store import MemoryStore
from tests.conftest import small_ufs_config

MIB = 2**20


def make_device(**ufs: object) -> UfsDevice:
    config = small_ufs_config(ufs={"wb_enabled": True, "wb_buffer_mib": 2, **ufs})
    return UfsDevice(config, MemoryStore(config.capacity_bytes))


def test_admit_fills_slc_then_falls_back_to_tlc() -> None:
    wb = WriteBooster(MIB, enabled=True, flush_enabled=True, flush_threshold=4, slc_pe_cycles=10)
    assert wb.admit(200) == 200
    assert wb.admit(100) == 56  # 256 sectors of buffer
    assert (wb.slc_sectors, wb.tlc_direct_sectors, wb.used_sectors, wb.avail_tenths) == (256, 44, 256, 0)
    assert wb.fold(100) == 100 and wb.flush_status is FlushStatus.IN_PROGRESS
    assert wb.avail_tenths == 3  # 100 of 256 free
    assert wb.fold(1000) == 156 and wb.flush_status is FlushStatus.COMPLETED
    wb.enabled = False
    assert wb.admit(10) == 0 and wb.tlc_direct_sectors == 54
    # 256 sectors written into a 256-sector buffer rated for 10 cycles: 10% of its life.
    assert wb.life_time_est == 2


def test_writes_run_at_the_slc_rate_until_the_buffer_is_full() -> None:
    dev = make_device(wb_flush_enabled=False, wb_flush_threshold=1)
    one = memoryview(bytes(SECTOR))
    start = 0
    done = dev.write(0, one, False, start)
    assert done - start == dev._one_sector_write_ns + dev.overhead_ns
    dev.write(SECTOR, memoryview(bytes(2 * MIB - SECTOR)), False, 0)  # fills the buffer exactly
    assert dev.wb is not None and dev.wb.avail_tenths == 0
    start = 10**12
    done = dev.write(0, one, False, start)
    assert done - start == dev._one_sector_tlc_write_ns + dev.overhead_ns
    assert dev._one_sector_tlc_write_ns > 2 * dev._one_sector_write_ns
    assert dev.describe()["writebooster"]["tlc_direct_bytes"] == SECTOR


def test_folding_waits_for_idle_dies_competes_with_host_io_and_counts_in_wa() -> None:
    dev = make_device()
    assert dev.wb is not None
    done = dev.write(0, memoryview(bytes(MIB)), False, 0)
    assert dev.background_step(0) == dev.dies.idle_at()  # busy with the host write: not yet
    step_done = dev.background_step(done)
    assert step_done is not None and step_done > done
    assert dev.wb.folded_sectors == min(FOLD_STEP_SECTORS, 256) and dev.wb.used_sectors == 256 - dev.wb.folded_sectors
    # A host read arriving meanwhile waits behind the fold on its die.
    read_done = dev.read(0, memoryview(bytearray(SECTOR)), done)
    assert read_done >= step_done
    while (nxt := dev.background_step(step_done)) is not None:
        step_done = nxt
    assert dev.wb.used_sectors == 0 and dev.wb.flush_status is FlushStatus.COMPLETED
    assert dev.write_amplification == 2.0  # every host sector programmed to SLC, then folded to TLC


def test_flush_off_folds_only_below_the_threshold() -> None:
    dev = make_device(wb_flush_enabled=False, wb_flush_threshold=4)
    assert dev.wb is not None
    dev.write(0, memoryview(bytes(MIB)), False, 0)  # half the buffer used: 5 tenths free
    assert dev.background_step(10**12) is None
    dev.write(MIB, memoryview(bytes(MIB // 2)), False, 0)  # 2 tenths free < 4
    assert dev.background_step(10**12) is not None


def test_attributes_read_and_write_as_the_kernel_files() -> None:
    dev = make_device()
    table = RouteTable(dev.routes())
    assert table.call("GET", "/api/v1/wb/wb_avail_buf").rstrip() == "0x0000000A"
    assert table.call("GET", "/api/v1/wb/wb_on").rstrip() == "1"
    assert table.call("GET", "/api/v1/wb/wb_flush_threshold").rstrip() == "4"
    assert table.call("GET", "/api/v1/wb/wb_flush_status").rstrip() == "0x00000000"
    assert table.call("GET", "/api/v1/wb/wb_life_time_est").rstrip() == "0x00000001"
    assert table.call("GET", "/api/v1/wb/wb_cur_buf").rstrip() == f"0x{2 * MIB:08X}"
    table.call("PUT", "/api/v1/wb/wb_on", b"0")
    assert dev.wb is not None and not dev.wb.enabled
    dev.write(0, memoryview(bytes(SECTOR)), False, 0)
    assert dev.wb.tlc_direct_sectors == 1
    table.call("PUT", "/api/v1/wb/wb_flush_threshold", b"10\n")
    assert table.call("GET", "/api/v1/wb")["wb_flush_threshold"] == 10
    for name, value in (("wb_on", b"2"), ("enable_wb_buf_flush", b"yes"), ("wb_flush_threshold", b"0"),
                        ("wb_flush_threshold", b"11")):
        with pytest.raises(ApiError) as refused:
            table.call("PUT", f"/api/v1/wb/{name}", value)
        assert refused.value.status == 400
    with pytest.raises(ApiError) as refused:
        table.call("PUT", "/api/v1/wb/wb_avail_buf", b"3")
    assert refused.value.status == 400 and "read-only" in str(refused.value)


def test_without_writebooster_there_are_no_wb_routes_and_writes_keep_one_rate() -> None:
    config = small_ufs_config()
    dev = UfsDevice(config, MemoryStore(config.capacity_bytes))
    assert dev.wb is None and dev.capabilities.vector_replay
    assert not [r for r in dev.routes() if "/wb" in r.path]
    assert dev.describe()["writebooster"] == {"present": False}
    done = dev.write(0, memoryview(bytes(SECTOR)), False, 0)
    assert done == dev._one_sector_write_ns + dev.overhead_ns


def test_state_round_trips_the_buffer_fill() -> None:
    dev = make_device(wb_flush_enabled=False)
    dev.write(0, memoryview(bytes(MIB)), False, 0)
    copy = make_device()
    copy.restore_state(dev.snapshot_state())
    copy.restore_counters(dev.snapshot_counters())
    assert copy.wb is not None and dev.wb is not None
    assert (copy.wb.used_sectors, copy.wb.flush_enabled, copy.wb.slc_sectors) == (256, False, 256)
