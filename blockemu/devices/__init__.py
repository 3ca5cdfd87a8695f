"""Device models, created by name from ``[device] type``."""

from __future__ import annotations

from collections.abc import Callable

from blockemu.config import Config
from blockemu.devices.base import ApiError, Capabilities, Device, DeviceError, MetricFamily
from blockemu.devices.ufs.device import UfsDevice
from blockemu.devices.zns.device import ZnsDevice
from blockemu.devices.zns_log.device import ZnsFtlDevice
from blockemu.devices.zram import ZramDevice
from blockemu.store import Store, open_store

DEVICE_FACTORIES: dict[str, Callable[[Config, Store], Device]] = {
    "ufs": UfsDevice,
    "zns": ZnsDevice,
    "zns_ftl": ZnsFtlDevice,
    "zram": ZramDevice,
}


def create_device(config: Config) -> Device:
    store = open_store(config.store.backend, config.capacity_bytes, config.store.path)
    return DEVICE_FACTORIES[config.device.type](config, store)


__all__ = ["ApiError", "Capabilities", "Device", "DeviceError", "MetricFamily", "create_device"]
