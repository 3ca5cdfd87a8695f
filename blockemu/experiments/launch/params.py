"""Every parameter of the launch study, with its default's source, and how to override it.

Sizes are a phone's divided by ``scale`` (so that real codecs on real page
contents run in minutes, not hours), and so are the CPU times that do not
come from page work (launch CPU): proportions between RAM, apps, zram and
launch work stay a phone's.  Page-level costs (codec speeds, UFS latencies)
are not scaled: they are per page.  Modeled launch times are therefore a
phone's divided by ``scale``; the study prints them as modeled at this scale.

Where no published value exists, the default is marked *assumption*.
"""

from __future__ import annotations

import inspect
import math
import typing
from dataclasses import dataclass, fields, replace

PAGE_KIB = 4


@dataclass(frozen=True)
class LaunchParams:
    # Seeds app sizes, hot sets, the switching sequence and the corpus capture.
    seed: int = 7
    # Phone sizes divided by this; 64 turns an 8 GiB phone into 128 MiB.
    scale: int = 64
    # The phone's RAM, used only for the watermark formulas (kernel mm/page_alloc.c
    # works on managed memory).  Pixel 7 (Ariadne's platform): 8 GiB.
    phone_ram_gib: float = 8.0
    # ---- apps and the switching sequence
    # Apps the user switches between.  Assumption: a dozen recently used apps.
    apps: int = 12
    # Mean anonymous / file-backed memory per app at phone scale (MiB), each
    # app drawn uniformly within ±size_spread of it.  Assumption: social,
    # browser and game apps hold 100s of MB of anonymous memory (Ariadne §2
    # motivates zram with such apps); file pages are code and resources.
    app_anon_mib: float = 160.0
    app_file_mib: float = 80.0
    size_spread: float = 0.5
    # Popularity: app k (0-based, by rank) is launched with weight 1/(k+1)^s.
    # Assumption: Zipf-like app usage, s = 1.
    zipf_s: float = 1.0
    # Counted launches, after a warm-up that launches every app once.
    launches: int = 100
    # Share of an app's anonymous / file pages a launch touches (its hot set;
    # Ariadne observation 1: the hot data is similar between relaunches).
    hot_anon_fraction: float = 0.3
    hot_file_fraction: float = 0.5
    # Pages touched while the app is in the foreground (besides the hot set),
    # as a share of all its pages, and the share of touched anonymous pages
    # that are changed.  Assumption.
    use_touch_fraction: float = 0.2
    dirty_fraction: float = 0.25
    # Time in the foreground after a launch (phone time, not scaled: it is
    # what lets zram's idle recompression run).  Assumption: 20 s.
    use_s: float = 20.0
    # ---- CPU
    # Cores that run reclaim, (de)compression and the launching thread.
    # Pixel 7 (Tensor G2): 8 cores (2+2+4).
    cpu_cores: int = 8
    # CPU a launch needs besides page faults, phone scale (ms).  Android vitals
    # calls cold starts of 5 s and warm starts of 2 s excessive; typical
    # apps start cold in ~1 s and warm in a few hundred ms (assumption
    # within those bounds).
    cold_launch_cpu_ms: float = 800.0
    warm_launch_cpu_ms: float = 200.0
    # Kernel work per page fault besides (de)compression and I/O (µs; not
    # scaled).  Assumption: a minor fault costs ~1 µs on a phone core.
    fault_us: float = 1.0
    # ---- memory: RAM budget and reclaim
    # RAM budget as a fraction of all apps' pages; the sweep varies it.
    ram_fractions: str = "0.35,0.45,0.55,0.7,0.9"
    # vm.min_free_kbytes at phone scale; 0 = the kernel's formula
    # int_sqrt(lowmem_kbytes * 16), clamped to [128, 262144] (mm/page_alloc.c).
    min_free_kbytes: int = 0
    # vm.watermark_scale_factor: kernel default 10 (0.1% of memory between
    # min, low and high); AOSP devices ship 10 too.
    watermark_scale_factor: int = 10
    # vm.swappiness: AOSP init.rc writes 100 (anon and file scanned alike).
    swappiness: int = 100
    # SWAP_CLUSTER_MAX (include/linux/swap.h): pages reclaimed per pass.
    swap_cluster_max: int = 32
    # zram disksize as a share of RAM: AOSP fstab zramsize=50% is common
    # (some vendors 75%).
    zram_disksize_fraction: float = 0.5
    # lmkd: ro.lmk.swap_free_low_percentage default 10 (AOSP lmkd.cpp).
    swap_free_low_percent: float = 10.0
    # ---- zram (the real ZramDevice model; [zram] settings)
    # [zram] async_workers and staging_pages of the _async policies: the
    # model's compression pool (mainline zram compresses in the writer, so
    # there is no kernel default).  Assumption: 2 threads, 1 MiB of staging.
    zram_async_workers: int = 2
    zram_staging_pages: int = 256
    # Idle time after which multi/heuristic recompress a page ([zram]
    # idle_recompress_after_s; Android's zram writeback/recompress daemons
    # mark pages idle after minutes, the model's default is 60 s).
    zram_idle_recompress_after_s: float = 60.0
    # ---- ZCACHE (compressed cache of clean file pages)
    # ZCACHE's codec: lz4, zram's Android default (zcache used lzo, which
    # the model does not have).
    zcache_codec: str = "lz4"
    # Largest pool, % of RAM: zswap's max_pool_percent default 20.
    zcache_max_pool_percent: float = 20.0
    # Pages compressing to more than this many bytes are not cached (zbud
    # cannot pair them; zswap rejects pages that do not shrink).
    zcache_max_object_bytes: int = 3072
    # Threads of the asynchronous ZCACHE (assumption, as zram_async_workers).
    zcache_async_workers: int = 2
    # Async queue bound (pages awaiting compression); beyond it reclaim drops.
    zcache_queue_pages: int = 256
    # File fault read-around window (filemap_fault's mmap read-around of
    # read_ahead_kb; kernel default 128 KiB), scaled like every size: at
    # scale 64 it is one page, at scale 1 the kernel's 32 pages.
    file_readaround_kib: float = 128.0
    # ---- UFS (the real UfsDevice model)
    # Share of file data physically fragmented ([aging]); assumption: a phone
    # used for a year (the HID study's middle level).
    ufs_fragmentation_percent: float = 30.0
    # ---- accelerator offload (compression without CPU)
    # Per batch (one reclaim pass, up to swap_cluster_max pages): a fixed
    # setup (submission and completion), DMA both ways, then the engine's
    # throughput.  Assumptions: a phone GPU/NPU reached over the SoC
    # interconnect — tens of µs per submission, GB/s rates — pending a
    # measured on-device compressor.
    offload_setup_us: float = 20.0
    offload_dma_gbps: float = 8.0
    offload_throughput_gbps: float = 4.0

    def ram_fraction_list(self) -> list[float]:
        return [float(x) for x in self.ram_fractions.split(",") if x.strip()]


QUICK = LaunchParams(apps=8, launches=40, ram_fractions="0.4,0.55,0.8", scale=128)


class ParamError(ValueError):
    pass


def check(params: LaunchParams) -> None:
    """Refuse impossible values with one line naming the field and what is allowed."""
    positive_ints = ("scale", "apps", "launches", "cpu_cores", "swap_cluster_max", "zcache_queue_pages",
                     "zram_async_workers", "zcache_async_workers")
    for name in positive_ints:
        if getattr(params, name) <= 0:
            raise ParamError(f"{name} must be > 0, got {getattr(params, name)}")
    fractions = ("hot_anon_fraction", "hot_file_fraction", "use_touch_fraction", "dirty_fraction",
                 "zram_disksize_fraction", "size_spread")
    for name in fractions:
        if not 0 <= getattr(params, name) <= 1:
            raise ParamError(f"{name} must be between 0 and 1, got {getattr(params, name)}")
    if not 0 <= params.swappiness <= 200:
        raise ParamError(f"swappiness must be between 0 and 200, got {params.swappiness}")
    if not 1 <= params.watermark_scale_factor <= 3000:
        raise ParamError(f"watermark_scale_factor must be between 1 and 3000 (the kernel's range), "
                         f"got {params.watermark_scale_factor}")
    try:
        ram = params.ram_fraction_list()
    except ValueError:
        raise ParamError(f"ram_fractions must be comma-separated numbers, got {params.ram_fractions!r}") from None
    if not ram or any(not 0.05 <= r <= 2 for r in ram):
        raise ParamError(f"ram_fractions must be numbers between 0.05 and 2, got {params.ram_fractions!r}")
    if params.zcache_codec not in ("lz4", "lz4hc", "zstd"):
        raise ParamError(f"zcache_codec must be lz4, lz4hc or zstd, got {params.zcache_codec!r}")


def apply_overrides(params: LaunchParams, items: list[str]) -> LaunchParams:
    """``["apps=8", "swappiness=60"]`` → new params; unknown names and bad values are refused."""
    hints = typing.get_type_hints(LaunchParams)
    known = {f.name for f in fields(LaunchParams)}
    changes: dict[str, object] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or name not in known:
            raise ParamError(f"--set {item!r}: expected NAME=VALUE with NAME one of: {', '.join(sorted(known))}")
        kind = hints[name]
        try:
            changes[name] = kind(text.strip()) if kind is not str else text.strip()
        except ValueError:
            raise ParamError(f"--set {item!r}: {name} must be {kind.__name__}") from None
    result = replace(params, **changes)  # type: ignore[arg-type]
    check(result)
    return result


def watermarks(params: LaunchParams, ram_pages: int) -> tuple[int, int, int]:
    """(min, low, high) in pages for a model RAM of ``ram_pages``.

    The kernel's formulas (mm/page_alloc.c: calculate_min_free_kbytes,
    __setup_per_zone_wmarks) applied to the phone-scale RAM, then divided by
    ``scale``: the watermarks keep the share of RAM they have on the phone.
    """
    phone_kib = ram_pages * PAGE_KIB * params.scale
    min_kib = params.min_free_kbytes or min(262144, max(128, math.isqrt(phone_kib * 16)))
    gap_kib = max(min_kib // 4, phone_kib * params.watermark_scale_factor // 10000)
    to_pages = PAGE_KIB * params.scale
    low_gap = max(1, round(gap_kib / to_pages))
    min_pages = max(1, round(min_kib / to_pages))
    return min_pages, min_pages + low_gap, min_pages + 2 * low_gap


def sources() -> dict[str, str]:
    """Each field's comment in this file (its meaning and the source of its default), as one line.

    A field right below a commented one without a comment of its own shares
    that comment (sizes given together).
    """
    found: dict[str, str] = {}
    comment: list[str] = []
    previous = ""
    for line in inspect.getsource(LaunchParams).splitlines():
        text = line.strip()
        if text.startswith("# ----"):
            comment, previous = [], ""
        elif text.startswith("#"):
            comment.append(text.lstrip("# "))
        elif ":" in text and " = " in text and not text.startswith(("def ", "return")):
            name = text.split(":", 1)[0].strip()
            found[name] = " ".join(comment) if comment else (f"see {previous}" if previous else "")
            if comment:
                previous = name
            comment = []
        elif not text:
            previous = ""
    return found


def assumptions(params: LaunchParams) -> str:
    """Every parameter with its value and, where this file gives one, its meaning and source."""
    notes = sources()
    lines = []
    for f in fields(LaunchParams):
        note = notes.get(f.name, "")
        lines.append(f"{f.name} = {getattr(params, f.name)}" + (f"    # {note}" if note else ""))
    return "\n".join(lines)
