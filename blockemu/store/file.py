"""A persistent store: the device's bytes, an undo journal and a state checkpoint in one directory.

``[store] path`` holds::

    data     the bytes by logical address: a sparse file of the device's size
    undo     the undo journal: pre-images of the blocks changed since the last checkpoint
    state    the checkpoint: the model's state (FTL map, zones, HID, counters) at the last commit
    lock     flock()ed while a process uses the directory

The contract: :meth:`FileStore.checkpoint` is a *commit*.  Once it returns,
reopening the directory (after a ``kill -9`` of the server, say) gives back
exactly the bytes and the state of that moment, whatever was written after
it.  That is how a device's volatile write cache behaves at a power cut, and
the write-cache layer (blockemu/layers/write_cache.py) commits where a
device must: at a flush, a FUA write, and when its cache is written back.

How:

* Before a block of ``data`` is changed for the first time since the last
  checkpoint, its pre-image is appended to ``undo`` (one ``writev``; a block
  that was all zeros is recorded without payload, and zeroing an all-zero
  block needs no record).  The data write comes after the journal write has
  returned, so whatever the kernel holds for ``data`` can be undone with what
  it holds for ``undo``: a killed process loses neither.
* A checkpoint is written to ``state.tmp`` and renamed over ``state``; the
  undo journal is truncated only after that, and every record carries the
  generation it rolls back to, so records left by a kill between the rename
  and the truncation are recognised as stale.
* Opening rolls ``data`` back with the current generation's records (newest
  first), makes that durable, truncates the journal, and hands the
  checkpoint's arrays to the caller.

With ``fsync`` (the default), a commit also fsyncs ``data`` before the
checkpoint, the checkpoint before the rename, and the directory after it, so
what a flush acknowledged survives a host crash too.  The journal is not
fsynced per write (that would make every first overwrite a disk round trip),
so after a host crash — not after a server crash — writes since the last
commit may survive in part, at 4 KiB granularity, as in a torn power cut.

Damage is refused, never repaired silently: a checkpoint with a bad checksum,
another format version or another geometry, a journal record that is damaged
but not the last one, a missing file.  The only damage tolerated is the torn
tail of the journal: its last record, incomplete or failing its checksum and
followed by nothing or by zeros only.  A killed process leaves one while
appending (the data write comes after, so ignoring it loses nothing); a host
crash can too, with zeros where pages of the file did not reach the disk.

File formats (integers little-endian):

``state``:  ``b"BLKEMUST"`` | u32 version (1) | u32 header length | header
(UTF-8 JSON: generation, geometry, fingerprint, arrays: name/dtype/stored
dtype/shape) | the arrays' bytes in header order, C order, in their stored
dtype | u32 CRC-32 of everything before it.  (:class:`ByteChunks` is written
as the uint8 array it stands for.)  Integer arrays whose values fit
32 bits are stored narrowed and widened again on load.

``undo``:  ``b"BLKEMUUJ"`` | u32 version (1) | u32 block size, then records:
``b"UREC"`` | u32 kind (1 data, 2 zeros) | u64 generation | u64 offset |
u64 length | u32 CRC-32 of the payload | u32 CRC-32 of the 36 bytes before
it | payload (``length`` bytes, data records only).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import struct
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BLOCK = 4096
STATE_MAGIC = b"BLKEMUST"
STATE_VERSION = 1
_STATE_PREFIX = struct.Struct("<8sII")
_CRC = struct.Struct("<I")
UNDO_MAGIC = b"BLKEMUUJ"
UNDO_VERSION = 1
_UNDO_HEADER = struct.Struct("<8sII")
_RECORD_MAGIC = b"UREC"
_RECORD = struct.Struct("<4sIQQQII")
KIND_DATA = 1
KIND_ZERO = 2
# Pre-images are read and recorded in pieces of at most this many blocks
# (1 MiB), so that a large discard does not need its whole pre-image in memory.
_RECORD_BLOCKS = 256
_ZERO_BLOCK = bytes(BLOCK)
_DATA, _DATA_NEW, _UNDO, _STATE, _STATE_TMP, _LOCK = "data", "data.new", "undo", "state", "state.tmp", "lock"

# fallocate(2) mode bits (<linux/falloc.h>); Python's os module has no hole punching.
_FALLOC_FL_KEEP_SIZE = 1
_FALLOC_FL_PUNCH_HOLE = 2
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)


class StoreError(Exception):
    """A store directory that cannot be used, as one line naming the file and what is wrong."""


def geometry_fingerprint(geometry: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(geometry), sort_keys=True).encode()).hexdigest()


def _pread_into(fd: int, buf: memoryview, offset: int) -> None:
    while len(buf):
        got = os.preadv(fd, [buf], offset)
        if got == 0:
            raise OSError(errno.EIO, f"short read at byte {offset}")
        buf, offset = buf[got:], offset + got


def _pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data).cast("B")
    while len(view):
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def _write_all(fd: int, parts: list[bytes | memoryview]) -> None:
    # A zram checkpoint has tens of thousands of parts: bytes go to writev
    # as they are (a memoryview each would cost more than writing them), and
    # written parts are skipped by index, not removed with pop(0).
    pending = [p if isinstance(p, bytes) else memoryview(p).cast("B") for p in parts]
    pending = [p for p in pending if len(p)]
    first = 0
    while first < len(pending):
        done = os.writev(fd, pending[first : first + 1024])  # IOV_MAX
        while done and first < len(pending):
            if done >= len(pending[first]):
                done -= len(pending[first])
                first += 1
            else:
                pending[first] = memoryview(pending[first])[done:]
                done = 0


def _punch_hole(fd: int, offset: int, length: int) -> None:
    """Make [offset, offset + length) read as zeros and give its blocks back to the file system."""
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.EOPNOTSUPP, errno.ENOSYS):
        raise OSError(err, f"fallocate(PUNCH_HOLE): {os.strerror(err)}")
    zeros = bytes(min(length, 1 << 20))  # a file system without holes: write the zeros
    end = offset + length
    while offset < end:
        _pwrite_all(fd, zeros[: end - offset], offset)
        offset += min(len(zeros), end - offset)


def _runs(values: np.ndarray) -> Iterator[tuple[int, int, bool]]:
    """(start, end, value) for each run of equal values in a boolean array."""
    if not len(values):
        return
    edges = (np.flatnonzero(values[1:] != values[:-1]) + 1).tolist()
    for start, end in zip([0, *edges], [*edges, len(values)], strict=True):
        yield start, end, bool(values[start])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _BlockSet:
    """Blocks that already have an undo record in this generation: sparse, one bool array per 128 MiB."""

    _SHIFT = 15

    def __init__(self) -> None:
        self._chunks: dict[int, np.ndarray] = {}

    def missing(self, first: int, end: int) -> Iterator[tuple[int, int]]:
        """Runs of blocks in [first, end) not in the set."""
        position = first
        while position < end:
            index = position >> self._SHIFT
            base = index << self._SHIFT
            stop = min(end, base + (1 << self._SHIFT))
            chunk = self._chunks.get(index)
            if chunk is None:
                yield position, stop
            else:
                for start, run_end, present in _runs(chunk[position - base : stop - base]):
                    if not present:
                        yield position + start, position + run_end
            position = stop

    def has(self, block: int) -> bool:
        chunk = self._chunks.get(block >> self._SHIFT)
        return chunk is not None and bool(chunk[block & ((1 << self._SHIFT) - 1)])

    def add(self, first: int, end: int) -> None:
        position = first
        while position < end:
            index = position >> self._SHIFT
            base = index << self._SHIFT
            stop = min(end, base + (1 << self._SHIFT))
            chunk = self._chunks.get(index)
            if chunk is None:
                chunk = self._chunks[index] = np.zeros(1 << self._SHIFT, dtype=bool)
            chunk[position - base : stop - base] = True
            position = stop

    def clear(self) -> None:
        self._chunks.clear()


@dataclass(frozen=True)
class UndoRecord:
    position: int  # of the record in the journal
    kind: int
    generation: int
    offset: int
    length: int


# ------------------------------------------------------------------ checkpoint
def _stored_dtype(array: np.ndarray) -> np.dtype[Any]:
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    if dtype.kind == "O":
        raise TypeError("object arrays cannot be checkpointed")
    # Maps and lists of 64-bit integers usually hold values that fit 32 bits:
    # storing them narrowed halves the checkpoint (an 8 GiB UFS map: 8 MiB).
    if dtype.kind == "i" and dtype.itemsize == 8 and (
        not array.size or (int(array.min()) >= -(2**31) and int(array.max()) < 2**31)
    ):
        return np.dtype("<i4")
    return dtype


class ByteChunks:
    """A one-dimensional uint8 array given as pieces, saved as one array without joining them first.

    zram's compressed pages are tens of thousands of small objects: joining
    them would allocate and copy all of them at every commit.  They load as
    an ordinary array.
    """

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.nbytes = sum(map(len, chunks))


def encode_checkpoint(generation: int, geometry: Mapping[str, Any],
                      arrays: Mapping[str, np.ndarray | ByteChunks]) -> list[bytes | memoryview]:
    """The parts of a ``state`` file, in order (the last one is the CRC)."""
    entries = []
    payloads: list[bytes | memoryview] = []
    for name, array in arrays.items():
        if isinstance(array, ByteChunks):
            entries.append({"name": name, "dtype": "|u1", "stored_dtype": "|u1", "shape": [array.nbytes]})
            payloads.extend(array.chunks)
            continue
        array = np.ascontiguousarray(array)
        stored = _stored_dtype(array)
        entries.append({"name": name, "dtype": array.dtype.str, "stored_dtype": stored.str,
                        "shape": list(array.shape)})
        # Flattened first: memoryview cannot cast an empty array of more than one dimension.
        payloads.append(np.ascontiguousarray(array, dtype=stored).reshape(-1).data.cast("B"))
    header = json.dumps({"generation": generation, "geometry": dict(geometry),
                         "fingerprint": geometry_fingerprint(geometry), "arrays": entries}).encode()
    parts: list[bytes | memoryview] = [_STATE_PREFIX.pack(STATE_MAGIC, STATE_VERSION, len(header)), header, *payloads]
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
    parts.append(_CRC.pack(crc))
    return parts


@dataclass
class Checkpoint:
    generation: int
    geometry: dict[str, Any]
    arrays: dict[str, np.ndarray]


def decode_checkpoint(blob: bytes, where: str) -> Checkpoint:
    """Parse and verify a ``state`` file; raise :class:`StoreError` naming ``where`` and the damage."""
    if len(blob) < _STATE_PREFIX.size + _CRC.size or blob[:8] != STATE_MAGIC:
        raise StoreError(f"{where}: not a blockemu state checkpoint (no {STATE_MAGIC.decode()} magic); "
                         "refusing to start")
    (stored_crc,) = _CRC.unpack_from(blob, len(blob) - _CRC.size)
    crc = zlib.crc32(memoryview(blob)[: len(blob) - _CRC.size])
    if crc != stored_crc:
        raise StoreError(f"{where}: checksum mismatch (stored 0x{stored_crc:08x}, computed 0x{crc:08x}): "
                         "the checkpoint is corrupt; refusing to start")
    _, version, header_length = _STATE_PREFIX.unpack_from(blob)
    if version != STATE_VERSION:
        raise StoreError(f"{where}: checkpoint format version {version}; this blockemu reads version "
                         f"{STATE_VERSION}")
    try:
        header = json.loads(blob[_STATE_PREFIX.size : _STATE_PREFIX.size + header_length])
        position = _STATE_PREFIX.size + header_length
        arrays = {}
        for entry in header["arrays"]:
            stored = np.dtype(entry["stored_dtype"])
            shape = tuple(int(n) for n in entry["shape"])
            size = int(np.prod(shape, dtype=np.int64)) * stored.itemsize
            if position + size > len(blob) - _CRC.size:
                raise ValueError(f"array {entry['name']} runs past the end")
            raw = np.frombuffer(blob, dtype=stored, count=size // stored.itemsize if stored.itemsize else 0,
                                offset=position)
            arrays[str(entry["name"])] = raw.astype(np.dtype(entry["dtype"])).reshape(shape)
            position += size
        if position != len(blob) - _CRC.size:
            raise ValueError(f"{len(blob) - _CRC.size - position} bytes after the last array")
        geometry = dict(header["geometry"])
        if header["fingerprint"] != geometry_fingerprint(geometry):
            raise ValueError("the geometry does not match its fingerprint")
        return Checkpoint(int(header["generation"]), geometry, arrays)
    except (ValueError, KeyError, TypeError) as err:  # json and numpy errors are ValueErrors
        raise StoreError(f"{where}: malformed checkpoint ({err}) despite a valid checksum; "
                         "refusing to start") from None


def _setting(key: str) -> str:
    section, _, name = key.partition(".")
    return f"[{section}] {name}"


def check_geometry(saved: Mapping[str, Any], wanted: Mapping[str, Any], where: str) -> None:
    for key in sorted(set(saved) | set(wanted)):
        if saved.get(key) != wanted.get(key):
            raise StoreError(f"{where}: written for {_setting(key)} = {saved.get(key)!r}, the configuration has "
                             f"{wanted.get(key)!r}; a store opens only with the geometry it was created with "
                             "(use another [store] path for a new device)")


# ------------------------------------------------------------------- the store
class FileStore:
    """The ``file`` backend.  Opening it recovers the directory (see the module docstring).

    ``saved_state`` holds the arrays of the last checkpoint for the caller to
    load into its model, or is None for a new store, whose first
    :meth:`checkpoint` (the model's initial state) completes its creation.
    """

    def __init__(self, directory: str | Path, size_bytes: int, geometry: Mapping[str, Any],
                 fsync: bool = True) -> None:
        if size_bytes <= 0 or size_bytes % BLOCK:
            raise ValueError(f"size_bytes must be a positive multiple of {BLOCK}, got {size_bytes}")
        self.directory = Path(directory)
        self.size_bytes = size_bytes
        self.geometry = dict(geometry)
        self.fsync = fsync
        self.generation = 0
        self.saved_state: dict[str, np.ndarray] | None = None
        self._logged = _BlockSet()
        # False while the caller makes a change it commits right after and may
        # leave torn (see PowerCutLayer._change): no pre-images are kept.
        self.journaling = True
        self._fds: list[int] = []
        # Statistics for describe() and metrics.
        self.checkpoints = 0
        self.checkpoint_seconds = 0.0
        self.checkpoint_bytes = 0
        self.undo_records = 0
        try:
            _lock(self.directory, self._fds)  # held until close(), by the descriptor
            self._open()
        except BaseException:
            self._close_fds()
            raise

    # ------------------------------------------------------------------ open
    def _path(self, name: str) -> Path:
        return self.directory / name

    def _open(self) -> None:
        state, data, data_new = self._path(_STATE), self._path(_DATA), self._path(_DATA_NEW)
        self._path(_STATE_TMP).unlink(missing_ok=True)  # an unfinished checkpoint: the old one stands
        if not state.exists():
            if data.exists():
                raise StoreError(f"{state}: missing, but {data} exists: not a complete blockemu store; "
                                 "refusing to start (empty the directory to start afresh)")
            # A new store.  Its data file gets its final name only once the
            # first checkpoint exists, so that a kill before then leaves a
            # directory that simply starts afresh.
            self._creating = True
            self._data_fd = self._open_fd(data_new, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
            os.ftruncate(self._data_fd, self.size_bytes)
            self._undo_fd = self._open_fd(self._path(_UNDO), os.O_RDWR | os.O_CREAT | os.O_TRUNC)
            self._reset_undo()
            return
        self._creating = False
        checkpoint = read_checkpoint(state, self.geometry)
        self.checkpoint_bytes = state.stat().st_size
        if not data.exists() and data_new.exists():
            os.replace(data_new, data)  # killed between the first checkpoint and this rename
        if not data.exists():
            raise StoreError(f"{data}: missing, but {state} exists; refusing to start")
        self._data_fd = self._open_fd(data, os.O_RDWR)
        have = os.fstat(self._data_fd).st_size
        if have != self.size_bytes:
            raise StoreError(f"{data}: {have} bytes, the device has {self.size_bytes}; refusing to start")
        self._undo_fd = self._open_fd(self._path(_UNDO), os.O_RDWR | os.O_CREAT)
        self.generation = checkpoint.generation
        self._roll_back(scan_undo(self._undo_fd, self._path(_UNDO), self.size_bytes, self.generation))
        self.saved_state = checkpoint.arrays

    def _open_fd(self, path: Path, flags: int) -> int:
        try:
            fd = os.open(path, flags | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise StoreError(f"{path}: cannot open: {err.strerror}") from None
        self._fds.append(fd)
        return fd

    def _roll_back(self, records: list[UndoRecord]) -> None:
        """Undo every change since the checkpoint, newest first, then forget the records."""
        for record in reversed(records):
            if record.kind == KIND_ZERO:
                _punch_hole(self._data_fd, record.offset, record.length)
                continue
            payload = bytearray(record.length)
            _pread_into(self._undo_fd, memoryview(payload), record.position + _RECORD.size)
            _pwrite_all(self._data_fd, payload, record.offset)
        if records and self.fsync:
            os.fsync(self._data_fd)  # the rollback is durable before its records go
        self._reset_undo()

    def _reset_undo(self) -> None:
        os.ftruncate(self._undo_fd, 0)
        _pwrite_all(self._undo_fd, _UNDO_HEADER.pack(UNDO_MAGIC, UNDO_VERSION, BLOCK), 0)
        os.lseek(self._undo_fd, _UNDO_HEADER.size, os.SEEK_SET)
        self._logged.clear()

    # ------------------------------------------------------------- data path
    def read_into(self, offset: int, buf: memoryview) -> None:
        _pread_into(self._data_fd, buf, offset)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self._record_pre_images(offset, len(data), zeroing=False)
        _pwrite_all(self._data_fd, data, offset)

    def zero(self, offset: int, length: int) -> None:
        if length <= 0:
            return
        self._record_pre_images(offset, length, zeroing=True)
        _punch_hole(self._data_fd, offset, length)

    def _record_pre_images(self, offset: int, length: int, zeroing: bool) -> None:
        if length <= 0 or not self.journaling:
            return
        first, end = offset // BLOCK, -(-(offset + length) // BLOCK)
        if end == first + 1:  # the common small write: one block, no numpy
            if self._logged.has(first):
                return
            image = bytearray(BLOCK)
            _pread_into(self._data_fd, memoryview(image), first * BLOCK)
            if image != _ZERO_BLOCK:
                self._append(KIND_DATA, first * BLOCK, memoryview(image))
            elif zeroing:
                return  # zeros stay zeros (see below)
            else:
                self._append(KIND_ZERO, first * BLOCK, BLOCK)
            self._logged.add(first, end)
            return
        for run_first, run_end in list(self._logged.missing(first, end)):
            for piece in range(run_first, run_end, _RECORD_BLOCKS):
                piece_end = min(piece + _RECORD_BLOCKS, run_end)
                image = bytearray((piece_end - piece) * BLOCK)
                _pread_into(self._data_fd, memoryview(image), piece * BLOCK)
                has_data = np.asarray(np.frombuffer(image, dtype=np.uint64).reshape(piece_end - piece, -1).any(axis=1))
                for start, stop, nonzero in _runs(has_data):
                    if nonzero:
                        self._append(KIND_DATA, (piece + start) * BLOCK,
                                     memoryview(image)[start * BLOCK : stop * BLOCK])
                    elif zeroing:
                        # Zeros stay zeros: nothing to undo.  Not marked, so
                        # that a later write in this generation records them.
                        continue
                    else:
                        self._append(KIND_ZERO, (piece + start) * BLOCK, (stop - start) * BLOCK)
                    self._logged.add(piece + start, piece + stop)

    def _append(self, kind: int, offset: int, payload: memoryview | int) -> None:
        if isinstance(payload, int):
            length, parts = payload, []
            payload_crc = 0
        else:
            length, parts = len(payload), [payload]
            payload_crc = zlib.crc32(payload)
        head = _RECORD.pack(_RECORD_MAGIC, kind, self.generation, offset, length, payload_crc, 0)
        head = head[:-4] + _CRC.pack(zlib.crc32(head[:-4]))
        # One append per record: a process killed inside it leaves a torn
        # tail, which the scan ignores; the data write comes only after it.
        _write_all(self._undo_fd, [head, *parts])
        self.undo_records += 1

    def flush(self) -> None:
        """Nothing here: durability is the commit's (:meth:`checkpoint`), which the write-cache layer drives."""

    # ---------------------------------------------------------------- commit
    def checkpoint(self, arrays: Mapping[str, np.ndarray | ByteChunks]) -> None:
        """Commit: ``arrays`` and the data as they are now become what a reopen finds."""
        started = time.perf_counter()
        if self.fsync:
            os.fsync(self._data_fd)  # the data a checkpoint describes is on disk before it
        parts = encode_checkpoint(self.generation + 1, self.geometry, arrays)
        tmp = self._path(_STATE_TMP)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, parts)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._path(_STATE))
        if self._creating:
            os.replace(self._path(_DATA_NEW), self._path(_DATA))
            self._creating = False
        if self.fsync:
            _fsync_dir(self.directory)
        # From here on the old generation's undo records are stale, whether
        # or not the truncation below happens.
        self.generation += 1
        self._reset_undo()
        self.checkpoints += 1
        self.checkpoint_seconds += time.perf_counter() - started
        self.checkpoint_bytes = sum(len(p) for p in parts)

    @property
    def undo_bytes(self) -> int:
        return os.fstat(self._undo_fd).st_size - _UNDO_HEADER.size

    def status(self) -> dict[str, Any]:
        return {
            "backend": "file",
            "path": str(self.directory),
            "fsync": self.fsync,
            "generation": self.generation,
            "checkpoints": self.checkpoints,
            "checkpoint_bytes": self.checkpoint_bytes,
            "checkpoint_seconds_total": round(self.checkpoint_seconds, 6),
            "undo_bytes": self.undo_bytes,
        }

    def close(self) -> None:
        self._close_fds()

    def _close_fds(self) -> None:
        while self._fds:
            os.close(self._fds.pop())  # the lock goes with its descriptor


def _lock(directory: Path, fds: list[int]) -> int:
    path = directory / _LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise StoreError(f"{path}: cannot open: {err.strerror}") from None
    fds.append(fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise StoreError(f"{directory}: in use by another blockemu process (it holds {path})") from None
    return fd


def read_checkpoint(path: Path, geometry: Mapping[str, Any]) -> Checkpoint:
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise StoreError(f"{path}: cannot read: {err.strerror}") from None
    checkpoint = decode_checkpoint(blob, str(path))
    check_geometry(checkpoint.geometry, geometry, str(path))
    return checkpoint


def scan_undo(fd: int, where: Path, size_bytes: int, generation: int) -> list[UndoRecord]:
    """The journal's records of ``generation`` (older ones are stale); refuse damage other than a torn tail."""
    end = os.fstat(fd).st_size
    if end < _UNDO_HEADER.size:
        return []  # killed while creating it: nothing was written after
    header = bytearray(_UNDO_HEADER.size)
    _pread_into(fd, memoryview(header), 0)
    magic, version, block = _UNDO_HEADER.unpack(header)
    if magic != UNDO_MAGIC:
        raise StoreError(f"{where}: not a blockemu undo journal (no {UNDO_MAGIC.decode()} magic); refusing to start")
    if version != UNDO_VERSION or block != BLOCK:
        raise StoreError(f"{where}: undo journal version {version} with {block}-byte blocks; this blockemu "
                         f"writes version {UNDO_VERSION} with {BLOCK}-byte blocks")
    records = []
    position = _UNDO_HEADER.size
    head = bytearray(_RECORD.size)
    while position < end:
        if end - position < _RECORD.size:
            break  # torn tail: the record's own append was cut short
        _pread_into(fd, memoryview(head), position)
        magic, kind, record_generation, offset, length, payload_crc, head_crc = _RECORD.unpack(head)
        if magic != _RECORD_MAGIC or zlib.crc32(head[:-4]) != head_crc:
            if not _any_nonzero(fd, position + _RECORD.size, end):
                break  # torn tail (a host crash can leave a partial page, and zeros after it)
            raise StoreError(f"{where}: damaged record header at byte {position} of {end} (not a torn tail); "
                             "refusing to start")
        payload_end = position + _RECORD.size + (length if kind == KIND_DATA else 0)
        if payload_end > end:
            break  # torn tail
        if kind == KIND_DATA and _crc_of(fd, position + _RECORD.size, length) != payload_crc:
            if not _any_nonzero(fd, payload_end, end):
                break  # the last record, torn by a host crash
            raise StoreError(f"{where}: record at byte {position}: payload checksum mismatch and more records "
                             "follow (not a torn tail); refusing to start")
        if kind not in (KIND_DATA, KIND_ZERO) or offset % BLOCK or length % BLOCK or length == 0 \
                or offset + length > size_bytes:
            raise StoreError(f"{where}: record at byte {position} is invalid (kind {kind}, [{offset}, "
                             f"{offset + length}) of a {size_bytes}-byte device); refusing to start")
        if record_generation > generation:
            raise StoreError(f"{where}: record at byte {position} is of generation {record_generation}, newer than "
                             f"the checkpoint's {generation} (was the state file replaced by an older one?); "
                             "refusing to start")
        if record_generation == generation:
            records.append(UndoRecord(position, kind, record_generation, offset, length))
        position = payload_end
    return records


def _crc_of(fd: int, offset: int, length: int) -> int:
    crc = 0
    piece = bytearray(min(length, 1 << 20))
    while length:
        view = memoryview(piece)[: min(length, len(piece))]
        _pread_into(fd, view, offset)
        crc = zlib.crc32(view, crc)
        offset, length = offset + len(view), length - len(view)
    return crc


def _any_nonzero(fd: int, offset: int, end: int) -> bool:
    piece = bytearray(1 << 20)
    while offset < end:
        view = memoryview(piece)[: min(end - offset, len(piece))]
        _pread_into(fd, view, offset)
        if np.frombuffer(view, dtype=np.uint8).any():
            return True
        offset += len(view)
    return False


def check_store(directory: str | Path, size_bytes: int, geometry: Mapping[str, Any]) -> Checkpoint | None:
    """Validate a store directory without changing it (beyond creating its lock file); raise StoreError.

    Returns its checkpoint, or None for a directory that is still to be
    created.  ``blockemu serve`` checks before starting nbdkit, so that a
    refused store is one line on stderr and a non-zero exit, not a plugin
    traceback.
    """
    directory = Path(directory)
    fds: list[int] = []
    try:
        _lock(directory, fds)
        state, data = directory / _STATE, directory / _DATA
        if not state.exists():
            if data.exists():
                raise StoreError(f"{state}: missing, but {data} exists: not a complete blockemu store; "
                                 "refusing to start (empty the directory to start afresh)")
            return None
        checkpoint = read_checkpoint(state, geometry)
        if not data.exists() and not (directory / _DATA_NEW).exists():
            raise StoreError(f"{data}: missing, but {state} exists; refusing to start")
        if data.exists() and data.stat().st_size != size_bytes:
            raise StoreError(f"{data}: {data.stat().st_size} bytes, the device has {size_bytes}; refusing to start")
        undo = directory / _UNDO
        if undo.exists():
            fd = os.open(undo, os.O_RDONLY | os.O_CLOEXEC)
            fds.append(fd)
            scan_undo(fd, undo, size_bytes, checkpoint.generation)
        return checkpoint
    finally:
        for fd in fds:
            os.close(fd)
