"""The pure parts of ``blockemu experiment launch --vm``: its workload, configs, counters and apps process."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from blockemu.config import config_from_mapping
from blockemu.experiments.launch import vm


def test_switching_sequence_is_seeded_zipf_and_never_repeats_an_app() -> None:
    sequence = vm.switching_sequence(6, 600, seed=3)
    assert sequence == vm.switching_sequence(6, 600, seed=3)
    assert sequence != vm.switching_sequence(6, 600, seed=4)
    assert len(sequence) == 600 and set(sequence) == set(range(6))
    assert all(a != b for a, b in itertools.pairwise(sequence))
    counts = [sequence.count(app) for app in range(6)]
    assert counts[0] > counts[2] > counts[5]  # popularity falls with rank


def test_every_policy_config_is_a_valid_zram_config() -> None:
    for name in vm.VM_POLICIES:
        raw = tomllib.loads(vm.policy_config(name, capacity_mib=64))
        config = config_from_mapping(raw, f"<{name}>")
        assert config.device.type == "zram" and config.device.capacity_mib == 64
        assert config.zram.lock_memory
        assert config.zram.async_workers == vm.VM_POLICIES[name]["async_workers"]
    assert vm.parse_policies("lz4, multi") == ["lz4", "multi"]
    with pytest.raises(ValueError, match="--vm-policies: 'lz5' is not one of lz4, lz4hc"):
        vm.parse_policies("lz4,lz5")


def test_kernel_counters_are_read_from_memory_stat_vmstat_and_psi(tmp_path: Path) -> None:
    (tmp_path / "memory.stat").write_text("anon 100\npgmajfault 7\nworkingset_refault_anon 5\npgscan_direct 30\n")
    (tmp_path / "memory.pressure").write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=1500\n"
                                              "full avg10=0.00 avg60=0.00 avg300=0.00 total=900\n")
    assert vm._read_fields(tmp_path / "memory.stat", vm.MEMCG_FIELDS) == {
        "pgmajfault": 7, "workingset_refault_anon": 5, "pgscan_direct": 30, "pgsteal_direct": 0,
        "pgscan_kswapd": 0, "pgsteal_kswapd": 0}
    assert vm._psi_totals(tmp_path / "memory.pressure") == {"some": 1500, "full": 900}


def test_summary_rows_and_the_comparison_to_lz4() -> None:
    def row(policy: str, launch_ms: list[float], compr: int) -> dict[str, object]:
        counters = {f: 1 for f in (*vm.MEMCG_FIELDS, *vm.VMSTAT_FIELDS)} | {"psi_some_us": 2500, "psi_full_us": 0}
        return {"policy": policy, "launch_ns": [int(ms * 1e6) for ms in launch_ms], "counters": counters,
                "mm_stat": [4096 * 100, compr, 0, 0, 0, 0, 0, 0, 0]}

    rows = vm.summarize([row("lz4", [10.0, 20.0], 204800), row("zstd", [20.0, 30.0], 102400)])
    assert [r["mean_ms"] for r in rows] == [15.0, 25.0]
    assert rows[0]["zram_ratio"] == 2.0 and rows[1]["zram_ratio"] == 4.0
    assert rows[0]["psi_some_ms"] == 2.5
    assert rows[0]["vs_lz4"] == "+0.0%" and rows[1]["vs_lz4"] == "-40.0%"


def test_the_apps_process_fills_its_apps_and_times_each_launch(tmp_path: Path) -> None:
    corpus = []
    for app, pages in enumerate((3, 5)):
        path = tmp_path / f"app-{app}.bin"
        path.write_bytes(bytes([app + 1]) * pages * vm.PAGE)
        corpus.append(str(path))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"corpus": corpus, "warmup": [0, 1], "sequence": [1, 0, 1]}))
    result = subprocess.run([sys.executable, str(vm.APPS_SCRIPT), str(spec)], input="warm\ngo\n",
                            capture_output=True, text=True, timeout=60, check=True)
    ready, warm, timed = (json.loads(line) for line in result.stdout.splitlines())
    assert ready["ready"] and ready["rss_kib"] >= ready["rss_before_kib"] > 0
    assert warm["apps"] == [0, 1] and len(warm["launch_ns"]) == 2
    assert timed["apps"] == [1, 0, 1] and all(ns > 0 for ns in timed["launch_ns"])
