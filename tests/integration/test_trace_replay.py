"""Record what a served device receives, then replay it through the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blockemu.config import load_config
from blockemu.control.client import ServedDevice
from blockemu.replay import replay
from blockemu.trace import OP_CODES, read_trace
from tests.conftest import toml_text

pytestmark = pytest.mark.integration
MIB = 1024 * 1024


def test_recorded_trace_replays_to_the_same_modeled_totals(
    real_components: None, small_config: Path, tmp_path: Path
) -> None:
    trace_path = tmp_path / "run.trace"
    with ServedDevice(small_config) as served:
        control = served.control
        nbd = served.connect()
        for i in range(64):  # fragment two files, before tracing starts
            nbd.pwrite(os.urandom(4096), i * 4096)
            nbd.pwrite(os.urandom(4096), 8 * MIB + i * 4096)
        assert control.post("trace/start", {"path": str(trace_path)})["tracing"] is True
        nbd.pread(256 * 1024, 0)
        nbd.pwrite(b"z" * 65536, 16 * MIB, 1)  # FUA
        nbd.flush()
        nbd.trim(65536, 16 * MIB)
        nbd.pread(4096, 8 * MIB)
        status = control.post("trace/stop")
        live = control.device()
        live_read_latency_s = control.metric("blockemu_request_modeled_latency_seconds_sum", op="read")
        nbd.shutdown()
    assert status["records"] == 5
    trace = read_trace(trace_path)
    assert trace.records["op"].tolist() == [OP_CODES[o] for o in ("read", "write", "flush", "trim", "read")]
    assert trace.records["flags"].tolist()[1] == 1
    assert "l2p" in trace.state  # the fragmented layout travels with the trace
    config = load_config(small_config)
    scalar = replay(config, trace, engine="scalar")
    vector = replay(config, trace, engine="vector")
    assert np.array_equal(scalar.completions_ns, vector.completions_ns)
    # The live device measured the same latencies the replay models.
    recorded_read_bytes = int(trace.records["length"][trace.records["op"] == OP_CODES["read"]].sum())
    assert scalar.summary()["ops"]["read"]["bytes"] == recorded_read_bytes
    reads = scalar.ops == OP_CODES["read"]
    replayed_read_latency_s = float(scalar.latencies_ns[reads].sum()) / 1e9
    assert replayed_read_latency_s == pytest.approx(live_read_latency_s, rel=1e-9)
    # Without the recorded state the same reads would find nothing mapped.
    trace.state = {}
    fresh = replay(config, trace, engine="scalar")
    assert float(fresh.latencies_ns[reads].sum()) / 1e9 < replayed_read_latency_s / 2
    assert live["fragmentation"]["mean_physical_runs_per_read"] > 1

    cli = subprocess.run([sys.executable, "-m", "blockemu", "replay", str(small_config), str(trace_path), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["ops"] == scalar.summary()["ops"]


def test_serve_trace_flag_and_fio_iolog(real_components: None, small_config: Path, tmp_path: Path) -> None:
    trace_path = tmp_path / "from-start.trace"
    with ServedDevice(small_config, extra_args=["--trace", str(trace_path)]) as served:
        nbd = served.connect()
        nbd.pwrite(b"a" * 8192, 0)
        nbd.shutdown()
    assert len(read_trace(trace_path)) == 1
    iolog = tmp_path / "job.iolog"
    iolog.write_text("fio version 2 iolog\n/dev/x add\n/dev/x open\n/dev/x write 0 4096\n/dev/x read 0 4096\n"
                     "/dev/x sync 0 0\n/dev/x trim 0 4096\n/dev/x close\n")
    result = subprocess.run([sys.executable, "-m", "blockemu", "replay", str(small_config), str(iolog), "--json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["requests"] == 4 and set(summary["ops"]) == {"read", "write", "flush", "trim"}
    bad = tmp_path / "bad.iolog"
    bad.write_text("fio version 2 iolog\n/dev/x scribble 0 4096\n")
    result = subprocess.run([sys.executable, "-m", "blockemu", "replay", str(small_config), str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unknown action 'scribble'" in result.stderr


ZNS_SMALL: dict[str, dict[str, Any]] = {
    "device": {"type": "zns", "name": "zns_replay", "capacity_mib": 16},
    "zns": {"zone_size_mib": 2, "zone_capacity_mib": 1, "conventional_zones": 1, "max_open_zones": 3,
            "max_active_zones": 4},
}


def test_zns_trace_with_a_zone_reset_replays_to_the_same_zones(real_components: None, tmp_path: Path) -> None:
    """Issue 24 item 3: write → ``ctl zone reset 5`` → write, traced on a served device, replays as it ran."""
    import nbd as libnbd

    config_path = tmp_path / "zns.toml"
    config_path.write_text(toml_text(ZNS_SMALL))
    trace_path = tmp_path / "zns.trace"
    zone5 = 5 * 2 * MIB
    with ServedDevice(config_path, extra_args=["--trace", str(trace_path)]) as served:
        nbd = served.connect()
        nbd.pwrite(b"a" * 65536, zone5)
        served.control.zone_action(5, "reset")
        nbd.pwrite(b"b" * 65536, zone5)
        with pytest.raises(libnbd.Error):
            nbd.pwrite(b"c" * 4096, zone5 + 8 * 65536)  # not at the write pointer: refused
        served.control.zone_append(6, b"d" * 8192)
        live_zones = served.control.zones()
        nbd.shutdown()
    cli = subprocess.run([sys.executable, "-m", "blockemu", "replay", str(config_path), str(trace_path), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert "Traceback" not in cli.stderr
    summary = json.loads(cli.stdout)
    assert summary["refused"] == {"recorded": 1, "in_replay": 0}
    assert summary["ops"]["write"]["requests"] == 2
    assert summary["ops"]["zone_reset"]["requests"] == 1
    result = replay(load_config(config_path), read_trace(trace_path), engine="scalar")
    assert result.device.report_zones() == live_zones  # type: ignore[attr-defined]
