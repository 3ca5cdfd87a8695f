"""The ZNS device model: every zone rule, its named error, and that a refusal changes nothing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from blockemu.config import ConfigError, config_from_mapping
from blockemu.devices.base import ApiError, DeviceError
from blockemu.devices.zns.device import CopySource, ZnsDevice
from blockemu.devices.zns.errors import (
    InvalidZoneStateTransitionError,
    ReadBeyondWritePointerError,
    TooManyActiveZonesError,
    TooManyOpenZonesError,
    ZoneBoundaryError,
    ZoneError,
    ZoneFullError,
    ZoneInvalidWriteError,
    ZoneOfflineError,
    ZoneReadOnlyError,
    ZoneRequestError,
)
from blockemu.devices.zns.zones import ZoneCondition
from blockemu.store import MemoryStore
from tests.conftest import api as route_call

MIB = 1024 * 1024
BLOCK = 4096
# 8 zones of 2 MiB, 1 MiB writable; zones 0 and 1 conventional.
SMALL_ZNS: dict[str, Any] = {
    "device": {"type": "zns", "name": "zns_test", "capacity_mib": 16},
    "zns": {"zone_size_mib": 2, "zone_capacity_mib": 1, "conventional_zones": 2, "max_open_zones": 2,
            "max_active_zones": 3, "zone_append_max_kib": 64, "copy_max_ranges": 4, "copy_max_kib": 256,
            "parallel_units": 4, "stripe_kib": 64},
}
Z = 2 * MIB  # zone size
CAP = MIB  # zone capacity


def make_device(**zns: Any) -> ZnsDevice:
    raw = {"device": dict(SMALL_ZNS["device"]), "zns": {**SMALL_ZNS["zns"], **zns}}
    config = config_from_mapping(raw, "<test>")
    return ZnsDevice(config, MemoryStore(config.capacity_bytes))


def data(length: int, seed: int = 1) -> bytes:
    return hashlib.shake_128(bytes([seed])).digest(length)


def write(dev: ZnsDevice, offset: int, payload: bytes, now: int = 0) -> int:
    return dev.write(offset, memoryview(payload), False, now)


def read(dev: ZnsDevice, offset: int, length: int, now: int = 0) -> bytes:
    buf = bytearray(length)
    dev.read(offset, memoryview(buf), now)
    return bytes(buf)


def state(dev: ZnsDevice) -> tuple[Any, ...]:
    """Everything a refused command must leave alone."""
    whole = bytearray(dev.size_bytes)
    dev.store.read_into(0, memoryview(whole))
    counters = (dev.host_read_bytes, dev.host_write_bytes, dev.zone_resets, dev.zone_finishes, dev.zone_opens,
                dev.zone_closes, dev.implicit_closes, dev.appends, dev.copy_commands, dev.copied_bytes)
    return (json.dumps(dev.report_zones()), list(dev._implicit), sorted(dev._explicit), sorted(dev._closed),
            hashlib.sha256(whole).hexdigest(), counters, list(dev.units.busy_until), list(dev.link.busy_until))


def seq(index: int) -> int:
    return index * Z


# Each case: (setup, refused command, expected error).
Setup = Callable[[ZnsDevice], None]
Command = Callable[[ZnsDevice], object]


def _fill(index: int) -> Setup:
    return lambda d: (write(d, seq(index), data(CAP)), None)[1]


def _open_two(d: ZnsDevice) -> None:
    d.open_zone(2, 0)
    d.open_zone(3, 0)


def _three_active(d: ZnsDevice) -> None:
    for i in (2, 3, 4):
        write(d, seq(i), data(BLOCK))
        d.close_zone(i, 0)


def _read_only(index: int) -> Setup:
    return lambda d: d.inject_fault(index, ZoneCondition.READ_ONLY)


def _offline(index: int) -> Setup:
    return lambda d: d.inject_fault(index, ZoneCondition.OFFLINE)


def _full_5_and_two_open(d: ZnsDevice) -> None:
    write(d, seq(5), data(CAP))
    _open_two(d)


def _nothing(d: ZnsDevice) -> None:
    return None


VIOLATIONS: list[tuple[str, Setup, Command, type[DeviceError]]] = [
    ("write not at the write pointer", lambda d: (write(d, seq(2), data(BLOCK)), None)[1],
     lambda d: write(d, seq(2) + 2 * BLOCK, data(BLOCK)), ZoneInvalidWriteError),
    ("write into an empty zone above its start", _nothing,
     lambda d: write(d, seq(3) + BLOCK, data(BLOCK)), ZoneInvalidWriteError),
    ("write across a zone boundary", _nothing,
     lambda d: write(d, seq(3) - BLOCK, data(2 * BLOCK)), ZoneBoundaryError),
    ("write past the zone capacity", lambda d: (write(d, seq(2), data(CAP - BLOCK)), None)[1],
     lambda d: write(d, seq(2) + CAP - BLOCK, data(2 * BLOCK)), ZoneBoundaryError),
    ("write to a full zone", _fill(2), lambda d: write(d, seq(2) + CAP, data(BLOCK)), ZoneFullError),
    ("write to a finished zone", lambda d: (d.finish_zone(2, 0), None)[1],
     lambda d: write(d, seq(2), data(BLOCK)), ZoneFullError),
    ("write to a read-only zone", _read_only(2), lambda d: write(d, seq(2), data(BLOCK)), ZoneReadOnlyError),
    ("write to an offline zone", _offline(2), lambda d: write(d, seq(2), data(BLOCK)), ZoneOfflineError),
    ("read of an offline zone", _offline(2), lambda d: read(d, seq(2), BLOCK), ZoneOfflineError),
    ("write over the open limit (all explicitly open)", _open_two,
     lambda d: write(d, seq(4), data(BLOCK)), TooManyOpenZonesError),
    ("explicit open over the open limit", _open_two, lambda d: d.open_zone(4, 0), TooManyOpenZonesError),
    ("write over the active limit", _three_active, lambda d: write(d, seq(5), data(BLOCK)),
     TooManyActiveZonesError),
    ("open over the active limit", _three_active, lambda d: d.open_zone(5, 0), TooManyActiveZonesError),
    ("finish of an empty zone over the active limit", _three_active, lambda d: d.finish_zone(5, 0),
     TooManyActiveZonesError),
    ("unaligned write", _nothing, lambda d: write(d, seq(2), data(512)), ZoneRequestError),
    ("conventional write running into a sequential zone", _nothing,
     lambda d: write(d, seq(2) - BLOCK, data(2 * BLOCK)), ZoneBoundaryError),
    ("write outside the device", _nothing, lambda d: write(d, 16 * MIB, data(BLOCK)), DeviceError),
    ("zone append over zone_append_max", _nothing, lambda d: d.append(2, data(128 * 1024), 0), ZoneRequestError),
    ("zone append to a full zone", _fill(2), lambda d: d.append(2, data(BLOCK), 0), ZoneFullError),
    ("zone append past capacity", lambda d: (write(d, seq(2), data(CAP - BLOCK)), None)[1],
     lambda d: d.append(2, data(2 * BLOCK), 0), ZoneBoundaryError),
    ("zone append to a conventional zone", _nothing, lambda d: d.append(0, data(BLOCK), 0), ZoneRequestError),
    ("zone append of a partial block", _nothing, lambda d: d.append(2, data(100), 0), ZoneRequestError),
    ("close of an empty zone", _nothing, lambda d: d.close_zone(2, 0), InvalidZoneStateTransitionError),
    ("close of a full zone", _fill(2), lambda d: d.close_zone(2, 0), InvalidZoneStateTransitionError),
    ("open of a full zone", _fill(2), lambda d: d.open_zone(2, 0), InvalidZoneStateTransitionError),
    ("open of a read-only zone", _read_only(2), lambda d: d.open_zone(2, 0), ZoneReadOnlyError),
    ("reset of a read-only zone", _read_only(2), lambda d: d.reset_zone(2, 0), ZoneReadOnlyError),
    ("finish of an offline zone", _offline(2), lambda d: d.finish_zone(2, 0), ZoneOfflineError),
    ("offline of a zone that is not read only", _fill(2), lambda d: d.offline_zone(2, 0),
     InvalidZoneStateTransitionError),
    ("management of a conventional zone", _nothing, lambda d: d.reset_zone(1, 0), ZoneRequestError),
    ("management of a zone that does not exist", _nothing, lambda d: d.open_zone(8, 0), ZoneRequestError),
    ("copy into a full zone", _fill(2), lambda d: d.copy([CopySource(seq(2), BLOCK)], 2, 0), ZoneFullError),
    ("copy past the destination's capacity", lambda d: (write(d, seq(2), data(CAP)), write(d, seq(3),
     data(CAP - BLOCK)), None)[2], lambda d: d.copy([CopySource(seq(2), 2 * BLOCK)], 3, 0), ZoneBoundaryError),
    ("copy with too many ranges", _fill(2),
     lambda d: d.copy([CopySource(seq(2) + i * BLOCK, BLOCK) for i in range(5)], 3, 0), ZoneRequestError),
    ("copy of more than copy_max", _fill(2), lambda d: d.copy([CopySource(seq(2), 512 * 1024)], 3, 0),
     ZoneRequestError),
    ("copy from an offline zone", _offline(2), lambda d: d.copy([CopySource(seq(2), BLOCK)], 3, 0),
     ZoneOfflineError),
    ("copy over the open limit", _full_5_and_two_open,
     lambda d: d.copy([CopySource(seq(5), BLOCK)], 4, 0), TooManyOpenZonesError),
    ("copy with an unaligned source", _fill(2), lambda d: d.copy([CopySource(seq(2) + 512, BLOCK)], 3, 0),
     ZoneRequestError),
    ("trim", _nothing, lambda d: d.trim(0, BLOCK, 0), DeviceError),
]


@pytest.mark.parametrize(("setup", "command", "error"), [v[1:] for v in VIOLATIONS], ids=[v[0] for v in VIOLATIONS])
def test_zone_rule_violation_raises_its_error_and_changes_nothing(
    setup: Setup, command: Command, error: type[DeviceError]
) -> None:
    dev = make_device()
    setup(dev)
    before = state(dev)
    refusals_before = sum(dev.refusals.values())
    with pytest.raises(error) as info:
        command(dev)
    assert type(info.value) is error or error is DeviceError
    assert "\n" not in str(info.value) and str(info.value)
    assert state(dev) == before
    assert sum(dev.refusals.values()) > refusals_before


def test_zone_errors_carry_nvme_status_codes_and_eio() -> None:
    assert ZoneInvalidWriteError("x").status_code == 0xBC
    assert TooManyOpenZonesError("x").status_code == 0xBE
    assert ZoneInvalidWriteError("x").errno == 5  # EIO, what the host sees over NBD


def test_read_across_the_write_pointer_is_zeros_or_refused() -> None:
    dev = make_device()
    write(dev, seq(2), data(BLOCK))
    assert read(dev, seq(2), 2 * BLOCK) == data(BLOCK) + bytes(BLOCK)
    strict = make_device(read_across_wp=False)
    write(strict, seq(2), data(BLOCK))
    assert read(strict, seq(2), BLOCK) == data(BLOCK)
    before = state(strict)
    with pytest.raises(ReadBeyondWritePointerError):
        read(strict, seq(2), 2 * BLOCK)
    assert state(strict) == before


def test_writes_advance_the_write_pointer_and_fill_the_zone() -> None:
    dev = make_device()
    write(dev, seq(2), data(CAP // 2))
    zone = dev.zones[2]
    assert zone.condition is ZoneCondition.IMPLICITLY_OPEN and zone.wp == seq(2) + CAP // 2
    assert dev.open_zones == 1 and dev.active_zones == 1
    write(dev, zone.wp, data(CAP // 2, 2))
    assert zone.condition is ZoneCondition.FULL and zone.wp == seq(2) + CAP
    assert dev.open_zones == 0 and dev.active_zones == 0
    assert read(dev, seq(2), CAP) == data(CAP // 2) + data(CAP // 2, 2)
    # Between the capacity and the zone size there is nothing to read.
    assert read(dev, seq(2) + CAP, BLOCK) == bytes(BLOCK)


def test_open_limit_closes_the_least_recently_written_implicitly_open_zone() -> None:
    dev = make_device()
    write(dev, seq(2), data(BLOCK))
    write(dev, seq(3), data(BLOCK))
    write(dev, seq(2) + BLOCK, data(BLOCK))  # zone 3 is now the least recently written
    write(dev, seq(4), data(BLOCK))
    assert dev.zones[3].condition is ZoneCondition.CLOSED
    assert dev.zones[2].condition is ZoneCondition.IMPLICITLY_OPEN
    assert dev.zones[4].condition is ZoneCondition.IMPLICITLY_OPEN
    assert dev.implicit_closes == 1
    # A closed zone reopens implicitly on its next write, closing zone 2 now.
    write(dev, seq(3) + BLOCK, data(BLOCK))
    assert dev.zones[2].condition is ZoneCondition.CLOSED
    assert dev.open_zones == 2 and dev.active_zones == 3


def test_explicitly_open_zones_are_never_closed_implicitly() -> None:
    dev = make_device()
    dev.open_zone(2, 0)
    write(dev, seq(3), data(BLOCK))
    write(dev, seq(4), data(BLOCK))  # closes zone 3 (implicit), not zone 2 (explicit)
    assert dev.zones[2].condition is ZoneCondition.EXPLICITLY_OPEN
    assert dev.zones[3].condition is ZoneCondition.CLOSED
    write(dev, seq(2), data(BLOCK))
    assert dev.zones[2].condition is ZoneCondition.EXPLICITLY_OPEN


def test_management_transitions() -> None:
    dev = make_device()
    dev.open_zone(2, 0)
    assert dev.zones[2].condition is ZoneCondition.EXPLICITLY_OPEN
    dev.close_zone(2, 0)  # never written: back to empty, as null_blk does
    assert dev.zones[2].condition is ZoneCondition.EMPTY and dev.active_zones == 0
    write(dev, seq(2), data(BLOCK))
    dev.open_zone(2, 0)  # ZSIO → ZSEO
    assert dev.zones[2].condition is ZoneCondition.EXPLICITLY_OPEN and dev.open_zones == 1
    dev.close_zone(2, 0)
    assert dev.zones[2].condition is ZoneCondition.CLOSED and dev.active_zones == 1 and dev.open_zones == 0
    dev.close_zone(2, 0)  # closing a closed zone is not an error
    dev.finish_zone(2, 0)
    zone = dev.zones[2]
    assert zone.condition is ZoneCondition.FULL and zone.wp == seq(2) + CAP and dev.active_zones == 0
    assert read(dev, seq(2), 2 * BLOCK) == data(BLOCK) + bytes(BLOCK)
    dev.reset_zone(2, 0)
    assert zone.condition is ZoneCondition.EMPTY and zone.wp == seq(2)
    assert read(dev, seq(2), BLOCK) == bytes(BLOCK)
    dev.finish_zone(3, 0)  # ZSE → ZSF
    assert dev.zones[3].condition is ZoneCondition.FULL
    assert dev.zone_resets == 1 and dev.zone_finishes == 2


def test_reset_all_resets_open_closed_and_full_zones_only() -> None:
    dev = make_device()
    write(dev, seq(2), data(BLOCK))
    write(dev, seq(3), data(CAP))
    dev.inject_fault(4, ZoneCondition.READ_ONLY)
    write(dev, 0, data(BLOCK))  # conventional
    dev.reset_all(0)
    counts = dev.condition_counts()
    assert counts["empty"] == 5 and counts["read_only"] == 1 and counts["not_write_pointer"] == 2
    assert dev.zone_resets == 2 and dev.active_zones == 0
    assert read(dev, 0, BLOCK) == data(BLOCK)  # conventional data is not touched


def test_read_only_zone_reads_and_goes_offline() -> None:
    dev = make_device()
    write(dev, seq(2), data(BLOCK))
    dev.inject_fault(2, ZoneCondition.READ_ONLY)
    assert dev.active_zones == 0
    assert read(dev, seq(2), BLOCK) == data(BLOCK)
    dev.offline_zone(2, 0)
    assert dev.zones[2].condition is ZoneCondition.OFFLINE


def test_zone_append_returns_where_it_wrote() -> None:
    dev = make_device()
    first, _ = dev.append(2, data(BLOCK, 1), 0)
    second, _ = dev.append(2, data(2 * BLOCK, 2), 0)
    assert (first, second) == (seq(2), seq(2) + BLOCK)
    assert read(dev, seq(2), 3 * BLOCK) == data(BLOCK, 1) + data(2 * BLOCK, 2)
    assert dev.appends == 2 and dev.append_bytes == 3 * BLOCK


def test_simple_copy_moves_data_inside_the_device() -> None:
    dev = make_device()
    write(dev, seq(2), data(CAP))
    link_busy = dev.link.busy_ns[0]
    host_bytes = (dev.host_read_bytes, dev.host_write_bytes)
    sources = [CopySource(seq(2) + 8 * BLOCK, 2 * BLOCK), CopySource(seq(2), BLOCK)]
    offset, done = dev.copy(sources, 3, 10**9)
    assert offset == seq(3) and done > 10**9
    assert dev.link.busy_ns[0] == link_busy  # nothing crossed the host link
    assert (dev.host_read_bytes, dev.host_write_bytes) == host_bytes
    assert dev.zones[3].wp == seq(3) + 3 * BLOCK
    assert dev.zones[3].condition is ZoneCondition.IMPLICITLY_OPEN
    assert dev.copied_bytes == 3 * BLOCK and dev.copy_commands == 1
    assert read(dev, seq(3), 3 * BLOCK) == data(CAP)[8 * BLOCK : 10 * BLOCK] + data(CAP)[:BLOCK]


def test_copy_offload_is_faster_than_a_host_read_and_write() -> None:
    host, offload = make_device(), make_device()
    for dev in (host, offload):
        write(dev, seq(2), data(CAP))
    start = 10**12
    buf = bytearray(256 * 1024)
    read_done = host.read(seq(2), memoryview(buf), start)
    host_done = host.write(seq(3), memoryview(buf), False, read_done)
    _, copy_done = offload.copy([CopySource(seq(2), 256 * 1024)], 3, start)
    assert copy_done - start < host_done - start
    assert read(host, seq(3), 256 * 1024) == read(offload, seq(3), 256 * 1024)


def test_concurrent_requests_queue_on_the_units() -> None:
    dev = make_device()
    write(dev, seq(2), data(CAP))
    alone_start = 10**12
    alone = dev.read(seq(2), memoryview(bytearray(256 * 1024)), alone_start) - alone_start
    start = 2 * 10**12
    first = dev.read(seq(2), memoryview(bytearray(256 * 1024)), start) - start
    second = dev.read(seq(2), memoryview(bytearray(256 * 1024)), start) - start
    assert first == alone and second > first


def test_config_refuses_impossible_geometry() -> None:
    base = {"device": {"type": "zns", "capacity_mib": 16}}
    with pytest.raises(ConfigError, match=r"must be a multiple of \[zns\] zone_size_mib"):
        config_from_mapping({**base, "zns": {"zone_size_mib": 3}}, "<t>")
    with pytest.raises(ConfigError, match="zone_capacity_mib = 4: must be <= zone_size_mib"):
        config_from_mapping({**base, "zns": {"zone_size_mib": 2, "zone_capacity_mib": 4}}, "<t>")
    with pytest.raises(ConfigError, match="conventional_zones = 8"):
        config_from_mapping({**base, "zns": {"zone_size_mib": 2, "conventional_zones": 8}}, "<t>")
    with pytest.raises(ConfigError, match=r"max_active_zones = 2: must be 0 \(unlimited\) or >= max_open_zones"):
        config_from_mapping({**base, "zns": {"max_open_zones": 4, "max_active_zones": 2}}, "<t>")
    with pytest.raises(ConfigError, match="lba_bytes = 1000: must be one of 512, 4096"):
        config_from_mapping({**base, "zns": {"lba_bytes": 1000}}, "<t>")


def test_unlimited_open_and_active_zones() -> None:
    dev = make_device(max_open_zones=0, max_active_zones=0)
    for i in range(2, 8):
        write(dev, seq(i), data(BLOCK))
    assert dev.open_zones == 6 and dev.implicit_closes == 0


# ------------------------------------------------------------- control API
def api(dev: ZnsDevice, method: str, path: str, body: bytes = b"") -> Any:
    return route_call(dev, method, [p for p in path.split("/") if p], body)


def test_api_report_management_append_and_copy() -> None:
    dev = make_device()
    report = api(dev, "GET", "zones")
    assert len(report) == 8
    assert report[0] == {"index": 0, "start": 0, "length": Z, "capacity": Z, "wp": None,
                         "type": "conventional", "condition": "not_write_pointer"}
    assert report[2] == {"index": 2, "start": seq(2), "length": Z, "capacity": CAP, "wp": seq(2),
                         "type": "sequential_write_required", "condition": "empty"}
    assert api(dev, "POST", "zones/2/open")["condition"] == "explicitly_open"
    appended = api(dev, "POST", "zones/2/append", data(2 * BLOCK))
    assert appended["offset"] == seq(2) and appended["zone"]["wp"] == seq(2) + 2 * BLOCK
    copied = api(dev, "POST", "copy", json.dumps(
        {"sources": [{"offset": seq(2), "length": 2 * BLOCK}], "dest_zone": 3}).encode())
    assert copied == {"offset": seq(3), "length": 2 * BLOCK, "dest_zone": 3}
    assert read(dev, seq(3), 2 * BLOCK) == data(2 * BLOCK)
    assert api(dev, "POST", "zones/2/finish")["condition"] == "full"
    assert api(dev, "POST", "zones/3/close")["condition"] == "closed"
    assert api(dev, "POST", "zones/2/reset")["condition"] == "empty"
    assert api(dev, "POST", "zones/reset-all")["conditions"]["empty"] == 6
    assert api(dev, "POST", "zones/4/fault", b"read_only")["condition"] == "read_only"
    assert api(dev, "POST", "zones/4/offline")["condition"] == "offline"
    assert api(dev, "GET", "zones/4")["condition"] == "offline"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "zones/99", b"", 404),
        ("GET", "zones/-1", b"", 404),
        ("POST", "zones/2/explode", b"", 404),
        ("GET", "zones/2/open", b"", 405),
        ("DELETE", "zones", b"", 405),
        ("POST", "zones/2/close", b"", 409),
        ("POST", "zones/0/open", b"", 400),
        ("POST", "zones/2/append", b"", 400),
        ("POST", "zones/2/append", b"x" * 100, 400),
        ("POST", "zones/2/fault", b"broken", 400),
        ("POST", "copy", b"{not json", 400),
        ("POST", "copy", b'{"sources": [], "dest_zone": 3}', 400),
        ("POST", "copy", b'{"sources": [{"offset": 0}], "dest_zone": 3}', 400),
        ("POST", "copy", b'{"sources": [{"offset": 0, "length": 4096}], "dest_zone": true}', 400),
        ("POST", "copy", b'{"sources": [{"offset": 0, "length": 4096}], "dest_zone": 99}', 400),
        ("POST", "copy", b'{"sources": [{"offset": 0, "length": -1}], "dest_zone": 3}', 400),
        ("POST", "copy", b'{"sources": [{"offset": 16777216, "length": 4096}], "dest_zone": 3}', 400),
        ("POST", "copy", b'{"sources": [{"offset": 0, "length": 4096}], "dest_zone": 0}', 400),
        ("GET", "copy", b"", 405),
        ("GET", "nowhere", b"", 404),
    ],
)
def test_bad_api_requests_get_4xx_and_change_nothing(method: str, path: str, body: bytes, status: int) -> None:
    dev = make_device()
    write(dev, 0, data(BLOCK))
    before = state(dev)
    with pytest.raises(ApiError) as info:
        api(dev, method, path, body)
    assert info.value.status == status
    assert str(info.value) and "\n" not in str(info.value)
    assert state(dev) == before


def test_metrics_name_every_counter() -> None:
    dev = make_device()
    write(dev, seq(2), data(CAP))
    dev.reset_zone(2, 0)
    dev.append(3, data(BLOCK), 0)
    dev.open_zone(4, 0)
    dev.open_zone(5, 0)
    with pytest.raises(ZoneError):  # zone 3 was closed implicitly; reopening it needs an open resource
        write(dev, seq(3) + BLOCK, data(BLOCK))
    families = {f.name: f for f in dev.metrics()}
    assert all(name.startswith("blockemu_zns_") for name in families)
    zones = dict((labels["condition"], value) for labels, value in families["blockemu_zns_zones"].samples)
    assert zones["explicitly_open"] == 2 and zones["implicitly_open"] == 0 and zones["closed"] == 1
    assert families["blockemu_zns_zone_resets"].samples == [({}, 1)]
    assert families["blockemu_zns_appends"].samples == [({}, 1)]
    limits = dict((labels["limit"], value) for labels, value in families["blockemu_zns_limit_violations"].samples)
    assert limits == {"open": 1, "active": 0}
    host = dict((labels["direction"], value) for labels, value in families["blockemu_zns_host_bytes"].samples)
    assert host == {"read": 0, "write": CAP + BLOCK}


def test_control_commands_happen_at_the_runtime_clock() -> None:
    from blockemu.clock import VirtualClock
    from blockemu.runtime import DeviceRuntime
    from blockemu.stack import build

    dev = make_device()
    clock = VirtualClock(start_ns=5 * 10**9)
    runtime = DeviceRuntime(dev.config, build(dev.config, layers=("power", "faults"), model=dev), clock=clock)
    runtime.write(seq(2), memoryview(data(BLOCK)))
    clock.advance_to(7 * 10**9)  # long after the write: the units are idle
    route_call(runtime, "POST", ["zones", "2", "reset"], b"")
    # The reset's erase starts at the clock's time, not at the last request's.
    assert max(dev.units.busy_until) == 7 * 10**9 + dev.reset_ns


def test_zone_state_snapshot_round_trips_and_is_checked() -> None:
    dev = make_device()
    write(dev, seq(2), data(BLOCK))
    write(dev, seq(3), data(CAP))
    dev.open_zone(4, 0)
    write(dev, seq(5), data(BLOCK))
    dev.close_zone(5, 0)
    dev.inject_fault(6, ZoneCondition.READ_ONLY)
    state = dev.snapshot_state()
    fresh = make_device()
    fresh.restore_state(state)
    assert fresh.report_zones() == dev.report_zones()
    assert (list(fresh._implicit), fresh._explicit, fresh._closed) == (list(dev._implicit), dev._explicit,
                                                                        dev._closed)
    write(fresh, seq(2) + BLOCK, data(BLOCK))  # the write pointer carried over
    broken = dict(state, zns_wp=state["zns_wp"] + 3 * MIB)
    with pytest.raises(ValueError, match="does not fit"):
        make_device().restore_state(broken)


def test_a_trace_replays_on_the_zone_state_it_started_from(tmp_path: Any) -> None:
    from blockemu.clock import VirtualClock
    from blockemu.replay import replay
    from blockemu.runtime import DeviceRuntime
    from blockemu.stack import build
    from blockemu.trace import read_trace

    dev = make_device()
    runtime = DeviceRuntime(dev.config, build(dev.config, layers=("power", "faults"), model=dev),
                             clock=VirtualClock())
    runtime.write(seq(2), memoryview(data(8 * BLOCK)))
    runtime.start_trace(tmp_path / "zns.trace")
    for i in range(8):  # writes that are only legal at zone 2's write pointer as the trace began
        runtime.write(seq(2) + (8 + i) * BLOCK, memoryview(data(BLOCK)))
    runtime.stop_trace()
    result = replay(dev.config, read_trace(tmp_path / "zns.trace")).summary()
    assert result["ops"]["write"]["requests"] == 8
