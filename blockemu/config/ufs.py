"""The UFS model's sections: [ufs] (NAND and controller), [hid] (defragmentation) and [aging]."""

from __future__ import annotations

from dataclasses import dataclass

from blockemu.config.base import ConfigError, choice, non_negative, positive, power_of_two
from blockemu.config.device import DeviceSection

# blockemu/devices/ufs/l2p.py L2P_MODES (config may not import the model).
L2P_MODES = ("page", "extent")


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

    # --- L2P mapping cache (blockemu/devices/ufs/l2p.py).  The defaults here
    # keep the old behaviour (the whole map in SRAM, free); configs/ufs41.toml
    # sets the sourced values below.
    # Controller SRAM for cached map pages, KiB; 0 = unlimited.  ConZone
    # (DATE 2025, ssd_config.h L2P_CACHE_SIZE, commented "UFS 4.0 - 1MiB")
    # gives a UFS 4.0 part 1020 KiB; ufs41.toml takes 1024.
    l2p_cache_kib: int = 0
    # "page" (DFTL: a cached unit is a whole map page) or "extent" (one entry
    # per physically contiguous run, at most a page map: ZMS's multi-granularity
    # map; ConZone's L2P_HYBRID_MAP).
    l2p_mode: str = "page"
    # Bytes per page-map entry: 4 in DFTL and ConZone (L2P_ENTRY_SIZE); the
    # UFS HPB entries the host caches are 8 (drivers/ufs/core/ufshpb.h HPB_ENTRY_SIZE).
    l2p_entry_bytes: int = 4
    # Bytes per extent entry (start PPN + run length): an HPB entry's 8 bytes.
    l2p_extent_entry_bytes: int = 8
    # Map page: the unit read from or written back to NAND.  4 KiB, as the
    # issue's "a map page covers 4 KiB of entries" and HPB_ENTRY_BLOCK_SIZE.
    l2p_map_page_kib: int = 4

    # --- WriteBooster (blockemu/devices/ufs/writebooster.py).  Off by default
    # (old behaviour: every write at seq_write_mbps); ufs41.toml turns it on.
    wb_enabled: bool = False
    # SLC buffer size.  sysfs-driver-ufs's wb_buf_alloc_units example: "0400h
    # corresponds to 4GB".  Host writes into it run at seq_write_mbps (the
    # product briefs' sequential write is measured with WriteBooster on).
    wb_buffer_mib: int = 4096
    # Write rate once the buffer is full (TLC direct), and the fold's program
    # rate.  FreeBSD D51893 measured a UFS 4.0 part at 1568 MiB/s sequential
    # write with WriteBooster on and 556 MiB/s off (2.8x); 2800 / 2.8 = 1000.
    tlc_write_mbps: float = 1000.0
    # fWriteBoosterBufferFlushEn at start: Linux turns flushing on with WB
    # (ufshcd_wb_toggle_buf_flush) unless a host quirk says otherwise.
    wb_flush_enabled: bool = True
    # wb_flush_threshold in tenths: Linux's default UFS_WB_BUF_REMAIN_PERCENT(40).
    wb_flush_threshold: int = 4
    # Rated P/E cycles of the SLC buffer, for wb_life_time_est.  pSLC-mode
    # blocks of 3D TLC are rated about 30,000 cycles in vendors' pSLC notes
    # (the low end of the 30k-100k quoted); only the estimate depends on it.
    wb_slc_pe_cycles: int = 30000

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
            "l2p_cache_kib": non_negative(self.l2p_cache_kib) or (
                None if self.l2p_cache_kib == 0 or self.l2p_cache_kib >= self.l2p_map_page_kib
                else "must be 0 (unlimited) or at least l2p_map_page_kib"),
            "l2p_mode": choice(self.l2p_mode, L2P_MODES),
            "l2p_entry_bytes": power_of_two(self.l2p_entry_bytes),
            "l2p_extent_entry_bytes": positive(self.l2p_extent_entry_bytes),
            "l2p_map_page_kib": power_of_two(self.l2p_map_page_kib) or (
                None if self.l2p_map_page_kib * 1024 >= self.l2p_entry_bytes else "must hold one entry"),
            "wb_enabled": None,
            "wb_buffer_mib": positive(self.wb_buffer_mib),
            "tlc_write_mbps": positive(self.tlc_write_mbps),
            "wb_flush_enabled": None,
            "wb_flush_threshold": None if 1 <= self.wb_flush_threshold <= 10 else "must be 1 to 10 (tenths)",
            "wb_slc_pe_cycles": positive(self.wb_slc_pe_cycles),
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
