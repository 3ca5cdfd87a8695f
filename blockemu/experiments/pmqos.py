"""PM-QoS queue-depth boosting vs devfreq's simple_ondemand, on the UFS model in virtual time.

Two seeded workloads, each driven by a closed-loop load generator (a fixed
number of requests outstanding, think times between phases) on a
VirtualClock, so every run is deterministic:

* intermittent: bursts of 4 KiB random reads issued one at a time (QD1),
  separated by exponentially distributed think times;
* sustained: streams of 128 KiB sequential reads with 8 outstanding,
  separated by short pauses (the pauses are what let ondemand drop the clock).

Each runs under simple_ondemand, pmqos_qd and performance, then pmqos_qd over
sweeps of qd_threshold and hold_ms.  Reported: completion latency (mean, p50, p99),
bandwidth while requests are outstanding, energy per GiB, transitions; as a
table with ratios against simple_ondemand, a CSV and a PNG.

    blockemu experiment pmqos [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import argparse
import copy
import heapq
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from blockemu.config import Config, PowerSection, config_from_mapping
from blockemu.devices.base import Device
from blockemu.experiments import report
from blockemu.layers.power import PowerModel
from blockemu.stack import build
from blockemu.store.null import NullStore

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

# The device: the shipped UFS 4.1 geometry at 2 GiB, [power] at its defaults.
DEVICE_CONFIG: dict[str, dict[str, Any]] = {
    "device": {"type": "ufs", "name": "ufs0", "capacity_mib": 2048},
    "power": {"enabled": True},
}
GOVERNORS = ("simple_ondemand", "pmqos_qd", "performance")
BASELINE = "simple_ondemand"
QD_THRESHOLD_SWEEP = (0, 1, 2, 4, 8, 16)
# pmqos_qd hold_ms sweep (at the default qd_threshold): how long a boost outlives the I/O.
HOLD_MS_SWEEP = (0.0, 15.0, 30.0, 60.0, 120.0, 240.0)
# Idle time before the first request, so that every governor starts settled.
LEAD_IN_NS = 1_000_000_000


@dataclass(frozen=True)
class Workloads:
    seed: int = 1
    # Data read by both workloads, written before the run.
    region_mib: int = 1024
    # intermittent: bursts of QD1 random reads with think time between them.
    bursts: int = 400
    burst_requests: int = 8
    burst_request_kib: int = 4
    think_mean_ms: float = 30.0
    # sustained: sequential streams with `stream_qd` outstanding, pauses between.
    streams: int = 8
    stream_mib: int = 2048
    stream_request_kib: int = 128
    stream_qd: int = 8
    pause_min_ms: float = 100.0
    pause_max_ms: float = 300.0


QUICK = Workloads(bursts=60, streams=3, stream_mib=256, region_mib=256)


@dataclass(frozen=True)
class Phase:
    """Requests issued with `qd` outstanding, then `think_ns` of nothing."""

    requests: list[tuple[int, int]]  # (offset, length) reads
    qd: int
    think_ns: int


def intermittent_phases(w: Workloads) -> list[Phase]:
    rng = np.random.default_rng(w.seed)
    size = w.burst_request_kib * KIB
    slots = w.region_mib * MIB // size
    phases = []
    for _ in range(w.bursts):
        offsets = rng.integers(0, slots, w.burst_requests) * size
        think = int(rng.exponential(w.think_mean_ms) * 1_000_000)
        phases.append(Phase([(int(o), size) for o in offsets], 1, think))
    return phases


def sustained_phases(w: Workloads) -> list[Phase]:
    rng = np.random.default_rng(w.seed + 1)
    size = w.stream_request_kib * KIB
    region = w.region_mib * MIB
    per_stream = w.stream_mib * MIB // size
    phases = []
    position = 0
    for _ in range(w.streams):
        requests = []
        for _ in range(per_stream):
            requests.append((position, size))
            position = (position + size) % region
        pause = int(rng.uniform(w.pause_min_ms, w.pause_max_ms) * 1_000_000)
        phases.append(Phase(requests, w.stream_qd, pause))
    return phases


WORKLOADS: dict[str, Callable[[Workloads], list[Phase]]] = {
    "intermittent": intermittent_phases,
    "sustained": sustained_phases,
}


def prefilled_device(config: Config, region_bytes: int) -> tuple[Device, int]:
    """A device whose first region_bytes are written (so reads touch NAND); and when it is idle again."""
    device = build(config, layers=(), store=NullStore(config.capacity_bytes)).model
    chunk = memoryview(bytes(MIB))
    done = 0
    for offset in range(0, region_bytes, MIB):
        done = max(done, device.write(offset, chunk, False, done))
    return device, done


@dataclass
class RunResult:
    workload: str
    governor: str
    qd_threshold: int
    hold_ms: float
    latencies_ns: np.ndarray
    bytes: int
    active_ns: int
    energy_j: float
    transitions: int
    boosts: int
    time_in_state_ns: list[int]
    freqs: list[int]

    def row(self) -> dict[str, Any]:
        lat = self.latencies_ns / 1000
        row: dict[str, Any] = {
            "workload": self.workload,
            "governor": self.governor,
            "qd_threshold": self.qd_threshold,
            "hold_ms": self.hold_ms,
            "requests": len(lat),
            "bytes": self.bytes,
            "latency_mean_us": round(float(lat.mean()), 3),
            "latency_p50_us": round(float(np.percentile(lat, 50)), 3),
            "latency_p99_us": round(float(np.percentile(lat, 99)), 3),
            "bandwidth_mbps": round(self.bytes / (self.active_ns / 1e9) / 1e6, 2),
            "energy_j": round(self.energy_j, 6),
            "energy_j_per_gib": round(self.energy_j / (self.bytes / GIB), 4),
            "transitions": self.transitions,
            "boosts": self.boosts,
        }
        total = sum(self.time_in_state_ns) or 1
        for f, ns in zip(self.freqs, self.time_in_state_ns, strict=True):
            row[f"time_at_{f // 1_000_000}mhz_percent"] = round(100 * ns / total, 2)
        return row


def run_closed_loop(device: PowerModel, phases: list[Phase], start_ns: int) -> tuple[np.ndarray, int, int, int]:
    """Drive phases through the device; return (latencies, bytes, active time, end time).

    Within a phase, `qd` requests are outstanding: each completion issues the
    next request at that moment, telling the device the queue depth it
    arrives at (as the runtime does).  Active time counts only the spans in
    which requests were outstanding, so think times do not dilute bandwidth.
    """
    buf = memoryview(bytearray(max(length for phase in phases for _, length in phase.requests)))
    latencies: list[int] = []
    nbytes = 0
    active = 0
    now = start_ns
    outstanding: list[int] = []  # completion times of the requests in flight

    def issue(at: int, request: tuple[int, int]) -> None:
        nonlocal nbytes
        offset, length = request
        device.observe_arrival(at, len(outstanding) + 1)
        done = device.read(offset, buf[:length], at)
        latencies.append(done - at)
        nbytes += length
        heapq.heappush(outstanding, done)

    for phase in phases:
        pending = iter(phase.requests)
        phase_start = now
        for request in pending:
            issue(now, request)
            if len(outstanding) == phase.qd:
                break
        last = now
        while outstanding:
            last = heapq.heappop(outstanding)
            request_next = next(pending, None)
            if request_next is not None:
                issue(last, request_next)
        active += last - phase_start
        now = last + phase.think_ns
    return np.array(latencies, dtype=np.int64), nbytes, active, now


def run_one(workload: str, governor: str, qd_threshold: int, hold_ms: float,
            base: tuple[Device, int], phases: list[Phase]) -> RunResult:
    raw = {name: dict(table) for name, table in DEVICE_CONFIG.items()}
    raw["power"].update({"governor": governor, "qd_threshold": qd_threshold, "hold_ms": hold_ms})
    config = config_from_mapping(raw, "<pmqos experiment>")
    inner, idle_at = base
    start = idle_at + LEAD_IN_NS
    model = build(config, layers=("power",), model=copy.deepcopy(inner), start_ns=idle_at).get(PowerModel)
    model.advance(start)
    energy_before = model.energy_joules
    trans_before = model.total_trans
    time_before = list(model.time_in_state_ns)
    latencies, nbytes, active, end = run_closed_loop(model, phases, start)
    model.advance(end)
    boosts = int(model.governor.state().get("boosts", 0))  # type: ignore[call-overload]
    return RunResult(
        workload=workload, governor=governor, qd_threshold=qd_threshold, hold_ms=hold_ms, latencies_ns=latencies,
        bytes=nbytes,
        active_ns=active, energy_j=model.energy_joules - energy_before, transitions=model.total_trans - trans_before,
        boosts=boosts, time_in_state_ns=[a - b for a, b in zip(model.time_in_state_ns, time_before, strict=True)],
        freqs=list(model.freqs),
    )


def run_experiment(w: Workloads, sweep: tuple[int, ...] | None = None, hold_sweep: tuple[float, ...] | None = None,
                   progress: Callable[[str], None] | None = None) -> list[RunResult]:
    """The governor comparison, then pmqos_qd over the qd_threshold and hold_ms sweeps."""
    sweep = QD_THRESHOLD_SWEEP if sweep is None else sweep
    hold_sweep = HOLD_MS_SWEEP if hold_sweep is None else hold_sweep
    config = config_from_mapping(DEVICE_CONFIG, "<pmqos experiment>")
    base = prefilled_device(config, w.region_mib * MIB)
    threshold, hold = config.power.qd_threshold, config.power.hold_ms
    runs: list[tuple[str, str, int, float]] = []
    for workload in WORKLOADS:
        runs += [(workload, governor, threshold, hold) for governor in GOVERNORS]
        runs += [(workload, "pmqos_qd", t, hold) for t in sweep if t != threshold]
        runs += [(workload, "pmqos_qd", threshold, h) for h in hold_sweep if h != hold]
    results = []
    phases = {name: build(w) for name, build in WORKLOADS.items()}
    for i, (workload, governor, qd, hold_ms) in enumerate(runs, 1):
        began = time.monotonic()
        results.append(run_one(workload, governor, qd, hold_ms, base, phases[workload]))
        if progress is not None:
            progress(f"[{i}/{len(runs)}] {workload:12s} {governor:15s} qd_threshold={qd:<3d} hold_ms={hold_ms:<5g} "
                     f"{time.monotonic() - began:5.1f} s")
    return results


# ----------------------------------------------------------------- reporting
RATIO_KEYS = ("latency_mean_us", "latency_p99_us", "bandwidth_mbps", "energy_j_per_gib")


def with_ratios(row: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    for key in RATIO_KEYS:
        row[f"{key}_ratio"] = round(row[key] / base[key], 4) if base[key] else float("nan")
    return row


def is_default(result: RunResult, section: PowerSection) -> bool:
    return result.qd_threshold == section.qd_threshold and result.hold_ms == section.hold_ms


def comparison_rows(results: list[RunResult], section: PowerSection) -> list[dict[str, Any]]:
    """The governor comparison (pmqos_qd at its defaults), with ratios against the baseline."""
    rows = []
    for workload in WORKLOADS:
        by_governor = {r.governor: r.row() for r in results if r.workload == workload and is_default(r, section)}
        rows += [with_ratios(by_governor[g], by_governor[BASELINE]) for g in GOVERNORS]
    return rows


def sweep_rows(results: list[RunResult], comparison: list[dict[str, Any]], section: PowerSection,
               swept: str) -> list[dict[str, Any]]:
    """pmqos_qd rows varying `swept` (qd_threshold or hold_ms), others at defaults; ratios vs the baseline."""
    fixed = "hold_ms" if swept == "qd_threshold" else "qd_threshold"
    rows = []
    for workload in WORKLOADS:
        base = next(r for r in comparison if r["workload"] == workload and r["governor"] == BASELINE)
        chosen = [r.row() for r in results if r.workload == workload and r.governor == "pmqos_qd"
                  and getattr(r, fixed) == getattr(section, fixed)]
        rows += [with_ratios(row, base) for row in sorted(chosen, key=lambda row: row[swept])]
    return rows


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    columns = [("workload", 12), ("governor", 15), ("qd_threshold", 3), ("hold_ms", 7), ("latency_mean_us", 9),
               ("latency_p50_us", 9), ("latency_p99_us", 9), ("bandwidth_mbps", 9), ("energy_j_per_gib", 9),
               ("latency_mean_us_ratio", 8), ("bandwidth_mbps_ratio", 8), ("energy_j_per_gib_ratio", 8),
               ("transitions", 6)]
    headers = {"qd_threshold": "qd", "hold_ms": "hold", "latency_mean_us": "mean µs", "latency_p50_us": "p50 µs",
               "latency_p99_us": "p99 µs", "bandwidth_mbps": "MB/s", "energy_j_per_gib": "J/GiB",
               "latency_mean_us_ratio": "lat×", "bandwidth_mbps_ratio": "bw×", "energy_j_per_gib_ratio": "J×",
               "transitions": "trans"}
    print(title)
    print("  ".join(f"{headers.get(name, name):>{width}}" for name, width in columns))
    for row in rows:
        cells = []
        for name, width in columns:
            value = row.get(name, "")
            cells.append(f"{value:>{width}.3f}" if isinstance(value, float) else f"{value!s:>{width}}")
        print("  ".join(cells))


def _plot_sweep(ax: Any, comparison: list[dict[str, Any]], rows: list[dict[str, Any]], swept: str) -> None:
    by = {(r["workload"], r["governor"]): r for r in comparison}
    values = sorted({r[swept] for r in rows})
    for workload, key, style in (("intermittent", "latency_mean_us", "o-"), ("sustained", "bandwidth_mbps", "s-")):
        at = {r[swept]: r for r in rows if r["workload"] == workload}
        base = by[(workload, BASELINE)]
        ax.plot(values, [at[v][key] / base[key] for v in values], style, label=f"{workload} {key} ×")
        ax.plot(values, [at[v]["energy_j_per_gib"] / base["energy_j_per_gib"] for v in values],
                style.replace("-", "--"), label=f"{workload} J/GiB ×")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    linthresh = 1 if swept == "qd_threshold" else 10
    ax.set_xscale("symlog", linthresh=linthresh)
    ax.set_xlim(left=-0.2 * linthresh, right=max(values) * 1.3)
    ax.set_xlabel(f"pmqos_qd {swept}")
    ax.set_ylabel(f"ratio vs {BASELINE}")
    ax.set_title(f"{swept} sweep")
    ax.legend(fontsize=7)


def plot(path: Path, comparison: list[dict[str, Any]], threshold_rows: list[dict[str, Any]],
         hold_rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = figure(comparison, threshold_rows, hold_rows)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure(comparison: list[dict[str, Any]], threshold_rows: list[dict[str, Any]],
           hold_rows: list[dict[str, Any]]) -> Any:
    """The six panels; ``plot`` saves them."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(17, 8))
    by = {(r["workload"], r["governor"]): r for r in comparison}
    x = np.arange(len(GOVERNORS))
    ax = axes[0][0]
    for k, (key, label) in enumerate((("latency_mean_us", "mean"), ("latency_p50_us", "p50"),
                                      ("latency_p99_us", "p99"))):
        ax.bar(x + (k - 1) * 0.25, [by[("intermittent", g)][key] for g in GOVERNORS], 0.25, label=label)
    ax.set_xticks(x, GOVERNORS)
    ax.set_ylabel("completion latency (µs)")
    ax.set_title("intermittent: QD1 bursts with think time")
    ax.legend()
    ax = axes[0][1]
    ax.bar(x, [by[("sustained", g)]["bandwidth_mbps"] for g in GOVERNORS], 0.5)
    ax.set_xticks(x, GOVERNORS)
    ax.set_ylabel("bandwidth while busy (MB/s)")
    ax.set_title("sustained: QD8 streams with pauses")
    # Energy as a ratio on a linear axis: the workloads' J/GiB differ by orders of
    # magnitude, and a log axis would flatten the ×1.4 that boosting costs.
    ax = axes[0][2]
    for k, workload in enumerate(WORKLOADS):
        rows = [by[(workload, g)] for g in GOVERNORS]
        base = by[(workload, BASELINE)]["energy_j_per_gib"]
        bars = ax.bar(x + (k - 0.5) * 0.4, [r["energy_j_per_gib"] / base for r in rows], 0.4, label=workload)
        ax.bar_label(bars, [f"×{r['energy_j_per_gib'] / base:.2f}\n{r['energy_j_per_gib']:.3g}" for r in rows],
                     fontsize=7)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.15)  # room for the labels
    ax.set_xticks(x, GOVERNORS)
    ax.set_ylabel(f"energy per GiB (× {BASELINE})")
    ax.set_title("energy: bars labelled ratio and J/GiB")
    ax.legend(loc="lower right", fontsize=7)
    _plot_sweep(axes[1][0], comparison, threshold_rows, "qd_threshold")
    _plot_sweep(axes[1][1], comparison, hold_rows, "hold_ms")
    ax = axes[1][2]
    shares = [key for key in comparison[0] if key.startswith("time_at_")]
    bottom = np.zeros(len(comparison))
    labels = [f"{r['workload']}\n{r['governor'].replace('simple_', '')}" for r in comparison]
    for key in shares:
        values = np.array([r[key] for r in comparison])
        ax.bar(labels, values, bottom=bottom, label=key.removeprefix("time_at_").removesuffix("mhz_percent") + " MHz")
        bottom += values
    ax.set_ylabel("time at each frequency (%)")
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def run_from_args(args: argparse.Namespace) -> int:
    workloads = replace(QUICK if args.quick else Workloads(), seed=args.seed)
    out = report.results_dir("pmqos", args.out)

    def progress(message: str) -> None:
        print(f"pmqos: {message}", file=sys.stderr, flush=True)

    progress(f"{'quick' if args.quick else 'full'} run, seed {workloads.seed}, results in {out}")
    results = run_experiment(workloads, progress=progress)
    section = config_from_mapping(DEVICE_CONFIG).power
    comparison = comparison_rows(results, section)
    threshold_rows = sweep_rows(results, comparison, section, "qd_threshold")
    hold_rows = sweep_rows(results, comparison, section, "hold_ms")
    files = {name: out / name for name in ("pmqos_governors.csv", "pmqos_qd_threshold_sweep.csv",
                                            "pmqos_hold_ms_sweep.csv", "pmqos.png")}
    report.write_csv(files["pmqos_governors.csv"], comparison)
    report.write_csv(files["pmqos_qd_threshold_sweep.csv"], threshold_rows)
    report.write_csv(files["pmqos_hold_ms_sweep.csv"], hold_rows)
    plot(files["pmqos.png"], comparison, threshold_rows, hold_rows)
    print_table(comparison, f"Governors (pmqos_qd qd_threshold={section.qd_threshold}, hold_ms={section.hold_ms:g}); "
                f"ratios vs {BASELINE}")
    print()
    print_table(threshold_rows, f"pmqos_qd qd_threshold sweep; ratios vs {BASELINE}")
    print()
    print_table(hold_rows, f"pmqos_qd hold_ms sweep; ratios vs {BASELINE}")
    print(f"\nwrote {', '.join(str(path) for path in files.values())}")
    return 0
