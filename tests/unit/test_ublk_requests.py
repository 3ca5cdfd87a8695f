"""The ublk server's request handling, without a kernel.

What the kernel would do is played by hand: the request descriptor goes into
the descriptor array, and a sparse file stands in for /dev/ublkcN, so the
user-copy pread/pwrite land at the same per-tag offsets
(UBLKSRV_IO_BUF_OFFSET + tag << UBLK_TAG_OFF) that the driver uses.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from blockemu.config import config_from_mapping
from blockemu.frontends.ublk import uapi
from blockemu.frontends.ublk.server import _IO_DESC, ControlDevice, UblkServer, device_params
from blockemu.layers.faults import FAULT_ERRNOS
from blockemu.runtime import DeviceRuntime
from tests.conftest import api, small_ufs_config

MIB = 1024 * 1024
ZNS = {"device": {"type": "zns", "name": "zns_test", "capacity_mib": 16},
       "zns": {"zone_size_mib": 2, "zone_capacity_mib": 1, "conventional_zones": 2, "max_open_zones": 2,
               "max_active_zones": 3, "zone_append_max_kib": 64}}


class NoControl:
    """Stands in for /dev/ublk-control: these tests never add a device."""

    def close(self) -> None:
        pass


class Harness:
    def __init__(self, runtime: DeviceRuntime, char_file: Path) -> None:
        self.server = UblkServer(runtime, queue_depth=4, max_io_buf_bytes=256 * 1024,
                                 control=cast(ControlDevice, NoControl()))
        self.fd = os.open(char_file, os.O_RDWR | os.O_CREAT, 0o600)
        self.descriptors = bytearray(4 * _IO_DESC.size)
        self.server._char_fd = self.fd
        self.server._descriptors = cast(Any, self.descriptors)

    def request(self, tag: int, op: int, offset: int, count: int, flags: int = 0, data: bytes = b"") -> tuple[int, int]:
        """The kernel's side: describe request ``tag``, put its data, let the server handle it."""
        sectors = count if op == uapi.UBLK_IO_OP_REPORT_ZONES else count // 512
        _IO_DESC.pack_into(self.descriptors, tag * _IO_DESC.size, op | flags, sectors, offset // 512, 0)
        if data:
            os.pwrite(self.fd, data, uapi.user_copy_offset(0, tag))
        return self.server._handle(tag)

    def request_data(self, tag: int, nbytes: int) -> bytes:
        return os.pread(self.fd, nbytes, uapi.user_copy_offset(0, tag))


@pytest.fixture
def ufs(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(DeviceRuntime(small_ufs_config()), tmp_path / "ublkc")
    yield harness
    harness.server.close()
    os.close(harness.fd)


@pytest.fixture
def zns(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(DeviceRuntime(config_from_mapping(ZNS, "<test>")), tmp_path / "ublkc")
    yield harness
    harness.server.close()
    os.close(harness.fd)


def test_write_then_read_through_the_per_tag_user_copy_offsets(ufs: Harness) -> None:
    data = os.urandom(8192)
    assert ufs.request(1, uapi.UBLK_IO_OP_WRITE, 4096, 8192, uapi.UBLK_IO_F_FUA, data) == (8192, 0)
    assert ufs.request(3, uapi.UBLK_IO_OP_READ, 4096, 8192) == (8192, 0)
    assert ufs.request_data(3, 8192) == data
    assert ufs.request(2, uapi.UBLK_IO_OP_FLUSH, 0, 0) == (0, 0)
    assert ufs.request(2, uapi.UBLK_IO_OP_WRITE_ZEROES, 4096, 4096) == (0, 0)
    ufs.request(0, uapi.UBLK_IO_OP_READ, 4096, 8192)
    assert ufs.request_data(0, 8192) == bytes(4096) + data[4096:]
    io = ufs.server.runtime.describe()["io"]
    assert (io["write"]["bytes"], io["read"]["bytes"], io["flush"]["requests"]) == (8192, 16384, 1)


def test_device_refusals_become_negative_errno(ufs: Harness) -> None:
    size = ufs.server.runtime.device.size_bytes
    assert ufs.request(0, uapi.UBLK_IO_OP_READ, size, 4096) == (-errno.EINVAL, 0)
    assert ufs.request(0, uapi.UBLK_IO_OP_ZONE_OPEN, 0, 0) == (-errno.EOPNOTSUPP, 0)


def test_conventional_params_follow_capabilities(ufs: Harness) -> None:
    params = device_params(ufs.server.runtime, 256 * 1024)
    assert params.types == uapi.UBLK_PARAM_TYPE_BASIC | uapi.UBLK_PARAM_TYPE_DISCARD
    assert params.basic.dev_sectors == 64 * MIB // 512
    assert params.basic.max_sectors == 512
    assert params.basic.chunk_sectors == 0
    assert params.discard.max_discard_segments == 1


def _zones(report: bytes) -> list[uapi.BlkZone]:
    count = len(report) // ctypes.sizeof(uapi.BlkZone)
    return list((uapi.BlkZone * count).from_buffer_copy(report))


def test_zoned_params(zns: Harness) -> None:
    params = device_params(zns.server.runtime, 256 * 1024)
    assert params.types == uapi.UBLK_PARAM_TYPE_BASIC | uapi.UBLK_PARAM_TYPE_ZONED
    assert params.basic.chunk_sectors == 2 * MIB // 512
    assert params.basic.dev_sectors == 16 * MIB // 512
    assert (params.zoned.max_open_zones, params.zoned.max_active_zones) == (2, 3)
    assert params.zoned.max_zone_append_sectors == 64 * 1024 // 512


def test_report_zones_fills_blk_zone_and_zeroes_past_the_end(zns: Harness) -> None:
    zone_bytes = 2 * MIB
    # Zones 6 and 7 exist; the kernel asked for 4 starting at zone 6.
    result, _ = zns.request(2, uapi.UBLK_IO_OP_REPORT_ZONES, 6 * zone_bytes, 4)
    assert result == 4 * ctypes.sizeof(uapi.BlkZone)
    zones = _zones(zns.request_data(2, result))
    assert [(z.start, z.len, z.capacity, z.wp, z.type, z.cond) for z in zones[:2]] == [
        (6 * 4096, 4096, 2048, 6 * 4096, uapi.BLK_ZONE_TYPE_SEQWRITE_REQ, uapi.BLK_ZONE_COND_EMPTY),
        (7 * 4096, 4096, 2048, 7 * 4096, uapi.BLK_ZONE_TYPE_SEQWRITE_REQ, uapi.BLK_ZONE_COND_EMPTY),
    ]
    assert zones[2].len == 0 and zones[3].len == 0  # a zero length ends the report
    first, _ = zns.request(0, uapi.UBLK_IO_OP_REPORT_ZONES, 0, 1)
    [conventional] = _zones(zns.request_data(0, first))
    assert (conventional.type, conventional.cond, conventional.capacity) == (
        uapi.BLK_ZONE_TYPE_CONVENTIONAL, uapi.BLK_ZONE_COND_NOT_WP, 4096)


def test_zone_append_returns_the_lba_it_wrote(zns: Harness) -> None:
    zone = 3 * 2 * MIB
    first, second = os.urandom(8192), os.urandom(4096)
    assert zns.request(1, uapi.UBLK_IO_OP_ZONE_APPEND, zone, 8192, data=first) == (8192, zone // 512)
    assert zns.request(1, uapi.UBLK_IO_OP_ZONE_APPEND, zone, 4096, data=second) == (4096, zone // 512 + 16)
    zns.request(0, uapi.UBLK_IO_OP_READ, zone, 12288)
    assert zns.request_data(0, 12288) == first + second
    # Larger than max_zone_append_sectors: the model refuses it.
    result, _ = zns.request(1, uapi.UBLK_IO_OP_ZONE_APPEND, zone, 128 * 1024, data=bytes(128 * 1024))
    assert result < 0


def test_zone_management_ops_drive_the_model(zns: Harness) -> None:
    device: Any = zns.server.runtime.stack.model
    zone = 4 * 2 * MIB
    assert zns.request(0, uapi.UBLK_IO_OP_ZONE_OPEN, zone, 0) == (0, 0)
    assert device.zone(4).condition.value == "explicitly_open"
    assert zns.request(0, uapi.UBLK_IO_OP_WRITE, zone, 4096, data=bytes(4096))[0] == 4096
    assert zns.request(0, uapi.UBLK_IO_OP_ZONE_CLOSE, zone, 0) == (0, 0)
    assert device.zone(4).condition.value == "closed"
    assert zns.request(0, uapi.UBLK_IO_OP_ZONE_FINISH, zone, 0) == (0, 0)
    assert device.zone(4).condition.value == "full"
    assert zns.request(0, uapi.UBLK_IO_OP_ZONE_RESET, zone, 0) == (0, 0)
    assert device.zone(4).condition.value == "empty"
    # A write off the write pointer fails and changes nothing.
    result, _ = zns.request(0, uapi.UBLK_IO_OP_WRITE, zone + 8192, 4096, data=bytes(4096))
    assert result < 0 and device.zone(4).wp == zone
    zns.request(0, uapi.UBLK_IO_OP_WRITE, 5 * 2 * MIB, 4096, data=bytes(4096))
    assert zns.request(0, uapi.UBLK_IO_OP_ZONE_RESET_ALL, 0, 0) == (0, 0)
    assert device.zone(5).wp == 5 * 2 * MIB
    # Zone commands on a conventional zone are refused by the model.
    assert zns.request(0, uapi.UBLK_IO_OP_ZONE_OPEN, 0, 0)[0] < 0


def _write(harness: Harness, offset: int) -> int:
    return harness.request(0, uapi.UBLK_IO_OP_WRITE, offset, 4096, data=bytes(4096))[0]


def test_zone_refusals_answer_the_kernels_errno(zns: Harness) -> None:
    zone = 2 * MIB
    # max_open_zones = 2: a third explicit open is BLK_STS_ZONE_OPEN_RESOURCE.
    assert zns.request(0, uapi.UBLK_IO_OP_ZONE_OPEN, 2 * zone, 0) == (0, 0)
    assert zns.request(0, uapi.UBLK_IO_OP_ZONE_OPEN, 3 * zone, 0) == (0, 0)
    assert zns.request(0, uapi.UBLK_IO_OP_ZONE_OPEN, 4 * zone, 0) == (-errno.ETOOMANYREFS, 0)
    # max_active_zones = 3: a write that would open a fourth is BLK_STS_ZONE_ACTIVE_RESOURCE.
    assert _write(zns, 3 * zone) == 4096
    assert zns.request(0, uapi.UBLK_IO_OP_ZONE_CLOSE, 3 * zone, 0) == (0, 0)  # closed: still active
    assert _write(zns, 4 * zone) == 4096
    assert _write(zns, 5 * zone) == -errno.EOVERFLOW
    append, _ = zns.request(1, uapi.UBLK_IO_OP_ZONE_APPEND, 5 * zone, 4096, data=bytes(4096))
    assert append == -errno.EOVERFLOW
    # The other zone statuses end as BLK_STS_IOERR.
    assert _write(zns, 4 * zone + 8192) == -errno.EIO  # not at the write pointer
    assert zns.request(0, uapi.UBLK_IO_OP_ZONE_FINISH, 4 * zone, 0) == (0, 0)
    assert _write(zns, 4 * zone + 4096) == -errno.EIO  # full


def test_a_faults_errno_reaches_the_kernel_unchanged(ufs: Harness) -> None:
    for name in FAULT_ERRNOS:
        api(ufs.server.runtime, "PUT", ["faults"],
            json.dumps({"ops": {"write": {"error_rate": 1, "errno": name}}}).encode())
        assert _write(ufs, 0) == -getattr(errno, name)


def test_zram_mem_limit_answers_eio_as_the_kernel_zram(tmp_path: Path) -> None:
    raw = {"device": {"type": "zram", "name": "zram_test", "capacity_mib": 16}, "zram": {"mem_limit_mib": 1}}
    harness = Harness(DeviceRuntime(config_from_mapping(raw, "<test>")), tmp_path / "ublkc")
    try:
        results = [harness.request(0, uapi.UBLK_IO_OP_WRITE, i * 65536, 65536, data=os.urandom(65536))[0]
                   for i in range(32)]  # 2 MiB of incompressible pages into a 1 MiB pool
        assert results[0] == 65536 and results[-1] == -errno.EIO  # BLK_STS_IOERR, as Linux's zram past mem_limit
    finally:
        harness.server.close()
        os.close(harness.fd)


def test_zone_commands_from_the_kernel_are_traced_and_replay(zns: Harness, tmp_path: Path) -> None:
    from blockemu.replay import replay
    from blockemu.trace import FLAG_REFUSED, OP_CODES, read_trace

    runtime = zns.server.runtime
    runtime.start_trace(tmp_path / "ublk.trace")
    zone = 2 * MIB
    assert zns.request(0, uapi.UBLK_IO_OP_ZONE_OPEN, 3 * zone, 0) == (0, 0)
    assert _write(zns, 3 * zone) == 4096
    assert zns.request(1, uapi.UBLK_IO_OP_ZONE_APPEND, 3 * zone, 4096, data=bytes(4096))[0] == 4096
    assert zns.request(0, uapi.UBLK_IO_OP_ZONE_RESET, 3 * zone, 0) == (0, 0)
    assert _write(zns, 3 * zone) == 4096  # only at the start again because the reset was traced too
    assert zns.request(0, uapi.UBLK_IO_OP_ZONE_FINISH, 4 * zone, 0) == (0, 0)
    assert zns.request(0, uapi.UBLK_IO_OP_ZONE_OPEN, 4 * zone, 0)[0] < 0  # full: refused
    runtime.stop_trace()
    trace = read_trace(tmp_path / "ublk.trace")
    names = ["zone_open", "write", "zone_append", "zone_reset", "write", "zone_finish", "zone_open"]
    assert trace.records["op"].tolist() == [OP_CODES[n] for n in names]
    assert (trace.records["flags"] & FLAG_REFUSED).astype(bool).tolist() == [False] * 6 + [True]
    result = replay(runtime.config, trace, engine="scalar")
    assert result.extra["refused_recorded"] == 1 and result.extra["refused_in_replay"] == 0
    assert result.device.report_zones() == runtime.stack.model.report_zones()  # type: ignore[attr-defined]
