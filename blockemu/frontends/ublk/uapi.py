"""Linux ublk's user-space ABI (include/uapi/linux/ublk_cmd.h, Linux 6.12) as ctypes.

Names follow the header so that a reader can grep one against the other; the
unit tests (tests/unit/test_ublk_uapi.py) compile the real header and check
every size, offset and constant here.  ``struct blk_zone`` comes from
include/uapi/linux/blkzoned.h, which the ublk header declares part of its ABI
for ``UBLK_IO_OP_REPORT_ZONES``.
"""

from __future__ import annotations

import ctypes
import errno

# ----------------------------------------------------------- ioctl encoding
# include/uapi/asm-generic/ioctl.h: nr 8 bits, type 8 bits, size 14 bits, dir 2 bits.
_IOC_WRITE = 1
_IOC_READ = 2


def _ioc(direction: int, kind: str, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord(kind) << 8) | nr


def _ior(kind: str, nr: int, size: int) -> int:
    return _ioc(_IOC_READ, kind, nr, size)


def _iowr(kind: str, nr: int, size: int) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, kind, nr, size)


# -------------------------------------------------------------- structures
class UblksrvCtrlCmd(ctypes.Structure):
    """Control command, carried in ``sqe->cmd`` on /dev/ublk-control."""

    _fields_ = [
        ("dev_id", ctypes.c_uint32),
        ("queue_id", ctypes.c_uint16),  # 0xffff (-1) when the command is not for a queue
        ("len", ctypes.c_uint16),  # bytes at addr
        ("addr", ctypes.c_uint64),  # command-specific buffer, in or out
        ("data", ctypes.c_uint64 * 1),  # inline data: START_DEV passes the server's pid
        ("dev_path_len", ctypes.c_uint16),
        ("pad", ctypes.c_uint16),
        ("reserved", ctypes.c_uint32),
    ]


class UblksrvCtrlDevInfo(ctypes.Structure):
    _fields_ = [
        ("nr_hw_queues", ctypes.c_uint16),
        ("queue_depth", ctypes.c_uint16),
        ("state", ctypes.c_uint16),
        ("pad0", ctypes.c_uint16),
        ("max_io_buf_bytes", ctypes.c_uint32),
        ("dev_id", ctypes.c_uint32),
        ("ublksrv_pid", ctypes.c_int32),
        ("pad1", ctypes.c_uint32),
        ("flags", ctypes.c_uint64),
        ("ublksrv_flags", ctypes.c_uint64),
        ("owner_uid", ctypes.c_uint32),
        ("owner_gid", ctypes.c_uint32),
        ("reserved1", ctypes.c_uint64),
        ("reserved2", ctypes.c_uint64),
    ]


class UblksrvIoDesc(ctypes.Structure):
    """One request as the driver describes it, in the per-queue array mmapped from /dev/ublkcN."""

    _fields_ = [
        ("op_flags", ctypes.c_uint32),  # op: bits 0-7, flags: bits 8-31
        ("nr_sectors", ctypes.c_uint32),  # union with nr_zones (REPORT_ZONES)
        ("start_sector", ctypes.c_uint64),
        ("addr", ctypes.c_uint64),
    ]


class UblksrvIoCmd(ctypes.Structure):
    """I/O command, carried in ``sqe->cmd`` on /dev/ublkcN."""

    _fields_ = [
        ("q_id", ctypes.c_uint16),
        ("tag", ctypes.c_uint16),
        ("result", ctypes.c_int32),  # COMMIT only: bytes done, or -errno
        # union with zone_append_lba: with UBLK_F_USER_COPY there is no buffer
        # address, so a zoned device returns the appended LBA here.
        ("addr", ctypes.c_uint64),
    ]


class UblkParamBasic(ctypes.Structure):
    _fields_ = [
        ("attrs", ctypes.c_uint32),
        ("logical_bs_shift", ctypes.c_uint8),
        ("physical_bs_shift", ctypes.c_uint8),
        ("io_opt_shift", ctypes.c_uint8),
        ("io_min_shift", ctypes.c_uint8),
        ("max_sectors", ctypes.c_uint32),
        ("chunk_sectors", ctypes.c_uint32),  # the zone size of a zoned device
        ("dev_sectors", ctypes.c_uint64),
        ("virt_boundary_mask", ctypes.c_uint64),
    ]


class UblkParamDiscard(ctypes.Structure):
    _fields_ = [
        ("discard_alignment", ctypes.c_uint32),
        ("discard_granularity", ctypes.c_uint32),
        ("max_discard_sectors", ctypes.c_uint32),
        ("max_write_zeroes_sectors", ctypes.c_uint32),
        ("max_discard_segments", ctypes.c_uint16),
        ("reserved0", ctypes.c_uint16),
    ]


class UblkParamDevt(ctypes.Structure):
    _fields_ = [
        ("char_major", ctypes.c_uint32),
        ("char_minor", ctypes.c_uint32),
        ("disk_major", ctypes.c_uint32),
        ("disk_minor", ctypes.c_uint32),
    ]


class UblkParamZoned(ctypes.Structure):
    _fields_ = [
        ("max_open_zones", ctypes.c_uint32),
        ("max_active_zones", ctypes.c_uint32),
        ("max_zone_append_sectors", ctypes.c_uint32),
        ("reserved", ctypes.c_uint8 * 20),
    ]


class UblkParams(ctypes.Structure):
    _fields_ = [
        ("len", ctypes.c_uint32),  # sizeof(struct ublk_params), set for SET_PARAMS and GET_PARAMS
        ("types", ctypes.c_uint32),  # UBLK_PARAM_TYPE_* of the parts that are filled in
        ("basic", UblkParamBasic),
        ("discard", UblkParamDiscard),
        ("devt", UblkParamDevt),
        ("zoned", UblkParamZoned),
    ]


class BlkZone(ctypes.Structure):
    """include/uapi/linux/blkzoned.h; every position and length in 512-byte sectors."""

    _fields_ = [
        ("start", ctypes.c_uint64),
        ("len", ctypes.c_uint64),
        ("wp", ctypes.c_uint64),
        ("type", ctypes.c_uint8),
        ("cond", ctypes.c_uint8),
        ("non_seq", ctypes.c_uint8),
        ("reset", ctypes.c_uint8),
        ("resv", ctypes.c_uint8 * 4),
        ("capacity", ctypes.c_uint64),
        ("reserved", ctypes.c_uint8 * 24),
    ]


# ---------------------------------------------------------------- commands
UBLK_U_CMD_GET_DEV_INFO = _ior("u", 0x02, ctypes.sizeof(UblksrvCtrlCmd))
UBLK_U_CMD_ADD_DEV = _iowr("u", 0x04, ctypes.sizeof(UblksrvCtrlCmd))
UBLK_U_CMD_DEL_DEV = _iowr("u", 0x05, ctypes.sizeof(UblksrvCtrlCmd))
UBLK_U_CMD_START_DEV = _iowr("u", 0x06, ctypes.sizeof(UblksrvCtrlCmd))
UBLK_U_CMD_STOP_DEV = _iowr("u", 0x07, ctypes.sizeof(UblksrvCtrlCmd))
UBLK_U_CMD_SET_PARAMS = _iowr("u", 0x08, ctypes.sizeof(UblksrvCtrlCmd))
UBLK_U_CMD_GET_PARAMS = _ior("u", 0x09, ctypes.sizeof(UblksrvCtrlCmd))
UBLK_U_CMD_GET_FEATURES = _ior("u", 0x13, ctypes.sizeof(UblksrvCtrlCmd))
# Frees the id once the last user of the disk lets go, without waiting for it
# (DEL_DEV waits, forever if a filesystem is still mounted on the disk).
UBLK_U_CMD_DEL_DEV_ASYNC = _ior("u", 0x14, ctypes.sizeof(UblksrvCtrlCmd))

UBLK_U_IO_FETCH_REQ = _iowr("u", 0x20, ctypes.sizeof(UblksrvIoCmd))
UBLK_U_IO_COMMIT_AND_FETCH_REQ = _iowr("u", 0x21, ctypes.sizeof(UblksrvIoCmd))

# A FETCH or COMMIT_AND_FETCH completes with OK when a request arrived; with
# ABORT when the device is going away and the tag must not be fetched again.
UBLK_IO_RES_OK = 0
UBLK_IO_RES_ABORT = -errno.ENODEV

UBLKSRV_CMD_BUF_OFFSET = 0
UBLKSRV_IO_BUF_OFFSET = 0x80000000
UBLK_MAX_QUEUE_DEPTH = 4096
UBLK_IO_BUF_BITS = 25
UBLK_TAG_OFF = UBLK_IO_BUF_BITS
UBLK_TAG_BITS = 16
UBLK_QID_OFF = UBLK_TAG_OFF + UBLK_TAG_BITS

# ------------------------------------------------------------------- flags
UBLK_F_USER_RECOVERY = 1 << 3
UBLK_F_CMD_IOCTL_ENCODE = 1 << 6
UBLK_F_USER_COPY = 1 << 7
UBLK_F_ZONED = 1 << 8

UBLK_S_DEV_DEAD = 0
UBLK_S_DEV_LIVE = 1
UBLK_S_DEV_QUIESCED = 2

UBLK_IO_OP_READ = 0
UBLK_IO_OP_WRITE = 1
UBLK_IO_OP_FLUSH = 2
UBLK_IO_OP_DISCARD = 3
UBLK_IO_OP_WRITE_SAME = 4
UBLK_IO_OP_WRITE_ZEROES = 5
UBLK_IO_OP_ZONE_OPEN = 10
UBLK_IO_OP_ZONE_CLOSE = 11
UBLK_IO_OP_ZONE_FINISH = 12
UBLK_IO_OP_ZONE_APPEND = 13
UBLK_IO_OP_ZONE_RESET_ALL = 14
UBLK_IO_OP_ZONE_RESET = 15
UBLK_IO_OP_REPORT_ZONES = 18

UBLK_IO_F_FUA = 1 << 13
UBLK_IO_F_NOUNMAP = 1 << 15

UBLK_ATTR_READ_ONLY = 1 << 0
UBLK_ATTR_ROTATIONAL = 1 << 1
UBLK_ATTR_VOLATILE_CACHE = 1 << 2
UBLK_ATTR_FUA = 1 << 3

UBLK_PARAM_TYPE_BASIC = 1 << 0
UBLK_PARAM_TYPE_DISCARD = 1 << 1
UBLK_PARAM_TYPE_DEVT = 1 << 2
UBLK_PARAM_TYPE_ZONED = 1 << 3

# blkzoned.h enum blk_zone_type / blk_zone_cond.
BLK_ZONE_TYPE_CONVENTIONAL = 0x1
BLK_ZONE_TYPE_SEQWRITE_REQ = 0x2
BLK_ZONE_COND_NOT_WP = 0x0
BLK_ZONE_COND_EMPTY = 0x1
BLK_ZONE_COND_IMP_OPEN = 0x2
BLK_ZONE_COND_EXP_OPEN = 0x3
BLK_ZONE_COND_CLOSED = 0x4
BLK_ZONE_COND_READONLY = 0xD
BLK_ZONE_COND_FULL = 0xE
BLK_ZONE_COND_OFFLINE = 0xF

SECTOR_SHIFT = 9


def user_copy_offset(queue_id: int, tag: int) -> int:
    """Where request ``tag``'s data sits in /dev/ublkcN for pread/pwrite (UBLK_F_USER_COPY)."""
    return UBLKSRV_IO_BUF_OFFSET + (queue_id << UBLK_QID_OFF) + (tag << UBLK_TAG_OFF)
