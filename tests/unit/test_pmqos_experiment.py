"""The PM-QoS experiment on a short trace: it runs, is deterministic, and writes its files."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from blockemu.experiments import pmqos
from blockemu.experiments.pmqos import Workloads, run_experiment

TINY = Workloads(region_mib=16, bursts=12, burst_requests=4, think_mean_ms=30.0, streams=2, stream_mib=16,
                 stream_request_kib=128, stream_qd=8, pause_min_ms=100.0, pause_max_ms=150.0)


def test_closed_loop_keeps_the_queue_depth_it_was_given() -> None:
    phases = pmqos.sustained_phases(TINY)
    assert len(phases) == 2 and all(p.qd == 8 for p in phases)
    assert [offset for offset, _ in phases[0].requests[:3]] == [0, 128 * 1024, 256 * 1024]
    bursts = pmqos.intermittent_phases(TINY)
    assert len(bursts) == 12 and all(p.qd == 1 and len(p.requests) == 4 for p in bursts)


def test_short_run_shows_the_mechanisms() -> None:
    results = run_experiment(TINY, sweep=(0, 1), hold_sweep=(0.0, 60.0))
    rows = {(r.workload, r.governor, r.qd_threshold, r.hold_ms): r.row() for r in results}
    # Per workload: 3 governors (pmqos at threshold 1, hold 60), pmqos at threshold 0 and at hold 0.
    assert len(rows) == 10
    ondemand = rows[("intermittent", "simple_ondemand", 1, 60.0)]
    boosted = rows[("intermittent", "pmqos_qd", 1, 60.0)]
    never = rows[("intermittent", "pmqos_qd", 0, 60.0)]
    no_hold = rows[("intermittent", "pmqos_qd", 1, 0.0)]
    # Sparse QD1 bursts leave ondemand at the lowest point; boosting serves them fast, for more energy.
    assert boosted["latency_mean_us"] < ondemand["latency_mean_us"]
    assert boosted["energy_j_per_gib"] > ondemand["energy_j_per_gib"]
    # Threshold 0 never boosts: exactly simple_ondemand.
    assert never["latency_mean_us"] == ondemand["latency_mean_us"] and never["boosts"] == 0
    # Without a hold the clock drops after every request, and each next one pays a transition.
    assert no_hold["transitions"] > boosted["transitions"]
    assert no_hold["latency_mean_us"] > boosted["latency_mean_us"]
    assert rows[("sustained", "pmqos_qd", 1, 60.0)]["bandwidth_mbps"] > rows[
        ("sustained", "simple_ondemand", 1, 60.0)]["bandwidth_mbps"]
    again = run_experiment(TINY, sweep=(1,), hold_sweep=(60.0,))
    assert [r.row() for r in again] == [r.row() for r in results if r.qd_threshold == 1 and r.hold_ms == 60.0]


def test_command_writes_csv_png_and_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(pmqos, "QUICK", TINY)
    monkeypatch.setattr(pmqos, "QD_THRESHOLD_SWEEP", (0, 1))
    monkeypatch.setattr(pmqos, "HOLD_MS_SWEEP", (0.0, 60.0))
    assert pmqos.run_from_args(argparse.Namespace(quick=True, out=str(tmp_path), seed=TINY.seed)) == 0
    out = capsys.readouterr().out
    assert "ratios vs simple_ondemand" in out and "pmqos_qd" in out
    header = (tmp_path / "pmqos_governors.csv").read_text().splitlines()[0]
    assert "latency_p99_us" in header and "energy_j_per_gib_ratio" in header
    assert "hold_ms sweep" in out
    sweep = (tmp_path / "pmqos_hold_ms_sweep.csv").read_text().splitlines()
    assert len(sweep) == 1 + 2 * 2  # header, two workloads × two hold times
    assert (tmp_path / "pmqos_qd_threshold_sweep.csv").exists()
    assert (tmp_path / "pmqos.png").read_bytes()[:4] == b"\x89PNG"


def test_the_energy_panel_shows_the_cost_on_a_linear_axis_and_labels_are_whole() -> None:
    """Issue 24: a log axis hid boosting's ×1.4 energy cost, and the frequency panel cut 'inter', 'susta'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = run_experiment(TINY, sweep=(0, 1), hold_sweep=(0.0, 60.0))
    section = pmqos.config_from_mapping(pmqos.DEVICE_CONFIG).power
    comparison = pmqos.comparison_rows(results, section)
    fig = pmqos.figure(comparison, pmqos.sweep_rows(results, comparison, section, "qd_threshold"),
                       pmqos.sweep_rows(results, comparison, section, "hold_ms"))
    try:
        energy, shares = fig.axes[2], fig.axes[5]
        assert energy.get_yscale() == "linear"
        assert "× simple_ondemand" in energy.get_ylabel()
        by = {(r["workload"], r["governor"]): r for r in comparison}
        cost = by[("intermittent", "pmqos_qd")]["energy_j_per_gib"] / by[("intermittent", "simple_ondemand")][
            "energy_j_per_gib"]
        bar_labels = [t.get_text() for t in energy.texts]
        assert any(label.startswith(f"×{cost:.2f}") for label in bar_labels), bar_labels
        heights = sorted(round(p.get_height(), 6) for p in energy.patches)
        assert heights.count(1.0) == 2  # each workload's baseline at 1
        ticks = [t.get_text() for t in shares.get_xticklabels()]
        assert ticks[0] == "intermittent\nondemand" and ticks[3] == "sustained\nondemand", ticks
    finally:
        plt.close(fig)
