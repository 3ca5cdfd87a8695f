"""Zone errors, each with its NVMe command-specific status code (ZNS §3.1.2).

A refused zone command raises a :class:`ZoneError`: the host sees EIO, the
control API a 409 (the request was fine, the zone's state refuses it).  A
malformed request raises :class:`ZoneRequestError`: EINVAL, HTTP 400.
"""

from __future__ import annotations

import errno
from typing import ClassVar

from blockemu.devices.base import DeviceError


class ZoneError(DeviceError):
    """A command refused by the zone rules; the host sees EIO, the API a 409."""

    # NVMe command-specific status code (ZNS §3.1.2), None where NVMe has none.
    status_code: ClassVar[int | None] = None
    http_status: ClassVar[int] = 409

    def __init__(self, message: str) -> None:
        super().__init__(errno.EIO, message)


class ZoneBoundaryError(ZoneError):
    status_code = 0xB8


class ZoneFullError(ZoneError):
    status_code = 0xB9


class ZoneReadOnlyError(ZoneError):
    status_code = 0xBA


class ZoneOfflineError(ZoneError):
    status_code = 0xBB


class ZoneInvalidWriteError(ZoneError):
    status_code = 0xBC


class TooManyActiveZonesError(ZoneError):
    status_code = 0xBD


class TooManyOpenZonesError(ZoneError):
    status_code = 0xBE


class InvalidZoneStateTransitionError(ZoneError):
    status_code = 0xBF


class ReadBeyondWritePointerError(ZoneError):
    """A read above a write pointer with ``read_across_wp = false`` (ZBC's URSWRZ = 0)."""


class ZoneRequestError(DeviceError):
    """A malformed request (alignment, sizes, limits of a command): EINVAL, HTTP 400."""

    http_status: ClassVar[int] = 400

    def __init__(self, message: str) -> None:
        super().__init__(errno.EINVAL, message)

