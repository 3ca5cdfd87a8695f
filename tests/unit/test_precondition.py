"""Preconditioning: exactly the sectors asked for, laid out as [aging] says, before timing starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from blockemu.config import ConfigError, config_from_mapping
from blockemu.frontends import ServeError
from blockemu.frontends.serve import bring_up
from blockemu.precondition import PreconditionError, precondition, read_before_write_sectors
from blockemu.replay import build_replay_device, replay
from blockemu.trace import OP_CODES, TRACE_DTYPE, Trace
from blockemu.traceio import read_any
from tests.conftest import SMALL_UFS, small_ufs_config, toml_text

KIB = 1024
R, W, T, F = (OP_CODES[name] for name in ("read", "write", "trim", "flush"))


def records(*rows: tuple[int, int, int]) -> np.ndarray:
    out = np.zeros(len(rows), dtype=TRACE_DTYPE)
    out["op"] = [r[0] for r in rows]
    out["offset"] = [r[1] for r in rows]
    out["length"] = [r[2] for r in rows]
    out["t_ns"] = np.arange(len(rows)) * 100_000
    return out


def test_trace_mode_writes_exactly_what_is_read_before_written() -> None:
    trace = records((R, 0, 16 * KIB),           # sectors 0-3: read first
                    (W, 16 * KIB, 16 * KIB),    # 4-7 written first ...
                    (R, 16 * KIB, 16 * KIB),    # ... so this read finds data without help
                    (T, 40 * KIB, 4 * KIB),     # 10: trimmed first: nothing to find
                    (R, 40 * KIB, 4 * KIB),
                    (F, 0, 0),
                    (R, 400 * KIB + 100, 10),   # a sub-sector read: sector 100
                    (R, 0, 4 * KIB))            # 0 again: counted once
    config = small_ufs_config()
    device = build_replay_device(config)
    mask = read_before_write_sectors(trace, device.ftl.logical_sectors)  # type: ignore[attr-defined]
    assert np.flatnonzero(mask).tolist() == [0, 1, 2, 3, 100]
    report = precondition(device, config, "trace", trace)
    assert report.bytes_written == 5 * 4096
    l2p = device.ftl.l2p  # type: ignore[attr-defined]
    assert np.flatnonzero(l2p >= 0).tolist() == [0, 1, 2, 3, 100]
    assert report.fragmentation_percent == 0.0


def test_full_mode_fragmented_as_aging_says() -> None:
    config = small_ufs_config(aging={"fragmentation_percent": 50.0})
    device = build_replay_device(config)  # [aging] at start-up already wrote its span
    ftl = device.ftl  # type: ignore[attr-defined]
    assert ftl.mapped_sectors == ftl.logical_sectors
    report = precondition(device, config, "full")
    assert report.bytes_written == 0 and report.fragmentation_percent and report.fragmentation_percent > 30
    sequential = small_ufs_config(aging={"fragmentation_percent": 0.0})
    device = build_replay_device(sequential)
    report = precondition(device, sequential, "full")
    assert report.bytes_written == sequential.capacity_bytes  # every logical sector
    assert device.ftl.mapped_sectors == device.ftl.logical_sectors  # type: ignore[attr-defined]
    assert report.fragmentation_percent == 0.0


def test_preconditioned_reads_pay_nand_reads_and_engines_agree(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    lines = ["fio version 3 iolog", "0 /dev/x add"]
    for i in range(3000):
        action = "read" if rng.random() < 0.7 else "write"
        lines.append(f"{i // 10} /dev/x {action} {int(rng.integers(0, 14000)) * 4096} {int(rng.choice([4096, 16384]))}")
    path = tmp_path / "app.iolog"
    path.write_text("\n".join(lines) + "\n")
    trace = read_any(path)
    config = small_ufs_config(aging={"fragmentation_percent": 40.0})
    empty = replay(config, trace, precondition="none", engine="scalar")
    scalar = replay(config, trace, precondition="trace", engine="scalar")
    vector = replay(config, trace, precondition="trace", engine="vector")
    assert np.array_equal(scalar.completions_ns, vector.completions_ns)
    assert scalar.summary()["ops"] == vector.summary()["ops"]
    reads = scalar.ops == R
    tr_ns = scalar.device.tr_ns  # type: ignore[attr-defined]
    # Preconditioned: reads hit written data and pay at least one tR each.
    assert np.percentile(scalar.latencies_ns[reads], 50) >= tr_ns
    assert scalar.summary()["precondition"]["bytes_written"] > 0
    assert scalar.summary()["precondition"]["fragmentation_percent"] > 0
    # [aging] at start-up (precondition none) writes the whole span, so compare with a truly empty device:
    bare = replay(small_ufs_config(), trace, precondition="none", engine="scalar")
    assert np.percentile(bare.latencies_ns[bare.ops == R], 50) < tr_ns
    assert "precondition" not in empty.summary()


def test_precondition_is_refused_where_there_is_no_layout() -> None:
    zram = config_from_mapping({"device": {"type": "zram", "capacity_mib": 16}}, "<test>")
    with pytest.raises(PreconditionError, match="applies to ufs devices"):
        replay(zram, Trace(records((W, 0, 4096)), {}, {}), precondition="full")
    with pytest.raises(ConfigError, match="mode = 'half'"):
        small_ufs_config(precondition={"mode": "half"})


def test_serve_starts_full_with_precondition_section(capsys: pytest.CaptureFixture[str]) -> None:
    served = bring_up(small_ufs_config(precondition={"mode": "full"}))
    try:
        ftl = served.runtime.stack.model.ftl  # type: ignore[attr-defined]
        assert ftl.mapped_sectors == ftl.logical_sectors
    finally:
        served.close()
    assert "precondition full: wrote 64.0 MiB" in capsys.readouterr().err
    zram = config_from_mapping({"device": {"type": "zram", "capacity_mib": 16}, "precondition": {"mode": "full"}},
                               "z.toml")
    with pytest.raises(ServeError, match=r"z.toml: \[precondition\] mode = 'full': precondition full applies"):
        bring_up(zram)


def test_cli_precondition_defaults_to_trace_for_imported_traces(tmp_path: Path) -> None:
    config = tmp_path / "ufs.toml"
    config.write_text(toml_text(SMALL_UFS))
    iolog = tmp_path / "r.iolog"
    iolog.write_text("fio version 2 iolog\n/dev/x read 0 65536\n/dev/x read 1048576 4096\n")
    result = subprocess.run([sys.executable, "-m", "blockemu", "replay", str(config), str(iolog), "--json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["precondition"]["mode"] == "trace"
    assert summary["precondition"]["bytes_written"] == 65536 + 4096
