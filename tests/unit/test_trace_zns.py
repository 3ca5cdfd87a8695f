"""A ZNS trace holds zone management and refused requests, and replays to the same zones (issue 24, item 3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blockemu.config import config_from_mapping
from blockemu.devices.base import ApiError, DeviceError
from blockemu.replay import replay
from blockemu.runtime import DeviceRuntime
from blockemu.trace import FLAG_REFUSED, OP_CODES, TRACE_DTYPE, Trace, read_trace
from tests.conftest import api

MIB = 1024 * 1024
Z = 2 * MIB
SMALL_ZNS: dict[str, Any] = {
    "device": {"type": "zns", "name": "zns_trace", "capacity_mib": 16},
    "zns": {"zone_size_mib": 2, "zone_capacity_mib": 1, "conventional_zones": 1, "max_open_zones": 3,
            "max_active_zones": 4, "zone_append_max_kib": 64},
}


def zns_config() -> Any:
    return config_from_mapping({k: dict(v) for k, v in SMALL_ZNS.items()}, "<test>")


def write(runtime: DeviceRuntime, offset: int, length: int = 65536) -> None:
    runtime.write(offset, memoryview(b"x" * length))


def traced_session(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Write → reset zone 5 → write, plus the other zone commands and two refused requests."""
    runtime = DeviceRuntime(zns_config())
    write(runtime, 5 * Z)  # before tracing: the trace's saved state has zone 5 written
    api(runtime, "POST", ["trace", "start"], json.dumps({"path": str(path)}).encode())
    write(runtime, 5 * Z + 65536)
    api(runtime, "POST", ["zones", "5", "reset"])
    write(runtime, 5 * Z)  # at the start again: only valid because the reset happened
    with pytest.raises(DeviceError):
        write(runtime, 5 * Z + 4 * 65536)  # not at the write pointer: refused
    write(runtime, 6 * Z)
    api(runtime, "POST", ["zones", "6", "finish"])
    api(runtime, "POST", ["zones", "7", "open"])
    api(runtime, "POST", ["zones", "7", "append"], b"a" * 8192)
    api(runtime, "POST", ["zones", "7", "close"])
    api(runtime, "POST", ["copy"], json.dumps({"sources": [{"offset": 5 * Z, "length": 65536}],
                                                 "dest_zone": 3}).encode())
    with pytest.raises(ApiError):
        api(runtime, "POST", ["zones", "6", "append"], b"b" * 4096)  # zone 6 is full: refused
    api(runtime, "POST", ["zones", "4", "fault"], b"read_only")
    status = api(runtime, "POST", ["trace", "stop"])
    zones = api(runtime, "GET", ["zones"])
    runtime.close()
    return zones, status


def test_zns_trace_with_zone_commands_replays_to_the_same_zones(tmp_path: Path) -> None:
    path = tmp_path / "zns.trace"
    live_zones, status = traced_session(path)
    trace = read_trace(path)
    ops = trace.records["op"].tolist()
    for name in ("zone_reset", "zone_finish", "zone_open", "zone_append", "zone_close", "copy", "zone_fault_read_only"):
        assert OP_CODES[name] in ops, name
    refused = trace.records["flags"] & FLAG_REFUSED != 0
    assert int(refused.sum()) == 2 and status["records"] == len(trace)
    result = replay(zns_config(), trace, engine="scalar")
    assert result.extra["refused_recorded"] == 2
    assert result.extra["refused_in_replay"] == 0
    assert result.device.report_zones() == live_zones  # type: ignore[attr-defined]
    assert result.summary()["refused"] == {"recorded": 2, "in_replay": 0}


def test_requests_the_replay_device_refuses_are_counted_not_raised() -> None:
    # A fio-style trace that breaks the zone rules (a write not at the pointer): counted, replay goes on.
    records = np.zeros(3, dtype=TRACE_DTYPE)
    records["op"] = OP_CODES["write"]
    records["length"] = 4096
    records["offset"] = [Z, Z + 8 * 4096, Z + 4096]
    trace = Trace(records, {}, {})
    result = replay(zns_config(), trace, engine="scalar")
    assert result.extra["refused_in_replay"] == 1
    assert result.summary()["ops"]["write"]["requests"] == 2


def test_version_1_traces_still_read(tmp_path: Path) -> None:
    import struct

    records = np.zeros(2, dtype=TRACE_DTYPE)
    records["op"] = [OP_CODES["write"], OP_CODES["read"]]
    records["length"] = 4096
    header = json.dumps({"device": "old"}).encode()
    path = tmp_path / "v1.trace"
    path.write_bytes(b"BLKEMUTR" + struct.pack("<II", 1, len(header)) + header + struct.pack("<Q", 0)
                     + records.tobytes())
    trace = read_trace(path)
    assert trace.records["op"].tolist() == [OP_CODES["write"], OP_CODES["read"]]
