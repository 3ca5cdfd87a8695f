"""``blockemu replay ... --vary KEY=V1,V2``: one trace against several configurations, side by side.

Every combination of the ``--vary`` values (their product) is a config: the
base config with ``--set`` and then ``KEY=V`` applied.  Each replays the
same trace (same engine, same preconditioning); the results are one table
(per config and op: requests, MiB, mean/p50/p95/p99/max latency,
throughput), a CSV of it and a PNG of the latency CDFs, one panel per op.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blockemu.config import Config, ConfigError, load_config
from blockemu.experiments.report import format_table, results_dir, write_csv

if TYPE_CHECKING:
    from blockemu.replay import ReplayResult

COLUMNS = ("config", "op", "requests", "MiB", "mean_us", "p50_us", "p95_us", "p99_us", "max_us", "MiB_per_s")


def parse_vary(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``section.key=v1,v2`` → (key, values); ConfigError naming what is wrong."""
    varied: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        choices = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or "." not in key or not choices:
            raise ConfigError(f"--vary {item!r}: expected SECTION.KEY=V1,V2,... (e.g. ufs.l2p_cache_mib=1,4)")
        if any(k == key for k, _ in varied):
            raise ConfigError(f"--vary {key} given twice; put all its values in one --vary")
        varied.append((key, choices))
    return varied


def configs(path: str, sets: Sequence[str], varied: list[tuple[str, list[str]]]) -> list[tuple[str, Config]]:
    """(label, config) for every combination, each validated as a --set would be."""
    out = []
    for combo in itertools.product(*(values for _, values in varied)):
        overrides = [f"{key}={value}" for (key, _), value in zip(varied, combo, strict=True)]
        out.append((" ".join(overrides), load_config(path, [*sets, *overrides])))
    return out


def rows_of(label: str, result: ReplayResult) -> list[dict[str, Any]]:
    rows = []
    for op, s in result.summary()["ops"].items():
        rows.append({"config": label, "op": op, "requests": s["requests"], "MiB": round(s["bytes"] / 2**20, 1),
                     "mean_us": s["mean_us"], "p50_us": s["p50_us"], "p95_us": s["p95_us"], "p99_us": s["p99_us"],
                     "max_us": s["max_us"],
                     "MiB_per_s": None if s["mb_per_modeled_s"] is None else round(s["mb_per_modeled_s"] / 1.048576,
                                                                                    1)})
    return rows


def run_vary(path: str, sets: Sequence[str], vary: Sequence[str], out: str | None,
             replay_one: Callable[[Config], ReplayResult]) -> tuple[str, Path]:
    """Replay each configuration; write CSV and PNG to ``out``; return the table and the folder."""
    runs: list[tuple[str, ReplayResult]] = []
    for label, config in configs(path, sets, parse_vary(vary)):
        print(f"replay: {label}", file=sys.stderr, flush=True)
        runs.append((label, replay_one(config)))
    rows = [row for label, result in runs for row in rows_of(label, result)]
    folder = results_dir("replay-vary", out)
    write_csv(folder / "replay-vary.csv", rows, COLUMNS)
    plot_cdfs(folder / "latency-cdf.png", runs)
    return format_table(rows, COLUMNS), folder


def plot_cdfs(path: Path, runs: list[tuple[str, ReplayResult]]) -> None:
    # Imported here: only --vary draws.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import numpy as np

    from blockemu.trace import OPS

    ops = [code for code, _ in enumerate(OPS) if any((r.ops == code).any() for _, r in runs)]
    fig, axes = plt.subplots(1, max(1, len(ops)), figsize=(5.5 * max(1, len(ops)), 4.2), squeeze=False)
    for ax, code in zip(axes[0], ops, strict=False):
        for label, result in runs:
            lat = np.sort(result.latencies_ns[result.ops == code]) / 1e3
            if len(lat):
                ax.step(lat, np.arange(1, len(lat) + 1) / len(lat), where="post", label=label)
        ax.set_xscale("log")
        # Labels at 1, 2 and 5 of each decade, in plain numbers; the default minor labels run into each other.
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(f"{OPS[code]} latency (µs, modeled)")
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.01)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Replay latency CDFs per configuration")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
