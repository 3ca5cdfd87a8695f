"""The ZNS device and the zoned log served for real: nbdkit + libnbd for data, HTTP for zones."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blockemu.control.client import ControlClientError, ServedDevice
from tests.conftest import toml_text

pytestmark = pytest.mark.integration
MIB = 1024 * 1024
Z = 2 * MIB  # zone size
CAP = MIB  # zone capacity

ZNS: dict[str, Any] = {
    "device": {"type": "zns", "name": "zns_it", "capacity_mib": 16},
    "zns": {"zone_size_mib": 2, "zone_capacity_mib": 1, "conventional_zones": 1, "max_open_zones": 2,
            "max_active_zones": 3, "zone_append_max_kib": 64},
}
ZNS_FTL: dict[str, Any] = {
    "device": {"type": "zns_ftl", "name": "log_it", "capacity_mib": 32},
    "zns": {"zone_size_mib": 1, "max_open_zones": 6, "max_active_zones": 8},
    "zns_ftl": {"gc_policy": "zone_aware", "copy_method": "simple_copy", "overprovision_percent": 25.0,
                "gc_start_free_zones": 3},
}


@pytest.fixture
def zns(real_components: None, tmp_path: Path) -> Iterator[ServedDevice]:
    path = tmp_path / "zns.toml"
    path.write_text(toml_text(ZNS))
    with ServedDevice(path) as device:
        yield device


def test_writes_obey_the_zone_rules_over_nbd(zns: ServedDevice) -> None:
    import nbd as libnbd

    nbd = zns.connect()
    control = zns.control
    assert nbd.get_size() == 16 * MIB
    assert not nbd.can_trim()
    first = os.urandom(64 * 1024)
    nbd.pwrite(first, Z)  # at zone 1's write pointer
    assert control.zone(1)["wp"] == Z + len(first)
    assert control.zone(1)["condition"] == "implicitly_open"
    before = control.zones()
    with pytest.raises(libnbd.Error) as info:
        nbd.pwrite(os.urandom(4096), Z + 1024 * 1024 // 2)  # not at the write pointer
    assert "Input/output error" in str(info.value)  # EIO, what a zoned device answers
    with pytest.raises(libnbd.Error):
        nbd.pwrite(os.urandom(8192), 2 * Z - 4096)  # across the zone boundary
    assert control.zones() == before
    assert nbd.pread(len(first), Z) == first
    assert nbd.pread(4096, Z + len(first)) == bytes(4096)  # above the write pointer: zeros
    nbd.pwrite(b"c" * 4096, 4096)  # conventional zone: anywhere
    assert nbd.pread(4096, 4096) == b"c" * 4096
    nbd.shutdown()
    assert control.metric("blockemu_request_errors_total", op="write") == 2
    assert control.metric("blockemu_zns_host_bytes_total", direction="write") == len(first) + 4096
    assert control.metric("blockemu_zns_zones", condition="implicitly_open") == 1
    assert control.metric("blockemu_zns_refusals_total", error="ZoneInvalidWriteError") == 1
    assert control.metric("blockemu_zns_refusals_total", error="ZoneBoundaryError") == 1


def test_active_zone_limit_reaches_the_nbd_client_as_eio(zns: ServedDevice) -> None:
    import nbd as libnbd

    nbd = zns.connect()
    for zone in (1, 2, 3):  # max_active_zones = 3
        nbd.pwrite(b"a" * 4096, zone * Z)
    with pytest.raises(libnbd.Error) as info:
        nbd.pwrite(b"b" * 4096, 4 * Z)
    # The model's EOVERFLOW (BLK_STS_ZONE_ACTIVE_RESOURCE) has no NBD code for a
    # write: nbdkit 1.32 would send it as EINVAL, so the plugin sends EIO.
    assert info.value.errno == "EIO"
    nbd.shutdown()
    assert zns.control.metric("blockemu_zns_refusals_total", error="TooManyActiveZonesError") == 1
    assert zns.control.zone(4)["condition"] == "empty"


def test_zone_management_append_and_copy_through_the_client(zns: ServedDevice) -> None:
    nbd = zns.connect()
    control = zns.control
    payload = os.urandom(32 * 1024)
    assert control.zone_append(1, payload) == Z
    assert control.zone_append(1, payload) == Z + len(payload)
    assert control.copy([(Z, 4096), (Z + 8192, 4096)], 2) == 2 * Z
    assert nbd.pread(8192, 2 * Z) == payload[:4096] + payload[8192:12288]
    assert control.zone_action(3, "open")["condition"] == "explicitly_open"
    # Zones 1 and 2 are implicitly open, 3 explicitly: opening 4 needs a fourth active zone.
    with pytest.raises(ControlClientError, match=r"409 .*max_active_zones is 3"):
        control.zone_action(4, "open")
    assert control.metric("blockemu_zns_limit_violations_total", limit="active") == 1
    assert control.zone_action(1, "finish")["condition"] == "full"
    assert control.zone_action(3, "close")["condition"] == "empty"  # opened, never written
    assert control.zone_action(1, "reset")["wp"] == Z
    assert nbd.pread(4096, Z) == bytes(4096)
    assert control.reset_all_zones()["conditions"]["empty"] == 7
    assert control.metric("blockemu_zns_copy_commands_total") == 1
    assert control.metric("blockemu_zns_copied_bytes_total") == 8192
    assert control.metric("blockemu_zns_appends_total") == 2
    assert control.metric("blockemu_zns_zone_resets_total") == 2  # zone 1, then zone 2 by reset-all
    assert control.metric("blockemu_zns_zone_finishes_total") == 1
    assert control.device()["zns"]["conditions"]["empty"] == 7
    nbd.shutdown()


BAD_REQUESTS = [
    ("POST", "zones/0/open", b"", 400),  # conventional
    ("POST", "zones/8/open", b"", 404),
    ("POST", "zones/1/close", b"", 409),  # empty
    ("POST", "zones/1/dance", b"", 404),
    ("PUT", "zones/1/open", b"", 405),
    ("POST", "zones/1/append", b"x" * 70000, 400),  # over zone_append_max
    ("POST", "copy", b'{"sources": [{"offset": 0, "length": 4096}]}', 400),
    ("POST", "copy", b'{"sources": [{"offset": 0, "length": 4096}], "dest_zone": 0}', 400),
]


def test_bad_zone_requests_get_4xx_and_change_nothing(zns: ServedDevice) -> None:
    # One server for all cases: each must leave the zones exactly as they were.
    zns.control.zone_append(2, b"z" * 4096)
    before = zns.control.zones()
    for method, path, body, status in BAD_REQUESTS:
        request = urllib.request.Request(f"{zns.control.url}/api/v1/{path}", data=body, method=method)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == status, (method, path)
        message = json.loads(info.value.read())["error"]
        assert message and "\n" not in message
        assert zns.control.zones() == before, (method, path)


def test_ctl_zone_commands(zns: ServedDevice, tmp_path: Path) -> None:
    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "blockemu", "ctl", "--url", zns.control.url, "zone", *args],
                              capture_output=True, text=True, timeout=60)

    data = tmp_path / "block"
    data.write_bytes(os.urandom(8192))
    appended = ctl("append", "2", str(data))
    assert appended.returncode == 0, appended.stderr
    assert json.loads(appended.stdout)["offset"] == 2 * Z
    assert ctl("open", "3").returncode == 0
    copied = ctl("copy", "--dest-zone", "3", "--source", f"{2 * Z}:8192")
    assert json.loads(copied.stdout)["offset"] == 3 * Z
    assert ctl("finish", "2").returncode == 0
    report = ctl("report")
    lines = report.stdout.splitlines()
    assert len(lines) == 8
    assert "conventional, not_write_pointer" in lines[0]
    assert lines[2].endswith("sequential_write_required, full")
    assert lines[3].endswith("explicitly_open") and "wptr 0x2000" in lines[3]
    assert len(json.loads(ctl("report", "--json").stdout)) == 8
    bad = ctl("close", "5")
    assert bad.returncode == 1 and "409" in bad.stderr and bad.stderr.count("\n") == 1
    assert ctl("reset-all").returncode == 0
    assert all(z["condition"] in ("empty", "not_write_pointer") for z in zns.control.zones())


def test_zoned_log_served_as_a_block_device(real_components: None, tmp_path: Path) -> None:
    path = tmp_path / "zns-ftl.toml"
    path.write_text(toml_text(ZNS_FTL))
    with ServedDevice(path) as served:
        nbd = served.connect()
        size = nbd.get_size()
        assert size == 32 * 256 * 3 // 4 * 4096
        assert nbd.can_trim() and nbd.can_zero()
        # Fill, then overwrite random blocks: GC has to relocate valid data.
        image = bytearray(os.urandom(size))
        chunk = 256 * 1024
        for offset in range(0, size, chunk):
            nbd.pwrite(bytes(image[offset : offset + chunk]), offset)
        rng = random.Random(7)
        for _ in range(3000):
            offset = rng.randrange(size // 4096) * 4096
            image[offset : offset + 4096] = os.urandom(4096)
            nbd.pwrite(bytes(image[offset : offset + 4096]), offset)
        for offset in range(0, size, chunk):
            assert nbd.pread(chunk, offset) == image[offset : offset + chunk], offset
        nbd.shutdown()
        control = served.control
        gc = control.get("gc")
        assert gc["zones_collected"] > 0
        assert gc["write_amplification"] >= 1.0
        assert control.metric("blockemu_zns_copy_commands_total") > 0  # simple_copy moved the data
        assert control.metric("blockemu_zns_ftl_write_amplification") >= 1.0
        with pytest.raises(ControlClientError, match="409"):
            control.zone_action(0, "reset")
