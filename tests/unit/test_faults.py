"""Fault injection through DeviceRuntime: which requests fail, with which errno, and what is left unchanged."""

from __future__ import annotations

import errno
import json
from typing import Any

import pytest

from blockemu.devices.base import ApiError, DeviceError
from blockemu.layers.faults import FaultInjector
from blockemu.runtime import DeviceRuntime
from tests.conftest import api, small_ufs_config

SECTOR = 4096


def put(runtime: DeviceRuntime, request: Any) -> dict[str, Any]:
    result: dict[str, Any] = api(runtime, "PUT", ["faults"], json.dumps(request).encode())
    return result


def read(runtime: DeviceRuntime, offset: int, length: int = SECTOR) -> bytes:
    buf = bytearray(length)
    runtime.read(offset, memoryview(buf))
    return bytes(buf)


def injected(runtime: DeviceRuntime) -> dict[tuple[str, str], int]:
    return {(e["op"], e["kind"]): e["count"] for e in api(runtime, "GET", ["faults"], b"")["injected"]}


@pytest.fixture
def runtime() -> Any:
    runtime = DeviceRuntime(small_ufs_config())
    yield runtime
    runtime.close()


def test_no_faults_by_default(runtime: DeviceRuntime) -> None:
    runtime.write(0, memoryview(b"a" * SECTOR))
    assert read(runtime, 0) == b"a" * SECTOR
    status = api(runtime, "GET", ["faults"], b"")
    assert status["offline"] is False and status["injected"] == []


def test_error_rate_is_seeded_and_leaves_the_device_untouched(runtime: DeviceRuntime) -> None:
    put(runtime, {"seed": 5, "ops": {"write": {"error_rate": 0.3, "errno": "ENOSPC"}}})

    def outcomes() -> list[bool]:
        result = []
        for i in range(200):
            try:
                runtime.write(i * SECTOR, memoryview(bytes([i % 250 + 1]) * SECTOR))
                result.append(True)
            except DeviceError as err:
                assert err.errno == errno.ENOSPC
                result.append(False)
        return result

    first = outcomes()
    assert 30 < first.count(False) < 90
    # A failed write changed nothing: those sectors still read as zeros.
    for i, ok in enumerate(first):
        assert read(runtime, i * SECTOR) == (bytes([i % 250 + 1]) * SECTOR if ok else bytes(SECTOR))
    put(runtime, {"seed": 5})
    assert outcomes() == first
    assert injected(runtime)[("write", "error")] == 2 * first.count(False)
    assert runtime.stats.ops["write"].errors == 2 * first.count(False)


def test_bad_ranges_fail_only_the_listed_ops_that_touch_them(runtime: DeviceRuntime) -> None:
    runtime.write(8 * SECTOR, memoryview(b"d" * SECTOR))
    put(runtime, {"bad_ranges": [{"offset": 8 * SECTOR, "length": SECTOR, "ops": ["read"], "errno": "EIO"}]})
    with pytest.raises(DeviceError, match=r"touches bad range \[32768, 36864\)") as failed:
        read(runtime, 7 * SECTOR, 2 * SECTOR)
    assert failed.value.errno == errno.EIO
    assert read(runtime, 7 * SECTOR) == bytes(SECTOR)  # next to it: fine
    assert read(runtime, 9 * SECTOR) == bytes(SECTOR)
    runtime.write(8 * SECTOR, memoryview(b"e" * SECTOR))  # writes are not listed
    runtime.flush()
    put(runtime, {"bad_ranges": []})
    assert read(runtime, 8 * SECTOR) == b"e" * SECTOR


def test_read_only_and_offline(runtime: DeviceRuntime) -> None:
    runtime.write(0, memoryview(b"r" * SECTOR))
    put(runtime, {"read_only": True})
    for call in (lambda: runtime.write(0, memoryview(b"x" * SECTOR)), lambda: runtime.trim(0, SECTOR),
                 lambda: runtime.write_zeroes(0, SECTOR)):
        with pytest.raises(DeviceError) as refused:
            call()
        assert refused.value.errno == errno.EPERM
    assert read(runtime, 0) == b"r" * SECTOR
    runtime.flush()
    put(runtime, {"offline": True})
    with pytest.raises(DeviceError, match="offline") as offline:
        read(runtime, 0)
    assert offline.value.errno == errno.EIO
    with pytest.raises(DeviceError):
        runtime.flush()
    api(runtime, "DELETE", ["faults"], b"")
    runtime.write(0, memoryview(b"y" * SECTOR))
    assert read(runtime, 0) == b"y" * SECTOR
    counts = injected(runtime)
    assert counts[("write", "read_only")] == 1 and counts[("trim", "read_only")] == 1
    assert counts[("read", "offline")] == 1 and counts[("flush", "offline")] == 1


def test_latency_spikes_add_modeled_time(runtime: DeviceRuntime) -> None:
    runtime.read(0, memoryview(bytearray(SECTOR)))
    normal = runtime.stats.ops["read"].latency_sum_s
    put(runtime, {"latency_spike": {"probability": 1.0, "extra_us": 5000}})
    runtime.read(0, memoryview(bytearray(SECTOR)))
    spiked = runtime.stats.ops["read"].latency_sum_s - normal
    assert spiked == pytest.approx(normal + 0.005)
    assert injected(runtime)[("read", "latency_spike")] == 1


@pytest.mark.parametrize(("request_body", "message"), [
    ({"ops": {"read": {"error_rate": 1.5}}}, r"ops.read.error_rate must be a number in \[0, 1\], got 1.5"),
    ({"ops": {"read": {"errno": "EFOO"}}}, "ops.read.errno must be one of EIO"),
    ({"ops": {"fsync": {"error_rate": 0.1}}}, "ops: unknown key 'fsync'; allowed: read, write"),
    ({"bad_ranges": [{"offset": 0}]}, r"bad_ranges\[0\] needs offset and length"),
    ({"bad_ranges": [{"offset": 64 * 2**20, "length": 1}]}, "is outside the device"),
    ({"bad_ranges": [{"offset": 0, "length": 1, "ops": ["flush"]}]}, "ops must be a non-empty list"),
    ({"bad_ranges": {"offset": 0}}, "bad_ranges must be a list"),
    ({"latency_spike": {"probability": -0.1}}, "latency_spike.probability must be a number"),
    ({"read_only": 1}, "read_only must be true or false"),
    ({"seed": True}, "seed must be an integer >= 0"),
    ({"offline": True, "colour": "red"}, "body: unknown key 'colour'"),
    ([], "body must be a JSON object"),
])
def test_bad_settings_are_refused_whole(runtime: DeviceRuntime, request_body: Any, message: str) -> None:
    put(runtime, {"ops": {"write": {"error_rate": 0.5}}})
    before = api(runtime, "GET", ["faults"], b"")
    with pytest.raises(ApiError, match=message) as refused:
        put(runtime, request_body)
    assert refused.value.status == 400
    assert api(runtime, "GET", ["faults"], b"") == before


def test_api_methods_and_paths(runtime: DeviceRuntime) -> None:
    with pytest.raises(ApiError) as bad_json:
        api(runtime, "PUT", ["faults"], b"{")
    assert bad_json.value.status == 400
    with pytest.raises(ApiError) as wrong_method:
        api(runtime, "POST", ["faults"], b"{}")
    assert wrong_method.value.status == 405
    with pytest.raises(ApiError) as unknown:
        api(runtime, "GET", ["faults", "x"], b"")
    assert unknown.value.status == 404


def test_metrics_name_op_and_kind() -> None:
    injector = FaultInjector(1 << 20)
    injector.configure({"offline": True})
    with pytest.raises(DeviceError):
        injector.before("zero", 0, 512)
    families = {family.name: family for family in injector.metrics()}
    samples = {(labels["op"], labels["kind"]): value
               for labels, value in families["blockemu_faults_injected_total"].samples}
    assert samples[("zero", "offline")] == 1 and samples[("read", "offline")] == 0
    assert families["blockemu_faults_active"].samples == [({}, 1.0)]
