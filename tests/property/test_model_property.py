"""Random reads, writes, trims and zeroes against a reference bytearray."""

from __future__ import annotations

import contextlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockemu.clock import VirtualClock
from blockemu.devices.ufs.device import NothingToAgeError
from blockemu.runtime import DeviceRuntime
from tests.conftest import small_ufs_config

# Keep the exercised area small so that operations overlap often.
SPAN = 256 * 1024
SIZE = SPAN + 128 * 1024  # what the reference tracks: every request ends below this

offsets = st.integers(0, SPAN - 1)
lengths = st.integers(0, 40_000)
operation = st.one_of(
    st.tuples(st.just("write"), offsets, lengths, st.integers(0, 255)),
    st.tuples(st.just("read"), offsets, lengths, st.just(0)),
    st.tuples(st.just("trim"), offsets, lengths, st.just(0)),
    st.tuples(st.just("zero"), offsets, lengths, st.just(0)),
    st.tuples(st.just("age"), st.integers(0, 100), st.sampled_from([4, 8, 64]), st.integers(0, 9)),
    st.tuples(st.just("defrag"), st.just(0), st.just(0), st.just(0)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, min_size=1, max_size=40))
def test_model_matches_reference(ops: list[tuple[str, int, int, int]]) -> None:
    runtime = DeviceRuntime(small_ufs_config(), clock=VirtualClock())
    reference = bytearray(SIZE)
    # Trimmed bytes may read back as anything (NBD trim is advisory); track them.
    trimmed = np.zeros(SIZE, dtype=bool)
    for op, a, b, c in ops:
        if op == "write":
            data = bytes([c]) * b + bytes(range(256))[: b % 7]
            runtime.write(a, memoryview(data))
            reference[a : a + len(data)] = data
            trimmed[a : a + len(data)] = False
        elif op == "read":
            buf = bytearray(b)
            runtime.read(a, memoryview(buf))
            keep = ~trimmed[a : a + b]
            assert np.array_equal(np.frombuffer(bytes(buf), np.uint8)[keep],
                                  np.frombuffer(bytes(reference[a : a + b]), np.uint8)[keep])
        elif op == "trim":
            runtime.trim(a, b)
            trimmed[a : a + b] = True
        elif op == "zero":
            runtime.write_zeroes(a, b)
            reference[a : a + b] = bytes(b)
            trimmed[a : a + b] = False
        elif op == "age":
            # Nothing written yet: refused, and nothing changes.
            with contextlib.suppress(NothingToAgeError):
                runtime.stack.model.age(float(a), fragment_kib=b, seed=c)  # type: ignore[attr-defined]
        elif op == "defrag":
            runtime.stack.model.hid.write("defrag_trigger", "enable")  # type: ignore[attr-defined]
            runtime.run_background_until_idle()
    buf = bytearray(SPAN + 50_000)
    runtime.read(0, memoryview(buf))
    keep = ~trimmed[: len(buf)]
    assert np.array_equal(np.frombuffer(bytes(buf), np.uint8)[keep],
                          np.frombuffer(bytes(reference[: len(buf)]), np.uint8)[keep])
    ftl = runtime.stack.model.ftl  # type: ignore[attr-defined]
    mapped = np.flatnonzero(ftl.l2p >= 0)
    assert np.array_equal(ftl.p2l[ftl.l2p[mapped]], mapped)
