"""Every device's /metrics passes Prometheus's own linter, `promtool check metrics`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from blockemu.control.client import ServedDevice
from tests.conftest import require_tool

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("promtool"), "check", "metrics"], input=text,
                          capture_output=True, text=True, timeout=60)


def test_promtool_rejects_what_it_should() -> None:
    # The check below means something only if promtool finds faults in this kind of text.
    bad = "# HELP blockemu_bad a counter without _total\n# TYPE blockemu_bad counter\nblockemu_bad 1\n"
    result = promtool_check(bad)
    assert result.returncode != 0 and "_total" in result.stdout + result.stderr


@pytest.mark.parametrize("config", ["ufs41.toml", "zns.toml", "zns-ftl.toml", "zram.toml"])
def test_metrics_pass_promtool(real_components: None, config: str) -> None:
    # [power] adds the frequency/energy families, so every layer's metrics are checked.
    with ServedDevice(REPO / "configs" / config, ["power.enabled=true"]) as device:
        nbd = device.connect()
        nbd.pwrite(b"\x5a" * 4096, 0)
        nbd.flush()
        nbd.shutdown()
        text = device.control.metrics_text()
    assert "blockemu_requests_total" in text
    result = promtool_check(text)
    assert result.returncode == 0, result.stdout + result.stderr
