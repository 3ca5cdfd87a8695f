from __future__ import annotations

import numpy as np
import pytest

from blockemu.devices.base import DeviceError
from blockemu.devices.ufs.device import UfsDevice
from blockemu.devices.ufs.ftl import SECTOR
from blockemu.devices.ufs.hid import HidState, HidTransitionError, HidValueError
from blockemu.store import MemoryStore
from tests.conftest import small_ufs_config

MIB = 1024 * 1024


def make_device(**sections: dict) -> UfsDevice:
    config = small_ufs_config(**sections)
    return UfsDevice(config, MemoryStore(config.capacity_bytes))


def write(dev: UfsDevice, offset: int, data: bytes, now: int = 0) -> int:
    return dev.write(offset, memoryview(data), False, now)


def read(dev: UfsDevice, offset: int, length: int, now: int) -> tuple[bytes, int]:
    buf = bytearray(length)
    done = dev.read(offset, memoryview(buf), now)
    return bytes(buf), done


def test_contiguous_read_costs_one_tr_per_nand_group_per_die() -> None:
    dev = make_device()
    write(dev, 0, bytes(MIB))
    start = 10**12  # long after the writes: the dies are idle
    _, done = read(dev, 0, MIB, start)
    # 256 sectors in groups of 16 (4 planes × 4 sectors), 4 groups per die.
    per_die = 4 * dev.tr_ns + 64 * dev.read_ns_per_sector
    assert done - start == int(per_die) + dev.overhead_ns


def test_interleaved_file_reads_several_times_slower_than_contiguous() -> None:
    contiguous, fragmented = make_device(), make_device()
    write(contiguous, 0, bytes(MIB))
    for i in range(256):  # 4 files growing at once, 4 KiB at a time
        for f in range(4):
            write(fragmented, f * 4 * MIB + i * SECTOR, bytes(SECTOR))
    start = 10**12
    _, fast = read(contiguous, 0, MIB, start)
    _, slow = read(fragmented, 0, MIB, start)
    assert (slow - start) / (fast - start) > 3.0
    assert fragmented.mean_runs_per_read == 256


def test_data_round_trips_through_writes_trims_and_zeroes() -> None:
    dev = make_device()
    payload = np.random.default_rng(1).integers(0, 256, 3 * SECTOR + 100, dtype=np.uint8).tobytes()
    write(dev, 1000, payload)
    got, _ = read(dev, 1000, len(payload), 0)
    assert got == payload
    dev.write_zeroes(1000 + SECTOR, 10, False, 0)
    got, _ = read(dev, 1000, len(payload), 0)
    assert got == payload[:SECTOR] + bytes(10) + payload[SECTOR + 10 :]
    dev.trim(0, 8 * SECTOR, 0)
    got, _ = read(dev, 0, 8 * SECTOR, 0)
    assert got == bytes(8 * SECTOR)
    assert dev.ftl.mapped_sectors == 0


def test_out_of_range_requests_are_refused() -> None:
    dev = make_device()
    with pytest.raises(DeviceError):
        read(dev, dev.size_bytes - 10, 20, 0)
    with pytest.raises(DeviceError):
        write(dev, -1, b"x")


def test_unmapped_reads_cost_only_the_command() -> None:
    dev = make_device()
    _, done = read(dev, 0, MIB, 5)
    assert done == 5 + dev.overhead_ns


def drive(dev: UfsDevice, now: int = 0, limit: int = 100_000) -> int:
    """Run background work to idle, returning the modeled time it ended."""
    for _ in range(limit):
        nxt = dev.background_step(now)
        if nxt is None:
            return now
        now = max(now, nxt)
    raise AssertionError("background work did not finish")


def fragmented_device() -> tuple[UfsDevice, bytes]:
    dev = make_device()
    payload = np.random.default_rng(7).integers(0, 256, 8 * MIB, dtype=np.uint8).tobytes()
    for i in range(0, MIB, SECTOR):  # 8 files of 1 MiB growing at once
        for f in range(8):
            write(dev, f * MIB + i, payload[f * MIB + i : f * MIB + i + SECTOR])
    return dev, payload


def test_hid_analysis_then_defrag_walks_every_state_and_keeps_data() -> None:
    dev, payload = fragmented_device()
    hid = dev.hid
    assert hid.state is HidState.IDLE
    hid.write("analysis_trigger", "enable")
    assert hid.state is HidState.ANALYSIS_IN_PROGRESS
    now = drive(dev)
    assert hid.state is HidState.DEFRAG_REQUIRED
    assert hid.fragmented_size == 8 * MIB
    _, before = read(dev, 0, MIB, 10**12)  # one of the 8 interleaved files

    hid.write("defrag_trigger", "enable")
    assert hid.state is HidState.ANALYSIS_IN_PROGRESS
    now = dev.background_step(now) or now  # analysis starts
    now = dev.background_step(now) or now  # analysis done: defrag starts
    assert hid.state is HidState.DEFRAG_IN_PROGRESS
    with pytest.raises(HidTransitionError):
        hid.write("analysis_trigger", "enable")
    drive(dev, now)
    assert hid.state is HidState.DEFRAG_COMPLETED
    assert hid.progress_ratio == 100
    assert hid.fragmented_size == 0
    assert hid.defrag_bytes_total == 8 * MIB
    assert read(dev, 0, 8 * MIB, 0)[0] == payload
    _, after = read(dev, 0, MIB, 2 * 10**12)
    assert (before - 10**12) / (after - 2 * 10**12) > 3.0

    hid.write("analysis_trigger", "enable")
    drive(dev)
    assert hid.state is HidState.DEFRAG_NOT_REQUIRED


def test_hid_disable_stops_defrag_and_defrag_size_limits_it() -> None:
    dev, _ = fragmented_device()
    hid = dev.hid
    hid.write("defrag_size", str(2 * MIB))
    hid.write("defrag_trigger", "enable")
    now = drive(dev)
    assert hid.state is HidState.DEFRAG_COMPLETED
    assert 2 * MIB <= hid.defrag_bytes_total < 3 * MIB
    assert hid.fragmented_size == 6 * MIB

    hid.write("defrag_size", "0")
    hid.write("defrag_trigger", "enable")
    now = dev.background_step(now) or now
    now = dev.background_step(now) or now
    now = dev.background_step(now) or now  # one step of defrag
    assert hid.state is HidState.DEFRAG_IN_PROGRESS
    hid.write("defrag_trigger", "disable")
    assert hid.state is HidState.IDLE
    assert dev.background_step(now) is None


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("analysis_trigger", "start"),
        ("defrag_trigger", ""),
        ("defrag_size", "-5"),
        ("defrag_size", "lots"),
        ("state", "idle"),
        ("progress", "1"),
    ],
)
def test_hid_rejects_malformed_writes_and_changes_nothing(attribute: str, value: str) -> None:
    dev = make_device()
    before = dev.hid.snapshot()
    with pytest.raises(HidValueError):
        dev.hid.write(attribute, value)
    assert dev.hid.snapshot() == before


def test_hid_write_only_attributes_are_not_readable() -> None:
    dev = make_device()
    with pytest.raises(HidValueError):
        dev.hid.read("defrag_trigger")
    assert dev.hid.read("state") == "idle"


@pytest.mark.parametrize("percent", [25.0, 60.0])
def test_aging_reaches_the_stated_fragmentation(percent: float) -> None:
    dev = make_device(aging={"fragmentation_percent": percent, "seed": 3})
    stats = dev.fragmentation()
    window_share = 100 * 256 / (64 * 1024)  # one 256 KiB window of 64 MiB
    assert percent <= stats["fragmented_percent"] <= percent + window_share + 1e-9
    assert stats["mapped_bytes"] == 64 * MIB


def test_runtime_aging_keeps_data_and_only_touches_mapped_sectors() -> None:
    dev = make_device()
    payload = np.random.default_rng(2).integers(0, 256, 4 * MIB, dtype=np.uint8).tobytes()
    write(dev, 0, payload)
    result = dev.age(100.0, fragment_kib=4, seed=5)
    assert result["aged_bytes"] == 4 * MIB
    assert dev.fragmentation()["fragmented_bytes"] == 4 * MIB
    assert read(dev, 0, 4 * MIB, 0)[0] == payload


def test_metrics_describe_the_model() -> None:
    dev, _ = fragmented_device()
    families = {f.name: f for f in dev.metrics()}
    assert families["blockemu_ufs_fragmented_bytes"].samples == [({}, 8 * MIB)]
    states = dict((labels["state"], v) for labels, v in families["blockemu_hid_state"].samples)
    assert states == {s.value: (1.0 if s is HidState.IDLE else 0.0) for s in HidState}
