"""The host-side zoned log: data integrity through GC, policies, copy methods, foreground fallback."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from blockemu.config import ConfigError, config_from_mapping
from blockemu.devices.base import ApiError
from blockemu.devices.zns_log.device import ZnsFtlDevice
from blockemu.devices.zns_log.log import BLOCK
from blockemu.policies.gc import (
    CostBenefitPolicy,
    GreedyPolicy,
    ZoneAwarePolicy,
    ZoneView,
    make_policy,
)
from blockemu.store import MemoryStore
from tests.conftest import api

MIB = 1024 * 1024


def make_log(**ftl: Any) -> ZnsFtlDevice:
    raw = {
        "device": {"type": "zns_ftl", "name": "log_test", "capacity_mib": 32},
        "zns": {"zone_size_mib": 1, "max_open_zones": 6, "max_active_zones": 8, "parallel_units": 4},
        "zns_ftl": {"overprovision_percent": 25.0, "gc_start_free_zones": 3, "gc_reserve_free_zones": 1,
                    "gc_step_blocks": 32, **ftl},
    }
    config = config_from_mapping(raw, "<test>")
    return ZnsFtlDevice(config, MemoryStore(config.capacity_bytes))


def block_payload(lba: int, version: int) -> bytes:
    return (lba.to_bytes(4, "little") + version.to_bytes(4, "little")) * (BLOCK // 8)


def churn(dev: ZnsFtlDevice, writes: int, seed: int, background: bool) -> dict[int, int]:
    """Fill the log, then overwrite random blocks; return each block's last version."""
    blocks = dev.size_bytes // BLOCK
    versions: dict[int, int] = {}
    now = 0
    rng = np.random.default_rng(seed)
    hot = max(1, blocks // 8)
    order = list(range(blocks)) + [int(x) if rng.random() < 0.5 else int(x) % hot
                                   for x in rng.integers(0, blocks, writes)]
    for lba in order:
        version = versions.get(lba, 0) + 1
        versions[lba] = version
        now = dev.write(lba * BLOCK, memoryview(block_payload(lba, version)), False, now)
        if background:
            while (done := dev.background_step(now)) is not None:
                now = done
                if dev.log.free and len(dev.log.free) > dev.log.gc_start_free_zones and not dev.log.gc_active:
                    break
    return versions


@pytest.mark.parametrize("policy", ["greedy", "cost_benefit", "zone_aware"])
@pytest.mark.parametrize("method", ["host", "simple_copy"])
def test_data_survives_garbage_collection(policy: str, method: str) -> None:
    dev = make_log(gc_policy=policy, copy_method=method)
    versions = churn(dev, 8000, seed=3, background=policy != "greedy")
    log = dev.log
    assert log.zones_collected > 5
    assert log.write_amplification >= 1.0
    log.check_consistency()
    whole = bytearray(dev.size_bytes)
    dev.read(0, memoryview(whole), 0)
    for lba, version in versions.items():
        assert whole[lba * BLOCK : (lba + 1) * BLOCK] == block_payload(lba, version), lba


def test_foreground_gc_when_nothing_runs_in_the_background() -> None:
    dev = make_log()
    churn(dev, 3000, seed=1, background=False)
    assert dev.log.foreground_collections == dev.log.zones_collected > 0
    assert dev.log.background_steps == 0


def test_background_gc_keeps_host_writes_out_of_collection() -> None:
    dev = make_log()
    churn(dev, 3000, seed=1, background=True)
    assert dev.log.background_steps > 0
    assert dev.log.foreground_collections < dev.log.zones_collected


def test_simple_copy_moves_no_data_over_the_link() -> None:
    host, offload = make_log(copy_method="host"), make_log(copy_method="simple_copy")
    for dev in (host, offload):
        churn(dev, 3000, seed=2, background=False)
    # Same workload, same policy: same blocks moved, only the way differs.
    assert host.log.gc_blocks_relocated == offload.log.gc_blocks_relocated > 0
    assert host.log.gc_link_bytes == 2 * host.log.gc_blocks_relocated * BLOCK
    assert 0 < offload.log.gc_link_bytes < host.log.gc_link_bytes / 50
    assert offload.zns.copied_bytes == offload.log.gc_blocks_relocated * BLOCK
    assert offload.zns.host_read_bytes < host.zns.host_read_bytes


def test_partial_blocks_trim_and_zeroes() -> None:
    dev = make_log()
    dev.write(100, memoryview(b"a" * 5000), False, 0)
    buf = bytearray(6000)
    dev.read(0, memoryview(buf), 0)
    assert buf == bytes(100) + b"a" * 5000 + bytes(900)
    dev.write_zeroes(1000, 200, False, 0)
    dev.read(0, memoryview(buf), 0)
    assert buf == bytes(100) + b"a" * 900 + bytes(200) + b"a" * 3900 + bytes(900)
    dev.trim(0, 2 * BLOCK, 0)
    assert dev.log.mapped_blocks == 0
    dev.read(0, memoryview(buf), 0)
    assert buf == bytes(6000)
    dev.log.check_consistency()


def test_zone_aware_policy_separates_hot_cold_and_relocated_streams() -> None:
    policy = make_policy("zone_aware", logical_blocks=1000, hot_window_percent=10)
    assert isinstance(policy, ZoneAwarePolicy) and policy.hot_window_blocks == 100
    assert policy.host_stream(-1, 5000) == 1  # never written: cold
    assert policy.host_stream(4950, 5000) == 0  # rewritten soon: hot
    assert policy.host_stream(4000, 5000) == 1
    assert policy.gc_stream() == 2 and policy.streams == 3


def test_victim_selection_of_each_policy() -> None:
    view = ZoneView(valid_blocks=np.array([10, 50, 40, 0]), last_write=np.array([90, 0, 99, 0]),
                    candidates=np.array([True, True, True, False]), capacity_blocks=100, now=100)
    assert GreedyPolicy().choose_victim(view) == 0  # fewest valid
    # (1-u)·age/(1+u), age scaled over the candidates to (age - 1 + 1) / (100 - 1 + 1):
    # zone 1 (u = 0.5, oldest) scores 0.333, zone 0 (u = 0.1, age 10) 0.082, zone 2 0.0043.
    assert CostBenefitPolicy().choose_victim(view) == 1
    assert GreedyPolicy().choose_victim(view) != CostBenefitPolicy().choose_victim(view)
    full = ZoneView(np.array([100, 100]), np.array([0, 0]), np.array([True, True]), 100, 5)
    assert GreedyPolicy().choose_victim(full) is None  # nothing to gain anywhere


def test_api_shows_zones_and_gc_and_refuses_zone_management() -> None:
    dev = make_log()
    dev.write(0, memoryview(bytes(BLOCK)), False, 0)
    assert api(dev, "GET", ["gc"], b"")["host_bytes_written"] == BLOCK
    assert len(api(dev, "GET", ["zones"], b"")) == 32
    with pytest.raises(ApiError) as info:
        api(dev, "POST", ["zones", "0", "reset"], b"")
    assert info.value.status == 409
    families = {f.name for f in dev.metrics()}
    assert "blockemu_zns_ftl_write_amplification" in families and "blockemu_zns_zones" in families


def test_config_refuses_too_little_spare_space() -> None:
    raw = {"device": {"type": "zns_ftl", "capacity_mib": 16}, "zns": {"zone_size_mib": 1},
           "zns_ftl": {"gc_policy": "zone_aware", "overprovision_percent": 20.0}}
    with pytest.raises(ConfigError, match="leaves 3 spare zones of 16; gc_policy 'zone_aware' needs at least 5"):
        config_from_mapping(raw, "<t>")
    raw["zns"] = {"zone_size_mib": 1, "max_open_zones": 2, "max_active_zones": 2}
    raw["zns_ftl"] = {"gc_policy": "zone_aware", "overprovision_percent": 40.0}
    with pytest.raises(ConfigError, match="max_open_zones = 2: gc_policy 'zone_aware' writes 3 zones"):
        config_from_mapping(raw, "<t>")
    raw["zns_ftl"] = {"gc_policy": "zone_aware", "overprovision_percent": 40.0, "gc_start_free_zones": 4}
    raw["zns"] = {"zone_size_mib": 1}
    with pytest.raises(ConfigError, match=r"gc_start_free_zones = 4: must be <= 2 \(6 spare zones, 3 open"):
        config_from_mapping(raw, "<t>")
    with pytest.raises(ConfigError, match="gc_policy = 'lru': must be one of greedy, cost_benefit, zone_aware"):
        config_from_mapping({"zns_ftl": {"gc_policy": "lru"}}, "<t>")


def test_state_snapshot_restores_zones_and_map() -> None:
    dev = make_log(gc_policy="zone_aware")
    churn(dev, 3000, seed=5, background=True)
    state = dev.snapshot_state()
    again = make_log(gc_policy="zone_aware")
    again.zns.store.close()
    again.zns.store = dev.zns.store  # the data survives with the store; the model state with the snapshot
    again.restore_state(state)
    assert again.zns.report_zones() == dev.zns.report_zones()
    assert np.array_equal(again.log.l2p, dev.log.l2p) and again.log.heads == dev.log.heads
    for device in (dev, again):  # both carry on identically
        device.write(5 * BLOCK, memoryview(block_payload(5, 99)), False, 10**12)
    assert again.zns.report_zones() == dev.zns.report_zones()
    buf = bytearray(BLOCK)
    again.read(5 * BLOCK, memoryview(buf), 0)
    assert buf == block_payload(5, 99)
    with pytest.raises(ValueError, match="another geometry or gc_policy"):
        make_log(gc_policy="greedy").restore_state(state)
