"""[power] through `blockemu serve`: control API, ctl CLI and metrics, in realtime timing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from blockemu.control.client import ServedDevice
from tests.conftest import SMALL_UFS, toml_text

pytestmark = pytest.mark.integration


@pytest.fixture
def power_config(tmp_path: Path) -> Path:
    raw = {name: dict(table) for name, table in SMALL_UFS.items()}
    raw["power"] = {"enabled": True, "governor": "pmqos_qd", "polling_ms": 20, "hold_ms": 50.0}
    raw["timing"] = {"mode": "realtime", "time_scale": 1.0}
    path = tmp_path / "ufs-power.toml"
    path.write_text(toml_text(raw))
    return path


def test_power_control_api_and_metrics_when_served(real_components: None, power_config: Path) -> None:
    with ServedDevice(power_config) as served:
        control = served.control
        assert control.get("power/governor") == "pmqos_qd\n"
        assert control.get("power/available_frequencies") == "75000000 150000000 300000000\n"
        nbd = served.connect()
        nbd.pwrite(b"p" * 4096, 0)
        assert nbd.pread(4096, 0) == b"p" * 4096
        nbd.shutdown()
        snapshot = control.get("power")
        assert snapshot["queue_depth"] == 1 and snapshot["energy_joules"] > 0
        assert control.get("power/trans_stat").startswith("     From  :   To\n")

        assert control.put("power/governor", "userspace")["governor"] == "userspace"
        after = control.put("power/set_freq", "150000000")
        assert after["target_freq"] == 150_000_000
        # The 100 µs transition completes as modeled time passes; reads bring it up to date.
        deadline = time.monotonic() + 5
        while control.get("power/cur_freq") != "150000000\n" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert control.get("power/cur_freq") == "150000000\n"
        assert control.metric("blockemu_power_cur_freq_hz") == 150_000_000
        assert control.metric("blockemu_power_transitions_total", from_hz="300000000", to_hz="150000000") >= 1
        assert control.metric("blockemu_power_energy_joules_total") > 0
        assert control.metric("blockemu_power_governor_queue_depth") == 1

        for path, body, status in (("power/governor", b"turbo", 400), ("power/upthreshold", b"500", 400),
                                   ("power/cur_freq", b"1", 400), ("power/bogus", b"1", 404)):
            request = urllib.request.Request(f"{control.url}/api/v1/{path}", data=body, method="PUT")
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(request, timeout=10)
            assert info.value.code == status
            assert "error" in json.loads(info.value.read())
        assert control.get("power")["governor"] == "userspace"
        assert control.get("power")["upthreshold"] == 70

        def ctl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "blockemu", "ctl", "--url", control.url, "power", *args],
                                  capture_output=True, text=True, timeout=60)

        switched = ctl("governor", "simple_ondemand")
        assert switched.returncode == 0, switched.stderr
        assert json.loads(switched.stdout)["governor"] == "simple_ondemand"
        assert ctl("set", "upthreshold", "80").returncode == 0
        assert ctl("get", "upthreshold").stdout == "80\n"
        bad = ctl("set", "downdifferential", "90")
        assert bad.returncode == 1 and "must be in 0..upthreshold" in bad.stderr and bad.stderr.count("\n") == 1
        # The wrapped UFS device still answers its own routes.
        assert control.get("hid")["state"] == "idle"
