"""zram study: app launch under background load, per compression policy, sync vs async.

The page corpus is captured from this machine when the study runs, never
downloaded (:func:`capture_corpus`):

* anonymous memory of real processes: a few child Python processes, each
  building the kind of heap an app has (parsed records and strings, text,
  numeric arrays, already-compressed blobs), read through /proc/PID/maps,
  /proc/PID/pagemap (only resident pages) and /proc/PID/mem; and the study's
  own process;
* file pages of installed shared libraries under /usr/lib.

Workload (seeded, modeled time, the model driven directly so that runs repeat
exactly):

1. Every app's pages are swapped out (written in clusters of 8 pages, the
   kernel's default swap ``page-cluster`` of 3).
2. Each round, one app is launched: its launch set (a fixed share of its
   pages, in clusters) is read back one cluster at a time, each fault issued
   ``fault_gap_us`` after the previous one completed.  Meanwhile background
   apps keep swapping in and out (bursts of ``background_burst_clusters``
   clusters, Poisson arrivals every ``background_interval_us`` on average;
   each cluster is read, a quarter of its pages changed slightly, and written
   back), so their (de)compression competes with the launch's decompression
   for the CPUs.
3. After its launch the app goes to the background and its launch set is
   swapped out again; then the device idles for ``idle_gap_s`` (idle-page
   recompression for ``multi`` and ``heuristic`` happens here).

Per variant: launch latency p50/p95, background write latency p50/p95,
compression ratio, memory used, and CPU time (measured, and as modeled).
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from blockemu.config import config_from_mapping
from blockemu.devices.zram.codecs import PAGE, Codec, CodecError, CostModel, parse_cost_overrides
from blockemu.devices.zram.device import ZramDevice
from blockemu.experiments import report
from blockemu.stack import build
from blockemu.store import MemoryStore


@dataclass(frozen=True)
class Params:
    seed: int = 7
    # Apps and their swappable pages (4 KiB each).
    apps: int = 6
    pages_per_app: int = 2048
    # Share of an app's pages that are file pages of /usr/lib libraries.
    library_share: float = 0.2
    # Share of an app's pages its launch reads back.
    launch_fraction: float = 0.3
    rounds: int = 24
    cluster_pages: int = 8
    # CPU time the launching app spends between two faults.
    fault_gap_us: float = 20.0
    # Background reclaim during launches: bursts of this many clusters
    # (4 × 8 pages = SWAP_CLUSTER_MAX, what one reclaim pass writes), with
    # exponentially distributed gaps of this mean between bursts.
    background_burst_clusters: int = 4
    background_interval_us: float = 600.0
    idle_gap_s: float = 5.0
    idle_recompress_after_s: float = 2.0
    cpu_units: int = 2
    async_workers: int = 2
    staging_pages: int = 256
    # Child processes whose memory is captured (0: only this process).
    child_processes: int = 4


QUICK = Params(apps=4, pages_per_app=384, rounds=8, child_processes=2)

# Variant label → [zram] settings (on top of the shared ones).
VARIANTS: dict[str, dict[str, Any]] = {
    "single_lz4": {"policy": "single", "comp_algorithm": "lz4"},
    "single_zstd": {"policy": "single", "comp_algorithm": "zstd"},
    "multi": {"policy": "multi", "comp_algorithm": "lz4", "recomp_algorithms": "zstd"},
    "heuristic": {"policy": "heuristic", "comp_algorithm": "lz4", "recomp_algorithms": "zstd"},
    "single_lz4_async": {"policy": "single", "comp_algorithm": "lz4", "async": True},
    "single_zstd_async": {"policy": "single", "comp_algorithm": "zstd", "async": True},
    "heuristic_async": {"policy": "heuristic", "comp_algorithm": "lz4", "recomp_algorithms": "zstd",
                        "async": True},
}

# What each child process builds before its memory is read: the kinds of heap
# objects apps hold.  Run by the system's python with only the standard library.
APP_PROFILES = {
    "records": """
        import json, random
        random.seed(SEED)
        names = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
        keep = [{"id": i, "user": random.choice(names) + str(random.randrange(1000)),
                 "score": random.random() * 100, "tags": [random.choice(names) for _ in range(3)],
                 "text": " ".join(random.choice(names) for _ in range(12))} for i in range(40000)]
        blob = json.dumps(keep[:5000])
    """,
    "text": """
        import glob, random
        random.seed(SEED)
        files = sorted(glob.glob("/usr/lib/python3*/**/*.py", recursive=True))[:4000]
        keep = []
        for path in random.sample(files, min(600, len(files))):
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            keep.append(text)
            keep.append(text.split())
    """,
    "numeric": """
        import array, math, random
        random.seed(SEED)
        keep = [array.array("d", (math.sin(i / 50.0) + random.random() * 0.01 for i in range(200000))),
                array.array("i", (random.randrange(256) for _ in range(300000))),
                array.array("f", (float(i % 977) for i in range(200000))),
                [random.random() for _ in range(100000)]]
    """,
    "blobs": """
        import glob, gzip, random, zlib
        random.seed(SEED)
        keep = []
        for path in sorted(glob.glob("/usr/share/doc/*/changelog*.gz"))[:300]:
            with open(path, "rb") as f:
                keep.append(f.read())
        keep.append(zlib.compress(bytes(random.randrange(256) for _ in range(400000))))
        keep.append(bytes(random.randrange(256) for _ in range(500000)))
    """,
}


# ------------------------------------------------------------------ corpus
def _resident_anonymous_pages(pid: int, limit: int) -> list[bytes]:
    """Resident pages of a process's private anonymous mappings (heap, stack, anonymous)."""
    pages: list[bytes] = []
    with open(f"/proc/{pid}/maps") as maps_file:
        regions = []
        for line in maps_file:
            fields = line.split()
            perms = fields[1]
            name = fields[5] if len(fields) > 5 else ""
            if perms.startswith("rw") and perms.endswith("p") and name in ("", "[heap]", "[stack]"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                regions.append((start, end))
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for start, end in regions:
            count = (end - start) // PAGE
            pagemap.seek(start // PAGE * 8)
            entries = pagemap.read(count * 8)
            flags = struct.unpack(f"{len(entries) // 8}Q", entries)
            for i, flag in enumerate(flags):
                if not flag >> 63 & 1:  # bit 63: page present in RAM
                    continue
                try:
                    mem.seek(start + i * PAGE)
                    page = mem.read(PAGE)
                except OSError:
                    continue
                if len(page) == PAGE:
                    pages.append(page)
                    if len(pages) >= limit:
                        return pages
    return pages


def _library_pages(rng: np.random.Generator, count: int) -> list[bytes]:
    # The top two levels hold the system's shared libraries (/usr/lib/<triplet>/).
    candidates = [*Path("/usr/lib").glob("*.so*"), *Path("/usr/lib").glob("*/*.so*")]
    libraries = sorted(p for p in candidates if p.is_file() and not p.is_symlink())
    pages: list[bytes] = []
    if not libraries:
        return pages
    for index in rng.permutation(len(libraries)):
        path = libraries[int(index)]
        try:
            data = path.read_bytes()
        except OSError:
            continue
        usable = len(data) // PAGE
        if usable == 0:
            continue
        take = min(usable, max(1, count // 8), count - len(pages))
        first = int(rng.integers(0, usable - take + 1))
        pages.extend(data[(first + i) * PAGE : (first + i + 1) * PAGE] for i in range(take))
        if len(pages) >= count:
            break
    return pages


def capture_corpus(params: Params, progress: Callable[[str], None] = lambda _: None) -> list[list[bytes]]:
    """Per app, its pages: anonymous pages of a real process, then library file pages."""
    rng = np.random.default_rng(params.seed)
    anon_per_app = params.pages_per_app - int(params.pages_per_app * params.library_share)
    sources: list[list[bytes]] = []
    profiles = list(APP_PROFILES)
    children: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(params.child_processes):
            script = textwrap.dedent(APP_PROFILES[profiles[i % len(profiles)]]).replace("SEED", str(params.seed + i))
            script += "\nimport sys\nsys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.read()\n"
            children.append(subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE))
        for i, child in enumerate(children):
            assert child.stdout is not None
            if child.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"corpus child {i} ({profiles[i % len(profiles)]}) did not start")
            pages = _resident_anonymous_pages(child.pid, anon_per_app * params.apps)
            progress(f"captured {len(pages)} resident anonymous pages of child {child.pid} "
                     f"({profiles[i % len(profiles)]})")
            sources.append(pages)
    finally:
        for child in children:
            if child.stdin is not None:
                child.stdin.close()
            child.wait(timeout=30)
    own = _resident_anonymous_pages(os.getpid(), anon_per_app * params.apps)
    progress(f"captured {len(own)} resident anonymous pages of this process ({os.getpid()})")
    sources.append(own)
    pool = [page for source in sources for page in source]
    if len(pool) < anon_per_app * params.apps:
        raise RuntimeError(f"captured only {len(pool)} anonymous pages, need {anon_per_app * params.apps}")
    library = _library_pages(rng, params.pages_per_app * params.apps - anon_per_app * params.apps)
    progress(f"captured {len(library)} file pages of libraries under /usr/lib")
    # Each app takes a contiguous stretch of one source's memory (an app's heap
    # is its own), then its share of library pages.
    apps: list[list[bytes]] = []
    library_per_app = params.pages_per_app - anon_per_app
    for app in range(params.apps):
        source = sources[app % len(sources)]
        if len(source) < anon_per_app:
            source = pool
        first = int(rng.integers(0, len(source) - anon_per_app + 1))
        pages = list(source[first : first + anon_per_app])
        pages += library[app * library_per_app : (app + 1) * library_per_app]
        while len(pages) < params.pages_per_app:  # too few library pages: more anonymous ones
            pages.append(pool[int(rng.integers(0, len(pool)))])
        apps.append(pages)
    return apps


def corpus_summary(apps: list[list[bytes]]) -> dict[str, float]:
    pages = [p for app in apps for p in app]
    zero = sum(1 for p in pages if not any(p))
    codec = Codec("lz4")
    compressed = sum(min(len(codec.compress(p)), PAGE) for p in pages)
    return {"pages": len(pages), "zero_pages": zero, "lz4_ratio": len(pages) * PAGE / max(1, compressed)}


# -------------------------------------------------------------- workload
@dataclass
class VariantResult:
    variant: str
    launch_ms: list[float]
    write_us: list[float]
    orig_bytes: int
    compr_bytes: int
    mem_used_bytes: int
    mem_used_max_bytes: int
    cpu_compress_s: float
    cpu_decompress_s: float
    modeled_cpu_s: float
    recompressed_pages: int
    pages_by_algorithm: dict[str, int]


def _mutate(page: bytes, rng: np.random.Generator) -> bytes:
    """An app touched the page before it was swapped out again: a few words change."""
    data = bytearray(page)
    for offset in rng.integers(0, PAGE // 8, 4):
        data[int(offset) * 8 : int(offset) * 8 + 8] = rng.bytes(8)
    return bytes(data)


def run_variant(label: str, settings: dict[str, Any], apps: list[list[bytes]], params: Params,
                cost_us: str) -> VariantResult:
    rng = np.random.default_rng(params.seed)  # the same workload for every variant
    settings = dict(settings)
    asynchronous = settings.pop("async", False)
    capacity_pages = params.apps * params.pages_per_app
    capacity_mib = -(-capacity_pages * PAGE // 2**20)
    zram = {"cpu_units": params.cpu_units, "idle_recompress_after_s": params.idle_recompress_after_s,
            "cost_us": cost_us, "async_workers": params.async_workers if asynchronous else 0,
            "staging_pages": params.staging_pages, "recomp_algorithms": "", **settings}
    config = config_from_mapping({"device": {"type": "zram", "name": "zram_experiment", "capacity_mib": capacity_mib},
                                  "zram": zram}, f"<experiment {label}>")
    device = build(config, layers=(), store=MemoryStore(config.capacity_bytes)).get(ZramDevice)
    cluster = params.cluster_pages
    contents = [list(app) for app in apps]
    clusters_per_app = params.pages_per_app // cluster
    launch_clusters = [
        sorted(rng.choice(clusters_per_app, max(1, int(clusters_per_app * params.launch_fraction)), replace=False))
        for _ in apps
    ]
    write_us: list[float] = []
    launch_ms: list[float] = []
    now = 0

    def lba(app: int, cluster_index: int) -> int:
        return (app * params.pages_per_app + cluster_index * cluster) * PAGE

    def swap_out(app: int, cluster_index: int, at: int, record: bool) -> int:
        data = b"".join(contents[app][cluster_index * cluster : (cluster_index + 1) * cluster])
        done = device.write(lba(app, cluster_index), memoryview(data), False, at)
        if record:
            write_us.append((done - at) / 1000)
        # Asynchronous workers keep up with staging between requests, as threads would.
        while device.offload_pending():
            job = device.offload_take(at)
            if job is None:
                break
            job.run()
            device.offload_finish(job, at)
        return done

    # 1. Everything is swapped out once.
    for app in range(len(apps)):
        for cluster_index in range(clusters_per_app):
            now = max(now, swap_out(app, cluster_index, now, record=False))
    now += int(params.idle_gap_s * 1e9)
    buf = bytearray(cluster * PAGE)
    interval = int(params.background_interval_us * 1000)
    gap = int(params.fault_gap_us * 1000)
    for _ in range(params.rounds):
        foreground = int(rng.integers(0, len(apps)))
        background = [a for a in range(len(apps)) if a != foreground]
        start = now
        next_background = now
        issue = now
        for cluster_index in launch_clusters[foreground]:
            # Background swap-outs that arrive before this fault is issued go first.
            while next_background <= issue:
                app = background[int(rng.integers(0, len(background)))]
                first_victim = int(rng.integers(0, clusters_per_app - params.background_burst_clusters + 1))
                for victim in range(first_victim, first_victim + params.background_burst_clusters):
                    # A background app faults a cluster in, changes some of it, and
                    # reclaim swaps it out again.
                    back_in = device.read(lba(app, victim), memoryview(buf), next_background)
                    for i in range(victim * cluster, (victim + 1) * cluster):
                        if rng.random() < 0.25:
                            contents[app][i] = _mutate(contents[app][i], rng)
                    swap_out(app, victim, back_in, record=True)
                next_background += int(rng.exponential(interval)) + 1
            done = device.read(lba(foreground, int(cluster_index)), memoryview(buf), issue)
            expected = b"".join(contents[foreground][int(cluster_index) * cluster : (int(cluster_index) + 1) * cluster])
            if buf != expected:
                raise AssertionError(f"{label}: data read back differs from what was written")
            issue = done + gap
        launch_ms.append((issue - gap - start) / 1e6)
        now = issue
        # The app goes to the background: its working set is swapped out again.
        for cluster_index in launch_clusters[foreground]:
            now = max(now, swap_out(foreground, int(cluster_index), now, record=True))
        # Idle: background recompression (multi, heuristic) runs here.
        now += int(params.idle_gap_s * 1e9)
        while True:
            step_done = device.background_step(now)
            if step_done is None:
                break
            now = max(now, step_done)
    device.drain(now)
    stats = device.mm_stat_values()
    codecs = device.stats.codecs.values()
    return VariantResult(
        variant=label,
        launch_ms=launch_ms,
        write_us=write_us,
        orig_bytes=stats[0],
        compr_bytes=stats[1],
        mem_used_bytes=stats[2],
        mem_used_max_bytes=stats[4],
        cpu_compress_s=sum(c.compress_cpu_ns for c in codecs) / 1e9,
        cpu_decompress_s=sum(c.decompress_cpu_ns for c in codecs) / 1e9,
        modeled_cpu_s=sum(device.cpus.busy_ns) / 1e9,
        recompressed_pages=device.stats.recompressed_pages,
        pages_by_algorithm=device.pages_by_algorithm(),
    )


# ---------------------------------------------------------------- report
COLUMNS = ("variant", "launch_p50_ms", "launch_p95_ms", "write_p50_us", "write_p95_us", "compression_ratio",
           "mem_used_mib", "mem_used_max_mib", "cpu_compress_s", "cpu_decompress_s", "modeled_cpu_s",
           "recompressed_pages", "pages_by_algorithm")


def summarize(result: VariantResult) -> dict[str, Any]:
    return {
        "variant": result.variant,
        "launch_p50_ms": round(float(np.percentile(result.launch_ms, 50)), 3),
        "launch_p95_ms": round(float(np.percentile(result.launch_ms, 95)), 3),
        "write_p50_us": round(float(np.percentile(result.write_us, 50)), 2) if result.write_us else 0.0,
        "write_p95_us": round(float(np.percentile(result.write_us, 95)), 2) if result.write_us else 0.0,
        "compression_ratio": round(result.orig_bytes / max(1, result.compr_bytes), 3),
        "mem_used_mib": round(result.mem_used_bytes / 2**20, 3),
        "mem_used_max_mib": round(result.mem_used_max_bytes / 2**20, 3),
        "cpu_compress_s": round(result.cpu_compress_s, 4),
        "cpu_decompress_s": round(result.cpu_decompress_s, 4),
        "modeled_cpu_s": round(result.modeled_cpu_s, 4),
        "recompressed_pages": result.recompressed_pages,
        "pages_by_algorithm": " ".join(f"{k}={v}" for k, v in sorted(result.pages_by_algorithm.items())),
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    return report.format_table(rows, COLUMNS[:-1])


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["variant"] for r in rows]
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    axes[0].bar(x - 0.2, [r["launch_p50_ms"] for r in rows], 0.4, label="p50")
    axes[0].bar(x + 0.2, [r["launch_p95_ms"] for r in rows], 0.4, label="p95")
    axes[0].set_ylabel("launch latency (ms, modeled)")
    axes[1].bar(x - 0.2, [r["write_p50_us"] for r in rows], 0.4, label="p50")
    axes[1].bar(x + 0.2, [r["write_p95_us"] for r in rows], 0.4, label="p95")
    axes[1].set_ylabel("swap-out write latency (µs, modeled)")
    axes[2].bar(x, [r["mem_used_mib"] for r in rows], 0.6, color="tab:green")
    axes[2].set_ylabel("mem_used_total at end (MiB)")
    for ax in axes:
        ax.set_xticks(x, names, rotation=35, ha="right")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.suptitle("zram: app launch under background swap-out load")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def calibrated_costs(variants: dict[str, dict[str, Any]]) -> str:
    """One calibration for every variant, so that they are compared on the same cost model."""
    model = CostModel()
    for settings in variants.values():
        for name in [settings.get("comp_algorithm", "lz4"),
                     *filter(None, settings.get("recomp_algorithms", "").split(","))]:
            model.add(Codec(name))
    return model.as_text()


def run_experiment(out_dir: Path, params: Params, variants: dict[str, dict[str, Any]] | None = None,
                   apps: list[list[bytes]] | None = None,
                   progress: Callable[[str], None] = lambda _: None, cost_us: str = "") -> list[dict[str, Any]]:
    """Run every variant on one corpus; ``cost_us`` pins the cost model (else calibrated once, here)."""
    variants = VARIANTS if variants is None else variants
    out_dir.mkdir(parents=True, exist_ok=True)
    if apps is None:
        apps = capture_corpus(params, progress)
    summary = corpus_summary(apps)
    progress(f"corpus: {summary['pages']} pages, {summary['zero_pages']} zero, lz4 ratio {summary['lz4_ratio']:.2f}")
    cost_us = cost_us or calibrated_costs(variants)
    progress(f"cost model (µs per page, compress/decompress): {cost_us}")
    rows: list[dict[str, Any]] = []
    launches: list[dict[str, Any]] = []
    for label, settings in variants.items():
        started = time.monotonic()
        result = run_variant(label, settings, apps, params, cost_us)
        row = summarize(result)
        rows.append(row)
        launches += [{"variant": label, "launch": i, "latency_ms": round(v, 4)} for i, v in enumerate(result.launch_ms)]
        progress(f"{label}: launch p50 {row['launch_p50_ms']} ms, p95 {row['launch_p95_ms']} ms, "
                 f"mem {row['mem_used_mib']} MiB ({time.monotonic() - started:.1f} s)")
    report.write_csv(out_dir / "zram_results.csv", rows, COLUMNS)
    report.write_csv(out_dir / "zram_launches.csv", launches, ["variant", "launch", "latency_ms"])
    with open(out_dir / "zram_params.txt", "w") as f:
        for key, value in asdict(params).items():
            f.write(f"{key} = {value}\n")
        f.write(f"cost_us = {cost_us}\n")
        for key, value in summary.items():
            f.write(f"corpus_{key} = {value}\n")
    plot(rows, out_dir / "zram.png")
    return rows


def main(args: argparse.Namespace) -> int:
    params = QUICK if args.quick else Params()
    if args.cost_us:
        try:
            parse_cost_overrides(args.cost_us)
        except CodecError as err:
            print(f"blockemu: --cost-us {args.cost_us!r}: {err}", file=sys.stderr)
            return 2
    if args.seed is not None:
        params = replace(params, seed=args.seed)
    out_dir = report.results_dir("zram", args.out)

    def progress(message: str) -> None:
        print(f"[zram] {message}", file=sys.stderr, flush=True)

    rows = run_experiment(out_dir, params, progress=progress, cost_us=args.cost_us or "")
    print(format_table(rows))
    print(f"\nwrote {out_dir}/zram_results.csv, zram_launches.csv, zram_params.txt, zram.png")
    return 0
