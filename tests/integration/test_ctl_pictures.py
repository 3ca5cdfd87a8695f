"""``blockemu ctl fragmentation|zone report|zram show --png FILE`` draw a running device's maps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from blockemu.control.client import ServedDevice
from tests.conftest import SMALL_UFS, require, toml_text

pytestmark = pytest.mark.integration
MIB = 1024 * 1024
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def ctl(served: ServedDevice, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "blockemu", "ctl", "--url", served.control.url, *words],
                          capture_output=True, text=True, timeout=120)


def serve(tmp_path: Path, raw: dict[str, dict[str, Any]]) -> ServedDevice:
    path = tmp_path / "device.toml"
    path.write_text(toml_text(raw))
    return ServedDevice(path)


def assert_png(result: subprocess.CompletedProcess[str], path: Path) -> None:
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {path}\n"
    assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 10_000


def test_fragmentation_png(real_components: None, tmp_path: Path) -> None:
    require(_has_matplotlib(), "matplotlib (pip, pyproject's test extra)")
    with serve(tmp_path, SMALL_UFS) as served:
        nbd = served.connect()
        for i in range(64):
            for f in range(4):
                nbd.pwrite(bytes([f + 1]) * 4096, f * MIB + i * 4096)
        nbd.shutdown()
        png = tmp_path / "fragmentation.png"
        assert_png(ctl(served, "fragmentation", "--png", str(png)), png)
        refused = ctl(served, "fragmentation", "--png", str(tmp_path / "no" / "such" / "dir.png"))
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "cannot write" in refused.stderr


def test_zone_report_png(real_components: None, tmp_path: Path) -> None:
    require(_has_matplotlib(), "matplotlib (pip, pyproject's test extra)")
    raw: dict[str, dict[str, Any]] = {"device": {"type": "zns", "name": "zns_png", "capacity_mib": 128},
           "zns": {"zone_size_mib": 4, "zone_capacity_mib": 3, "conventional_zones": 2}}
    with serve(tmp_path, raw) as served:
        nbd = served.connect()
        nbd.pwrite(b"\x01" * MIB, 3 * 4 * MIB)
        nbd.shutdown()
        assert served.control.post("zones/5/finish")["condition"] == "full"
        png = tmp_path / "zones.png"
        assert_png(ctl(served, "zone", "report", "--png", str(png)), png)


def test_zram_show_png(real_components: None, tmp_path: Path) -> None:
    require(_has_matplotlib(), "matplotlib (pip, pyproject's test extra)")
    with serve(tmp_path, {"device": {"type": "zram", "name": "zram_png", "capacity_mib": 16}}) as served:
        nbd = served.connect()
        for i in range(32):
            nbd.pwrite(bytes([i]) * 2048 + b"zram" * 512, i * 4096)
        nbd.shutdown()
        png = tmp_path / "zram.png"
        assert_png(ctl(served, "zram", "show", "--png", str(png)), png)
        assert ctl(served, "zram", "show").stdout.startswith("{")  # without --png: the JSON, as before
