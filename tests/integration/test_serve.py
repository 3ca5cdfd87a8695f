"""`blockemu serve` for real: nbdkit + the python plugin, driven with libnbd and HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from blockemu.control.client import ControlClientError, ServedDevice
from tests.conftest import require_tool

pytestmark = pytest.mark.integration
MIB = 1024 * 1024


def test_data_round_trips_and_metrics_move(served: ServedDevice) -> None:
    nbd = served.connect()
    assert nbd.get_size() == 64 * MIB
    assert nbd.can_trim() and nbd.can_zero() and nbd.can_flush() and nbd.can_fua()
    payload = os.urandom(MIB)
    nbd.pwrite(payload, 3 * MIB)
    nbd.flush()
    assert nbd.pread(MIB, 3 * MIB) == payload
    nbd.trim(MIB, 3 * MIB)
    nbd.zero(4096, 0)
    nbd.shutdown()
    control = served.control
    assert control.metric("blockemu_bytes_total", op="write") == MIB
    assert control.metric("blockemu_requests_total", op="flush") == 1
    assert control.metric("blockemu_requests_total", op="trim") == 1
    assert control.metric("blockemu_requests_total", op="zero") == 1
    assert control.metric("blockemu_request_modeled_latency_seconds_count", op="read") >= 1
    device = control.device()
    assert device["type"] == "ufs" and device["io"]["write"]["bytes"] == MIB


def test_concurrent_requests_queue_in_realtime_mode(real_components: None, small_config: Path) -> None:
    import nbd as libnbd

    # Slowed down 200×, each 64 KiB write lasts milliseconds: 16 of them in
    # flight must be seen by the device as a queue, and take longer than one.
    with ServedDevice(small_config, ["timing.mode=realtime", "timing.time_scale=200"]) as served:
        nbd = served.connect()
        buffers = [libnbd.Buffer(64 * 1024) for _ in range(16)]
        for i, buffer in enumerate(buffers):
            nbd.aio_pwrite(buffer, i * 64 * 1024)
        while nbd.aio_in_flight() > 0:
            nbd.poll(-1)
        nbd.shutdown()
        control = served.control
        assert control.metric("blockemu_requests_total", op="write") == 16
        assert control.metric("blockemu_queue_depth_peak") >= 4
        assert control.metric("blockemu_queue_depth") == 0


def test_out_of_range_and_unaligned_requests_get_answers(served: ServedDevice) -> None:
    import nbd as libnbd

    nbd = served.connect()
    nbd.pwrite(b"a" * 1024, 3584)  # 512-aligned, straddling a 4 KiB sector
    assert nbd.pread(2048, 3072) == bytes(512) + b"a" * 1024 + bytes(512)
    nbd.set_strict_mode(0)  # let requests below the advertised minimum through
    nbd.pwrite(b"abc", 9000)
    assert nbd.pread(5, 8999) == b"\0abc\0"
    with pytest.raises(libnbd.Error):
        nbd.pread(4096, 64 * MIB - 1024)
    with pytest.raises(libnbd.Error):
        nbd.pwrite(b"x" * 4096, 64 * MIB)
    assert nbd.pread(3, 9000) == b"abc"  # the server is still serving
    nbd.shutdown()


def test_hid_end_to_end_over_the_control_api(served: ServedDevice) -> None:
    nbd = served.connect()
    files = 8
    chunks = [os.urandom(4096) for _ in range(files * 64)]
    for i in range(64):  # 8 files of 256 KiB written interleaved
        for f in range(files):
            nbd.pwrite(chunks[i * files + f], f * MIB + i * 4096)
    control = served.control
    assert control.get("hid")["state"] == "idle"
    control.put("hid/analysis_trigger", "enable")
    assert control.wait_hid("defrag_required") == "defrag_required"
    assert int(control.get("hid/fragmented_size")) == files * 256 * 1024
    control.put("hid/defrag_trigger", "enable")
    control.wait_hid("defrag_completed")
    assert control.get("hid/progress_ratio") == "100\n"
    assert control.metric("blockemu_hid_defrag_moved_bytes_total") == files * 256 * 1024
    for i in range(64):
        for f in range(files):
            assert nbd.pread(4096, f * MIB + i * 4096) == chunks[i * files + f]
    nbd.shutdown()


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("PUT", "hid/defrag_trigger", b"maybe", 400),
        ("PUT", "hid/state", b"idle", 400),
        ("PUT", "hid/nonsense", b"1", 404),
        ("PUT", "hid/defrag_size", b"\xff\xfe", 400),
        ("POST", "age", b"{not json", 400),
        ("POST", "age", b'{"fragmentation_percent": 500}', 400),
        ("POST", "age", b'{"fragmentation_percent": true}', 400),
        ("DELETE", "hid", b"", 405),
        ("GET", "nowhere", b"", 404),
    ],
)
def test_bad_control_requests_get_4xx_and_change_nothing(
    served: ServedDevice, method: str, path: str, body: bytes, status: int
) -> None:
    before = served.control.device()
    request = urllib.request.Request(f"{served.control.url}/api/v1/{path}", data=body, method=method)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == status
    assert "error" in json.loads(info.value.read())
    after = served.control.device()
    assert after["hid"] == before["hid"]
    assert after["fragmentation"] == before["fragmentation"]


def test_ctl_cli_drives_hid(served: ServedDevice) -> None:
    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "blockemu", "ctl", "--url", served.control.url, *args],
                              capture_output=True, text=True, timeout=60)

    assert ctl("age", "--fragmentation", "50", "--all").returncode == 0
    assert ctl("hid", "set", "defrag_trigger", "enable").returncode == 0
    waited = ctl("hid", "wait", "defrag_completed", "--timeout", "60")
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.strip() == "defrag_completed"
    shown = json.loads(ctl("hid", "show").stdout)
    assert shown["progress_ratio"] == 100
    bad = ctl("hid", "set", "defrag_trigger", "sometimes")
    assert bad.returncode == 1 and "enable" in bad.stderr and bad.stderr.count("\n") == 1


def test_invalid_config_stops_serve_before_nbdkit(tmp_path: Path, real_components: None) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[ufs]\ndies = -1\n")
    result = subprocess.run([sys.executable, "-m", "blockemu", "serve", str(path), "--unix", str(tmp_path / "s")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == f"blockemu: {path}: [ufs] dies = -1: must be > 0"
    assert not (tmp_path / "s").exists()


def test_sigterm_stops_cleanly_and_removes_the_socket(real_components: None, small_config: Path) -> None:
    device = ServedDevice(small_config).start()
    assert device.socket.exists()
    assert device.stop() == 0
    assert not device.socket_left_behind
    with pytest.raises(ControlClientError):
        device.control.device()
    # nbdkit was a child of serve: nothing of this run is left.
    leftover = subprocess.run([require_tool("pgrep"), "-f", str(device.socket)], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""


def test_timing_mode_switches_at_run_time(served: ServedDevice) -> None:
    control = served.control
    assert control.get("timing")["mode"] == "virtual"
    before = control.get("timing")["modeled_now_s"]
    switched = control.put("timing", '{"mode": "realtime", "time_scale": 2}')
    assert switched["mode"] == "realtime" and switched["time_scale"] == 2
    assert switched["modeled_now_s"] >= before  # modeled time carries on
    nbd = served.connect()
    nbd.pwrite(b"r" * 4096, 0)
    assert nbd.pread(4096, 0) == b"r" * 4096
    nbd.shutdown()
    with pytest.raises(ControlClientError, match="400"):
        control.put("timing", '{"mode": "warp"}')
    assert control.get("timing")["mode"] == "realtime"
