"""Every PromQL expression of dashboards/blockemu.json returns data from a real Prometheus.

Debian's ``prometheus`` server scrapes three served devices (UFS with the
power layer, the zoned log on ZNS, zram) with deploy/prometheus.yml, its
targets and interval changed; then each panel's expressions go through
Prometheus' HTTP query API with the dashboard's ``$device`` set to a device
of the row's kind.  Each must parse and return at least one series, so a
renamed metric or label breaks this test.  Under CI=true a missing
``prometheus`` is a failure.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from blockemu.control.client import ServedDevice
from tests.conftest import SMALL_UFS, require_tool, toml_text

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "dashboards" / "blockemu.json"
SCRAPE_CONFIG = REPO / "deploy" / "prometheus.yml"
RATE_INTERVAL = "30s"  # what Grafana's $__rate_interval becomes at a 1 s scrape interval, and then some

DEVICES: dict[str, dict[str, dict[str, Any]]] = {
    # With a one-map-page L2P cache and a WriteBooster buffer, so that their panels have data.
    "ufs": {**SMALL_UFS, "ufs": {**SMALL_UFS["ufs"], "l2p_cache_kib": 4, "l2p_mode": "page", "wb_enabled": True,
                                  "wb_buffer_mib": 16},
            "power": {"enabled": True}},
    "zns": {"device": {"type": "zns_ftl", "name": "log_prom", "capacity_mib": 32},
            "zns": {"zone_size_mib": 1, "max_open_zones": 6, "max_active_zones": 8},
            "zns_ftl": {"overprovision_percent": 25.0, "gc_start_free_zones": 3}},
    "zram": {"device": {"type": "zram", "name": "zram_prom", "capacity_mib": 16}},
}
# A dashboard row's kind, as its description says, and the device that answers it.
ROW_DEVICES = {"any": ("ufs", "zns", "zram"), "ufs": ("ufs",), "zns": ("zns",), "zram": ("zram",),
               "power": ("ufs",)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def query(base: str, expression: str) -> dict[str, Any]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return dict(json.load(answer))
    except urllib.error.HTTPError as err:  # a PromQL syntax error is a 400 with a JSON body
        return dict(json.load(err))


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(row kind, panel title, expression) for every target of the dashboard."""
    document = json.loads(DASHBOARD.read_text())
    assert any(v["name"] == "device" for v in document["templating"]["list"])
    found: list[tuple[str, str, str]] = []
    kind = ""
    for panel in document["panels"]:
        if panel["type"] == "row":
            kind = panel["description"].removeprefix("needs a ").removesuffix(" device")
            continue
        assert kind in ROW_DEVICES, panel["title"]
        found.extend((kind, panel["title"], target["expr"]) for target in panel["targets"])
    return found


@pytest.fixture(scope="module")
def prometheus(real_components: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict]]:
    binary = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    with ExitStack() as stack:
        names = {}
        targets = []
        for kind, raw in DEVICES.items():
            config = tmp / f"{kind}.toml"
            config.write_text(toml_text(raw))
            served = stack.enter_context(ServedDevice(config))
            nbd = served.connect()
            for i in range(64):  # data, so that every family (per-algorithm ones too) has samples
                nbd.pwrite((bytes([i]) * 1024 + b"blockemu" * 384), i * 4096)
            nbd.flush()
            nbd.shutdown()
            names[kind] = raw["device"]["name"]
            targets.append(served.http)
        text = SCRAPE_CONFIG.read_text()
        for old, new in (('targets: ["127.0.0.1:9250"]', f"targets: {json.dumps(targets)}"),
                         ("scrape_interval: 5s", "scrape_interval: 1s")):
            assert old in text, f"deploy/prometheus.yml no longer has {old!r}"
            text = text.replace(old, new)
        (tmp / "prometheus.yml").write_text(text)
        port = free_port()
        log = (tmp / "prometheus.log").open("w")
        process = subprocess.Popen([binary, f"--config.file={tmp / 'prometheus.yml'}",
                                    f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                   stdout=log, stderr=subprocess.STDOUT)
        stack.callback(process.wait, 30)
        stack.callback(process.terminate)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                scrapes = query(base, "min(count_over_time(up[1m]))")
                up = query(base, "min(up)")
                if (scrapes["data"]["result"] and float(scrapes["data"]["result"][0]["value"][1]) >= 4
                        and float(up["data"]["result"][0]["value"][1]) == 1):
                    break
            except (OSError, KeyError, IndexError, json.JSONDecodeError):
                pass
            assert process.poll() is None, (tmp / "prometheus.log").read_text()
            time.sleep(0.5)
        else:
            pytest.fail("Prometheus never scraped every device four times:\n" + (tmp / "prometheus.log").read_text())
        yield base, names


def test_the_check_can_fail(prometheus: tuple[str, dict]) -> None:
    base, _ = prometheus
    assert query(base, "blockemu_no_such_metric")["data"]["result"] == []
    assert query(base, "rate(blockemu_requests_total[")["status"] == "error"


@pytest.mark.parametrize(("kind", "title", "expression"), dashboard_queries(),
                         ids=[f"{k}-{t}-{i}" for i, (k, t, _) in enumerate(dashboard_queries())])
def test_dashboard_expression_returns_data(prometheus: tuple[str, dict], kind: str, title: str,
                                           expression: str) -> None:
    base, names = prometheus
    for device_kind in ROW_DEVICES[kind]:
        concrete = expression.replace("$device", names[device_kind]).replace("$__rate_interval", RATE_INTERVAL)
        answer = query(base, concrete)
        assert answer["status"] == "success", (concrete, answer)
        assert answer["data"]["result"], f"{title}: no data for {names[device_kind]} from {concrete}"
