"""What every device model offers its frontends.

A device is a plain object with an injected notion of time: each data call
takes ``now_ns`` (the modeled arrival time) and returns the modeled completion
time.  It owns its store and its physical model; it has no threads and does no
I/O of its own beyond the store.  Frontends (nbdkit, replay, ublk) adapt it.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


class DeviceError(Exception):
    """A request the device refuses; ``errno`` is what the host sees."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


def out_of_range(offset: int, length: int, size: int) -> DeviceError:
    return DeviceError(
        errno.EINVAL, f"request [{offset}, {offset + length}) is outside the device (size {size} bytes)"
    )


class ApiError(Exception):
    """A control-API request that is refused, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


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

    def api(self, method: str, path: list[str], body: bytes) -> Any:
        """Handle a device-specific control request under /api/v1/; raise ApiError."""
        ...

    def close(self) -> None: ...
