"""A minimal io_uring through ctypes: what a ublk server needs, nothing more.

Linux's io_uring (include/uapi/linux/io_uring.h) is two rings shared with the
kernel: the submission queue (SQ: an index array plus an array of SQEs) and
the completion queue (CQ: an array of CQEs).  ``io_uring_setup(2)`` makes the
ring and fills :class:`IoUringParams` with the offsets of the ring fields;
``mmap(2)`` of the ring fd at ``IORING_OFF_SQ_RING``/``IORING_OFF_CQ_RING``/
``IORING_OFF_SQES`` maps them; ``io_uring_enter(2)`` submits and waits.

ublk needs ``IORING_SETUP_SQE128``: its commands (``IORING_OP_URING_CMD``)
carry their payload in the 80 bytes after offset 48 of a 128-byte SQE
(``sqe->cmd``).  It needs no 32-byte CQEs.

Memory ordering: the ring indices are plain loads and stores here.  That is
enough on x86-64 (total store order) because every submission goes through
``io_uring_enter`` (a full barrier) before the kernel reads the SQ tail, and
the CQ is read only after ``io_uring_enter`` returns.  A weakly ordered CPU
(arm64) would need acquire/release barriers that ctypes cannot express; the
ring refuses to start there rather than corrupt requests.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import struct
from collections.abc import Iterator
from typing import NamedTuple

# x86-64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl).
SYS_IO_URING_SETUP = 425
SYS_IO_URING_ENTER = 426

# enum io_uring_op values used here.
IORING_OP_NOP = 0
IORING_OP_READ = 22
IORING_OP_URING_CMD = 46

IORING_SETUP_COOP_TASKRUN = 1 << 8
IORING_SETUP_SQE128 = 1 << 10
IORING_SETUP_CQE32 = 1 << 11
IORING_SETUP_SINGLE_ISSUER = 1 << 12
IORING_SETUP_DEFER_TASKRUN = 1 << 13
# A ring one thread owns (Linux >= 6.1): completions (ublk's task work
# included) are posted only when that thread waits in io_uring_enter, with no
# interrupt of the thread while it runs.
SINGLE_THREAD_FLAGS = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN
IORING_ENTER_GETEVENTS = 1 << 0
IORING_OFF_SQ_RING = 0
IORING_OFF_CQ_RING = 0x8000000
IORING_OFF_SQES = 0x10000000

SQE_SIZE = 64
SQE128_SIZE = 128
CQE_SIZE = 16
# Where the URING_CMD payload starts in an SQE (``__u8 cmd[0]`` after addr3).
SQE_CMD_OFFSET = 48
SQE_CMD_BYTES = SQE128_SIZE - SQE_CMD_OFFSET


class IoSqringOffsets(ctypes.Structure):
    _fields_ = [
        ("head", ctypes.c_uint32),
        ("tail", ctypes.c_uint32),
        ("ring_mask", ctypes.c_uint32),
        ("ring_entries", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("dropped", ctypes.c_uint32),
        ("array", ctypes.c_uint32),
        ("resv1", ctypes.c_uint32),
        ("user_addr", ctypes.c_uint64),
    ]


class IoCqringOffsets(ctypes.Structure):
    _fields_ = [
        ("head", ctypes.c_uint32),
        ("tail", ctypes.c_uint32),
        ("ring_mask", ctypes.c_uint32),
        ("ring_entries", ctypes.c_uint32),
        ("overflow", ctypes.c_uint32),
        ("cqes", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("resv1", ctypes.c_uint32),
        ("user_addr", ctypes.c_uint64),
    ]


class IoUringParams(ctypes.Structure):
    _fields_ = [
        ("sq_entries", ctypes.c_uint32),
        ("cq_entries", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("sq_thread_cpu", ctypes.c_uint32),
        ("sq_thread_idle", ctypes.c_uint32),
        ("features", ctypes.c_uint32),
        ("wq_fd", ctypes.c_uint32),
        ("resv", ctypes.c_uint32 * 3),
        ("sq_off", IoSqringOffsets),
        ("cq_off", IoCqringOffsets),
    ]


class IoUringSqe(ctypes.Structure):
    """The 64-byte SQE; only the fields this package sets (unions flattened to their first member)."""

    _fields_ = [
        ("opcode", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("ioprio", ctypes.c_uint16),
        ("fd", ctypes.c_int32),
        ("off", ctypes.c_uint64),  # union: cmd_op is its low 32 bits (x86-64 is little endian)
        ("addr", ctypes.c_uint64),
        ("len", ctypes.c_uint32),
        ("rw_flags", ctypes.c_uint32),
        ("user_data", ctypes.c_uint64),
        ("buf_index", ctypes.c_uint16),
        ("personality", ctypes.c_uint16),
        ("splice_fd_in", ctypes.c_int32),
        ("addr3", ctypes.c_uint64),
        ("pad2", ctypes.c_uint64),
    ]


class IoUringCqe(ctypes.Structure):
    _fields_ = [
        ("user_data", ctypes.c_uint64),
        ("res", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
    ]


# struct io_uring_sqe's first 64 bytes, field by field as in IoUringSqe.
_SQE_FORMAT = struct.Struct("<BBHiQQIIQHHiQQ")
_ZEROS = bytes(SQE128_SIZE)


class Completion(NamedTuple):
    user_data: int
    res: int
    flags: int


# struct io_uring_cqe: user_data, res, flags.
_CQE_FORMAT = struct.Struct("<QiI")


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


class IoUring:
    """One io_uring: ``prepare`` SQEs, ``submit`` them, ``completions`` to reap.

    Not thread-safe: one thread owns a ring (ublk requires that anyway: a
    queue's commands must all come from the task that fetched first).
    """

    def __init__(self, entries: int, sqe128: bool = False, flags: int = 0) -> None:
        """``flags``: more IORING_SETUP_* (e.g. :data:`SINGLE_THREAD_FLAGS`); kernels without them say EINVAL."""
        if platform.machine() not in ("x86_64", "AMD64"):
            raise OSError(errno.ENOSYS, "blockemu's io_uring needs x86-64 (syscall numbers, store ordering)")
        params = IoUringParams()
        params.flags = (IORING_SETUP_SQE128 if sqe128 else 0) | flags
        self.fd = _check(_syscall(SYS_IO_URING_SETUP, ctypes.c_uint(entries), ctypes.byref(params)),
                         "io_uring_setup")
        self.params = params
        self.sqe_size = SQE128_SIZE if sqe128 else SQE_SIZE
        try:
            sq_bytes = params.sq_off.array + params.sq_entries * 4
            cq_bytes = params.cq_off.cqes + params.cq_entries * CQE_SIZE
            prot = mmap.PROT_READ | mmap.PROT_WRITE
            self._sq_map = mmap.mmap(self.fd, sq_bytes, mmap.MAP_SHARED | mmap.MAP_POPULATE, prot,
                                     offset=IORING_OFF_SQ_RING)
            self._cq_map = mmap.mmap(self.fd, cq_bytes, mmap.MAP_SHARED | mmap.MAP_POPULATE, prot,
                                     offset=IORING_OFF_CQ_RING)
            self._sqe_map = mmap.mmap(self.fd, params.sq_entries * self.sqe_size,
                                      mmap.MAP_SHARED | mmap.MAP_POPULATE, prot, offset=IORING_OFF_SQES)
        except BaseException:
            os.close(self.fd)
            raise
        sq, cq = params.sq_off, params.cq_off
        self._sq_head = ctypes.c_uint32.from_buffer(self._sq_map, sq.head)
        self._sq_tail = ctypes.c_uint32.from_buffer(self._sq_map, sq.tail)
        self._sq_mask = ctypes.c_uint32.from_buffer(self._sq_map, sq.ring_mask).value
        self._sq_array = (ctypes.c_uint32 * params.sq_entries).from_buffer(self._sq_map, sq.array)
        self._cq_head = ctypes.c_uint32.from_buffer(self._cq_map, cq.head)
        self._cq_tail = ctypes.c_uint32.from_buffer(self._cq_map, cq.tail)
        self._cq_mask = ctypes.c_uint32.from_buffer(self._cq_map, cq.ring_mask).value
        self._cqes_offset = cq.cqes
        self._sqe_view = memoryview(self._sqe_map)
        # SQEs prepared but not yet handed to the kernel by io_uring_enter.
        self._pending = 0

    @property
    def sq_entries(self) -> int:
        return int(self.params.sq_entries)

    def prepare(self, opcode: int, fd: int, user_data: int, *, off: int = 0, addr: int = 0, length: int = 0,
                cmd: bytes = b"") -> None:
        """Fill the next SQE; it goes to the kernel at the next :meth:`submit`."""
        tail = self._sq_tail.value
        if (tail - self._sq_head.value) & 0xFFFFFFFF >= self.params.sq_entries:
            self.submit()  # ring full: hand what is there to the kernel first
        index = tail & self._sq_mask
        base = index * self.sqe_size
        # One pack_into per SQE (the IoUringSqe layout, checked against the
        # header by the unit tests); clearing the command area too.
        _SQE_FORMAT.pack_into(self._sqe_map, base, opcode, 0, 0, fd, off, addr, length, 0, user_data, 0, 0, 0, 0, 0)
        if self.sqe_size > SQE_SIZE:
            self._sqe_view[base + SQE_SIZE:base + self.sqe_size] = _ZEROS[:self.sqe_size - SQE_SIZE]
        if cmd:
            if len(cmd) > self.sqe_size - SQE_CMD_OFFSET:
                raise ValueError(f"command payload of {len(cmd)} bytes does not fit the SQE")
            self._sqe_view[base + SQE_CMD_OFFSET:base + SQE_CMD_OFFSET + len(cmd)] = cmd
        self._sq_array[index] = index
        self._sq_tail.value = (tail + 1) & 0xFFFFFFFF
        self._pending += 1

    def prepare_uring_cmd(self, fd: int, cmd_op: int, payload: bytes, user_data: int) -> None:
        """An ``IORING_OP_URING_CMD``: ``cmd_op`` shares the ``off`` union (its low 32 bits)."""
        self.prepare(IORING_OP_URING_CMD, fd, user_data, off=cmd_op & 0xFFFFFFFF, cmd=payload)

    def submit(self, wait_for: int = 0) -> int:
        """Hand prepared SQEs to the kernel and wait for ``wait_for`` completions; EINTR is retried."""
        flags = IORING_ENTER_GETEVENTS if wait_for else 0
        while True:
            result = _syscall(SYS_IO_URING_ENTER, ctypes.c_int(self.fd), ctypes.c_uint(self._pending),
                              ctypes.c_uint(wait_for), ctypes.c_uint(flags), None, ctypes.c_size_t(0))
            if result >= 0:
                self._pending -= result
                return int(result)
            err = ctypes.get_errno()
            if err == errno.EINTR:
                continue
            raise OSError(err, f"io_uring_enter: {os.strerror(err)}")

    def completions(self) -> Iterator[Completion]:
        """Every CQE the kernel has posted, oldest first; each is consumed as it is yielded."""
        # Unpacked straight from the mapping: a ctypes view per CQE costs more.
        cq_map, offset, mask, unpack = self._cq_map, self._cqes_offset, self._cq_mask, _CQE_FORMAT.unpack_from
        head = self._cq_head.value
        while head != self._cq_tail.value:
            completion = Completion(*unpack(cq_map, offset + (head & mask) * CQE_SIZE))
            head = (head + 1) & 0xFFFFFFFF
            self._cq_head.value = head
            yield completion

    def close(self) -> None:
        if self.fd < 0:
            return
        # Drop the ctypes views first: an mmap with exported buffers cannot close.
        del self._sq_head, self._sq_tail, self._sq_array, self._cq_head, self._cq_tail
        self._sqe_view.release()
        for region in (self._sq_map, self._cq_map, self._sqe_map):
            region.close()
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> IoUring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
