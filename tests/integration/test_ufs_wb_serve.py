"""WriteBooster through `blockemu ctl` and the L2P cache in GET /api/v1/device and /metrics, on a served UFS."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blockemu.control.client import ServedDevice

pytestmark = pytest.mark.integration
MIB = 1024 * 1024


def test_ctl_drives_writebooster_and_the_cache_is_visible(real_components: None, small_config: Path) -> None:
    overrides = ["ufs.wb_enabled=true", "ufs.wb_buffer_mib=4", "ufs.l2p_cache_kib=64", 'ufs.l2p_mode="extent"']
    with ServedDevice(small_config, overrides) as served:
        def ctl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "blockemu", "ctl", "--url", served.control.url, "wb", *args],
                                  capture_output=True, text=True, timeout=60)

        assert ctl("set", "enable_wb_buf_flush", "0", "--quiet").returncode == 0
        nbd = served.connect()
        nbd.pwrite(bytes(2 * MIB), 0)
        nbd.flush()
        assert nbd.pread(MIB, 0) == bytes(MIB)
        assert ctl("get", "wb_avail_buf").stdout.strip() == "0x00000005"  # 2 of 4 MiB used
        assert ctl("get", "enable_wb_buf_flush").stdout.strip() == "0"
        bad = ctl("set", "wb_on", "2")
        assert bad.returncode == 1 and "0 or 1" in bad.stderr and bad.stderr.count("\n") == 1
        assert ctl("set", "enable_wb_buf_flush", "1", "--quiet").returncode == 0
        deadline = time.monotonic() + 30  # the background worker folds while the device is idle
        while ctl("get", "wb_avail_buf").stdout.strip() != "0x0000000A":
            assert time.monotonic() < deadline, "the buffer was never folded"
            time.sleep(0.1)
        assert ctl("get", "wb_flush_status").stdout.strip() == "0x00000003"
        shown = json.loads(ctl("show").stdout)
        assert shown["folded_bytes"] == 2 * MIB and shown["wb_on"] == 1
        nbd.shutdown()
        control = served.control
        device = control.device()
        assert device["l2p"]["mode"] == "extent" and device["l2p"]["misses"] >= 1
        assert device["writebooster"]["slc_written_bytes"] == 2 * MIB
        assert control.metric("blockemu_ufs_l2p_misses_total", mode="extent") >= 1
        assert control.metric("blockemu_ufs_wb_folded_bytes_total") == 2 * MIB
