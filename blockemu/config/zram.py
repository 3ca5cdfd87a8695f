"""The [zram] section and the checks of its algorithm lists."""

from __future__ import annotations

from dataclasses import dataclass

from blockemu.config.base import choice, non_negative, positive

# zram algorithm names this model implements, with (min, max) levels; kept
# here so that config stays import-free (blockemu/devices/zram/codecs.py has the codecs).
ZRAM_LEVELS = {"lz4": (1, 65537), "lz4hc": (1, 12), "zstd": (1, 22)}
ZRAM_ALGORITHMS = tuple(ZRAM_LEVELS)
ZRAM_POLICIES = ("single", "multi", "heuristic")


@dataclass(frozen=True)
class ZramSection:
    """The zram model: algorithms, pool limit, per-page policy, CPU cost, async compression.

    Names follow Linux zram's sysfs (Documentation/admin-guide/blockdev/zram.rst):
    comp_algorithm, recomp_algorithm, algorithm_params level, mem_limit.
    Android ships lz4 as comp_algorithm and, with multi-compression, zstd as
    recomp_algorithm; zram has no mem_limit unless one is written.
    """

    # comp_algorithm (priority 0): lz4, lz4hc or zstd.
    comp_algorithm: str = "lz4"
    # Its level (algorithm_params level=); 0 = the algorithm's default
    # (lz4 acceleration 1, lz4hc 9, zstd 3).
    comp_level: int = 0
    # recomp_algorithm entries for priorities 1, 2, 3, comma-separated, each
    # ALGO or ALGO:LEVEL, e.g. "zstd" or "lz4hc:12,zstd:9"; "" = none.
    recomp_algorithms: str = "zstd"
    # Per-page algorithm choice: single, multi or heuristic
    # (blockemu/devices/zram/policy.py documents each).
    policy: str = "single"
    # mem_limit; 0 = no limit (zram's default).
    mem_limit_mib: int = 0
    # zsmalloc's CONFIG_ZSMALLOC_CHAIN_SIZE: the most pages a zspage chains
    # (mm/Kconfig: default 8, range 4..16; Debian's and Android GKI's 6.12
    # kernels keep 8).  It sets the size classes and huge_class_size.
    zsmalloc_chain_size: int = 8
    # multi/heuristic: pages not accessed for this long are recompressed.
    idle_recompress_after_s: float = 60.0
    # heuristic: a page read this often, the last time within hot_window_s, is hot.
    hot_reads: int = 2
    hot_window_s: float = 30.0
    # heuristic: probe compressed/original at or above this = incompressible.
    incompressible_ratio: float = 0.9
    # heuristic: queued CPU work per CPU over 200 µs at or above this = busy.
    busy_threshold: float = 0.75
    # CPUs that (de)compress: zram compresses on the submitting CPU; this is
    # how many such CPUs run at once (2 = this development machine).
    cpu_units: int = 2
    # Asynchronous compression threads; 0 = compress in the write path.
    async_workers: int = 0
    # Staging area bound (uncompressed pages awaiting compression).
    staging_pages: int = 1024
    # Pages per compression batch (one contiguous buffer per batch).
    batch_pages: int = 32
    # Modeled fixed cost per request (bio handling, slot lock) in µs.
    request_overhead_us: float = 1.0
    # Modeled cost of copying or same-filling one 4 KiB page, in µs.
    page_copy_us: float = 0.5
    # Cost model overrides, µs per page: "lz4=2.5/0.8, zstd:3=30/7"
    # (ALGO[:LEVEL]=COMPRESS/DECOMPRESS); unlisted ones are calibrated at start-up.
    cost_us: str = ""
    # For use as swap: the serving process locks its memory and opts out of
    # the OOM killer (blockemu/process_guard.py); needs root in the guest.
    lock_memory: bool = False

    def check(self) -> dict[str, str | None]:
        return {
            "comp_algorithm": choice(self.comp_algorithm, ZRAM_ALGORITHMS),
            "comp_level": _zram_level(self.comp_algorithm, self.comp_level, allow_default=True),
            "recomp_algorithms": _zram_recomp(self.recomp_algorithms),
            "policy": choice(self.policy, ZRAM_POLICIES),
            "mem_limit_mib": non_negative(self.mem_limit_mib),
            "zsmalloc_chain_size": None if 4 <= self.zsmalloc_chain_size <= 16 else "must be 4..16 pages",
            "idle_recompress_after_s": non_negative(self.idle_recompress_after_s),
            "hot_reads": positive(self.hot_reads),
            "hot_window_s": non_negative(self.hot_window_s),
            "incompressible_ratio": positive(self.incompressible_ratio),
            "busy_threshold": positive(self.busy_threshold),
            "cpu_units": positive(self.cpu_units),
            "async_workers": non_negative(self.async_workers),
            "staging_pages": positive(self.staging_pages),
            "batch_pages": positive(self.batch_pages),
            "request_overhead_us": non_negative(self.request_overhead_us),
            "page_copy_us": non_negative(self.page_copy_us),
            "cost_us": _zram_costs(self.cost_us),
            "lock_memory": None,
        }


def _zram_level(name: str, level: int, allow_default: bool = False) -> str | None:
    if name not in ZRAM_LEVELS or (allow_default and level == 0):
        return None
    low, high = ZRAM_LEVELS[name]
    return None if low <= level <= high else f"{name} level must be between {low} and {high}"


def _zram_algo(text: str) -> str | None:
    name, _, level = text.strip().partition(":")
    if name not in ZRAM_LEVELS:
        return f"unknown algorithm {name!r}; allowed: {', '.join(ZRAM_ALGORITHMS)}"
    if level:
        if not (level.isascii() and level.isdigit()):
            return f"level in {text.strip()!r} must be an integer"
        return _zram_level(name, int(level))
    return None


def _zram_recomp(text: str) -> str | None:
    items = [item for item in text.split(",") if item.strip()]
    if len(items) > 3:
        return "at most 3 algorithms (priorities 1-3)"
    return next(filter(None, (_zram_algo(item) for item in items)), None)


def _zram_costs(text: str) -> str | None:
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        costs = value.split("/")
        if not sep or len(costs) != 2:
            return f"{item!r}: expected ALGO[:LEVEL]=COMPRESS_US/DECOMPRESS_US, e.g. zstd:3=30/7"
        problem = _zram_algo(name)
        if problem:
            return problem
        try:
            if min(float(costs[0]), float(costs[1])) < 0:
                return f"{item!r}: costs must be >= 0"
        except ValueError:
            return f"{item!r}: costs must be numbers of microseconds"
    return None


