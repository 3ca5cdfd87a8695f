"""Device configuration: TOML files → one frozen dataclass per section.

Every key a user can set lives in exactly one section dataclass below, with its
unit in its name and a comment saying where its default comes from.  The same
``section.key`` names are used by TOML files, ``--set`` overrides, the control
API and the docs.  Validation happens once, in :func:`load_config`; a bad
value raises :class:`ConfigError` whose message is a single line naming the
file, the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration problem, formatted as one line for the user."""


def _choice(value: str, allowed: Iterable[str]) -> str | None:
    allowed = tuple(allowed)
    return None if value in allowed else f"must be one of {', '.join(allowed)}"


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be > 0"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be >= 0"


def _power_of_two(value: int) -> str | None:
    return None if value > 0 and value & (value - 1) == 0 else "must be a power of two"


@dataclass(frozen=True)
class DeviceSection:
    # Which model serves the data; each type has its own section below.
    type: str = "ufs"
    # Logical capacity exported to the host.
    capacity_mib: int = 8192
    # Shown in metrics labels and the control API.
    name: str = "ufs0"

    def check(self) -> dict[str, str | None]:
        return {
            "type": _choice(self.type, DEVICE_TYPES),
            "capacity_mib": _positive(self.capacity_mib) or (
                None if self.capacity_mib <= MAX_CAPACITY_MIB else f"must be <= {MAX_CAPACITY_MIB} (128 TiB, "
                "as much as a process can map)"),
            "name": None if self.name.isidentifier() else "must be letters, digits and _",
        }


@dataclass(frozen=True)
class StoreSection:
    """Where the bytes (and, for "file", the device's state) live; blockemu/store/."""

    # "memory": a sparse anonymous mapping, gone when the server stops.
    # "file": data and device state persist in ``path`` (docs/persistence.md).
    backend: str = "memory"
    # backend = "file": an existing, writable directory for this one device;
    # relative paths are taken from the directory blockemu serve runs in.
    path: str = ""
    # backend = "file": fsync at every commit, so that what a flush
    # acknowledged survives a host crash too; false keeps only what a crash
    # of the server (kill -9) needs, and commits cost less.
    fsync: bool = True

    def check(self) -> dict[str, str | None]:
        problems: dict[str, str | None] = {"backend": _choice(self.backend, STORE_BACKENDS)}
        if self.backend == "file":
            problems["path"] = _store_directory(self.path)
        elif self.path:
            problems["path"] = 'is only used with backend = "file"; remove it or set backend = "file"'
        problems["fsync"] = None
        return problems


def _store_directory(path: str) -> str | None:
    allowed = "must be an existing, writable directory"
    if not path:
        return f'is required when backend = "file": it {allowed}'
    if "\0" in path:
        return f"{allowed} (no NUL characters)"
    where = Path(path)
    if not where.exists():
        return f"does not exist; it {allowed} (create it first)"
    if not where.is_dir():
        return f"is not a directory; it {allowed}"
    if not os.access(where, os.W_OK | os.X_OK):
        return f"is not writable by this user; it {allowed}"
    return None


@dataclass(frozen=True)
class TimingSection:
    # "virtual": requests complete at once, modeled time is only accounted.
    # "realtime": each request completes at its modeled time (× time_scale).
    mode: str = "virtual"
    # Real seconds per modeled second in realtime mode; > 1 slows the device
    # down so that a slow host (or a VM) can still show modeled behaviour.
    time_scale: float = 1.0

    def check(self) -> dict[str, str | None]:
        return {"mode": _choice(self.mode, TIMING_MODES), "time_scale": _positive(self.time_scale)}


@dataclass(frozen=True)
class UfsSection:
    """NAND and controller constants of the UFS 4.x model.

    Sources: UFS 4.0 product briefs (Samsung, Kioxia, Micron 2022–2024) quote
    about 4200 MB/s sequential read and 2800 MB/s sequential write; TLC NAND
    datasheets of that generation give tR ≈ 40–60 µs and 16 KiB pages with
    4 planes; phone parts of 256–512 GB have 4–8 dies.
    """

    # Independent NAND dies the controller can keep busy at once.
    dies: int = 8
    # Planes per die, read together by one multi-plane tR.
    planes_per_die: int = 4
    # NAND page size; the FTL maps 4 KiB sectors, several per NAND page.
    nand_page_kib: int = 16
    # NAND pages per erase block (per plane).  Smaller than real parts (~1000+)
    # so that small test devices still have many superblocks.
    pages_per_block: int = 64
    # Spare physical capacity beyond the exported capacity.
    overprovision_percent: float = 7.0
    # tR: time to sense one multi-plane NAND page into the die's buffer.
    read_setup_us: float = 50.0
    # Sequential read at the device (all dies streaming); die transfer
    # bandwidth is derived from it, see UfsTiming.
    seq_read_mbps: float = 4200.0
    # Sequential write (program throughput over all dies).
    seq_write_mbps: float = 2800.0
    # Per-command controller overhead (UPIU handling, FTL lookup).
    command_overhead_us: float = 8.0
    # Cost of one flush (write-cache drain bookkeeping).
    flush_us: float = 20.0
    # Cost of a trim/unmap command (mapping update only).
    trim_us: float = 10.0
    # Block erase time (charged when garbage collection frees a superblock).
    erase_us: float = 3000.0
    # Free superblocks kept back for garbage collection.
    gc_reserve_superblocks: int = 2

    def check(self) -> dict[str, str | None]:
        return {
            "dies": _positive(self.dies),
            "planes_per_die": _positive(self.planes_per_die),
            "nand_page_kib": _power_of_two(self.nand_page_kib)
            or (None if self.nand_page_kib >= 4 else "must be >= 4"),
            "pages_per_block": _positive(self.pages_per_block),
            "overprovision_percent": _positive(self.overprovision_percent),
            "read_setup_us": _non_negative(self.read_setup_us),
            "seq_read_mbps": _positive(self.seq_read_mbps),
            "seq_write_mbps": _positive(self.seq_write_mbps),
            "command_overhead_us": _non_negative(self.command_overhead_us),
            "flush_us": _non_negative(self.flush_us),
            "trim_us": _non_negative(self.trim_us),
            "erase_us": _non_negative(self.erase_us),
            "gc_reserve_superblocks": None if self.gc_reserve_superblocks >= 1 else "must be >= 1",
        }


@dataclass(frozen=True)
class HidSection:
    """Host-Initiated Defragmentation (JESD220G) model parameters."""

    # Analysis looks at aligned logical windows of this size.
    window_kib: int = 512
    # A window whose mean physical run is shorter than this is fragmented.
    min_run_kib: int = 128
    # Modeled analysis cost: reading the L2P table back from NAND and
    # scanning it (about 1 MiB of map per GiB of data).
    analysis_us_per_gib: float = 2000.0
    # Default defrag_size in bytes; 0 means "everything analysis found".
    defrag_size: int = 0

    def check(self) -> dict[str, str | None]:
        return {
            "window_kib": _power_of_two(self.window_kib)
            or (None if self.window_kib >= 4 else "must be >= 4"),
            "min_run_kib": _positive(self.min_run_kib)
            or (None if self.min_run_kib <= self.window_kib else "must be <= window_kib"),
            "analysis_us_per_gib": _non_negative(self.analysis_us_per_gib),
            "defrag_size": _non_negative(self.defrag_size),
        }


@dataclass(frozen=True)
class AgingSection:
    """Induce fragmentation at start-up, as a shortcut for device aging."""

    # Fraction of the aged range whose physical layout is scattered.
    fragmentation_percent: float = 0.0
    # Size of the scattered pieces.
    fragment_kib: int = 4
    # Aged logical range, as a percentage of capacity from LBA 0.
    span_percent: float = 100.0
    seed: int = 1

    def check(self) -> dict[str, str | None]:
        return {
            "fragmentation_percent": None
            if 0 <= self.fragmentation_percent <= 100
            else "must be between 0 and 100",
            "fragment_kib": _power_of_two(self.fragment_kib)
            or (None if self.fragment_kib >= 4 else "must be >= 4"),
            "span_percent": None if 0 < self.span_percent <= 100 else "must be in (0, 100]",
            "seed": None,
        }


@dataclass(frozen=True)
class ZnsSection:
    """NVMe ZNS namespace geometry, limits and service times.

    Sources: Western Digital Ultrastar DC ZN540 product brief (2021): zone size
    2048 MiB with 1077 MiB zone capacity, 14 max open / 14 max active zones,
    about 3200 MB/s sequential read and 2000 MB/s sequential write.  Zones are
    smaller here so that small devices still have many of them.  NVMe ZNS has
    no conventional zones; ours stand for a separate conventional namespace
    (F2FS needs randomly writable space for its metadata).
    """

    # Zone size (ZSZE); [device] capacity_mib must be a multiple of it.
    zone_size_mib: int = 64
    # Writable part of each zone (ZCAP); 0 means the whole zone.
    zone_capacity_mib: int = 0
    # Randomly writable zones at the start of the device (not in NVMe ZNS).
    conventional_zones: int = 0
    # MOR + 1 and MAR + 1 of the ZNS Identify Namespace data; 0 = unlimited.
    max_open_zones: int = 14
    max_active_zones: int = 14
    # Zone Append Size Limit (ZASL); devices commonly report their MDTS.
    zone_append_max_kib: int = 512
    # Logical block (LBA) size; writes must be whole, aligned blocks.
    lba_bytes: int = 4096
    # Reads above a zone's write pointer return zeros (true) or fail (false,
    # like ZBC with URSWRZ = 0).
    read_across_wp: bool = True
    # Simple Copy limits (NVM Command Set: MSRC + 1 ranges, MCL bytes).
    copy_max_ranges: int = 128
    copy_max_kib: int = 8192
    # Flash units that work in parallel (dies behind the zones' stripes).
    parallel_units: int = 8
    # Zones are striped over the units in chunks of this size.
    stripe_kib: int = 64
    # Media read latency (TLC tR, 50–80 µs) per unit touched by a read.
    read_latency_us: float = 70.0
    # Sequential media bandwidth with all units busy (ZN540: 3200 / 2000 MB/s).
    read_mbps: float = 3200.0
    write_mbps: float = 2000.0
    # Host link (PCIe Gen3 x4 ≈ 3940 MB/s): every host byte crosses it,
    # Simple Copy bytes do not.
    host_link_mbps: float = 3940.0
    # Per-command controller overhead.
    command_overhead_us: float = 5.0
    # Zone reset (erasing the blocks behind a zone), charged on every unit.
    zone_reset_us: float = 3000.0
    # Zone finish without data written (mapping update only).
    zone_finish_us: float = 50.0
    flush_us: float = 20.0

    def check(self) -> dict[str, str | None]:
        return {
            "zone_size_mib": _positive(self.zone_size_mib),
            "zone_capacity_mib": _non_negative(self.zone_capacity_mib)
            or (None if self.zone_capacity_mib <= self.zone_size_mib else "must be <= zone_size_mib (0 = all)"),
            "conventional_zones": _non_negative(self.conventional_zones),
            "max_open_zones": _non_negative(self.max_open_zones),
            "max_active_zones": _non_negative(self.max_active_zones)
            or (None if self.max_active_zones == 0 or self.max_active_zones >= self.max_open_zones > 0
                else "must be 0 (unlimited) or >= max_open_zones (> 0)"),
            "zone_append_max_kib": _positive(self.zone_append_max_kib),
            "lba_bytes": _choice(str(self.lba_bytes), ("512", "4096")),
            "read_across_wp": None,
            "copy_max_ranges": _positive(self.copy_max_ranges),
            "copy_max_kib": _positive(self.copy_max_kib),
            "parallel_units": _positive(self.parallel_units),
            "stripe_kib": _power_of_two(self.stripe_kib) or (None if self.stripe_kib >= 4 else "must be >= 4"),
            "read_latency_us": _non_negative(self.read_latency_us),
            "read_mbps": _positive(self.read_mbps),
            "write_mbps": _positive(self.write_mbps),
            "host_link_mbps": _positive(self.host_link_mbps),
            "command_overhead_us": _non_negative(self.command_overhead_us),
            "zone_reset_us": _non_negative(self.zone_reset_us),
            "zone_finish_us": _non_negative(self.zone_finish_us),
            "flush_us": _non_negative(self.flush_us),
        }

    @property
    def zone_capacity_bytes(self) -> int:
        return (self.zone_capacity_mib or self.zone_size_mib) * 1024 * 1024


@dataclass(frozen=True)
class ZnsFtlSection:
    """The host-side zoned log (device type "zns_ftl") over a [zns] device.

    It exports a randomly writable block device, appends every write at an
    open zone's write pointer and garbage-collects zones, as dm-zoned and
    ZenFS do; GC_POLICIES and COPY_METHODS list the variants.
    """

    # Victim selection and data placement, see blockemu/policies/gc.py.
    gc_policy: str = "greedy"
    # How GC moves valid blocks: "host" (read + write over the link) or
    # "simple_copy" (NVMe Copy inside the device).
    copy_method: str = "host"
    # Share of the zones' capacity kept back from the exported size; GC
    # needs free space to work with (F2FS and dm-zoned keep 5–20 %).
    overprovision_percent: float = 20.0
    # Background GC starts when no more than this many zones are empty.
    gc_start_free_zones: int = 4
    # Foreground GC (inside a host write) when no more than this many are
    # left; GC itself may use them.
    gc_reserve_free_zones: int = 1
    # Blocks relocated per background GC step: small, so host requests
    # interleave with GC.
    gc_step_blocks: int = 64
    # zone_aware policy: a block rewritten within this share of the
    # exported capacity's worth of host writes counts as hot.
    hot_window_percent: float = 25.0

    def check(self) -> dict[str, str | None]:
        return {
            "gc_policy": _choice(self.gc_policy, GC_POLICIES),
            "copy_method": _choice(self.copy_method, COPY_METHODS),
            "overprovision_percent": None if 0 < self.overprovision_percent < 100 else "must be in (0, 100)",
            "gc_start_free_zones": None if self.gc_start_free_zones >= self.gc_reserve_free_zones
            else "must be >= gc_reserve_free_zones",
            "gc_reserve_free_zones": None if self.gc_reserve_free_zones >= 1 else "must be >= 1",
            "gc_step_blocks": _positive(self.gc_step_blocks),
            "hot_window_percent": None if 0 < self.hot_window_percent <= 100 else "must be in (0, 100]",
        }


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
            "comp_algorithm": _choice(self.comp_algorithm, ZRAM_ALGORITHMS),
            "comp_level": _zram_level(self.comp_algorithm, self.comp_level, allow_default=True),
            "recomp_algorithms": _zram_recomp(self.recomp_algorithms),
            "policy": _choice(self.policy, ZRAM_POLICIES),
            "mem_limit_mib": _non_negative(self.mem_limit_mib),
            "idle_recompress_after_s": _non_negative(self.idle_recompress_after_s),
            "hot_reads": _positive(self.hot_reads),
            "hot_window_s": _non_negative(self.hot_window_s),
            "incompressible_ratio": _positive(self.incompressible_ratio),
            "busy_threshold": _positive(self.busy_threshold),
            "cpu_units": _positive(self.cpu_units),
            "async_workers": _non_negative(self.async_workers),
            "staging_pages": _positive(self.staging_pages),
            "batch_pages": _positive(self.batch_pages),
            "request_overhead_us": _non_negative(self.request_overhead_us),
            "page_copy_us": _non_negative(self.page_copy_us),
            "cost_us": _zram_costs(self.cost_us),
            "lock_memory": None,
        }


# zram algorithm names this model implements, with (min, max) levels; kept
# here so that config stays import-free (blockemu/devices/zram/codecs.py has the codecs).
ZRAM_LEVELS = {"lz4": (1, 65537), "lz4hc": (1, 12), "zstd": (1, 22)}
ZRAM_ALGORITHMS = tuple(ZRAM_LEVELS)
ZRAM_POLICIES = ("single", "multi", "heuristic")


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


DEVICE_TYPES = ("ufs", "zns", "zns_ftl", "zram")
# x86-64 user space is 2**47 bytes; the memory store maps the whole device at once.
MAX_CAPACITY_MIB = 2**47 // 2**20
# Kept here (not imported from blockemu.policies) so that config stays import-free.
GC_POLICIES = ("greedy", "cost_benefit", "zone_aware")
COPY_METHODS = ("host", "simple_copy")
STORE_BACKENDS = ("memory", "file")
TIMING_MODES = ("virtual", "realtime")
# devfreq's governor names plus pmqos_qd: the one list.  Each names a class in
# blockemu/policies/governors.py, which checks at import that it has exactly
# these (config stays import-free, so it cannot ask there).
POWER_GOVERNORS = ("performance", "powersave", "userspace", "simple_ondemand", "pmqos_qd")


@dataclass(frozen=True)
class Tunable:
    """A governor tunable: a ``[power]`` key at start-up, a devfreq-style attribute written at run time.

    :data:`GOVERNOR_TUNABLES` lists them, read from :class:`PowerSection`'s
    fields (name, type, default) and their metadata (bounds, source): the
    configuration and the governors (blockemu/policies/governors.py) check
    the same rule.
    """

    name: str
    type: type  # int or float
    default: float
    # Where the default comes from.
    source: str
    # Bounds; a str bound names another tunable, whose current value it is.
    above: float | None = None  # exclusive
    minimum: float | None = None
    maximum: float | str | None = None
    at_least: str | None = None
    # 0 or one of the operating points (opp_freq_hz).
    in_opp_table: bool = False

    def problem(self, value: float, section: PowerSection, opp_table: str) -> str | None:
        """What is wrong with ``value`` next to ``section``'s other values; ``opp_table`` names the points."""
        if self.in_opp_table:
            return None if value == 0 or value in section.opp_freq_hz else f"must be 0 or one of {opp_table}"
        if self.above is not None:
            return None if value > self.above else f"must be > {self.above:g}"
        low = self.minimum if self.minimum is not None else float("-inf")
        high, high_text = float("inf"), ""
        if isinstance(self.maximum, str):
            high = getattr(section, self.maximum)
            high_text = f"{self.maximum} ({high:g})"
        elif self.maximum is not None:
            high, high_text = self.maximum, f"{self.maximum:g}"
        floor = getattr(section, self.at_least) if self.at_least is not None else low
        if low <= value <= high and value >= floor:
            return None
        rule = f"in {low:g}..{high_text}" if high_text else f">= {low:g}"
        if self.at_least is not None:
            rule += f" and >= {self.at_least} ({floor:g})"
        return f"must be {rule}"


def _tunable(source: str, **bounds: Any) -> dict[str, Any]:
    """Field metadata that makes a [power] key a governor tunable (see Tunable)."""
    return {"tunable": {"source": source, **bounds}}


@dataclass(frozen=True)
class PowerSection:
    """Controller frequency scaling and energy, a layer around any device.

    Operating points: Qualcomm UFS host controllers (sm8550/sm8650 device
    trees) list 75, 150 and 300 MHz core clocks.  Busy power at the top point
    ≈ 0.7 W follows Samsung's UFS 4.0 brief (6.0 MB/s per mA of sequential
    read, so ~700 mA at 4200 MB/s) taken at a ~1 V rail; lower points keep
    60 mW of static power and scale the dynamic rest with f·V², with assumed
    voltage corners 0.6 / 0.7 / 0.8 V.  Idle (clock running, link not
    hibernated) is mostly leakage, scaled with V.  These are illustrative
    figures, not one part's datasheet: override them for a specific part.
    """

    # Off by default: the device then runs at its own (top-speed) timing.
    enabled: bool = False
    # Operating points, ascending; devfreq reports frequencies in Hz.
    opp_freq_hz: tuple[int, ...] = (75_000_000, 150_000_000, 300_000_000)
    # Power while serving requests and while idle at each operating point.
    opp_busy_mw: tuple[float, ...] = (150.0, 305.0, 700.0)
    opp_idle_mw: tuple[float, ...] = (45.0, 53.0, 60.0)
    # Share of a request's time in the device that is controller-bound and
    # scales with f_max / f; the rest (NAND tR, program) does not.  0.15 is
    # the controller's part of a 4 KiB UFS read in [ufs] (command_overhead_us
    # 8 of ~59 µs, plus link/DMA): an assumption to sweep, not a measurement.
    controller_bound_share: float = 0.15
    # Time a frequency change stalls the controller (PLL relock and voltage
    # ramp, ~100 µs; UFS gear switching in Linux can take milliseconds).
    transition_latency_us: float = 100.0
    # One of POWER_GOVERNORS, switchable at run time.
    governor: str = "simple_ondemand"
    # The governor tunables, writable at run time (GOVERNOR_TUNABLES below).
    # simple_ondemand (devfreq's names and rules).
    polling_ms: int = field(default=60, metadata=_tunable("UFS hosts' devfreq polling interval", above=0))
    upthreshold: int = field(default=70, metadata=_tunable(
        "UFS hosts' simple_ondemand upthreshold", minimum=1, maximum=100, at_least="downdifferential"))
    downdifferential: int = field(default=5, metadata=_tunable(
        "UFS hosts' simple_ondemand downdifferential", minimum=0, maximum="upthreshold"))
    # userspace: the frequency to run at; 0 keeps the current one.
    set_freq: int = field(default=0, metadata=_tunable("devfreq userspace: keep the current frequency",
                                                       in_opp_table=True))
    # pmqos_qd: a request that arrives with at most qd_threshold requests in
    # flight (itself included) raises the minimum frequency to boost_freq
    # (0 = the highest point) for hold_ms; simple_ondemand runs underneath.
    qd_threshold: int = field(default=1, metadata=_tunable("a request alone in the queue is latency-bound",
                                                           minimum=0))
    boost_freq: int = field(default=0, metadata=_tunable("the highest point", in_opp_table=True))
    hold_ms: float = field(default=60.0, metadata=_tunable("one devfreq polling interval", minimum=0))

    def check(self) -> dict[str, str | None]:
        freqs = self.opp_freq_hz
        count = len(freqs)
        ascending = list(freqs) == sorted(set(freqs))

        def same_length(values: tuple[float, ...]) -> str | None:
            if len(values) != count:
                return f"must have {count} entries, one per opp_freq_hz"
            return None if all(v >= 0 for v in values) else "must be >= 0"

        opp_table = f"opp_freq_hz ({', '.join(map(str, freqs))})"
        return {
            "enabled": None,
            "opp_freq_hz": None if count and ascending and freqs[0] > 0
            else "must be a non-empty array of ascending frequencies > 0",
            "opp_busy_mw": same_length(self.opp_busy_mw),
            "opp_idle_mw": same_length(self.opp_idle_mw)
            # (a wrong opp_busy_mw length is reported for that key, just before this one)
            or (None if len(self.opp_busy_mw) != count
                or all(i <= b for i, b in zip(self.opp_idle_mw, self.opp_busy_mw, strict=True))
                else "must be <= opp_busy_mw at each point"),
            "controller_bound_share": None if 0 <= self.controller_bound_share <= 1 else "must be between 0 and 1",
            "transition_latency_us": _non_negative(self.transition_latency_us),
            "governor": _choice(self.governor, POWER_GOVERNORS),
            **{t.name: t.problem(getattr(self, t.name), self, opp_table) for t in GOVERNOR_TUNABLES},
        }


def _governor_tunables() -> tuple[Tunable, ...]:
    hints = typing.get_type_hints(PowerSection)
    return tuple(Tunable(f.name, hints[f.name], f.default, **f.metadata["tunable"])  # type: ignore[arg-type]
                 for f in dataclasses.fields(PowerSection) if "tunable" in f.metadata)


# Every governor tunable, in PowerSection's order: the one table the
# configuration and the governors check values against.
GOVERNOR_TUNABLES = _governor_tunables()


@dataclass(frozen=True)
class WriteCacheSection:
    """The volatile write cache that power-cut emulation can lose (blockemu/layers/write_cache.py)."""

    # Most bytes written since the last flush that a power cut may lose;
    # when more are pending the cache is written back, as by a flush.  Real
    # caches range from a few MiB of controller SRAM to DRAM of hundreds of
    # MiB; 64 MiB bounds the pre-images kept in memory.  0 = write-through.
    size_mib: int = 64

    def check(self) -> dict[str, str | None]:
        return {"size_mib": _non_negative(self.size_mib)}


@dataclass(frozen=True)
class Config:
    device: DeviceSection = field(default_factory=DeviceSection)
    store: StoreSection = field(default_factory=StoreSection)
    timing: TimingSection = field(default_factory=TimingSection)
    ufs: UfsSection = field(default_factory=UfsSection)
    hid: HidSection = field(default_factory=HidSection)
    aging: AgingSection = field(default_factory=AgingSection)
    zns: ZnsSection = field(default_factory=ZnsSection)
    zns_ftl: ZnsFtlSection = field(default_factory=ZnsFtlSection)
    power: PowerSection = field(default_factory=PowerSection)
    zram: ZramSection = field(default_factory=ZramSection)
    write_cache: WriteCacheSection = field(default_factory=WriteCacheSection)
    # Where this configuration came from, for error messages.
    source: str = "<defaults>"

    @property
    def capacity_bytes(self) -> int:
        return self.device.capacity_mib * 1024 * 1024

    def with_overrides(self, overrides: Iterable[str]) -> Config:
        """Return a copy with ``section.key=value`` strings applied and validated."""
        raw = _config_to_raw(self)
        for item in overrides:
            section, key, value = parse_override(item, self.source)
            raw.setdefault(section, {})[key] = value
        return config_from_mapping(raw, self.source)


SECTION_NAMES = tuple(f.name for f in dataclasses.fields(Config) if f.name != "source")


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {name: hints[name] for name in SECTION_NAMES}


def _config_to_raw(config: Config) -> dict[str, dict[str, Any]]:
    return {name: dataclasses.asdict(getattr(config, name)) for name in SECTION_NAMES}


def parse_override(item: str, source: str = "--set") -> tuple[str, str, Any]:
    """Split ``section.key=value``; the value is read as a TOML value, else a string."""
    name, sep, text = item.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. timing.mode=realtime")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    return section, key, value


def _coerce(value: Any, want: Any, where: str) -> Any:
    # Arrays (e.g. [power] opp_freq_hz) are typed tuple[item, ...]: check each item.
    if typing.get_origin(want) is tuple:
        item_type = typing.get_args(want)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected an array of {item_type.__name__}, got {type(value).__name__} "
                              f"{value!r}")
        return tuple(_coerce(item, item_type, f"{where}[{i}]") for i, item in enumerate(value))
    # TOML has one integer type and one float type; accept an int for a float
    # key, but never a bool (a subclass of int) for a number.
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # TOML spells inf and nan; no setting means either (an infinite time_scale
    # or overprovision_percent would only fail later, inside the model).
    if want is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if want in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{where}: expected {want.__name__}, got a boolean")
    if not isinstance(value, want):
        raise ConfigError(f"{where}: expected {want.__name__}, got {type(value).__name__} {value!r}")
    return value


def _one_line(text: str) -> str:
    """``text`` with control characters escaped: TOML's quoted names may hold newlines, our errors are one line."""
    return text.encode("unicode_escape").decode("ascii")


def config_from_mapping(raw: Mapping[str, Any], source: str = "<mapping>") -> Config:
    sections: dict[str, Any] = {}
    types = _section_types()
    for name, table in raw.items():
        if name not in types:
            raise ConfigError(f"{source}: unknown section [{_one_line(name)}]; allowed: {', '.join(SECTION_NAMES)}")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{source}: [{name}] must be a table")
        cls = types[name]
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for key, value in table.items():
            where = f"{source}: [{name}] {key}"
            if key not in hints:
                raise ConfigError(f"{source}: [{name}] unknown key {key!r}; allowed: {', '.join(hints)}")
            values[key] = _coerce(value, hints[key], where)
        section = cls(**values)
        for key, problem in section.check().items():
            if problem:
                raise ConfigError(f"{source}: [{name}] {key} = {getattr(section, key)!r}: {problem}")
        sections[name] = section
    config = Config(**sections, source=source)
    _check_cross_section(config)
    return config


def _check_cross_section(config: Config) -> None:
    if config.device.type == "ufs":
        _check_ufs(config)
    if config.device.type in ("zns", "zns_ftl"):
        _check_zns(config)


def _check_ufs(config: Config) -> None:
    ufs = config.ufs
    sector = 4096
    group_bytes = ufs.planes_per_die * ufs.nand_page_kib * 1024
    # The die transfer rate is derived from seq_read_mbps; it must leave room
    # for tR, or the configured sequential bandwidth is unreachable.
    per_die_seconds = group_bytes / (ufs.seq_read_mbps * 1e6 / ufs.dies)
    if per_die_seconds <= ufs.read_setup_us * 1e-6:
        raise ConfigError(
            f"{config.source}: [ufs] seq_read_mbps = {ufs.seq_read_mbps}: unreachable with "
            f"read_setup_us = {ufs.read_setup_us} and {ufs.dies} dies; lower one of them"
        )
    superblock = ufs.dies * ufs.planes_per_die * ufs.pages_per_block * ufs.nand_page_kib * 1024
    if config.capacity_bytes % sector:
        raise ConfigError(f"{config.source}: [device] capacity_mib: must be a multiple of 4 KiB")
    if config.capacity_bytes < 4 * superblock:
        raise ConfigError(
            f"{config.source}: [device] capacity_mib = {config.device.capacity_mib}: must be at least "
            f"{4 * superblock // (1024 * 1024)} MiB (4 superblocks of this [ufs] geometry)"
        )


def _check_zns(config: Config) -> None:
    zns, where = config.zns, config.source
    zone_bytes = zns.zone_size_mib * 1024 * 1024
    if config.capacity_bytes % zone_bytes:
        raise ConfigError(f"{where}: [device] capacity_mib = {config.device.capacity_mib}: must be a multiple of "
                          f"[zns] zone_size_mib = {zns.zone_size_mib}")
    zones = config.capacity_bytes // zone_bytes
    if zns.conventional_zones >= zones:
        raise ConfigError(f"{where}: [zns] conventional_zones = {zns.conventional_zones}: must be < the {zones} "
                          "zones of the device, leaving at least one sequential zone")
    for key in ("zone_append_max_kib", "stripe_kib", "copy_max_kib"):
        if getattr(zns, key) * 1024 % zns.lba_bytes:
            raise ConfigError(f"{where}: [zns] {key} = {getattr(zns, key)}: must be a multiple of "
                              f"lba_bytes = {zns.lba_bytes}")
    if config.device.type != "zns_ftl":
        return
    from blockemu.policies.gc import policy_streams  # the policy decides how many zones it keeps open

    ftl = config.zns_ftl
    if zns.conventional_zones:
        raise ConfigError(f"{where}: [zns] conventional_zones = {zns.conventional_zones}: must be 0 for device "
                          "type zns_ftl (the zoned log keeps its map in host memory)")
    streams = policy_streams(ftl.gc_policy)
    for key in ("max_open_zones", "max_active_zones"):
        limit = getattr(zns, key)
        if 0 < limit < streams:
            raise ConfigError(f"{where}: [zns] {key} = {limit}: gc_policy {ftl.gc_policy!r} writes {streams} "
                              "zones at once; raise it or use another policy")
    # Spare zones: one open per stream, the GC reserve, and one more so that
    # GC always finds a victim with an invalid block.
    spare = int(zones * ftl.overprovision_percent / 100)
    needed = streams + ftl.gc_reserve_free_zones + 1
    if spare < needed:
        raise ConfigError(f"{where}: [zns_ftl] overprovision_percent = {ftl.overprovision_percent}: leaves {spare} "
                          f"spare zones of {zones}; gc_policy {ftl.gc_policy!r} needs at least {needed}")
    # Background GC works until more zones than this are free; with the
    # spare space tied up in open zones it could never get there, and would
    # copy forever.
    if ftl.gc_start_free_zones > spare - streams - 1:
        raise ConfigError(f"{where}: [zns_ftl] gc_start_free_zones = {ftl.gc_start_free_zones}: must be <= "
                          f"{spare - streams - 1} ({spare} spare zones, {streams} open for writing, 1 to gain)")


def parse_http_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ValueError(f"--http {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9250")
    return host.strip("[]"), int(port)


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Read, validate and return the configuration in ``path`` with overrides applied."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text (byte {err.start})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    return config_from_mapping(raw, str(path)).with_overrides(overrides)
