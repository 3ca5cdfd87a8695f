"""The 2-minute soak (scripts/soak.sh): every device type at once under verified load, churn and power cuts."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_two_minute_soak_passes_with_every_device_busy(real_components: None, tmp_path: Path) -> None:
    run = subprocess.run([str(REPO / "scripts" / "soak.sh"), "--duration", "120", "--seed", "3", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=840)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "soak: PASS" in run.stdout
    assert "/120 s" in run.stdout  # progress was shown while it ran
    with (tmp_path / "soak.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    devices = {row["device"] for row in rows}
    assert devices == {"ufs", "zns_ftl", "zram", "ufs-cut", "zns"}
    for row in rows:
        assert int(row["operations"]) > 0, row
        assert int(row["errors"]) == 0 and int(row["verify_failures"]) == 0, row
