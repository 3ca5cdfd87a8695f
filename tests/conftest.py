"""Shared fixtures: small device configs, and the missing-dependency rule.

Under CI=true a missing nbdkit, libnbd, qemu or kernel is a failure, never a
skip (the brief's rule); on a developer's machine it is a skip with the reason.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

import pytest

from blockemu.config import Config, config_from_mapping

if TYPE_CHECKING:
    from blockemu.runtime import DeviceRuntime

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(available: bool, what: str) -> None:
    """Fail under CI, skip elsewhere, when a real component is missing."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing; CI=true requires it (run 'make setup')")
    pytest.skip(f"{what} is missing (a failure under CI=true); run 'make setup'")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, name)
    assert path is not None
    return path


SMALL_UFS: dict[str, Any] = {
    "device": {"type": "ufs", "name": "ufs_test", "capacity_mib": 64},
    "ufs": {"dies": 4, "planes_per_die": 4, "nand_page_kib": 16, "pages_per_block": 4},
    "hid": {"window_kib": 256, "min_run_kib": 64},
}


def small_ufs_config(**sections: dict[str, Any]) -> Config:
    raw = {name: dict(table) for name, table in SMALL_UFS.items()}
    for name, table in sections.items():
        raw.setdefault(name, {}).update(table)
    return config_from_mapping(raw, "<test>")


def toml_text(raw: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, table in raw.items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, str):
                lines.append(f'{key} = "{value}"')
            else:
                lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def pattern(tag: int, length: int = 4096) -> bytes:
    """A recognisable block: every byte the same, never zero."""
    return bytes([tag % 251 + 1]) * length


def read(runtime: DeviceRuntime, offset: int, length: int = 4096) -> bytes:
    buf = bytearray(length)
    runtime.read(offset, memoryview(buf))
    return bytes(buf)


def api(component: Any, method: str, path: list[str], body: bytes = b"") -> Any:
    """Serve one control request by ``component``'s routes (a runtime, a layer or a model), as the server would."""
    from blockemu.control.routes import RouteTable

    return RouteTable(component.routes()).call(method, "/api/v1/" + "/".join(path), body)
