from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from blockemu.control.client import ServedDevice
from tests.conftest import SMALL_UFS, require, require_tool, toml_text


def _has_libnbd() -> bool:
    try:
        import nbd  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="session")
def real_components() -> None:
    require_tool("nbdkit")
    require(_has_libnbd(), "libnbd python binding (python3-libnbd)")


@pytest.fixture
def small_config(tmp_path: Path) -> Path:
    path = tmp_path / "ufs-small.toml"
    path.write_text(toml_text(SMALL_UFS))
    return path


@pytest.fixture
def served(real_components: None, small_config: Path) -> Iterator[ServedDevice]:
    with ServedDevice(small_config) as device:
        yield device
