"""What every device model offers its frontends.

A device is a plain object with an injected notion of time: each data call
takes ``now_ns`` (the modeled arrival time) and returns the modeled completion
time.  It owns its store and its physical model; it has no threads and does no
I/O of its own beyond the store.  Frontends (nbdkit, replay, ublk) adapt it.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

# Re-exported: where models have always found it.
from blockemu.api import ApiError as ApiError
from blockemu.api import Route

if TYPE_CHECKING:
    import numpy as np

    from blockemu.store.file import ByteChunks


class DeviceError(Exception):
    """A request the device refuses; ``errno`` is what the host sees."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


def out_of_range(offset: int, length: int, size: int) -> DeviceError:
    return DeviceError(
        errno.EINVAL, f"request [{offset}, {offset + length}) is outside the device (size {size} bytes)"
    )




@dataclass(frozen=True)
class Capabilities:
    """What the device supports; frontends ask here, never guess."""

    flush: bool = True
    fua: bool = True
    trim: bool = True
    zero: bool = True
    zoned: bool = False
    rotational: bool = False
    # Block sizes advertised to NBD clients: (minimum, preferred, maximum).
    block_size: tuple[int, int, int] = (512, 4096, 32 * 1024 * 1024)
    # The unit the device writes atomically (its logical block): a power
    # cut keeps or loses each one whole (blockemu/layers/write_cache.py).
    atomic_write_bytes: int = 4096
    # Reads depend on model state besides the stored bytes (zone write
    # pointers, a log's map), so a power cut rolls that state back with the
    # bytes; the model then implements SavesState.
    reads_depend_on_state: bool = False
    # The data lives in the model (zram's compressed pages), not in its
    # store: there is nothing to journal, and persistence is a checkpoint of
    # the model (blockemu/layers/checkpoint.py).
    data_in_model: bool = False
    # blockemu/replay.py's vector engine models it (UFS's FTL and dies).
    vector_replay: bool = False


@dataclass
class MetricFamily:
    """A metric as the model reports it, without importing a metrics library."""

    name: str
    kind: str  # "counter" | "gauge"
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


def describe_identity(name: str, kind: str, size_bytes: int, capabilities: Capabilities) -> dict[str, Any]:
    """The part of GET /api/v1/device every device shares."""
    return {
        "name": name,
        "type": kind,
        "size_bytes": size_bytes,
        "capabilities": {
            "flush": capabilities.flush,
            "fua": capabilities.fua,
            "trim": capabilities.trim,
            "zero": capabilities.zero,
            "zoned": capabilities.zoned,
        },
    }


class Device(Protocol):
    name: str
    # The model's [device] type, as GET /api/v1/device reports it.
    kind: str
    size_bytes: int
    capabilities: Capabilities

    def read(self, offset: int, buf: memoryview, now_ns: int) -> int: ...

    def write(self, offset: int, data: memoryview, fua: bool, now_ns: int) -> int: ...

    def trim(self, offset: int, length: int, now_ns: int) -> int: ...

    def write_zeroes(self, offset: int, length: int, fua: bool, now_ns: int) -> int: ...

    def flush(self, now_ns: int) -> int: ...

    def background_step(self, now_ns: int) -> int | None:
        """Do one slice of device-internal work; return its completion or None if idle."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-ready description and live state for GET /api/v1/device."""
        ...

    def metrics(self) -> Iterator[MetricFamily]: ...

    def routes(self) -> list[Route]:
        """The control-API routes this device (and, for a layer, the layers below) serves (blockemu/api.py)."""
        ...

    def close(self) -> None: ...


# ------------------------------------------------------------ optional hooks
# What a model (or a layer) may offer beyond the Device protocol.  Whoever
# needs one asks with isinstance on the built stack's parts (blockemu/stack.py).
@runtime_checkable
class ObservesArrival(Protocol):
    def observe_arrival(self, now_ns: int, queue_depth: int) -> None:
        """Learn the host-visible queue depth (this request included) before the request is served."""
        ...


@runtime_checkable
class ControlTimed(Protocol):
    def set_control_time(self, now_ns: int) -> None:
        """The time at which the next control command (a zone reset, a Simple Copy) arrives."""
        ...


class CommandRecorder(Protocol):
    def record(self, now_ns: int, op: str, offset: int, length: int, refused: bool) -> None:
        """One command the device served (or refused) outside the data path (blockemu/trace.py names the ops)."""
        ...


@runtime_checkable
class RecordsCommands(Protocol):
    """A device with commands besides the data path (zone management, Simple Copy) that a trace must hold.

    The runtime sets ``recorder`` while tracing and None otherwise; the device
    calls it for each such command, whichever frontend or route sent it.
    """

    recorder: CommandRecorder | None


@runtime_checkable
class LocksMemory(Protocol):
    # A device meant to back swap (zram) asks that the serving process stay out of reclaim.
    lock_memory: bool


class OffloadJob(Protocol):
    def run(self, executor: Executor | None, threads: int) -> None:
        """Pure CPU work, safe without the model lock; may spread over ``executor``."""
        ...


@runtime_checkable
class Offloading(Protocol):
    """A device whose CPU-heavy work may run outside the model lock.

    The model stays thread-free: under the lock it hands out a job
    (``offload_take``), the runtime runs it on its own executor with the lock
    released, then hands it back under the lock (``offload_finish``).
    ``offload_pending`` says whether work is staged or in flight; flush waits
    until it is not.
    """

    offload_threads: int

    def offload_take(self, now_ns: int) -> OffloadJob | None: ...

    def offload_finish(self, job: Any, now_ns: int) -> None: ...

    def offload_pending(self) -> bool: ...


# A checkpoint holds whichever of these three parts a model has
# (blockemu/layers/checkpoint.py says what each holds).
@runtime_checkable
class SavesState(Protocol):
    """The model state that decides what reads return and what the device does next."""

    def snapshot_state(self) -> dict[str, np.ndarray]: ...

    def restore_state(self, state: dict[str, np.ndarray]) -> None: ...


@runtime_checkable
class SavesContents(Protocol):
    """The data a model keeps in itself rather than in its store (zram's pages)."""

    def snapshot_contents(self) -> dict[str, np.ndarray | ByteChunks]: ...

    def restore_contents(self, state: dict[str, np.ndarray]) -> None: ...


@runtime_checkable
class SavesCounters(Protocol):
    """The counters GET /api/v1/device and the metrics report."""

    def snapshot_counters(self) -> dict[str, np.ndarray]: ...

    def restore_counters(self, state: dict[str, np.ndarray]) -> None: ...
