"""Request traces: blockemu's own compact format, and fio iologs.

A blockemu trace file is

    b"BLKEMUTR" | u32 version | u32 header length | header (JSON)
    | u64 state length | device state (numpy .npz, may be empty)
    | records, 24 bytes each (TRACE_DTYPE), until the end of the file

The header names the device and the configuration it was recorded on; the
state is the model's internal state when recording began (for UFS, the FTL
mapping), so a replay starts from the same physical layout the live device
had.  Records are appended as requests arrive and flushed in blocks, so a
trace of a server killed mid-run is still readable up to its last block.

Version 2 (written since zone management was traced) keeps the record
layout and adds:

* zone-management commands, from the control API or a frontend (ublk):
  ``zone_open``, ``zone_close``, ``zone_finish``, ``zone_reset``,
  ``zone_offline`` and ``zone_append`` with ``offset`` = the zone's start
  (and ``length`` = the appended bytes); ``zone_reset_all`` with offset 0;
  an injected fault as ``zone_fault_read_only`` / ``zone_fault_offline``;
  a Simple Copy as its ``copy_source`` records (offset, length) followed by
  one ``copy`` record (offset = the destination zone's start, length = the
  bytes copied);
* ``FLAG_REFUSED``: the device refused the request (the host saw an error).
  A replay skips such records and counts them.

Version 1 files (the first five ops, FUA only) are still read.

Other formats (fio iologs, blktrace, blkparse, CSV) are imported by
:mod:`blockemu.traceio`, which writes this format for ``blockemu trace convert``.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from blockemu.devices.base import SavesState

if TYPE_CHECKING:
    from blockemu.config import Config
    from blockemu.devices.base import Device

MAGIC = b"BLKEMUTR"
VERSION = 2
READABLE_VERSIONS = (1, 2)
TRACE_DTYPE = np.dtype(
    [("t_ns", "<u8"), ("offset", "<u8"), ("length", "<u4"), ("op", "u1"), ("flags", "u1"), ("qd", "<u2")]
)
assert TRACE_DTYPE.itemsize == 24
DATA_OPS = ("read", "write", "flush", "trim", "zero")
# Version 2's zone management and Simple Copy (the module docstring says what offset and length hold).
ZONE_OPS = ("zone_open", "zone_close", "zone_finish", "zone_reset", "zone_reset_all", "zone_offline",
            "zone_append", "zone_fault_read_only", "zone_fault_offline", "copy_source", "copy")
OPS = DATA_OPS + ZONE_OPS
OP_CODES = {name: code for code, name in enumerate(OPS)}
FLAG_FUA = 1
FLAG_REFUSED = 2
_BLOCK_RECORDS = 4096


class TraceError(ValueError):
    """A trace file that cannot be read, with the reason."""


@dataclass
class Trace:
    records: np.ndarray
    header: dict[str, Any]
    state: dict[str, np.ndarray]
    # fio iologs without timestamps are replayed closed-loop (arrival = previous completion).
    has_times: bool = True

    def __len__(self) -> int:
        return len(self.records)


class TraceWriter:
    def __init__(self, path: Path, handle: BinaryIO, started_ns: int) -> None:
        self.path = path
        self._file = handle
        self._pending: list[tuple[int, int, int, int, int, int]] = []
        self.records = 0
        self.started_ns = started_ns

    @classmethod
    def create(cls, path: str | Path, config: Config, device: Device, now_ns: int) -> TraceWriter:
        from blockemu.devices.base import ApiError

        path = Path(path)
        if not path.is_absolute():
            raise ApiError(400, f"trace path must be absolute, got {str(path)!r}")
        if not path.parent.is_dir():
            raise ApiError(400, f"trace directory {path.parent} does not exist")
        try:
            handle = path.open("xb")  # never overwrite an existing file
        except FileExistsError:
            raise ApiError(409, f"{path} exists; traces never overwrite files") from None
        header = {
            "device": device.name,
            "type": config.device.type,
            "size_bytes": device.size_bytes,
            "config": config.source,
            "timing_mode": config.timing.mode,
            "started_ns": now_ns,
        }
        state = b""
        if isinstance(device, SavesState):
            buffer = io.BytesIO()
            arrays: dict[str, Any] = device.snapshot_state()
            np.savez_compressed(buffer, **arrays)
            state = buffer.getvalue()
        header_bytes = json.dumps(header).encode()
        handle.write(MAGIC + struct.pack("<II", VERSION, len(header_bytes)) + header_bytes)
        handle.write(struct.pack("<Q", len(state)) + state)
        handle.flush()
        return cls(path, handle, now_ns)

    def append(self, t_ns: int, op: str, offset: int, length: int, fua: bool, depth: int,
               refused: bool = False) -> None:
        flags = (FLAG_FUA if fua else 0) | (FLAG_REFUSED if refused else 0)
        self._pending.append((t_ns, offset, length, OP_CODES[op], flags, min(depth, 65535)))
        if len(self._pending) >= _BLOCK_RECORDS:
            self._write_pending()

    def record(self, now_ns: int, op: str, offset: int, length: int, refused: bool) -> None:
        """A device's own command (zone management, Simple Copy): blockemu.devices.base.CommandRecorder."""
        self.append(now_ns, op, offset, length, False, 1, refused)

    def _write_pending(self) -> None:
        if self._pending:
            self._file.write(np.array(self._pending, dtype=TRACE_DTYPE).tobytes())
            self.records += len(self._pending)
            self._pending.clear()

    def status(self) -> dict[str, Any]:
        return {"tracing": not self._file.closed, "path": str(self.path),
                "records": self.records + len(self._pending)}

    def close(self) -> None:
        self._write_pending()
        self._file.close()


def write_native(path: Path, header: dict[str, Any], chunks: Iterable[np.ndarray]) -> int:
    """A trace file (no device state) from record blocks, written as they come; returns the record count."""
    header_bytes = json.dumps(header).encode()
    count = 0
    with path.open("xb") as f:
        f.write(MAGIC + struct.pack("<II", VERSION, len(header_bytes)) + header_bytes + struct.pack("<Q", 0))
        for chunk in chunks:
            f.write(np.ascontiguousarray(chunk, dtype=TRACE_DTYPE).tobytes())
            count += len(chunk)
    return count


def read_trace(path: str | Path) -> Trace:
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(len(MAGIC))
            if head == MAGIC:
                return _read_native(path, f)
    except OSError as err:
        raise TraceError(f"{path}: cannot read: {err.strerror}") from None
    raise TraceError(f"{path}: not a blockemu trace (magic {MAGIC!r}); other formats: blockemu.traceio.read_any")


def _read_native(path: Path, f: BinaryIO) -> Trace:
    fixed = f.read(8)
    if len(fixed) != 8:
        raise TraceError(f"{path}: truncated header")
    version, header_len = struct.unpack("<II", fixed)
    if version not in READABLE_VERSIONS:
        raise TraceError(f"{path}: trace version {version}; this blockemu reads versions "
                         f"{', '.join(map(str, READABLE_VERSIONS))}")
    try:
        header = json.loads(f.read(header_len))
        (state_len,) = struct.unpack("<Q", f.read(8))
    except (ValueError, struct.error):
        raise TraceError(f"{path}: corrupt header") from None
    state_bytes = f.read(state_len)
    if len(state_bytes) != state_len:
        raise TraceError(f"{path}: truncated device state")
    state: dict[str, np.ndarray] = {}
    if state_len:
        with np.load(io.BytesIO(state_bytes)) as archive:
            state = {name: archive[name] for name in archive.files}
    body = f.read()
    usable = len(body) - len(body) % TRACE_DTYPE.itemsize
    records = np.frombuffer(body[:usable], dtype=TRACE_DTYPE).copy()
    known = len(DATA_OPS) if version == 1 else len(OPS)
    if len(records) and int(records["op"].max()) >= known:
        raise TraceError(f"{path}: unknown operation code {int(records['op'].max())}")
    # A converted fio v2 iolog has no times: it replays closed-loop.
    return Trace(records, header, state, has_times=bool(header.get("has_times", True)))
