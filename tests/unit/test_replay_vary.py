"""``blockemu replay --vary``: one trace, several configurations, one table, CSV and CDF plot."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import SMALL_UFS, toml_text


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "blockemu", "replay", *args], capture_output=True, text=True,
                          timeout=120)


def test_vary_prints_one_table_and_writes_csv_and_png(tmp_path: Path) -> None:
    config = tmp_path / "ufs.toml"
    config.write_text(toml_text(SMALL_UFS))
    rng = np.random.default_rng(2)
    lines = [f"{i // 20} /dev/x {'read' if rng.random() < 0.7 else 'write'} {int(rng.integers(0, 8000)) * 4096} 4096"
             for i in range(2000)]
    trace = tmp_path / "t.iolog"
    trace.write_text("fio version 3 iolog\n" + "\n".join(lines) + "\n")
    out = tmp_path / "out"
    result = run(str(config), str(trace), "--vary", "ufs.read_setup_us=60,40",
                 "--vary", "aging.fragmentation_percent=0,60", "--out", str(out))
    assert result.returncode == 0, result.stderr
    labels = [f"ufs.read_setup_us={t} aging.fragmentation_percent={f}" for t in (60, 40) for f in (0, 60)]
    table = result.stdout.splitlines()
    assert table[0].split()[:3] == ["config", "op", "requests"]
    with (out / "replay-vary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["config"], r["op"]) for r in rows] == [(label, op) for label in labels for op in ("read", "write")]
    p50 = {(r["config"], r["op"]): float(r["p50_us"]) for r in rows}
    # Preconditioned (the default for an imported trace): every read pays tR, longer at 60 µs than at 40.
    assert p50[(labels[0], "read")] > p50[(labels[2], "read")] >= 40
    assert (out / "latency-cdf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(label in result.stdout for label in labels)


def test_vary_errors_are_one_line(tmp_path: Path) -> None:
    config = tmp_path / "ufs.toml"
    config.write_text(toml_text(SMALL_UFS))
    trace = tmp_path / "t.iolog"
    trace.write_text("fio version 2 iolog\n/dev/x read 0 4096\n")
    for vary, message in (("dies=2", "expected SECTION.KEY=V1,V2"), ("ufs.dies=0,2", "[ufs] dies = 0"),
                          ("zram.policy=single,multi", "does not use [zram]")):
        result = run(str(config), str(trace), "--vary", vary, "--out", str(tmp_path / "o"))
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
