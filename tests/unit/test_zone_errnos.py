"""Which errno each refusal reaches the host as: zone errors, faults, and what ublk and NBD carry."""

from __future__ import annotations

import errno
import inspect

import pytest

from blockemu.devices import blk_status
from blockemu.devices.base import DeviceError
from blockemu.devices.zns import errors
from blockemu.devices.zns.errors import (
    InvalidZoneStateTransitionError,
    ReadBeyondWritePointerError,
    TooManyActiveZonesError,
    TooManyOpenZonesError,
    ZoneBoundaryError,
    ZoneError,
    ZoneFullError,
    ZoneInvalidWriteError,
    ZoneOfflineError,
    ZoneReadOnlyError,
    ZoneRequestError,
)
from blockemu.frontends.nbdkit.plugin import nbd_errno
from blockemu.layers.faults import FAULT_ERRNOS

# Every zone error: NVMe status, the blk_status_t Linux 6.12 ends the request
# with (nvme_error_status), and the errno user space reads (blk_errors[]).
ZONE_ERRNOS: dict[type[ZoneError], tuple[int | None, str, int]] = {
    ZoneBoundaryError: (0xB8, "BLK_STS_IOERR", errno.EIO),
    ZoneFullError: (0xB9, "BLK_STS_IOERR", errno.EIO),
    ZoneReadOnlyError: (0xBA, "BLK_STS_IOERR", errno.EIO),
    ZoneOfflineError: (0xBB, "BLK_STS_IOERR", errno.EIO),
    ZoneInvalidWriteError: (0xBC, "BLK_STS_IOERR", errno.EIO),
    TooManyActiveZonesError: (0xBD, "BLK_STS_ZONE_ACTIVE_RESOURCE", errno.EOVERFLOW),
    TooManyOpenZonesError: (0xBE, "BLK_STS_ZONE_OPEN_RESOURCE", errno.ETOOMANYREFS),
    InvalidZoneStateTransitionError: (0xBF, "BLK_STS_IOERR", errno.EIO),
    ReadBeyondWritePointerError: (None, "BLK_STS_IOERR", errno.EIO),
}


def test_every_zone_error_is_in_the_table() -> None:
    defined = {cls for _, cls in inspect.getmembers(errors, inspect.isclass)
               if issubclass(cls, ZoneError) and cls is not ZoneError}
    assert defined == set(ZONE_ERRNOS)


@pytest.mark.parametrize("error", list(ZONE_ERRNOS), ids=lambda cls: cls.__name__)
def test_zone_error_carries_the_kernels_errno(error: type[ZoneError]) -> None:
    status_code, status, err = ZONE_ERRNOS[error]
    refused = error("refused")
    assert refused.status_code == status_code
    assert error.block_status().status == status
    assert refused.errno == err
    assert refused.http_status == 409
    # Over ublk the guest reads the same errno: ublk_drv maps it to the same status.
    assert blk_status.errno_to_blk_status(err).status == status
    assert blk_status.guest_errno(err) == err


def test_zone_resource_limits_read_as_the_kernel_names_them() -> None:
    assert TooManyActiveZonesError("x").errno == errno.EOVERFLOW
    assert TooManyOpenZonesError("x").errno == errno.ETOOMANYREFS
    assert blk_status.BLK_STS_ZONE_ACTIVE_RESOURCE.name == "active zones exceeded"
    assert blk_status.BLK_STS_ZONE_OPEN_RESOURCE.name == "open zones exceeded"


def test_malformed_zone_requests_stay_einval() -> None:
    refused = ZoneRequestError("x")
    assert (refused.errno, refused.http_status) == (errno.EINVAL, 400)


def test_blk_errors_table_has_one_entry_per_errno() -> None:
    errnos = [status.errno for status in blk_status.BLK_ERRORS]
    assert len(errnos) == len(set(errnos))
    assert blk_status.errno_to_blk_status(errno.ENOSPC) is blk_status.BLK_STS_NOSPC
    assert blk_status.errno_to_blk_status(12345) is blk_status.BLK_STS_IOERR


# Each errno a fault may be configured with: (what a Linux 6.12 guest reads over
# ublk, what the nbdkit plugin hands nbdkit).  EPERM, EINVAL and ESHUTDOWN have
# no blk_status_t in 6.12; NBD has no EOVERFLOW for anything but a DF read.
FAULT_DELIVERY = {
    "EIO": (errno.EIO, errno.EIO),
    "EPERM": (errno.EIO, errno.EPERM),
    "ENOMEM": (errno.ENOMEM, errno.ENOMEM),
    "EINVAL": (errno.EIO, errno.EINVAL),
    "ENOSPC": (errno.ENOSPC, errno.ENOSPC),
    "EOVERFLOW": (errno.EOVERFLOW, errno.EIO),
    "ENOTSUP": (errno.ENOTSUP, errno.ENOTSUP),
    "ESHUTDOWN": (errno.EIO, errno.ESHUTDOWN),
}


@pytest.mark.parametrize("name", FAULT_ERRNOS)
def test_what_each_fault_errno_reaches_the_host_as(name: str) -> None:
    guest, nbd = FAULT_DELIVERY[name]
    code = getattr(errno, name)
    assert blk_status.guest_errno(code) == guest
    assert nbd_errno(DeviceError(code, "injected")) == nbd


def test_nbd_gets_eio_for_what_it_cannot_name() -> None:
    assert nbd_errno(TooManyActiveZonesError("x")) == errno.EIO
    assert nbd_errno(TooManyOpenZonesError("x")) == errno.EIO
    assert nbd_errno(ZoneFullError("x")) == errno.EIO
    assert nbd_errno(ZoneRequestError("x")) == errno.EINVAL
    assert nbd_errno(DeviceError(errno.ENOSPC, "zram mem_limit")) == errno.ENOSPC
    assert nbd_errno(RuntimeError("a bug")) == errno.EIO
