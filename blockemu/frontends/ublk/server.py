"""A ublk server: any blockemu device as a Linux block device /dev/ublkbN.

Linux's ublk driver (drivers/block/ublk_drv.c, uapi in include/uapi/linux/ublk_cmd.h)
hands block requests to a user-space server over io_uring:

* Control, on /dev/ublk-control: ``ADD_DEV`` (the kernel picks the id N and
  makes /dev/ublkcN), ``SET_PARAMS`` (size, block sizes, discard, zones),
  ``START_DEV`` (adds the disk /dev/ublkbN once every tag has been fetched),
  ``STOP_DEV`` (removes the disk), ``DEL_DEV`` (frees the id).
* I/O, on /dev/ublkcN, one queue here: every tag (request slot) has a
  ``FETCH_REQ`` outstanding; when a request arrives its CQE comes back with
  the tag, the server reads the request's descriptor (``struct
  ublksrv_io_desc``, in an array mmapped from /dev/ublkcN), serves it and
  answers with ``COMMIT_AND_FETCH_REQ`` (the result, and the next fetch).
* Data, with ``UBLK_F_USER_COPY``: pread/pwrite on /dev/ublkcN at the tag's
  offset (:func:`~blockemu.frontends.ublk.uapi.user_copy_offset`) copies
  between the request's pages and the server.  ``UBLK_F_ZONED`` requires it.

Threads: the queue thread owns the io_uring (ublk insists that one task
issues all of a queue's commands).  In virtual timing a request completes
without sleeping, so the queue thread serves it in line; in realtime timing
serving waits for the modeled completion, so requests go to a thread pool
and come back through an eventfd the ring also watches.

Exit: ``close`` stops and deletes the device (also on SIGTERM/SIGINT through
:func:`serve`).  If the process dies without that (kill -9), the kernel
closes its io_uring and /dev/ublkcN; without ``UBLK_F_USER_RECOVERY`` (not
set here, deliberately: recovery would hold I/O queued for a new server)
Linux 6.12 cancels the outstanding commands, fails in-flight and new I/O
with EIO and removes /dev/ublkbN.  The id N stays allocated until a
``DEL_DEV``, which ``python -m blockemu.frontends.ublk delete N`` issues.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import mmap
import os
import struct
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from blockemu.devices.base import DeviceError
from blockemu.frontends.ublk import uapi
from blockemu.frontends.ublk.uring import IORING_OP_READ, SINGLE_THREAD_FLAGS, IoUring
from blockemu.runtime import DeviceRuntime

CONTROL_PATH = "/dev/ublk-control"
DEFAULT_QUEUE_DEPTH = 64
# ublksrv's default; also the largest request (max_sectors) the disk gets.
DEFAULT_MAX_IO_BUF_BYTES = 512 * 1024
SECTOR = 1 << uapi.SECTOR_SHIFT
UINT32_MAX = 0xFFFFFFFF
# user_data of the eventfd read that wakes the queue thread (tags are < 4096).
_WAKE = 1 << 32
# struct ublksrv_io_desc: op_flags, nr_sectors|nr_zones, start_sector, addr.
_IO_DESC = struct.Struct("<IIQQ")


class UblkError(Exception):
    """The ublk driver refused something, or is not there."""


def _shift(value: int, what: str) -> int:
    if value <= 0 or value & (value - 1):
        raise UblkError(f"{what} must be a power of two, got {value}")
    return value.bit_length() - 1


class ControlDevice:
    """/dev/ublk-control: one synchronous control command at a time."""

    def __init__(self, path: str = CONTROL_PATH) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            raise UblkError(f"{path} not found: load the driver (modprobe ublk_drv, Linux >= 6.6)") from None
        self.ring = IoUring(4, sqe128=True)
        self.lock = threading.Lock()

    def command(self, cmd_op: int, dev_id: int, buffer: ctypes.Structure | None = None, data: int = 0) -> int:
        """Issue one control command and wait for it; ``buffer`` is read and/or written by the kernel."""
        cmd = uapi.UblksrvCtrlCmd()
        cmd.dev_id = dev_id & 0xFFFFFFFF
        cmd.queue_id = 0xFFFF  # -1: not a per-queue command
        if buffer is not None:
            cmd.addr = ctypes.addressof(buffer)
            cmd.len = ctypes.sizeof(buffer)
        cmd.data[0] = data
        with self.lock:
            self.ring.prepare_uring_cmd(self.fd, cmd_op, bytes(cmd), user_data=cmd_op)
            self.ring.submit(wait_for=1)
            results = list(self.ring.completions())
        assert len(results) == 1, results
        if results[0].res < 0:
            raise OSError(-results[0].res, os.strerror(-results[0].res))
        return results[0].res

    def delete(self, dev_id: int) -> None:
        """DEL_DEV_ASYNC: the id is freed when the last user of the device lets go.

        Plain DEL_DEV would wait for that in the kernel, which never happens
        while a filesystem is still mounted on the (already stopped) disk.
        """
        try:
            self.command(uapi.UBLK_U_CMD_DEL_DEV_ASYNC, dev_id)
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            self.command(uapi.UBLK_U_CMD_DEL_DEV, dev_id)  # Linux < 6.9 has no async delete

    def stop_and_delete(self, dev_id: int) -> None:
        """STOP_DEV (a no-op on a dead device), then DEL_DEV."""
        self.command(uapi.UBLK_U_CMD_STOP_DEV, dev_id)
        self.delete(dev_id)

    def close(self) -> None:
        self.ring.close()
        os.close(self.fd)


def device_params(runtime: DeviceRuntime, max_io_buf_bytes: int) -> uapi.UblkParams:
    """The disk the kernel will show, from what the device says it supports (Capabilities)."""
    device = runtime.device
    caps = device.capabilities
    logical, physical, _ = caps.block_size
    params = uapi.UblkParams()
    params.len = ctypes.sizeof(params)
    params.types = uapi.UBLK_PARAM_TYPE_BASIC
    basic = params.basic
    basic.attrs = ((uapi.UBLK_ATTR_VOLATILE_CACHE if caps.flush else 0)
                   | (uapi.UBLK_ATTR_FUA if caps.fua else 0)
                   | (uapi.UBLK_ATTR_ROTATIONAL if caps.rotational else 0))
    basic.logical_bs_shift = _shift(max(logical, SECTOR), "the logical block size")
    basic.physical_bs_shift = _shift(max(physical, logical, SECTOR), "the preferred block size")
    basic.io_min_shift = basic.physical_bs_shift
    basic.io_opt_shift = basic.physical_bs_shift
    basic.max_sectors = max_io_buf_bytes >> uapi.SECTOR_SHIFT
    basic.dev_sectors = device.size_bytes >> uapi.SECTOR_SHIFT
    if caps.zoned:
        zns: Any = runtime.stack.model  # the zoned model's attributes (blockemu/devices/zns/)
        zone_size: int = zns.zone_size
        _shift(zone_size >> uapi.SECTOR_SHIFT, "the zone size in sectors (Linux needs it)")
        params.types |= uapi.UBLK_PARAM_TYPE_ZONED
        basic.chunk_sectors = zone_size >> uapi.SECTOR_SHIFT
        # Whole zones only: the model has no smaller last zone.
        basic.dev_sectors = zns.zone_count * basic.chunk_sectors
        zoned = params.zoned
        zoned.max_open_zones = zns.max_open
        zoned.max_active_zones = zns.max_active
        zoned.max_zone_append_sectors = min(zns.zone_append_max, max_io_buf_bytes) >> uapi.SECTOR_SHIFT
    elif caps.trim or caps.zero:
        params.types |= uapi.UBLK_PARAM_TYPE_DISCARD
        discard = params.discard
        # One range per request (max_discard_segments 1): ublk hands the
        # server a single start_sector/nr_sectors.
        discard.discard_granularity = 1 << basic.physical_bs_shift if caps.trim else 0
        # A bio's size is a u32 of bytes: no request is larger than this.
        discard.max_discard_sectors = UINT32_MAX >> uapi.SECTOR_SHIFT if caps.trim else 0
        discard.max_write_zeroes_sectors = UINT32_MAX >> uapi.SECTOR_SHIFT if caps.zero else 0
        discard.max_discard_segments = 1
    return params


class UblkServer:
    """One ublk device serving one :class:`DeviceRuntime` on one queue."""

    def __init__(self, runtime: DeviceRuntime, queue_depth: int = DEFAULT_QUEUE_DEPTH,
                 max_io_buf_bytes: int = DEFAULT_MAX_IO_BUF_BYTES, control: ControlDevice | None = None) -> None:
        if not 1 <= queue_depth <= uapi.UBLK_MAX_QUEUE_DEPTH:
            raise UblkError(f"queue depth must be 1..{uapi.UBLK_MAX_QUEUE_DEPTH}, got {queue_depth}")
        self.runtime = runtime
        self.queue_depth = queue_depth
        self.max_io_buf_bytes = max_io_buf_bytes
        self.zoned = runtime.device.capabilities.zoned
        self.params = device_params(runtime, max_io_buf_bytes)
        self.control = control if control is not None else ControlDevice()
        self.dev_id = -1
        self._char_fd = -1
        self._descriptors: mmap.mmap | None = None
        self._queue_thread: threading.Thread | None = None
        self._queue_ready = threading.Event()
        self._queue_error: BaseException | None = None
        self._stopping = False
        self._started = False
        self._wake_fd = os.eventfd(0, os.EFD_CLOEXEC)
        self._finished: collections.deque[tuple[int, int, int]] = collections.deque()
        self._executor: ThreadPoolExecutor | None = None
        # One data buffer per tag, reused for every request on it.
        self._buffers = [bytearray(max_io_buf_bytes) for _ in range(queue_depth)]
        self.failed = threading.Event()  # set when the queue thread dies

    @property
    def block_path(self) -> str:
        return f"/dev/ublkb{self.dev_id}"

    @property
    def char_path(self) -> str:
        return f"/dev/ublkc{self.dev_id}"

    # ------------------------------------------------------------- lifecycle
    def start(self) -> str:
        """ADD_DEV, SET_PARAMS, fetch on every tag, START_DEV; returns /dev/ublkbN."""
        info = uapi.UblksrvCtrlDevInfo()
        info.nr_hw_queues = 1
        info.queue_depth = self.queue_depth
        info.max_io_buf_bytes = self.max_io_buf_bytes
        info.dev_id = 0xFFFFFFFF  # -1: the kernel picks N
        info.flags = uapi.UBLK_F_USER_COPY | uapi.UBLK_F_CMD_IOCTL_ENCODE | (uapi.UBLK_F_ZONED if self.zoned else 0)
        try:
            self.control.command(uapi.UBLK_U_CMD_ADD_DEV, -1, info)
        except OSError as err:
            raise UblkError(f"ADD_DEV refused: {err} (zoned needs Linux >= 6.6 with CONFIG_BLK_DEV_ZONED)") from None
        self.dev_id = int(info.dev_id)
        try:
            try:
                self.control.command(uapi.UBLK_U_CMD_SET_PARAMS, self.dev_id, self.params)
            except OSError as err:
                raise UblkError(f"SET_PARAMS refused: {err}") from None
            self._open_char_device()
            # Used only while timing is realtime; it can be switched at run time.
            self._executor = ThreadPoolExecutor(self.queue_depth, thread_name_prefix="blockemu-ublk")
            self._queue_thread = threading.Thread(target=self._queue_main, name="blockemu-ublk-queue0", daemon=True)
            self._queue_thread.start()
            self._queue_ready.wait()
            if self._queue_error is not None:
                raise UblkError(f"queue 0 did not start: {self._queue_error}")
            # Blocks until the driver has a fetch on every tag, then adds the
            # disk (for a zoned disk, reading the zones through queue 0).
            self.control.command(uapi.UBLK_U_CMD_START_DEV, self.dev_id, data=os.getpid())
            self._started = True
        except BaseException:
            self.close()
            raise
        return self.block_path

    def _open_char_device(self) -> None:
        deadline = time.monotonic() + 10.0
        while True:  # devtmpfs (or udev) creates the node shortly after ADD_DEV
            try:
                self._char_fd = os.open(self.char_path, os.O_RDWR | os.O_CLOEXEC)
                break
            except FileNotFoundError:
                if time.monotonic() > deadline:
                    raise UblkError(f"{self.char_path} did not appear after ADD_DEV") from None
                time.sleep(0.02)
        # The descriptor array of queue 0: exactly round_up(depth * 24, page)
        # bytes at UBLKSRV_CMD_BUF_OFFSET (ublk_ch_mmap refuses any other size).
        size = -(-self.queue_depth * _IO_DESC.size // mmap.PAGESIZE) * mmap.PAGESIZE
        self._descriptors = mmap.mmap(self._char_fd, size, mmap.MAP_SHARED | mmap.MAP_POPULATE, mmap.PROT_READ,
                                      offset=uapi.UBLKSRV_CMD_BUF_OFFSET)

    def close(self) -> None:
        """STOP_DEV, let the queue drain its aborts, DEL_DEV; safe to call twice and after failures."""
        if self.dev_id >= 0:
            self._stop_and_delete()
        if self._wake_fd >= 0:
            os.close(self._wake_fd)
            self._wake_fd = -1

    def _stop_and_delete(self) -> None:
        if self._started:
            try:
                # del_gendisk waits for requests in flight: the queue thread
                # keeps serving until the kernel aborts every fetch.
                self.control.command(uapi.UBLK_U_CMD_STOP_DEV, self.dev_id)
            except OSError as err:
                print(f"blockemu: ublk STOP_DEV {self.dev_id}: {err}", file=sys.stderr)
            self._started = False
        self._stopping = True
        os.eventfd_write(self._wake_fd, 1)
        if self._queue_thread is not None:
            self._queue_thread.join(timeout=30)
            self._queue_thread = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._descriptors is not None:
            self._descriptors.close()
            self._descriptors = None
        if self._char_fd >= 0:
            os.close(self._char_fd)
            self._char_fd = -1
        try:
            self.control.delete(self.dev_id)
        except OSError as err:
            print(f"blockemu: ublk DEL_DEV {self.dev_id}: {err}", file=sys.stderr)
        self.dev_id = -1

    # ------------------------------------------------------------ queue loop
    def _queue_main(self) -> None:
        try:
            ring = _queue_ring(2 * self.queue_depth + 2)
        except BaseException as err:
            self._queue_error = err
            self._queue_ready.set()
            return
        try:
            self._serve_queue(ring)
        except BaseException as err:  # reported; close() then stops the device
            self._queue_error = err
            print(f"blockemu: ublk queue 0 failed: {err!r}", file=sys.stderr, flush=True)
        finally:
            # Closing the ring cancels the outstanding fetches: the kernel then
            # fails the device's I/O instead of waiting for us.
            ring.close()
            self._queue_ready.set()
            self.failed.set()

    def _serve_queue(self, ring: IoUring) -> None:
        wake_value = ctypes.c_uint64()
        fetch = uapi.UBLK_U_IO_FETCH_REQ
        commit = uapi.UBLK_U_IO_COMMIT_AND_FETCH_REQ
        for tag in range(self.queue_depth):
            ring.prepare_uring_cmd(self._char_fd, fetch, _io_cmd(tag, 0, 0), user_data=tag)

        def arm_wake() -> None:
            ring.prepare(IORING_OP_READ, self._wake_fd, _WAKE, off=0xFFFFFFFFFFFFFFFF,
                         addr=ctypes.addressof(wake_value), length=8)

        arm_wake()
        ring.submit()
        self._queue_ready.set()
        live_tags = self.queue_depth
        inline = self._serve_inline
        while live_tags and not (self._stopping and not self._started):
            ring.submit(wait_for=1)
            for completion in ring.completions():
                tag = completion.user_data
                if tag == _WAKE:
                    while self._finished:
                        done_tag, result, lba = self._finished.popleft()
                        ring.prepare_uring_cmd(self._char_fd, commit, _io_cmd(done_tag, result, lba), done_tag)
                    if not self._stopping:
                        arm_wake()
                    continue
                if completion.res == uapi.UBLK_IO_RES_ABORT:
                    live_tags -= 1  # the device is going away: no refetch
                    continue
                if completion.res != uapi.UBLK_IO_RES_OK:
                    raise OSError(-completion.res, f"ublk fetch on tag {tag}: {os.strerror(-completion.res)}")
                if inline():
                    result, lba = self._handle(tag)
                    ring.prepare_uring_cmd(self._char_fd, commit, _io_cmd(tag, result, lba), tag)
                else:
                    assert self._executor is not None
                    self._executor.submit(self._handle_in_pool, tag)

    def _serve_inline(self) -> bool:
        # Virtual timing never sleeps, so a thread hop would only add latency.
        return self.runtime.timing_mode == "virtual"

    def _handle_in_pool(self, tag: int) -> None:
        result, lba = self._handle(tag)
        self._finished.append((tag, result, lba))
        os.eventfd_write(self._wake_fd, 1)

    # -------------------------------------------------------------- requests
    def _handle(self, tag: int) -> tuple[int, int]:
        """Serve request ``tag``; return (result for COMMIT: bytes or -errno, appended LBA)."""
        assert self._descriptors is not None
        op_flags, count, start_sector, _ = _IO_DESC.unpack_from(self._descriptors, tag * _IO_DESC.size)
        op = op_flags & 0xFF
        offset = start_sector << uapi.SECTOR_SHIFT
        nbytes = count << uapi.SECTOR_SHIFT
        runtime = self.runtime
        try:
            if op == uapi.UBLK_IO_OP_READ:
                view = memoryview(self._buffers[tag])[:nbytes]
                runtime.read(offset, view)
                return self._copy_to_request(tag, view), 0
            if op == uapi.UBLK_IO_OP_WRITE:
                view = self._copy_from_request(tag, nbytes)
                runtime.write(offset, view, bool(op_flags & uapi.UBLK_IO_F_FUA))
                return nbytes, 0
            if op == uapi.UBLK_IO_OP_FLUSH:
                runtime.flush()
                return 0, 0
            if op == uapi.UBLK_IO_OP_DISCARD:
                runtime.trim(offset, nbytes)
                return 0, 0
            if op == uapi.UBLK_IO_OP_WRITE_ZEROES:
                runtime.write_zeroes(offset, nbytes, bool(op_flags & uapi.UBLK_IO_F_FUA))
                return 0, 0
            if self.zoned:
                return self._handle_zoned(tag, op, offset, count)
            return -errno.EOPNOTSUPP, 0
        except DeviceError as err:
            # Unchanged: ublk_drv makes it a blk_status_t (errno_to_blk_status), so
            # a zone's EOVERFLOW reaches the guest as BLK_STS_ZONE_ACTIVE_RESOURCE,
            # as from an NVMe drive; an errno without one becomes EIO
            # (blockemu/devices/blk_status.py).
            return -err.errno, 0
        except Exception as err:  # the host sees EIO; the server keeps serving
            print(f"blockemu: ublk tag {tag} op {op}: {err!r}", file=sys.stderr, flush=True)
            return -errno.EIO, 0

    def _copy_to_request(self, tag: int, view: memoryview) -> int:
        written = os.pwrite(self._char_fd, view, uapi.user_copy_offset(0, tag))
        if written != len(view):
            raise OSError(errno.EIO, f"user copy to tag {tag}: {written} of {len(view)} bytes")
        return written

    def _copy_from_request(self, tag: int, nbytes: int) -> memoryview:
        view = memoryview(self._buffers[tag])[:nbytes]
        got = os.preadv(self._char_fd, [view], uapi.user_copy_offset(0, tag))
        if got != nbytes:
            raise OSError(errno.EIO, f"user copy from tag {tag}: {got} of {nbytes} bytes")
        return view

    def _handle_zoned(self, tag: int, op: int, offset: int, count: int) -> tuple[int, int]:
        device: Any = self.runtime.stack.model
        zone_size: int = device.zone_size
        index = offset // zone_size
        if op == uapi.UBLK_IO_OP_REPORT_ZONES:
            # ``count`` is nr_zones here (the nr_sectors union).
            return self._copy_to_request(tag, memoryview(self._zone_report(index, count))), 0
        if op == uapi.UBLK_IO_OP_ZONE_APPEND:
            data = self._copy_from_request(tag, count << uapi.SECTOR_SHIFT)
            appended: list[int] = []

            def append(now_ns: int) -> int:
                written_at, done = device.zone_command("append", index, now_ns, data)
                appended.append(written_at)
                return done

            self._device_command(append)
            # COMMIT's addr field carries zone_append_lba (in sectors).
            return len(data), appended[0] >> uapi.SECTOR_SHIFT
        commands: dict[int, Callable[[int], int]] = {
            # Through zone_command, which a trace records (blockemu/devices/zns/device.py).
            uapi.UBLK_IO_OP_ZONE_OPEN: lambda now: device.zone_command("open", index, now)[1],
            uapi.UBLK_IO_OP_ZONE_CLOSE: lambda now: device.zone_command("close", index, now)[1],
            uapi.UBLK_IO_OP_ZONE_FINISH: lambda now: device.zone_command("finish", index, now)[1],
            uapi.UBLK_IO_OP_ZONE_RESET: lambda now: device.zone_command("reset", index, now)[1],
            uapi.UBLK_IO_OP_ZONE_RESET_ALL: lambda now: device.zone_command("reset_all", index, now)[1],
        }
        command = commands.get(op)
        if command is None:
            return -errno.EOPNOTSUPP, 0
        self._device_command(command)
        return 0, 0

    def _device_command(self, call: Callable[[int], int]) -> None:
        """A zone command on the model, timed like a request (the device counts these itself)."""
        runtime = self.runtime
        with runtime.lock:
            clock = runtime.clock
            done = call(clock.now_ns())
        clock.wait_until(done)

    def _zone_report(self, first: int, nr_zones: int) -> bytes:
        """``nr_zones`` struct blk_zone from zone ``first``; entries past the last zone stay zero (len 0 ends it)."""
        device: Any = self.runtime.stack.model
        report = (uapi.BlkZone * nr_zones)()
        with self.runtime.lock:
            zones = device.zones[first:first + nr_zones]
            for entry, zone in zip(report, zones, strict=False):
                entry.start = zone.start >> uapi.SECTOR_SHIFT
                entry.len = zone.size >> uapi.SECTOR_SHIFT
                entry.capacity = zone.capacity >> uapi.SECTOR_SHIFT
                if zone.is_sequential:
                    entry.type = uapi.BLK_ZONE_TYPE_SEQWRITE_REQ
                    entry.wp = zone.wp >> uapi.SECTOR_SHIFT
                else:
                    # As null_blk: a conventional zone's pointer sits at its end.
                    entry.type = uapi.BLK_ZONE_TYPE_CONVENTIONAL
                    entry.wp = (zone.start + zone.size) >> uapi.SECTOR_SHIFT
                entry.cond = ZONE_CONDITIONS[zone.condition.value]
        return bytes(report)


# blockemu ZoneCondition values -> blkzoned.h BLK_ZONE_COND_*.
ZONE_CONDITIONS = {
    "not_write_pointer": uapi.BLK_ZONE_COND_NOT_WP,
    "empty": uapi.BLK_ZONE_COND_EMPTY,
    "implicitly_open": uapi.BLK_ZONE_COND_IMP_OPEN,
    "explicitly_open": uapi.BLK_ZONE_COND_EXP_OPEN,
    "closed": uapi.BLK_ZONE_COND_CLOSED,
    "full": uapi.BLK_ZONE_COND_FULL,
    "read_only": uapi.BLK_ZONE_COND_READONLY,
    "offline": uapi.BLK_ZONE_COND_OFFLINE,
}


def _queue_ring(entries: int) -> IoUring:
    """The queue thread's ring: owned by that thread alone, so set up as such where Linux can (>= 6.1).

    Without it, every request's task work interrupts the queue thread
    (TWA_SIGNAL); with it, the work waits for the thread's next
    io_uring_enter, where the thread is waiting anyway.  Measured at QD1 under
    software emulation: 2-4x the IOPS (docs/ublk.md).
    """
    try:
        return IoUring(entries, sqe128=True, flags=SINGLE_THREAD_FLAGS)
    except OSError as err:
        if err.errno != errno.EINVAL:
            raise
        return IoUring(entries, sqe128=True)


def _io_cmd(tag: int, result: int, addr: int) -> bytes:
    """struct ublksrv_io_cmd for queue 0: q_id, tag, result, addr|zone_append_lba."""
    return _IO_CMD.pack(0, tag, result, addr)


_IO_CMD = struct.Struct("<HHiQ")


def serve(runtime: DeviceRuntime, on_ready: Callable[[str], None], stop: threading.Event,
          queue_depth: int = DEFAULT_QUEUE_DEPTH) -> int:
    """Serve until ``stop`` is set or the queue fails; always STOP/DEL the device. Returns an exit code."""
    server = UblkServer(runtime, queue_depth)
    try:
        path = server.start()
        on_ready(path)
        while not stop.is_set() and not server.failed.is_set():
            stop.wait(0.5)
        return 1 if server.failed.is_set() and not stop.is_set() else 0
    finally:
        server.close()
        server.control.close()
