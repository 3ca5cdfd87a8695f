"""The HID study end to end on a small file: Linux 6.12, F2FS, HID over the control API."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel


def test_hid_study_quick(tmp_path: Path, vm_ready: None) -> None:
    out = tmp_path / "hid"
    result = subprocess.run(
        [sys.executable, "-m", "blockemu", "experiment", "hid", "--quick", "--size-mib", "24",
         "--levels", "100", "--out", str(out)],
        capture_output=True, text=True, timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = list(csv.DictReader((out / "hid.csv").open()))
    assert len(rows) == 1
    row = rows[0]
    assert row["checksums_ok"] == "True"
    assert float(row["fragmented_percent_before"]) >= 99.0
    assert float(row["fragmented_percent_after"]) <= 1.0
    assert int(row["hid_progress_ratio"]) == 100
    # Fully 4 KiB-scattered data reads at a fraction of the sequential rate.
    assert float(row["modeled_speedup"]) > 2.0
    assert float(row["read_mbps_after"]) > 4 * float(row["read_mbps_before"])
    assert (out / "hid.png").stat().st_size > 10_000
    assert "model x" in result.stdout
    # The L2P columns, the mechanism split and the SRAM sweep (replayed traces).
    assert "L2P miss% bef" in result.stdout and "mechanism at 100%" in result.stdout
    assert int(row["commands_before"]) > 0 and int(row["nand_reads_before"]) > int(row["nand_reads_after"])
    sweep = list(csv.DictReader((out / "hid-sweep.csv").open()))
    assert [int(r["l2p_cache_kib"]) for r in sweep][-1] == 0  # the unlimited cache last
    assert all(float(r["modeled_speedup"]) > 2.0 for r in sweep)
