"""dashboards/blockemu.json is what scripts/make_dashboard.py writes, with a device variable and a row per kind.

Whether its expressions return data is checked against a real Prometheus in
tests/integration/test_dashboard_prometheus.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_dashboard_is_generated_from_its_script() -> None:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "make_dashboard.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_dashboard_has_a_device_variable_and_rows_per_kind() -> None:
    document = json.loads((REPO / "dashboards" / "blockemu.json").read_text())
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert "label_values(blockemu_requests_total, device)" in variables["device"]["definition"]
    rows = [p["title"] for p in document["panels"] if p["type"] == "row"]
    assert rows == ["All devices", "UFS", "ZNS", "zram", "Power"]
    targets = [t["expr"] for p in document["panels"] if p["type"] != "row" for t in p["targets"]]
    assert targets and all('device=~"$device"' in expr for expr in targets)
    ids = [p["id"] for p in document["panels"]]
    assert len(ids) == len(set(ids))
