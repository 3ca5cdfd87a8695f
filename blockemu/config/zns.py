"""The zoned sections: [zns] (the NVMe ZNS namespace) and [zns_ftl] (the host-side zoned log over it)."""

from __future__ import annotations

from dataclasses import dataclass

from blockemu.config.base import ConfigError, choice, non_negative, positive, power_of_two
from blockemu.config.device import DeviceSection

# Kept here (not imported from blockemu.policies) so that config, the ground
# floor, stays import-free.  Each policy with the zones it keeps open at once
# (its streams: host writes, GC writes, and zone_aware's cold stream);
# blockemu/policies/gc.py refuses to import if its classes disagree.
GC_POLICY_STREAMS = {"greedy": 2, "cost_benefit": 2, "zone_aware": 3}
GC_POLICIES = tuple(GC_POLICY_STREAMS)
COPY_METHODS = ("host", "simple_copy")


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
            "zone_size_mib": positive(self.zone_size_mib),
            "zone_capacity_mib": non_negative(self.zone_capacity_mib)
            or (None if self.zone_capacity_mib <= self.zone_size_mib else "must be <= zone_size_mib (0 = all)"),
            "conventional_zones": non_negative(self.conventional_zones),
            "max_open_zones": non_negative(self.max_open_zones),
            "max_active_zones": non_negative(self.max_active_zones)
            or (None if self.max_active_zones == 0 or self.max_active_zones >= self.max_open_zones > 0
                else "must be 0 (unlimited) or >= max_open_zones (> 0)"),
            "zone_append_max_kib": positive(self.zone_append_max_kib),
            "lba_bytes": choice(str(self.lba_bytes), ("512", "4096")),
            "read_across_wp": None,
            "copy_max_ranges": positive(self.copy_max_ranges),
            "copy_max_kib": positive(self.copy_max_kib),
            "parallel_units": positive(self.parallel_units),
            "stripe_kib": power_of_two(self.stripe_kib) or (None if self.stripe_kib >= 4 else "must be >= 4"),
            "read_latency_us": non_negative(self.read_latency_us),
            "read_mbps": positive(self.read_mbps),
            "write_mbps": positive(self.write_mbps),
            "host_link_mbps": positive(self.host_link_mbps),
            "command_overhead_us": non_negative(self.command_overhead_us),
            "zone_reset_us": non_negative(self.zone_reset_us),
            "zone_finish_us": non_negative(self.zone_finish_us),
            "flush_us": non_negative(self.flush_us),
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
            "gc_policy": choice(self.gc_policy, GC_POLICIES),
            "copy_method": choice(self.copy_method, COPY_METHODS),
            "overprovision_percent": None if 0 < self.overprovision_percent < 100 else "must be in (0, 100)",
            "gc_start_free_zones": None if self.gc_start_free_zones >= self.gc_reserve_free_zones
            else "must be >= gc_reserve_free_zones",
            "gc_reserve_free_zones": None if self.gc_reserve_free_zones >= 1 else "must be >= 1",
            "gc_step_blocks": positive(self.gc_step_blocks),
            "hot_window_percent": None if 0 < self.hot_window_percent <= 100 else "must be in (0, 100]",
        }


def check_zns_device(zns: ZnsSection, ftl: ZnsFtlSection, device: DeviceSection, source: str) -> None:
    """Check [zns] (and [zns_ftl], for type "zns_ftl") against [device]; raise a one-line ConfigError."""
    where, capacity_bytes = source, device.capacity_mib * 1024 * 1024
    zone_bytes = zns.zone_size_mib * 1024 * 1024
    if capacity_bytes % zone_bytes:
        raise ConfigError(f"{where}: [device] capacity_mib = {device.capacity_mib}: must be a multiple of "
                          f"[zns] zone_size_mib = {zns.zone_size_mib}")
    zones = capacity_bytes // zone_bytes
    if zns.conventional_zones >= zones:
        raise ConfigError(f"{where}: [zns] conventional_zones = {zns.conventional_zones}: must be < the {zones} "
                          "zones of the device, leaving at least one sequential zone")
    for key in ("zone_append_max_kib", "stripe_kib", "copy_max_kib"):
        if getattr(zns, key) * 1024 % zns.lba_bytes:
            raise ConfigError(f"{where}: [zns] {key} = {getattr(zns, key)}: must be a multiple of "
                              f"lba_bytes = {zns.lba_bytes}")
    if device.type != "zns_ftl":
        return
    if zns.conventional_zones:
        raise ConfigError(f"{where}: [zns] conventional_zones = {zns.conventional_zones}: must be 0 for device "
                          "type zns_ftl (the zoned log keeps its map in host memory)")
    streams = GC_POLICY_STREAMS[ftl.gc_policy]  # the policy decides how many zones it keeps open
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
