"""Power cuts on a served device: libnbd writes and flushes, the control API and the CLI cut."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blockemu.control.client import ServedDevice

pytestmark = pytest.mark.integration
MIB = 1024 * 1024


def test_flushed_data_survives_and_unflushed_is_dropped(served: ServedDevice) -> None:
    nbd = served.connect()
    flushed = os.urandom(MIB)
    nbd.pwrite(flushed, 0)
    nbd.pwrite(b"F" * 4096, 8 * MIB, 1)  # LIBNBD_CMD_FLAG_FUA: durable without a flush
    nbd.flush()
    nbd.pwrite(os.urandom(256 * 1024), 128 * 1024)  # overwrites part of the flushed data
    nbd.pwrite(b"u" * 65536, 4 * MIB)  # never flushed
    nbd.pwrite(b"G" * 4096, 9 * MIB, 1)
    assert served.control.metric("blockemu_write_cache_dirty_bytes") == 256 * 1024 + 65536
    result = served.control.post("powercut", {"mode": "drop", "seed": 3})
    assert result["dropped_sectors"] == (256 * 1024 + 65536) // 4096
    # The same connection keeps working: the device serves on after the cut.
    assert nbd.pread(MIB, 0) == flushed
    assert nbd.pread(65536, 4 * MIB) == bytes(65536)
    assert nbd.pread(4096, 8 * MIB) == b"F" * 4096
    assert nbd.pread(4096, 9 * MIB) == b"G" * 4096
    nbd.pwrite(b"a" * 4096, 4 * MIB)
    assert nbd.pread(4096, 4 * MIB) == b"a" * 4096
    nbd.shutdown()
    assert served.control.metric("blockemu_powercuts_total", mode="drop") == 1
    assert served.control.metric("blockemu_powercut_dropped_sectors_total") == 80


def test_ctl_powercut_torn_is_seeded(served: ServedDevice) -> None:
    def torn(seed: int) -> tuple[dict[str, object], bytes]:
        nbd = served.connect()
        nbd.pwrite(b"o" * MIB, 0)
        nbd.flush()
        nbd.pwrite(b"n" * MIB, 0)
        cli = subprocess.run([sys.executable, "-m", "blockemu", "ctl", "--url", served.control.url, "powercut",
                              "--mode", "torn", "--seed", str(seed)],
                             capture_output=True, text=True, timeout=60, check=True)
        data = bytes(nbd.pread(MIB, 0))
        nbd.shutdown()
        return json.loads(cli.stdout), data

    result, data = torn(11)
    sectors = {data[i : i + 4096] for i in range(0, MIB, 4096)}
    assert sectors == {b"o" * 4096, b"n" * 4096}
    assert data.count(b"n" * 4096) == result["kept_sectors"]
    again, same = torn(11)
    assert same == data and again["kept_sectors"] == result["kept_sectors"]


def test_ctl_powercut_refuses_bad_mode_and_reports_errors(served: ServedDevice, tmp_path: Path) -> None:
    cli = subprocess.run([sys.executable, "-m", "blockemu", "ctl", "--url", served.control.url, "powercut",
                          "--mode", "melt"], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and "invalid choice: 'melt'" in cli.stderr
    status = subprocess.run([sys.executable, "-m", "blockemu", "ctl", "--url", served.control.url, "powercut",
                             "--status"], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(status.stdout)["powercuts"] == {"drop": 0, "torn": 0}
