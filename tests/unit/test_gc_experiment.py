"""Smoke test of the GC study on a tiny zoned log."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest

from blockemu.experiments import gc as experiment

TINY = replace(experiment.QUICK, zones=32, overwrite_factor=1.0, gc_start_free_zones=2)


def test_experiment_writes_csv_png_and_the_expected_relations(tmp_path: Path) -> None:
    messages: list[str] = []
    rows = experiment.run_experiment(tmp_path, TINY, workloads=["zipf"], progress=messages.append)
    assert len(rows) == 6 and len(messages) == 6
    with open(tmp_path / "gc_results.csv") as f:
        written = list(csv.DictReader(f))
    assert [(r["gc_policy"], r["copy_method"]) for r in written] == [
        (p, m) for p in ("greedy", "cost_benefit", "zone_aware") for m in ("host", "simple_copy")]
    blocks = int(32 * 256 * 0.8)
    by_key = {(r["gc_policy"], r["copy_method"]): r for r in rows}
    for row in rows:
        assert row["write_amplification"] >= 1.0
        assert row["zones_collected"] > 0 and row["gc_busy_s"] > 0
        # Every block was read back through the log after GC and matched its last write.
        assert row["verified_blocks"] == blocks
    for policy in ("greedy", "cost_benefit", "zone_aware"):
        host, offload = by_key[(policy, "host")], by_key[(policy, "simple_copy")]
        # Simple Copy sends 32-byte range descriptors over the link instead of the data.
        assert 0 < offload["gc_link_mib"] < host["gc_link_mib"] / 50
    assert (tmp_path / "gc.png").stat().st_size > 10_000
    assert "write_amplification" in experiment.format_table(rows)


def test_workloads_are_seeded_and_skewed() -> None:
    import numpy as np

    params = experiment.QUICK
    a = experiment.workload("zipf", 10_000, 5000, params, np.random.default_rng(1))
    b = experiment.workload("zipf", 10_000, 5000, params, np.random.default_rng(1))
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0])
    _, counts = np.unique(a[1], return_counts=True)
    top = np.sort(counts)[::-1][:100].sum()
    assert top > 0.3 * 5000  # the hottest 1 % of blocks get well over 1 % of the writes
    _, uniform = experiment.workload("uniform", 10_000, 5000, params, np.random.default_rng(1))
    assert np.unique(uniform, return_counts=True)[1].max() < 10
    with pytest.raises(ValueError, match="unknown workload 'sequential'"):
        experiment.workload("sequential", 10, 10, params, np.random.default_rng(1))


def test_cli_registers_the_study_and_the_zone_commands() -> None:
    from blockemu.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["experiment", "gc", "--quick", "--out", "/tmp/x"])
    assert args.func is experiment.main and args.quick and args.out == "/tmp/x"
    args = parser.parse_args(["ctl", "zone", "copy", "--dest-zone", "3", "--source", "0:4096"])
    assert args.zone == "copy" and args.dest_zone == 3 and args.source == ["0:4096"]
