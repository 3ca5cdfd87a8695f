"""The base of every layer: each block-device operation goes to the next layer unless the layer changes it.

As an nbdkit filter declares only the callbacks it changes and ``next_ops``
does the rest, a layer subclasses :class:`Layer` and defines only the
operations it changes; every other one of the :class:`Device` protocol
reaches ``next`` (the layer below, or the model) untouched.  What a layer
offers beyond that protocol it declares itself (a method, or one of the
optional Protocols of blockemu/devices/base.py); nothing passes through by
name, so what a layer exposes is what its class says.

A data operation the layer does not define costs no frame of its own: the
instance holds the next layer's bound method under the operation's name
(``_pass_through``), so a request through such a layer is the same call as
one to the layer below.  A layer that changes its routing at run time (the
fault layer, once faults are set) must be the outermost one, where nobody
keeps its bound methods: the stack builder (blockemu/stack.py) puts it there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from blockemu.api import Route
from blockemu.devices.base import Capabilities, Device, MetricFamily

# The operations of the data path, which a layer passes through without a frame.
DATA_OPS = ("read", "write", "trim", "write_zeroes", "flush", "background_step")


class Layer:
    """A layer around ``next``: by default, every operation is the next layer's."""

    def __init__(self, next_layer: Device) -> None:
        self.next = next_layer
        # What the device is does not change on the way up; a layer may override it.
        self.name: str = next_layer.name
        self.kind: str = next_layer.kind
        self.size_bytes: int = next_layer.size_bytes
        self.capabilities: Capabilities = next_layer.capabilities
        self._pass_through(op for op in DATA_OPS if getattr(type(self), op) is getattr(Layer, op))

    def _pass_through(self, ops: Iterable[str]) -> None:
        """Serve ``ops`` by the next layer's own bound methods, without a frame of this layer."""
        for op in ops:
            vars(self)[op] = getattr(self.next, op)

    def _intercept(self, ops: Iterable[str]) -> None:
        """Serve ``ops`` by this layer's methods again (undoes :meth:`_pass_through`)."""
        for op in ops:
            vars(self).pop(op, None)

    # ------------------------------------------------------------- data path
    def read(self, offset: int, buf: memoryview, now_ns: int) -> int:
        return self.next.read(offset, buf, now_ns)

    def write(self, offset: int, data: memoryview, fua: bool, now_ns: int) -> int:
        return self.next.write(offset, data, fua, now_ns)

    def trim(self, offset: int, length: int, now_ns: int) -> int:
        return self.next.trim(offset, length, now_ns)

    def write_zeroes(self, offset: int, length: int, fua: bool, now_ns: int) -> int:
        return self.next.write_zeroes(offset, length, fua, now_ns)

    def flush(self, now_ns: int) -> int:
        return self.next.flush(now_ns)

    def background_step(self, now_ns: int) -> int | None:
        return self.next.background_step(now_ns)

    # --------------------------------------------------------- control plane
    def describe(self) -> dict[str, Any]:
        return self.next.describe()

    def metrics(self) -> Iterator[MetricFamily]:
        return self.next.metrics()

    def routes(self) -> list[Route]:
        """The routes below; a layer adds its own, and may wrap those it passes on."""
        return self.next.routes()

    def close(self) -> None:
        self.next.close()
