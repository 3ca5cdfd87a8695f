"""GC study: the zoned log's victim policies × copy methods under overwrite workloads.

Setup (all in :class:`Params`; modeled time, the models driven directly so
runs repeat exactly for a seed):

* A ZNS device of ``zones`` zones of 1 MiB (256 blocks of 4 KiB), under the
  host-side zoned log (:mod:`blockemu.devices.zns_log`) exporting
  ``100 - overprovision_percent`` % of the zones' capacity: the utilisation.
* The log is filled sequentially, then the measured phase issues
  ``overwrite_factor`` × (exported blocks) random 4 KiB overwrites, mixed with
  4 KiB reads (``read_fraction`` of the requests), one request every
  ``interarrival_us`` of modeled time.  Targets are ``uniform`` over the
  exported blocks or ``zipf`` (bounded Zipf with exponent ``zipf_theta``
  over a random permutation of the blocks, YCSB's skew).
* Between requests, background GC works as the runtime's background thread
  would: one step at a time, each starting when the previous one finished;
  a write that finds free zones at the reserve collects in the foreground.

Measured over the overwrite phase: write amplification, bytes GC moved over
the host link, modeled GC time, host read latency percentiles for reads
that arrived while GC was working, write latency p99, and a check that
every block reads back as last written.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from blockemu.config import COPY_METHODS, GC_POLICIES, config_from_mapping
from blockemu.devices.zns_log.device import ZnsFtlDevice
from blockemu.devices.zns_log.log import BLOCK
from blockemu.experiments import report
from blockemu.stack import build
from blockemu.store import MemoryStore

WORKLOADS = ("uniform", "zipf")


@dataclass(frozen=True)
class Params:
    seed: int = 11
    # Device: zones of 1 MiB; a ZN540-like 14 open / 14 active.  Enough
    # zones that the few a policy keeps open cost little of the spare space,
    # as on real devices with thousands of zones.
    zones: int = 128
    parallel_units: int = 8
    max_open_zones: int = 14
    # 20 % of the zone capacity kept back: 80 % utilisation.
    overprovision_percent: float = 20.0
    gc_start_free_zones: int = 4
    gc_reserve_free_zones: int = 1
    gc_step_blocks: int = 64
    hot_window_percent: float = 25.0
    # A zone reset erases the flash behind the zone.  The default 3 ms is for
    # a 64 MiB zone; these zones are 64 times smaller, so is their erase.
    zone_reset_us: float = 50.0
    # Workload.
    overwrite_factor: float = 3.0
    read_fraction: float = 0.25
    interarrival_us: float = 40.0
    zipf_theta: float = 0.99


QUICK = replace(Params(), zones=48, overwrite_factor=1.5, gc_start_free_zones=3)


@dataclass
class RunResult:
    workload: str
    gc_policy: str
    copy_method: str
    host_blocks: int
    relocated_blocks: int
    gc_link_bytes: int
    gc_busy_ns: int
    zones_collected: int
    foreground_collections: int
    reads_during_gc_us: list[float]
    reads_us: list[float]
    writes_us: list[float]
    verified_blocks: int
    wall_s: float

    @property
    def write_amplification(self) -> float:
        return (self.host_blocks + self.relocated_blocks) / self.host_blocks if self.host_blocks else 1.0


def build_device(params: Params, gc_policy: str, copy_method: str) -> ZnsFtlDevice:
    raw = {
        "device": {"type": "zns_ftl", "name": "gc_study", "capacity_mib": params.zones},
        "zns": {"zone_size_mib": 1, "max_open_zones": params.max_open_zones,
                "max_active_zones": params.max_open_zones, "parallel_units": params.parallel_units,
                "zone_reset_us": params.zone_reset_us},
        "zns_ftl": {"gc_policy": gc_policy, "copy_method": copy_method,
                    "overprovision_percent": params.overprovision_percent,
                    "gc_start_free_zones": params.gc_start_free_zones,
                    "gc_reserve_free_zones": params.gc_reserve_free_zones,
                    "gc_step_blocks": params.gc_step_blocks, "hot_window_percent": params.hot_window_percent},
    }
    config = config_from_mapping(raw, "<gc experiment>")
    return build(config, layers=(), store=MemoryStore(config.capacity_bytes)).get(ZnsFtlDevice)


def zipf_sampler(blocks: int, theta: float, rng: np.random.Generator) -> Callable[[int], np.ndarray]:
    """Bounded Zipf over ``blocks`` ranks, ranks scattered over the LBAs by a fixed permutation."""
    weights = 1.0 / np.arange(1, blocks + 1, dtype=np.float64) ** theta
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    lba_of_rank = rng.permutation(blocks)

    def sample(count: int) -> np.ndarray:
        ranks = np.minimum(np.searchsorted(cdf, rng.random(count)), blocks - 1)
        return np.asarray(lba_of_rank[ranks], dtype=np.int64)

    return sample


def workload(name: str, blocks: int, requests: int, params: Params,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(is_read, lba) per request."""
    if name == "uniform":
        lbas = rng.integers(0, blocks, requests, dtype=np.int64)
    elif name == "zipf":
        lbas = zipf_sampler(blocks, params.zipf_theta, rng)(requests)
    else:
        raise ValueError(f"unknown workload {name!r}; allowed: {', '.join(WORKLOADS)}")
    return rng.random(requests) < params.read_fraction, lbas


def stamp(lba: int, version: int) -> bytes:
    """Block contents that say which block and which write they are."""
    return (lba.to_bytes(4, "little") + version.to_bytes(4, "little")) * (BLOCK // 8)


def run_one(workload_name: str, gc_policy: str, copy_method: str, params: Params) -> RunResult:
    started = time.monotonic()
    dev = build_device(params, gc_policy, copy_method)
    log = dev.log
    blocks = dev.size_bytes // BLOCK
    versions = np.zeros(blocks, dtype=np.int64)
    # Fill sequentially (the same for every variant), 64 blocks per write.
    now = 0
    fill = 64
    for first in range(0, blocks, fill):
        count = min(fill, blocks - first)
        payload = b"".join(stamp(lba, 1) for lba in range(first, first + count))
        now = dev.write(first * BLOCK, memoryview(payload), False, now)
    versions[:] = 1
    now = max(now, dev.zns.units.idle_at(), dev.zns.link.idle_at())
    base = (log.host_blocks_written, log.gc_blocks_relocated, log.gc_link_bytes, log.gc_busy_ns,
            log.zones_collected, log.foreground_collections)

    requests = int(blocks * params.overwrite_factor / (1 - params.read_fraction))
    rng = np.random.default_rng([params.seed, WORKLOADS.index(workload_name)])
    is_read, lbas = workload(workload_name, blocks, requests, params, rng)
    interarrival = int(params.interarrival_us * 1000)
    reads_during_gc: list[float] = []
    reads: list[float] = []
    writes: list[float] = []
    background_free_at = now
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    for i in range(requests):
        arrival = now + i * interarrival
        # The background worker: one step at a time while it has work.
        while background_free_at < arrival:
            done = dev.background_step(background_free_at)
            if done is None:
                background_free_at = arrival
                break
            background_free_at = done
        lba = int(lbas[i])
        if is_read[i]:
            during_gc = log.gc_active
            latency_us = (dev.read(lba * BLOCK, view, arrival) - arrival) / 1000
            if buf[:8] != stamp(lba, int(versions[lba]))[:8]:
                raise AssertionError(f"block {lba} read back wrong during the run")
            reads.append(latency_us)
            if during_gc:
                reads_during_gc.append(latency_us)
        else:
            versions[lba] += 1
            done = dev.write(lba * BLOCK, memoryview(stamp(lba, int(versions[lba]))), False, arrival)
            writes.append((done - arrival) / 1000)
    verified = verify(dev, versions)
    result = RunResult(
        workload=workload_name,
        gc_policy=gc_policy,
        copy_method=copy_method,
        host_blocks=log.host_blocks_written - base[0],
        relocated_blocks=log.gc_blocks_relocated - base[1],
        gc_link_bytes=log.gc_link_bytes - base[2],
        gc_busy_ns=log.gc_busy_ns - base[3],
        zones_collected=log.zones_collected - base[4],
        foreground_collections=log.foreground_collections - base[5],
        reads_during_gc_us=reads_during_gc,
        reads_us=reads,
        writes_us=writes,
        verified_blocks=verified,
        wall_s=time.monotonic() - started,
    )
    dev.close()
    return result


def verify(dev: ZnsFtlDevice, versions: np.ndarray) -> int:
    """Read every block back through the log; it must hold its last write."""
    chunk = 256
    blocks = len(versions)
    buf = bytearray(chunk * BLOCK)
    for first in range(0, blocks, chunk):
        count = min(chunk, blocks - first)
        view = memoryview(buf)[: count * BLOCK]
        dev.read(first * BLOCK, view, 0)
        expected = b"".join(stamp(lba, int(versions[lba])) for lba in range(first, first + count))
        if view != expected:
            bad = next(k for k in range(count) if view[k * BLOCK : (k + 1) * BLOCK] != expected[k * BLOCK :
                                                                                              (k + 1) * BLOCK])
            raise AssertionError(f"block {first + bad} does not read back as last written")
    return blocks


# ---------------------------------------------------------------- report
COLUMNS = ("workload", "gc_policy", "copy_method", "write_amplification", "gc_link_mib", "gc_busy_s",
           "zones_collected", "foreground_collections", "read_gc_p50_us", "read_gc_p99_us", "read_gc_p999_us",
           "reads_during_gc", "read_p99_us", "write_p99_us", "verified_blocks", "wall_s")


def _percentile(values: Sequence[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else 0.0


def summarize(result: RunResult) -> dict[str, Any]:
    return {
        "workload": result.workload,
        "gc_policy": result.gc_policy,
        "copy_method": result.copy_method,
        "write_amplification": round(result.write_amplification, 3),
        "gc_link_mib": round(result.gc_link_bytes / 2**20, 3),
        "gc_busy_s": round(result.gc_busy_ns / 1e9, 4),
        "zones_collected": result.zones_collected,
        "foreground_collections": result.foreground_collections,
        "read_gc_p50_us": _percentile(result.reads_during_gc_us, 50),
        "read_gc_p99_us": _percentile(result.reads_during_gc_us, 99),
        "read_gc_p999_us": _percentile(result.reads_during_gc_us, 99.9),
        "reads_during_gc": len(result.reads_during_gc_us),
        "read_p99_us": _percentile(result.reads_us, 99),
        "write_p99_us": _percentile(result.writes_us, 99),
        "verified_blocks": result.verified_blocks,
        "wall_s": round(result.wall_s, 1),
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    return report.format_table(rows, COLUMNS[:-2])


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(w, p) for w in dict.fromkeys(r["workload"] for r in rows)
              for p in dict.fromkeys(r["gc_policy"] for r in rows)]
    methods = list(dict.fromkeys(r["copy_method"] for r in rows))
    by_key = {(r["workload"], r["gc_policy"], r["copy_method"]): r for r in rows}
    x = np.arange(len(groups))
    width = 0.8 / len(methods)
    panels = [
        ("write_amplification", "write amplification"),
        ("gc_link_mib", "bytes GC moved over the host link (MiB, log)"),
        ("gc_busy_s", "modeled GC time (s)"),
        ("read_gc_p99_us", "read latency during GC, p99 (µs)"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(15, 9))
    for ax, (key, label) in zip(axes.flat, panels, strict=True):
        for k, method in enumerate(methods):
            values = [by_key[(w, p, method)][key] if (w, p, method) in by_key else 0 for w, p in groups]
            ax.bar(x + (k - (len(methods) - 1) / 2) * width, values, width, label=method)
        if key == "read_gc_p99_us":
            for k, method in enumerate(methods):
                p50 = [by_key[(w, p, method)]["read_gc_p50_us"] if (w, p, method) in by_key else 0
                       for w, p in groups]
                ax.scatter(x + (k - (len(methods) - 1) / 2) * width, p50, color="black", marker="_", s=120,
                           zorder=3, label="p50" if k == 0 else None)
        if key == "write_amplification":
            ax.axhline(1.0, color="gray", lw=0.8)
        if key == "gc_link_mib":
            ax.set_yscale("log")  # Simple Copy's descriptors are ~1000× smaller than the data
        ax.set_ylabel(label)
        ax.set_xticks(x, [f"{w}\n{p}" for w, p in groups])
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="center right" if key == "gc_link_mib" else "best")
    fig.suptitle("Zoned log GC: victim policy × copy method (modeled time)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_experiment(out_dir: Path, params: Params, workloads: Sequence[str] = WORKLOADS,
                   policies: Sequence[str] = GC_POLICIES, methods: Sequence[str] = COPY_METHODS,
                   progress: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    total = len(workloads) * len(policies) * len(methods)
    for name in workloads:
        for policy in policies:
            for method in methods:
                result = run_one(name, policy, method, params)
                row = summarize(result)
                rows.append(row)
                progress(f"[{len(rows)}/{total}] {name} {policy} {method}: WA {row['write_amplification']}, "
                         f"GC link {row['gc_link_mib']} MiB, GC {row['gc_busy_s']} s, read p99 during GC "
                         f"{row['read_gc_p99_us']} µs ({row['wall_s']} s)")
    report.write_csv(out_dir / "gc_results.csv", rows, COLUMNS)
    with open(out_dir / "gc_params.txt", "w") as f:
        for key, value in asdict(params).items():
            f.write(f"{key} = {value}\n")
    plot(rows, out_dir / "gc.png")
    return rows


def main(args: argparse.Namespace) -> int:
    params = QUICK if args.quick else Params()
    if args.seed is not None:
        params = replace(params, seed=args.seed)
    out_dir = report.results_dir("gc", args.out)

    def progress(message: str) -> None:
        print(f"[gc] {message}", file=sys.stderr, flush=True)

    progress(f"{params.zones} zones of 1 MiB, utilisation {100 - params.overprovision_percent:g} %, "
             f"{params.overwrite_factor:g}× overwrites, {params.read_fraction:.0%} reads, seed {params.seed}")
    rows = run_experiment(out_dir, params, progress=progress)
    print(format_table(rows))
    print(f"\nwrote {out_dir}/gc_results.csv, gc_params.txt, gc.png")
    return 0
