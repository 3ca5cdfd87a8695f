"""The OpenAPI document is generated from the served stack's routes: every route is in it, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from blockemu.config import load_config
from blockemu.control.server import ControlServer
from blockemu.runtime import DeviceRuntime

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.toml"))
# Each device kind's own routes, as the document must list them.
OWN_PATHS = {
    "ufs": {"/api/v1/hid", "/api/v1/hid/{attribute}", "/api/v1/age", "/api/v1/fragmentation", "/api/v1/powercut"},
    "zns": {"/api/v1/zones", "/api/v1/zones/{index}/{action}", "/api/v1/copy", "/api/v1/powercut"},
    "zns_ftl": {"/api/v1/gc", "/api/v1/zones", "/api/v1/zones/{index}", "/api/v1/powercut"},
    "zram": {"/api/v1/zram", "/api/v1/zram/{attribute}"},
}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
@pytest.mark.parametrize("token", [None, "t" * 32])
def test_the_document_lists_exactly_the_served_routes(path: Path, token: str | None) -> None:
    config = load_config(path, ["power.enabled=true"])
    runtime = DeviceRuntime(config)
    control = ControlServer(runtime, "127.0.0.1", 0, token=token)
    try:
        document = control.openapi()
        declared = {(route.method.lower(), route.path) for route in control.routes.routes}
        documented = {(method, template) for template, item in document["paths"].items()
                      for method in item if method != "parameters"}
        assert declared == documented
        assert OWN_PATHS[config.device.type] | {"/api/v1/power", "/api/v1/power/{attribute}", "/metrics",
                                                "/api/v1/device", "/api/v1/faults"} <= set(document["paths"])
        for route in control.routes.routes:
            item = document["paths"][route.path]
            names = set(re.findall(r"{(\w+)}", route.path))
            assert names == set(route.params)
            assert {p["name"] for p in item.get("parameters", [])} == names
            operation = item[route.method.lower()]
            assert ("security" in operation) is (token is not None and route.method != "GET")
    finally:
        control.stop()
        runtime.close()
