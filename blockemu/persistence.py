"""Persistent devices (``[store] backend = "file"``): what is saved, and under which geometry.

The file store (blockemu/store/file.py) keeps the bytes and commits
checkpoints; the write-cache layer (blockemu/write_cache.py) decides when to
commit.  This module says what a checkpoint holds and which settings a
directory is bound to:

* the model state that decides what reads return and what the device does
  next (``snapshot_state``: UFS's FTL map, free list and HID state machine;
  ZNS's zone conditions, write pointers and implicit-open order; the zoned
  log's map), and
* the data a device keeps in its model rather than in the store
  (``snapshot_contents``: zram's compressed pages with their slots, the
  algorithms and mem_limit, the zsmalloc layout).  It is as large as the
  data, so it is persisted only, never put in traces or taken at every
  change for power cuts as ``snapshot_state`` is; and
* the counters that ``GET /api/v1/device`` and the metrics report
  (``snapshot_counters``), so that a restarted device describes itself as it
  did at the commit (for zram: what mm_stat and io_stat count; the work and
  CPU time of this server process start at zero, as request statistics do).

Derived arrays (the FTL's reverse map and valid counts, the zoned log's valid
counts) are rebuilt on load instead of stored.  Modeled time is not saved: a
restarted server's clock starts at zero, as its timing statistics do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from blockemu.config import Config
from blockemu.store.file import ByteChunks, StoreError, check_store
from blockemu.store.null import NullStore

# Settings that shape the saved state.  A directory opens only with the values
# it was created with; everything else (service times, timing, power, the
# write cache) may change between runs.
_ZNS_GEOMETRY = ("zns.zone_size_mib", "zns.zone_capacity_mib", "zns.conventional_zones", "zns.lba_bytes",
                 "zns.max_open_zones", "zns.max_active_zones")
GEOMETRY_KEYS: dict[str, tuple[str, ...]] = {
    # hid.window_kib: a saved defragmentation queue counts in windows.
    "ufs": ("ufs.dies", "ufs.planes_per_die", "ufs.nand_page_kib", "ufs.pages_per_block",
            "ufs.overprovision_percent", "ufs.gc_reserve_superblocks", "hid.window_kib"),
    "zns": _ZNS_GEOMETRY,
    # The policy decides how many zones the log keeps open (its saved heads).
    "zns_ftl": (*_ZNS_GEOMETRY, "zns_ftl.overprovision_percent", "zns_ftl.gc_policy"),
    # Saved slots name their algorithm by priority.  The control API may
    # change the algorithms and mem_limit, and those changes are state; the
    # configuration's values are where they started, and a store opens only
    # with them, so that editing them is refused rather than silently
    # overridden by the saved ones.
    "zram": ("zram.comp_algorithm", "zram.comp_level", "zram.recomp_algorithms", "zram.mem_limit_mib"),
}


def persisted_geometry(config: Config) -> dict[str, Any]:
    keys = ("device.type", "device.capacity_mib", *GEOMETRY_KEYS.get(config.device.type, ()))
    geometry = {}
    for key in keys:
        section, _, name = key.partition(".")
        geometry[key] = getattr(getattr(config, section), name)
    return geometry


# A device's snapshot_<part>() / restore_<part>() pairs, in the order they are restored.
_HOOKS = ("state", "contents", "counters")


def device_state(device: Any) -> dict[str, np.ndarray | ByteChunks]:
    """What a checkpoint of ``device`` holds: whichever of the three parts it has."""
    state: dict[str, np.ndarray | ByteChunks] = {}
    for hook in _HOOKS:
        snapshot = getattr(device, f"snapshot_{hook}", None)
        if snapshot is not None:
            state.update(snapshot())
    return state


def restore_device_state(device: Any, state: dict[str, np.ndarray], where: str) -> None:
    """Load a checkpoint into a freshly built ``device``; a state that does not fit is refused."""
    try:
        for hook in _HOOKS:
            restore = getattr(device, f"restore_{hook}", None)
            if restore is not None:
                restore(state)
    except (ValueError, KeyError, IndexError) as err:
        raise StoreError(f"{where}: the saved state does not fit this device ({err}); refusing to start") from None


def check_config_store(config: Config) -> None:
    """Refuse (StoreError) a ``[store] path`` this configuration cannot open; nothing for ``memory``.

    The saved state is loaded into a model without bytes, so that a state
    that does not fit is refused here too, before any server starts.
    """
    if config.store.backend != "file":
        return
    checkpoint = check_store(Path(config.store.path), config.capacity_bytes, persisted_geometry(config))
    if checkpoint is None:
        return
    from blockemu.devices import DEVICE_FACTORIES  # the models import numpy & co: only for file stores

    device = DEVICE_FACTORIES[config.device.type](config, NullStore(config.capacity_bytes))
    restore_device_state(device, checkpoint.arrays, str(Path(config.store.path) / "state"))
