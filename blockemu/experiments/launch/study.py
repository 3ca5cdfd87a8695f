"""``blockemu experiment launch``: policies × memory pressure, CSV + PNG + table + what they show.

The corpus is captured once (the zram study's capture), the cost model is
calibrated once (or pinned with ``--cost-us``), and every policy runs the
same seeded switching sequence at every RAM budget.  Results:

* ``launch_results.csv``: one row per (policy, RAM fraction) with launch
  time mean/p95, cold-launch fraction, lmkd kills, direct-reclaim stall on
  the launching thread, CPU seconds (de)compressing, zram memory and the
  counters behind them;
* ``launch_launches.csv``: every counted launch;
* ``launch.png``: mean launch time vs RAM fraction, one line per policy;
* ``launch_params.txt``: every assumption, the cost model and the corpus;
* ``launch_findings.txt``: the two questions of the study answered from the
  rows (multi-algorithm vs the best single algorithm; async vs sync).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from blockemu.devices.zram.codecs import CodecError, parse_cost_overrides
from blockemu.experiments import report, zram
from blockemu.experiments.launch.ariadne import COLD_SETTINGS, HOT_SETTINGS
from blockemu.experiments.launch.params import QUICK, LaunchParams, ParamError, apply_overrides, assumptions, check
from blockemu.experiments.launch.run import (
    DEFAULT_POLICIES,
    QUICK_POLICIES,
    SINGLE,
    ZRAM_POLICIES,
    PolicyError,
    all_policies,
    parse_policy,
    run_policy,
)
from blockemu.experiments.launch.workload import app_sizes, corpus_shape, split_corpus

COLUMNS = ("policy", "ram_fraction", "ram_mib", "launches", "launch_mean_ms", "launch_p95_ms", "warm_mean_ms",
           "cold_fraction", "lmk_kills", "launch_stall_ms", "direct_stall_ms", "cpu_compress_s",
           "cpu_decompress_s", "cpu_saved_by_offload_s", "zram_mean_mib", "zram_ratio", "swap_ins", "swap_outs",
           "kswapd_pages", "direct_pages", "throttle_waits", "file_reads_ufs", "zcache_hits", "zcache_dropped",
           "recompressed", "overcommits", "prefetched", "prefetch_waits")
TABLE = ("policy", "ram_fraction", "launch_mean_ms", "launch_p95_ms", "cold_fraction", "lmk_kills",
         "launch_stall_ms", "cpu_compress_s", "cpu_decompress_s", "zram_mean_mib", "zram_ratio")

# Thresholds of the questions the study answers (issue 19's "done when").
MULTI_GAIN_PERCENT = 2.0
ASYNC_GAIN_PERCENT = 10.0


def _gain(base: float, other: float) -> float:
    """How much faster ``other`` is than ``base``, in % of ``base``."""
    return (base - other) / base * 100 if base else 0.0


def findings(rows: list[dict[str, Any]]) -> list[str]:
    """The study's two questions, answered per RAM fraction, with the counters that explain each answer."""
    by_key = {(r["policy"], r["ram_fraction"]): r for r in rows}
    fractions = sorted({r["ram_fraction"] for r in rows})
    lines: list[str] = []

    def counters(row: dict[str, Any]) -> str:
        # The share of launch time spent stalled in reclaim bounds what taking
        # compression off the launching thread can gain.
        total_ms = row["launch_mean_ms"] * max(1, row.get("launches", 1))
        share = row["launch_stall_ms"] / total_ms * 100 if total_ms else 0.0
        return (f"stall {share:.1f}% of launch time, kills {row['lmk_kills']}, cold {row['cold_fraction']:.2f}, "
                f"swap-ins {row['swap_ins']}, "
                f"UFS reads {row['file_reads_ufs']}, ZCACHE hits {row['zcache_hits']}, "
                f"zram {row['zram_mean_mib']:.2f} MiB ratio {row['zram_ratio']}, "
                f"decompress {row['cpu_decompress_s']:.3f} s")

    for candidate in ("multi", "heuristic"):
        for fraction in fractions:
            singles = [by_key[(s, fraction)] for s in SINGLE if (s, fraction) in by_key]
            row = by_key.get((candidate, fraction))
            if row is None or not singles:
                continue
            best = min(singles, key=lambda r: r["launch_mean_ms"])
            gain = _gain(best["launch_mean_ms"], row["launch_mean_ms"])
            verdict = "YES" if gain >= MULTI_GAIN_PERCENT else "no"
            lines.append(f"[{verdict}] ram {fraction}: {candidate} {row['launch_mean_ms']:.3f} ms vs best single "
                         f"{best['policy']} {best['launch_mean_ms']:.3f} ms: {gain:+.1f}% "
                         f"(>= {MULTI_GAIN_PERCENT}% wanted)\n      {candidate}: {counters(row)}\n"
                         f"      {best['policy']}: {counters(best)}")
    for (name, fraction), row in sorted(by_key.items()):
        for sync_name in _sync_counterparts(name):
            if (sync_name, fraction) not in by_key:
                continue
            base = by_key[(sync_name, fraction)]
            gain = _gain(base["launch_mean_ms"], row["launch_mean_ms"])
            stalls = base["launch_stall_ms"] > 0
            verdict = "YES" if gain >= ASYNC_GAIN_PERCENT else "no"
            lines.append(f"[{verdict}] ram {fraction}: {name} {row['launch_mean_ms']:.3f} ms vs {sync_name} "
                         f"{base['launch_mean_ms']:.3f} ms: {gain:+.1f}% (>= {ASYNC_GAIN_PERCENT}% wanted"
                         f"{'' if stalls else '; reclaim never stalled a launch here'})\n"
                         f"      {name}: {counters(row)}\n      {sync_name}: {counters(base)}")
    return lines


def _sync_counterparts(name: str) -> list[str]:
    """The policies that differ from ``name`` only in one asynchronous part made synchronous."""
    zram_part, plus, zcache_part = name.partition("+")
    found = []
    if zram_part.endswith("_async"):
        found.append(zram_part.removesuffix("_async") + plus + zcache_part)
    if zcache_part.startswith("zc_async_"):
        found.append(zram_part + plus + zcache_part.replace("zc_async_", "zc_sync_", 1))
    return found


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = list(dict.fromkeys(r["policy"] for r in rows))
    colors = [plt.get_cmap("tab20")(i) for i in range(20)]
    markers = "os^vDP*Xh<>p8d"
    baseline = {r["ram_fraction"]: r["launch_mean_ms"] for r in rows if r["policy"] == "lz4"}
    fig, axes = plt.subplots(1, 3, figsize=(20, 5.8))
    for k, policy in enumerate(policies):
        mine = sorted((r for r in rows if r["policy"] == policy), key=lambda r: r["ram_fraction"])
        x = [r["ram_fraction"] for r in mine]
        style = {"linestyle": "--" if "async" in policy or "offload" in policy else "-",
                 "marker": markers[k % len(markers)], "color": colors[k % len(colors)], "label": policy}
        axes[0].plot(x, [r["launch_mean_ms"] for r in mine], **style)
        axes[1].plot(x, [r["launch_p95_ms"] for r in mine], **style)
        if baseline:
            relative = [(r["launch_mean_ms"] / baseline[r["ram_fraction"]] - 1) * 100 for r in mine
                        if baseline.get(r["ram_fraction"])]
            axes[2].plot([r["ram_fraction"] for r in mine if baseline.get(r["ram_fraction"])], relative, **style)
    axes[0].set_ylabel("mean launch time (ms, modeled at model scale)")
    axes[1].set_ylabel("p95 launch time (ms, modeled at model scale)")
    axes[2].set_ylabel("mean launch time vs lz4 at the same RAM (%)")
    for ax in axes:
        ax.set_xlabel("RAM budget / total working set (less = more pressure)")
        ax.grid(alpha=0.3)
    axes[2].axhline(0, color="black", linewidth=0.8)
    axes[0].legend(fontsize=8, ncol=2)
    fig.suptitle("App launch time vs memory pressure, per zram / ZCACHE policy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def capture(params: LaunchParams, progress: Callable[[str], None]) -> tuple[list[list[bytes]], list[list[bytes]]]:
    sizes = app_sizes(params)
    per_app, share = corpus_shape(sizes)
    corpus_params = zram.Params(seed=params.seed, apps=params.apps, pages_per_app=per_app, library_share=share,
                                child_processes=min(4, params.apps))
    corpus = zram.capture_corpus(corpus_params, progress)
    summary = zram.corpus_summary(corpus)
    progress(f"corpus: {summary['pages']} pages, {summary['zero_pages']} zero, lz4 ratio {summary['lz4_ratio']:.2f}")
    return split_corpus(corpus, per_app - int(per_app * share))


def run_experiment(out_dir: Path, params: LaunchParams, policies: list[str], cost_us: str = "",
                   corpus: tuple[list[list[bytes]], list[list[bytes]]] | None = None,
                   progress: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    parsed = [parse_policy(name) for name in policies]
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = app_sizes(params)
    anon, files = corpus if corpus is not None else capture(params, progress)
    if not cost_us:
        codecs = {"zram": {"comp_algorithm": params.zcache_codec}}
        codecs.update({name: ZRAM_POLICIES[name] for name in {p.zram for p in parsed} if name in ZRAM_POLICIES})
        codecs.update(ariadne_hot=HOT_SETTINGS, ariadne_cold=COLD_SETTINGS)
        cost_us = zram.calibrated_costs(codecs)
    progress(f"cost model (µs per page, compress/decompress): {cost_us}")
    fractions = params.ram_fraction_list()
    rows: list[dict[str, Any]] = []
    launches: list[dict[str, Any]] = []
    total = len(parsed) * len(fractions)
    for fraction in fractions:
        for policy in parsed:
            started = time.monotonic()
            row, records = run_policy(policy, params, fraction, sizes, anon, files, cost_us)
            rows.append(row)
            launches += [{"policy": policy.name, "ram_fraction": fraction, "launch": i, "app": r.app,
                          "cold": int(r.cold), "launch_ms": round(r.launch_ms, 4), "stall_ms": round(r.stall_ms, 4)}
                         for i, r in enumerate(records)]
            progress(f"[{len(rows)}/{total}] ram {fraction} {policy.name}: mean {row['launch_mean_ms']} ms, "
                     f"p95 {row['launch_p95_ms']} ms, kills {row['lmk_kills']} "
                     f"({time.monotonic() - started:.1f} s)")
    report.write_csv(out_dir / "launch_results.csv", rows, COLUMNS)
    report.write_csv(out_dir / "launch_launches.csv", launches)
    with open(out_dir / "launch_params.txt", "w") as f:
        f.write(assumptions(params) + f"\ncost_us = {cost_us}\npolicies = {','.join(policies)}\n")
        f.write(f"app_anon_pages = {sizes.anon_pages}\napp_file_pages = {sizes.file_pages}\n")
    with open(out_dir / "launch_findings.txt", "w") as f:
        f.write("\n".join(findings(rows)) + "\n")
    plot(rows, out_dir / "launch.png")
    return rows


def main(args: argparse.Namespace) -> int:
    params = QUICK if args.quick else LaunchParams()
    try:
        if args.seed is not None:
            params = replace(params, seed=args.seed)
        params = apply_overrides(params, list(args.set or []))
        check(params)
        if args.policies == "all":
            policies = all_policies()
        elif args.policies:
            policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        else:
            policies = list(QUICK_POLICIES if args.quick else DEFAULT_POLICIES)
        for name in policies:
            parse_policy(name)
        if args.cost_us:
            parse_cost_overrides(args.cost_us)
    except (ParamError, PolicyError, CodecError) as err:
        print(f"blockemu experiment launch: {err}", file=sys.stderr)
        return 2
    out_dir = report.results_dir("launch", args.out)

    def progress(message: str) -> None:
        print(f"[launch] {message}", file=sys.stderr, flush=True)

    print("Assumptions (override with --set NAME=VALUE; sources in blockemu/experiments/launch/params.py):")
    print("  " + assumptions(params).replace("\n", "\n  "))
    rows = run_experiment(out_dir, params, policies, args.cost_us or "", progress=progress)
    print()
    print(report.format_table(rows, TABLE))
    print(f"\nFindings (launch times are modeled, at model scale 1/{params.scale}):")
    print("\n".join(findings(rows)))
    print(f"\nwrote {out_dir}/launch_results.csv, launch_launches.csv, launch_params.txt, launch_findings.txt, "
          "launch.png")
    return 0
