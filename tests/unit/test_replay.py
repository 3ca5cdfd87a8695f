from __future__ import annotations

import numpy as np
import pytest

from blockemu.replay import replay
from blockemu.trace import FLAG_FUA, OP_CODES, TRACE_DTYPE, Trace
from tests.conftest import small_ufs_config

MIB = 1024 * 1024


def synthetic_trace(seed: int, count: int, span_bytes: int, with_gaps: bool = True) -> Trace:
    rng = np.random.default_rng(seed)
    records = np.zeros(count, dtype=TRACE_DTYPE)
    ops = rng.choice([OP_CODES["read"], OP_CODES["write"], OP_CODES["flush"], OP_CODES["trim"], OP_CODES["zero"]],
                     size=count, p=[0.45, 0.45, 0.04, 0.03, 0.03])
    sizes = rng.choice([512, 4096, 8192, 65536, 3000, 262144], size=count)
    offsets = rng.integers(0, span_bytes - 262144, size=count)
    offsets = np.where(rng.random(count) < 0.7, offsets // 4096 * 4096, offsets)
    gaps = rng.exponential(40_000, size=count).astype(np.int64) if with_gaps else np.zeros(count, dtype=np.int64)
    records["t_ns"] = 1_000_000 + np.cumsum(gaps)
    records["op"] = ops
    records["offset"] = offsets
    records["length"] = np.where(ops == OP_CODES["flush"], 0, sizes)
    records["flags"] = np.where(rng.random(count) < 0.1, FLAG_FUA, 0)
    records["qd"] = 1
    return Trace(records, {}, {})


@pytest.mark.parametrize("closed_loop", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_vector_engine_matches_the_device_path_exactly(seed: int, closed_loop: bool) -> None:
    # 64 MiB device, writes spread over all of it: GC runs many times.
    config = small_ufs_config()
    trace = synthetic_trace(seed, 3000, 60 * MIB)
    scalar = replay(config, trace, engine="scalar", closed_loop=closed_loop)
    vector = replay(config, trace, engine="vector", closed_loop=closed_loop)
    assert np.array_equal(scalar.arrivals_ns, vector.arrivals_ns)
    assert np.array_equal(scalar.completions_ns, vector.completions_ns)
    a, b = scalar.device, vector.device
    assert np.array_equal(a.ftl.l2p, b.ftl.l2p)  # type: ignore[attr-defined]
    assert np.array_equal(a.ftl.valid, b.ftl.valid)  # type: ignore[attr-defined]
    assert a.ftl.erases == b.ftl.erases > 0  # type: ignore[attr-defined]
    assert a.dies.busy_ns == b.dies.busy_ns  # type: ignore[attr-defined]
    for counter in ("reads_with_media", "read_physical_runs", "read_tr_total"):
        assert getattr(a, counter) == getattr(b, counter), counter
    assert scalar.summary()["ops"] == vector.summary()["ops"]


def test_replay_refuses_traces_larger_than_the_device() -> None:
    trace = synthetic_trace(1, 10, 60 * MIB)
    trace.records["offset"][3] = 70 * MIB
    with pytest.raises(ValueError, match="beyond the device"):
        replay(small_ufs_config(), trace)
