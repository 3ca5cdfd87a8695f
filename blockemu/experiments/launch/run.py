"""One policy at one memory pressure: the switching sequence played on a fresh phone.

A *policy* names the zram configuration (``lz4``, ``zstd``, ``lz4hc``,
``multi``, ``heuristic``; ``_async`` for the device's asynchronous
compression; ``ariadne``, the hotness-aware reference of
:mod:`~blockemu.experiments.launch.ariadne`) and optionally a ZCACHE (``+zc_sync_zbud``,
``+zc_async_zsmalloc``, ``+zc_offload_zsmalloc``, any mode × allocator).

Each launch: the app's launch CPU (cold or warm, spread between its faults)
runs on the shared cores while the app touches its hot set (anonymous and
file pages, in an order fixed per app: relaunches touch the same data in the
same order).  A launch is *cold* when lmkd killed the app (or it never ran):
its anonymous hot set is allocated afresh and the cold CPU is paid.  Then
the app is used for ``use_s``: it touches a random share of its pages and
changes some of the anonymous ones, while zram's idle recompression may run.
The first ``apps`` launches (each app once) warm the phone up and are not
counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from blockemu.devices.zram.codecs import PAGE, Codec, CostModel, parse_cost_overrides
from blockemu.experiments.launch.ariadne import COLD_SETTINGS, HOT_SETTINGS, HotColdSwap
from blockemu.experiments.launch.cpu import Accelerator, Cpus
from blockemu.experiments.launch.memory import App, PhoneMemory
from blockemu.experiments.launch.params import LaunchParams
from blockemu.experiments.launch.storage import ZramSwap, build_ufs, build_zram
from blockemu.experiments.launch.workload import AppSizes, make_apps, switching_sequence
from blockemu.experiments.launch.zcache import ALLOCATORS, MODES, ZCache

# zram configurations by name ([zram] settings; Android ships lz4 as
# comp_algorithm and zstd as recomp_algorithm with multi-compression).
ZRAM_POLICIES: dict[str, dict[str, Any]] = {
    "lz4": {"policy": "single", "comp_algorithm": "lz4"},
    "zstd": {"policy": "single", "comp_algorithm": "zstd"},
    "lz4hc": {"policy": "single", "comp_algorithm": "lz4hc"},
    "multi": {"policy": "multi", "comp_algorithm": "lz4", "recomp_algorithms": "zstd"},
    "heuristic": {"policy": "heuristic", "comp_algorithm": "lz4", "recomp_algorithms": "zstd"},
}
SINGLE = ("lz4", "zstd", "lz4hc")
ZRAM_NAMES = (*ZRAM_POLICIES, "ariadne")

DEFAULT_POLICIES = ("lz4", "zstd", "lz4hc", "multi", "heuristic", "lz4_async", "zstd_async", "multi_async",
                    "heuristic_async", "lz4+zc_sync_zbud", "lz4+zc_sync_zsmalloc", "lz4+zc_async_zsmalloc",
                    "lz4+zc_offload_zsmalloc", "ariadne")
QUICK_POLICIES = ("lz4", "zstd", "lz4hc", "multi", "heuristic", "lz4_async", "multi_async", "lz4+zc_sync_zbud",
                  "lz4+zc_sync_zsmalloc", "lz4+zc_async_zsmalloc", "lz4+zc_offload_zsmalloc", "ariadne")


def all_policies() -> list[str]:
    """The whole cross: every zram configuration, sync and async, × ZCACHE off / sync zbud / async zsmalloc."""
    names = []
    for zcache in ("", "+zc_sync_zbud", "+zc_async_zsmalloc"):
        for zram in ZRAM_POLICIES:
            for suffix in ("", "_async"):
                names.append(f"{zram}{suffix}{zcache}")
    return names


@dataclass(frozen=True)
class Policy:
    name: str
    zram: str
    zram_async: bool
    zcache_mode: str | None = None
    zcache_allocator: str | None = None


class PolicyError(ValueError):
    pass


def parse_policy(name: str) -> Policy:
    """``multi_async+zc_async_zsmalloc`` → Policy; a one-line error naming what is allowed."""
    zram_part, plus, zcache_part = name.partition("+")
    base, _, suffix = zram_part.partition("_")
    if base not in ZRAM_NAMES or suffix not in ("", "async"):
        raise PolicyError(f"policy {name!r}: zram part must be one of {', '.join(ZRAM_NAMES)}, "
                          "optionally with _async")
    if not plus:
        return Policy(name, base, suffix == "async")
    words = zcache_part.split("_")
    if len(words) != 3 or words[0] != "zc" or words[1] not in MODES or words[2] not in ALLOCATORS:
        raise PolicyError(f"policy {name!r}: ZCACHE part must be zc_MODE_ALLOCATOR with MODE one of "
                          f"{', '.join(MODES)} and ALLOCATOR one of {', '.join(ALLOCATORS)}")
    return Policy(name, base, suffix == "async", words[1], words[2])


@dataclass
class LaunchRecord:
    app: int
    cold: bool
    launch_ms: float
    stall_ms: float


def _mutate(page: bytes, rng: np.random.Generator) -> bytes:
    """The app changed the page: a few 8-byte words get new values."""
    data = bytearray(page)
    for word in rng.integers(0, PAGE // 8, 4):
        data[int(word) * 8 : int(word) * 8 + 8] = rng.bytes(8)
    return bytes(data)


def _launch_order(app: App, rng: np.random.Generator) -> list[tuple[bool, int]]:
    """The hot set, anonymous and file pages interleaved, in one order per app (Ariadne's locality)."""
    order = [(True, i) for i in app.hot_anon] + [(False, i) for i in app.hot_file]
    return [order[int(k)] for k in rng.permutation(len(order))]


def build_memory(policy: Policy, params: LaunchParams, ram_pages: int, apps: list[App],
                 cost_us: str) -> tuple[PhoneMemory, ZramSwap | HotColdSwap, Cpus, Accelerator | None]:
    common = {"async_workers": params.zram_async_workers if policy.zram_async else 0,
              "staging_pages": params.zram_staging_pages,
              "idle_recompress_after_s": params.zram_idle_recompress_after_s}
    anon_pages = sum(len(a.anon) for a in apps)
    swap: ZramSwap | HotColdSwap
    if policy.zram == "ariadne":
        swap = HotColdSwap(build_zram(anon_pages, params.cpu_cores, {**HOT_SETTINGS, **common}, cost_us),
                           build_zram(anon_pages, params.cpu_cores, {**COLD_SETTINGS, **common}, cost_us))
    else:
        swap = ZramSwap(build_zram(anon_pages, params.cpu_cores, {**ZRAM_POLICIES[policy.zram], **common}, cost_us))
    cpus = Cpus(swap.devices[0].cpus)
    files = build_ufs(sum(len(a.files) for a in apps), params.ufs_fragmentation_percent, params.seed)
    zcache = None
    accelerator = None
    if policy.zcache_mode is not None and policy.zcache_allocator is not None:
        if policy.zcache_mode == "offload":
            accelerator = Accelerator(params.offload_setup_us, params.offload_dma_gbps,
                                      params.offload_throughput_gbps)
        codec = Codec(params.zcache_codec)
        costs = CostModel(parse_cost_overrides(cost_us))
        costs.add(codec)
        zcache = ZCache(codec, costs, ALLOCATORS[policy.zcache_allocator](), policy.zcache_mode, cpus,
                        max_pages=int(ram_pages * params.zcache_max_pool_percent / 100),
                        max_object_bytes=params.zcache_max_object_bytes, queue_pages=params.zcache_queue_pages,
                        accelerator=accelerator, workers=params.zcache_async_workers)
    return PhoneMemory(params, ram_pages, apps, swap, files, cpus, zcache), swap, cpus, accelerator


def run_policy(policy: Policy, params: LaunchParams, ram_fraction: float, sizes: AppSizes,
               anon: list[list[bytes]], files: list[list[bytes]], cost_us: str) -> tuple[dict[str, Any],
                                                                                         list[LaunchRecord]]:
    apps = make_apps(params, sizes, anon, files)
    ram_pages = max(1, round(sizes.total_pages * ram_fraction))
    memory, swap, cpus, _ = build_memory(policy, params, ram_pages, apps, cost_us)
    rng = np.random.default_rng(params.seed + 3)
    orders = [_launch_order(app, rng) for app in apps]
    sequence = switching_sequence(params)
    counters = memory.counters
    prefetching = policy.zram == "ariadne"
    records: list[LaunchRecord] = []
    zram_used: list[int] = []
    launch_stall_ns = 0
    t = 0
    baseline = _totals(memory, swap)
    for step, index in enumerate(sequence):
        app = apps[index]
        counted = step >= params.apps
        if step == params.apps:
            baseline = _totals(memory, swap)  # counters from here on: the warm-up is not counted
        start = t
        stall_before = counters.direct_stall_ns
        cold = not app.alive
        app.alive = True
        app.last_used_ns = t
        cpu_ms = params.cold_launch_cpu_ms if cold else params.warm_launch_cpu_ms
        order = orders[index]
        slice_ns = int(cpu_ms * 1e6 / params.scale / max(1, len(order)))
        app.launching = True
        app.touched_in_launch = set()
        # ariadne: a helper decompresses the pages the last launch used, in
        # that launch's order, keeping no further ahead than the app itself.
        prefetch = [i for is_anon, i in order if is_anon and i in app.last_launch_pages] if prefetching else []
        helper_t = t
        for is_anon, i in order:
            while prefetch and helper_t <= t:
                helper_t = memory.prefetch_anon(app, prefetch.pop(0), helper_t)
            t = cpus.run(t, slice_ns, "launch")
            t = memory.touch_anon(app, i, t) if is_anon else memory.touch_file(app, i, t)
        app.launching = False
        app.last_launch_pages = app.touched_in_launch
        stall = counters.direct_stall_ns - stall_before
        if counted:
            records.append(LaunchRecord(index, cold, (t - start) / 1e6, stall / 1e6))
            launch_stall_ns += stall
            zram_used.append(swap.mem_pages())
        app.last_used_ns = t
        # In use: the app touches more of its pages, spread over use_s.
        use_start = t
        use_end = t + int(params.use_s * 1e9)
        n_anon, n_file = len(app.anon), len(app.files)
        touches = rng.choice(n_anon + n_file, round((n_anon + n_file) * params.use_touch_fraction), replace=False)
        gap = int(params.use_s * 1e9 / (len(touches) + 1))
        for k, page in enumerate(touches):
            at = max(t, use_start + k * gap)
            page = int(page)
            if page < n_anon:
                dirty = _mutate(app.anon[page], rng) if rng.random() < params.dirty_fraction else None
                t = memory.touch_anon(app, page, at, dirty)
            else:
                t = memory.touch_file(app, page - n_anon, at)
        app.last_used_ns = t
        t = max(t, use_end)
        swap.recompress_idle(use_start, t)
        memory.advance(t)
    totals = _totals(memory, swap)
    counts = {key: value - baseline[key] for key, value in totals.items()}
    mm = swap.mm_stat_values()
    launch_ms = np.array([r.launch_ms for r in records])
    warm = [r.launch_ms for r in records if not r.cold]
    row: dict[str, Any] = {
        "policy": policy.name,
        "ram_fraction": ram_fraction,
        "ram_mib": round(ram_pages * PAGE / 2**20, 2),
        "launches": len(records),
        "launch_mean_ms": round(float(launch_ms.mean()), 4),
        "launch_p95_ms": round(float(np.percentile(launch_ms, 95)), 4),
        "warm_mean_ms": round(float(np.mean(warm)), 4) if warm else 0.0,
        "cold_fraction": round(sum(r.cold for r in records) / len(records), 4),
        "lmk_kills": counts["kills"],
        "launch_stall_ms": round(launch_stall_ns / 1e6, 4),
        "direct_stall_ms": round(counts["direct_stall_ns"] / 1e6, 4),
        "cpu_compress_s": round(counts["compress_ns"] / 1e9, 5),
        "cpu_decompress_s": round(counts["decompress_ns"] / 1e9, 5),
        "cpu_saved_by_offload_s": round(counts["offloaded_ns"] / 1e9, 5),
        "zram_mean_mib": round(float(np.mean(zram_used)) * PAGE / 2**20, 3) if zram_used else 0.0,
        "zram_ratio": round(mm[0] / mm[1], 3) if mm[1] else 0.0,
        **{key: counts[key] for key in COUNTED},
    }
    return row, records


COUNTED = ("swap_ins", "swap_outs", "kswapd_pages", "direct_pages", "throttle_waits", "file_reads_ufs",
           "zcache_hits", "zcache_dropped", "recompressed", "overcommits", "prefetched", "prefetch_waits")


def _totals(memory: PhoneMemory, swap: ZramSwap | HotColdSwap) -> dict[str, int]:
    """Cumulative counters of a run, so that the warm-up's share can be taken off."""
    counters = memory.counters
    codecs = [c for device in swap.devices for c in device.stats.codecs.values()]
    zcache = memory.zcache
    offloaded = zcache is not None and zcache.mode == "offload"
    return {
        **{key: getattr(counters, key) for key in COUNTED if hasattr(counters, key)},
        "kills": counters.kills,
        "direct_stall_ns": counters.direct_stall_ns,
        "compress_ns": sum(c.compress_modeled_ns for c in codecs) + (zcache.stats.compress_cpu_ns if zcache else 0),
        "decompress_ns": sum(c.decompress_modeled_ns for c in codecs)
        + (zcache.stats.decompress_cpu_ns if zcache else 0),
        # What the accelerator's compressions would have cost on a core.
        "offloaded_ns": zcache.stats.puts * zcache.compress_ns if zcache is not None and offloaded else 0,
        "zcache_dropped": zcache.stats.rejected + zcache.stats.queue_full + zcache.stats.evicted if zcache else 0,
        "recompressed": sum(device.stats.recompressed_pages for device in swap.devices),
    }
