"""Smoke test of the zram study on a tiny corpus captured from this machine."""

from __future__ import annotations

import csv
import os
from dataclasses import replace
from pathlib import Path

from blockemu.devices.zram.codecs import PAGE
from blockemu.experiments import zram as experiment

TINY = replace(experiment.QUICK, apps=2, pages_per_app=48, rounds=3, child_processes=1, idle_gap_s=3.0)


def test_corpus_is_captured_from_real_processes_and_libraries() -> None:
    apps = experiment.capture_corpus(TINY)
    assert len(apps) == 2 and all(len(app) == 48 for app in apps)
    pages = [p for app in apps for p in app]
    assert all(len(p) == PAGE for p in pages)
    assert sum(1 for p in pages if any(p)) > len(pages) // 2  # resident pages, mostly not zero
    own = experiment._resident_anonymous_pages(os.getpid(), 16)
    assert len(own) == 16


def test_experiment_writes_csv_png_and_a_row_per_variant(tmp_path: Path) -> None:
    variants = {k: experiment.VARIANTS[k] for k in ("single_lz4", "single_zstd", "multi", "heuristic_async")}
    messages: list[str] = []
    rows = experiment.run_experiment(tmp_path, TINY, variants, progress=messages.append)
    assert [r["variant"] for r in rows] == list(variants)
    with open(tmp_path / "zram_results.csv") as f:
        written = list(csv.DictReader(f))
    assert [r["variant"] for r in written] == list(variants)
    by_name = {r["variant"]: r for r in rows}
    for row in rows:
        assert 0 < row["launch_p50_ms"] <= row["launch_p95_ms"]
        assert row["compression_ratio"] > 1 and row["mem_used_mib"] > 0 and row["cpu_compress_s"] > 0
    # zstd stores the same corpus in fewer bytes than lz4; multi recompressed idle pages.
    assert by_name["single_zstd"]["compression_ratio"] > by_name["single_lz4"]["compression_ratio"]
    assert by_name["multi"]["recompressed_pages"] > 0
    # Asynchronous writes are acknowledged once staged: faster than compressing them.
    assert by_name["heuristic_async"]["write_p50_us"] < by_name["single_lz4"]["write_p50_us"]
    assert (tmp_path / "zram.png").stat().st_size > 10_000
    assert len(list(csv.DictReader(open(tmp_path / "zram_launches.csv")))) == 3 * len(variants)
    assert any("cost model" in m for m in messages)
    assert "launch_p50_ms" in experiment.format_table(rows)


def test_same_corpus_and_pinned_costs_give_identical_modeled_results(tmp_path: Path) -> None:
    apps = experiment.capture_corpus(replace(TINY, child_processes=0))
    variants = {k: experiment.VARIANTS[k] for k in ("heuristic", "single_zstd_async")}
    costs = "lz4=4/1.5, zstd=14/5.5"
    first = experiment.run_experiment(tmp_path / "a", TINY, variants, apps=apps, cost_us=costs)
    second = experiment.run_experiment(tmp_path / "b", TINY, variants, apps=apps, cost_us=costs)
    measured = {"cpu_compress_s", "cpu_decompress_s"}  # real CPU time: varies run to run
    for a, b in zip(first, second, strict=True):
        assert {k: v for k, v in a.items() if k not in measured} == {k: v for k, v in b.items() if k not in measured}
    assert "cost_us = lz4=4/1.5, zstd=14/5.5" in (tmp_path / "a" / "zram_params.txt").read_text()
