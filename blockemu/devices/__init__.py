"""Device models, created by name from ``[device] type``: one package per device (ufs, zns, zns_log, zram)."""

from __future__ import annotations

from collections.abc import Callable

from blockemu.config import Config
from blockemu.devices.base import ApiError, Capabilities, Device, DeviceError, MetricFamily
from blockemu.devices.ufs.device import UfsDevice
from blockemu.devices.zns.device import ZnsDevice
from blockemu.devices.zns_log.device import ZnsFtlDevice
from blockemu.devices.zram.device import ZramDevice
from blockemu.store import Store

DEVICE_FACTORIES: dict[str, Callable[[Config, Store], Device]] = {
    "ufs": UfsDevice,
    "zns": ZnsDevice,
    "zns_ftl": ZnsFtlDevice,
    "zram": ZramDevice,
}

__all__ = ["DEVICE_FACTORIES", "ApiError", "Capabilities", "Device", "DeviceError", "MetricFamily"]
