"""Device models, registered by the name ``[device] type`` gives them (one package per device: ufs, zns, zns_log,
zram); blockemu/stack.py builds them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from blockemu.config import Config
from blockemu.devices.base import ApiError, Capabilities, Device, DeviceError, MetricFamily
from blockemu.devices.ufs.device import UfsDevice
from blockemu.devices.zns.device import ZnsDevice
from blockemu.devices.zns_log.device import ZnsFtlDevice
from blockemu.devices.zram.device import ZramDevice
from blockemu.store import Store


@dataclass(frozen=True)
class Model:
    """A device model as the configuration names it."""

    # Builds the model on its store (which it then owns and closes).
    factory: Callable[[Config, Store], Device]
    # Settings that shape its saved state ("section.key"): a store directory
    # opens only with the values it was created with; everything else
    # (service times, timing, power, the write cache) may change between runs.
    geometry_keys: tuple[str, ...] = ()


_ZNS_GEOMETRY = ("zns.zone_size_mib", "zns.zone_capacity_mib", "zns.conventional_zones", "zns.lba_bytes",
                 "zns.max_open_zones", "zns.max_active_zones")

MODELS: dict[str, Model] = {
    # hid.window_kib: a saved defragmentation queue counts in windows.
    "ufs": Model(UfsDevice, ("ufs.dies", "ufs.planes_per_die", "ufs.nand_page_kib", "ufs.pages_per_block",
                             "ufs.overprovision_percent", "ufs.gc_reserve_superblocks", "hid.window_kib")),
    "zns": Model(ZnsDevice, _ZNS_GEOMETRY),
    # The policy decides how many zones the log keeps open (its saved heads).
    "zns_ftl": Model(ZnsFtlDevice, (*_ZNS_GEOMETRY, "zns_ftl.overprovision_percent", "zns_ftl.gc_policy")),
    # Saved slots name their algorithm by priority.  The control API may
    # change the algorithms and mem_limit, and those changes are state; the
    # configuration's values are where they started, and a store opens only
    # with them, so that editing them is refused rather than silently
    # overridden by the saved ones.
    "zram": Model(ZramDevice, ("zram.comp_algorithm", "zram.comp_level", "zram.recomp_algorithms",
                               "zram.mem_limit_mib")),
}


__all__ = ["MODELS", "ApiError", "Capabilities", "Device", "DeviceError", "MetricFamily", "Model"]
