"""The Linux block layer's completion statuses and the errno each reaches user space as.

A block driver ends a request with a ``blk_status_t`` (include/linux/blk_types.h);
``blk_status_to_errno()`` hands user space the errno of its entry in the
``blk_errors[]`` table (block/blk-core.c).  A ublk server answers with a
negative errno instead, which ublk_drv turns back into a status with
``errno_to_blk_status()`` (``__ublk_complete_rq``, drivers/block/ublk_drv.c):
an errno without an entry becomes BLK_STS_IOERR, so the guest reads EIO.

The table is Linux 6.12's, the guest kernel of tests/kernel (checked against
the blk_errors[] compiled into 6.12.118; BLK_STS_INVAL, -EINVAL, only came
later, so EINVAL reaches a 6.12 guest as EIO).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass


@dataclass(frozen=True)
class BlockStatus:
    """One ``blk_errors[]`` entry: the status, its errno and the kernel's name for it."""

    status: str
    errno: int
    name: str


BLK_STS_NOTSUPP = BlockStatus("BLK_STS_NOTSUPP", errno.EOPNOTSUPP, "operation not supported")
BLK_STS_NOSPC = BlockStatus("BLK_STS_NOSPC", errno.ENOSPC, "critical space allocation")
BLK_STS_MEDIUM = BlockStatus("BLK_STS_MEDIUM", errno.ENODATA, "critical medium")
BLK_STS_RESOURCE = BlockStatus("BLK_STS_RESOURCE", errno.ENOMEM, "kernel resource")
BLK_STS_ZONE_OPEN_RESOURCE = BlockStatus("BLK_STS_ZONE_OPEN_RESOURCE", errno.ETOOMANYREFS, "open zones exceeded")
BLK_STS_ZONE_ACTIVE_RESOURCE = BlockStatus("BLK_STS_ZONE_ACTIVE_RESOURCE", errno.EOVERFLOW, "active zones exceeded")
# "everything else not covered above"
BLK_STS_IOERR = BlockStatus("BLK_STS_IOERR", errno.EIO, "I/O")

# blk_errors[] of Linux 6.12, BLK_STS_OK left out, in the kernel's order.
BLK_ERRORS: tuple[BlockStatus, ...] = (
    BLK_STS_NOTSUPP,
    BlockStatus("BLK_STS_TIMEOUT", errno.ETIMEDOUT, "timeout"),
    BLK_STS_NOSPC,
    BlockStatus("BLK_STS_TRANSPORT", errno.ENOLINK, "recoverable transport"),
    BlockStatus("BLK_STS_TARGET", errno.EREMOTEIO, "critical target"),
    BlockStatus("BLK_STS_RESV_CONFLICT", errno.EBADE, "reservation conflict"),
    BLK_STS_MEDIUM,
    BlockStatus("BLK_STS_PROTECTION", errno.EILSEQ, "protection"),
    BLK_STS_RESOURCE,
    BlockStatus("BLK_STS_DEV_RESOURCE", errno.EBUSY, "device resource"),
    BlockStatus("BLK_STS_AGAIN", errno.EAGAIN, "nonblocking retry"),
    BlockStatus("BLK_STS_OFFLINE", errno.ENODEV, "device offline"),
    BlockStatus("BLK_STS_DM_REQUEUE", errno.EREMCHG, "dm internal retry"),
    BLK_STS_ZONE_OPEN_RESOURCE,
    BLK_STS_ZONE_ACTIVE_RESOURCE,
    BlockStatus("BLK_STS_DURATION_LIMIT", errno.ETIME, "duration limit exceeded"),
    BLK_STS_IOERR,
)


def errno_to_blk_status(err: int) -> BlockStatus:
    """The status ublk_drv completes a request with when the server answers ``-err``."""
    for status in BLK_ERRORS:
        if status.errno == err:
            return status
    return BLK_STS_IOERR


def guest_errno(err: int) -> int:
    """The errno a Linux 6.12 guest reads for a ublk request the server answered with ``-err``."""
    return errno_to_blk_status(err).errno
