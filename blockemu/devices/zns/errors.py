"""Zone errors, each with its NVMe command-specific status code (ZNS §3.1.2) and the errno Linux gives it.

A refused zone command raises a :class:`ZoneError`: the control API answers
409 (the request was fine, the zone's state refuses it) and the host sees the
errno a Linux NVMe host would read for that status (:data:`ZONE_STATUS`).  A
malformed request raises :class:`ZoneRequestError`: EINVAL, HTTP 400.
"""

from __future__ import annotations

import errno
from typing import ClassVar

from blockemu.devices.base import DeviceError
from blockemu.devices.blk_status import (
    BLK_STS_IOERR,
    BLK_STS_ZONE_ACTIVE_RESOURCE,
    BLK_STS_ZONE_OPEN_RESOURCE,
    BlockStatus,
)

# Each ZNS status (SCT 1, command specific) → the blk_status_t Linux 6.12 ends
# the request with → the errno user space reads (blk_errors[], block/blk-core.c).
# nvme_error_status() (drivers/nvme/host/core.c) has a case for the two
# resource limits only (NVME_SC_ZONE_TOO_MANY_ACTIVE → BLK_STS_ZONE_ACTIVE_RESOURCE,
# NVME_SC_ZONE_TOO_MANY_OPEN → BLK_STS_ZONE_OPEN_RESOURCE); every other zone
# status falls to its ``default: return BLK_STS_IOERR``.  Zone Is Read Only is
# not the generic NVME_SC_READ_ONLY (0x82, BLK_STS_MEDIUM): it is EIO too.
# null_blk (drivers/block/null_blk/zoned.c) answers the same way.
ZONE_STATUS: dict[int, tuple[str, BlockStatus]] = {
    0xB8: ("Zone Boundary Error", BLK_STS_IOERR),
    0xB9: ("Zone Is Full", BLK_STS_IOERR),
    0xBA: ("Zone Is Read Only", BLK_STS_IOERR),
    0xBB: ("Zone Is Offline", BLK_STS_IOERR),
    0xBC: ("Zone Invalid Write", BLK_STS_IOERR),
    0xBD: ("Too Many Active Zones", BLK_STS_ZONE_ACTIVE_RESOURCE),
    0xBE: ("Too Many Open Zones", BLK_STS_ZONE_OPEN_RESOURCE),
    0xBF: ("Invalid Zone State Transition", BLK_STS_IOERR),
}


class ZoneError(DeviceError):
    """A command refused by the zone rules; the host sees :attr:`block_status`'s errno, the API a 409."""

    # NVMe command-specific status code (ZNS §3.1.2), None where NVMe has none.
    status_code: ClassVar[int | None] = None
    http_status: ClassVar[int] = 409

    def __init__(self, message: str) -> None:
        super().__init__(self.block_status().errno, message)

    @classmethod
    def block_status(cls) -> BlockStatus:
        """What Linux completes the request with (:data:`ZONE_STATUS`; BLK_STS_IOERR without a status code)."""
        if cls.status_code is None:
            return BLK_STS_IOERR
        return ZONE_STATUS[cls.status_code][1]


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
    """A read above a write pointer with ``read_across_wp = false`` (ZBC's URSWRZ = 0): EIO.

    NVMe ZNS has no status for it (its reads above the pointer return the
    deallocated pattern), so it takes nvme_error_status()'s default, EIO.
    """


class ZoneRequestError(DeviceError):
    """A malformed request (alignment, sizes, limits of a command): EINVAL, HTTP 400."""

    http_status: ClassVar[int] = 400

    def __init__(self, message: str) -> None:
        super().__init__(errno.EINVAL, message)
