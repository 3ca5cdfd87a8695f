"""The same random operations through nbdkit + libnbd, against a reference."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockemu.control.client import ServedDevice
from tests.conftest import SMALL_UFS, require, require_tool, toml_text

SPAN = 1024 * 1024
BLOCK = 512  # the advertised minimum block size: libnbd's strict mode enforces it

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def nbd_device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, bytearray]]:
    require_tool("nbdkit")
    try:
        import nbd  # noqa: F401
    except ImportError:
        require(False, "libnbd python binding (python3-libnbd)")
    config = Path(tmp_path_factory.mktemp("prop")) / "ufs.toml"
    config.write_text(toml_text(SMALL_UFS))
    with ServedDevice(config) as device:
        handle = device.connect()
        yield handle, bytearray(SPAN + 64 * 1024)
        handle.shutdown()


blocks = st.integers(0, SPAN // BLOCK - 1).map(lambda b: b * BLOCK)
counts = st.integers(1, 64).map(lambda n: n * BLOCK)
operation = st.tuples(st.sampled_from(["write", "read", "zero", "flush", "fua"]), blocks, counts, st.integers(0, 255))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(operation, min_size=1, max_size=25))
def test_nbd_matches_reference(nbd_device: tuple[Any, bytearray], ops: list[tuple[str, int, int, int]]) -> None:
    import nbd

    handle, reference = nbd_device
    for op, offset, length, fill in ops:
        if op in ("write", "fua"):
            data = bytes([fill]) * length
            handle.pwrite(data, offset, nbd.CMD_FLAG_FUA if op == "fua" else 0)
            reference[offset : offset + length] = data
        elif op == "read":
            assert handle.pread(length, offset) == bytes(reference[offset : offset + length])
        elif op == "zero":
            handle.zero(length, offset)
            reference[offset : offset + length] = bytes(length)
        else:
            handle.flush()
    assert handle.pread(SPAN, 0) == bytes(reference[:SPAN])
