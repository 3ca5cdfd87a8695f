"""The UFS model's sections: [ufs] (NAND and controller), [hid] (defragmentation) and [aging]."""

from __future__ import annotations

from dataclasses import dataclass

from blockemu.config.base import ConfigError, non_negative, positive, power_of_two
from blockemu.config.device import DeviceSection


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
            "dies": positive(self.dies),
            "planes_per_die": positive(self.planes_per_die),
            "nand_page_kib": power_of_two(self.nand_page_kib)
            or (None if self.nand_page_kib >= 4 else "must be >= 4"),
            "pages_per_block": positive(self.pages_per_block),
            "overprovision_percent": positive(self.overprovision_percent),
            "read_setup_us": non_negative(self.read_setup_us),
            "seq_read_mbps": positive(self.seq_read_mbps),
            "seq_write_mbps": positive(self.seq_write_mbps),
            "command_overhead_us": non_negative(self.command_overhead_us),
            "flush_us": non_negative(self.flush_us),
            "trim_us": non_negative(self.trim_us),
            "erase_us": non_negative(self.erase_us),
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
            "window_kib": power_of_two(self.window_kib)
            or (None if self.window_kib >= 4 else "must be >= 4"),
            "min_run_kib": positive(self.min_run_kib)
            or (None if self.min_run_kib <= self.window_kib else "must be <= window_kib"),
            "analysis_us_per_gib": non_negative(self.analysis_us_per_gib),
            "defrag_size": non_negative(self.defrag_size),
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
            "fragment_kib": power_of_two(self.fragment_kib)
            or (None if self.fragment_kib >= 4 else "must be >= 4"),
            "span_percent": None if 0 < self.span_percent <= 100 else "must be in (0, 100]",
            "seed": None,
        }


def check_ufs_device(ufs: UfsSection, device: DeviceSection, source: str) -> None:
    """Check [ufs] against [device] (device type "ufs"); raise a one-line ConfigError."""
    capacity_bytes = device.capacity_mib * 1024 * 1024
    sector = 4096
    group_bytes = ufs.planes_per_die * ufs.nand_page_kib * 1024
    # The die transfer rate is derived from seq_read_mbps; it must leave room
    # for tR, or the configured sequential bandwidth is unreachable.
    per_die_seconds = group_bytes / (ufs.seq_read_mbps * 1e6 / ufs.dies)
    if per_die_seconds <= ufs.read_setup_us * 1e-6:
        raise ConfigError(
            f"{source}: [ufs] seq_read_mbps = {ufs.seq_read_mbps}: unreachable with "
            f"read_setup_us = {ufs.read_setup_us} and {ufs.dies} dies; lower one of them"
        )
    superblock = ufs.dies * ufs.planes_per_die * ufs.pages_per_block * ufs.nand_page_kib * 1024
    if capacity_bytes % sector:
        raise ConfigError(f"{source}: [device] capacity_mib: must be a multiple of 4 KiB")
    if capacity_bytes < 4 * superblock:
        raise ConfigError(
            f"{source}: [device] capacity_mib = {device.capacity_mib}: must be at least "
            f"{4 * superblock // (1024 * 1024)} MiB (4 superblocks of this [ufs] geometry)"
        )
