"""Fault injection for any served device, configured at run time and seeded.

``GET/PUT/DELETE /api/v1/faults`` (and ``blockemu ctl faults``) set:

* ``ops``: per operation (read, write, flush, trim, zero) an ``error_rate``
  in [0, 1] and the ``errno`` a failed request returns;
* ``bad_ranges``: byte ranges whose requests fail for the listed operations,
  as grown bad blocks do;
* ``latency_spike``: with ``probability``, a request completes ``extra_us``
  later than the model says (garbage collection pauses, thermal throttling);
* ``read_only``: writes, trims and zeroes fail with EPERM, as nbdkit answers
  them on a read-only export; ``offline``: every request fails with EIO.

Faults are decided by :class:`FaultInjector` in :class:`FaultLayer`, the
outermost layer, before any layer below or the model sees a request, so a
failed request changes nothing in the device (the way nbdkit's ``error``
filter is just another filter).  One
``random.Random(seed)`` draws every decision in request order: the same
requests after the same ``PUT`` fail the same way.  A PUT is checked whole
before anything changes; a bad one is refused (400) and changes nothing.
ZNS zones also go read-only or offline one by one: ``POST /api/v1/zones/N/fault``.
"""

from __future__ import annotations

import dataclasses
import errno
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from blockemu.api import API_PREFIX, JsonBody, Route, obj
from blockemu.devices.base import ApiError, Device, DeviceError, MetricFamily
from blockemu.layers.base import Layer

FAULT_OPS = ("read", "write", "flush", "trim", "zero")
_WRITING_OPS = ("write", "trim", "zero")
# The errors the NBD protocol has.  Both servers pass the configured one on;
# EOVERFLOW reaches an NBD client as EIO and ENOTSUP as EINVAL, and a 6.12
# guest over ublk reads EIO for EPERM, EINVAL and ESHUTDOWN (docs/faults-and-powercut.md).
FAULT_ERRNOS = ("EIO", "EPERM", "ENOMEM", "EINVAL", "ENOSPC", "EOVERFLOW", "ENOTSUP", "ESHUTDOWN")
FAULT_KINDS = ("offline", "read_only", "bad_range", "error", "latency_spike")


class FaultSettingsError(ValueError):
    """A fault setting that is refused; the message names the key and what is allowed."""


@dataclass(frozen=True)
class OpFault:
    error_rate: float = 0.0
    errno: str = "EIO"


@dataclass(frozen=True)
class BadRange:
    offset: int
    length: int
    ops: tuple[str, ...] = ("read", "write")
    errno: str = "EIO"

    def hits(self, op: str, offset: int, length: int) -> bool:
        # A zero-length request touches no block; flush has no range and never hits.
        return (op in self.ops and length > 0 and offset < self.offset + self.length
                and self.offset < offset + length)


@dataclass(frozen=True)
class LatencySpike:
    probability: float = 0.0
    extra_us: float = 0.0


@dataclass(frozen=True)
class FaultSettings:
    seed: int = 1
    offline: bool = False
    read_only: bool = False
    ops: dict[str, OpFault] = field(default_factory=lambda: {op: OpFault() for op in FAULT_OPS})
    bad_ranges: tuple[BadRange, ...] = ()
    latency_spike: LatencySpike = LatencySpike()

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "offline": self.offline,
            "read_only": self.read_only,
            "ops": {op: dataclasses.asdict(fault) for op, fault in self.ops.items()},
            "bad_ranges": [{**dataclasses.asdict(r), "ops": list(r.ops)} for r in self.bad_ranges],
            "latency_spike": dataclasses.asdict(self.latency_spike),
        }


# ------------------------------------------------------------------ parsing
def _object(value: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FaultSettingsError(f"{where} must be a JSON object with keys from {', '.join(allowed)}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise FaultSettingsError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise FaultSettingsError(f"{where} must be true or false, got {value!r}")
    return value


def _int(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FaultSettingsError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return value


def _number(value: Any, where: str, low: float, high: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= (
            high if high is not None else float("inf")):
        allowed = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise FaultSettingsError(f"{where} must be a number {allowed}, got {value!r}")
    return float(value)


def _errno_name(value: Any, where: str) -> str:
    if value not in FAULT_ERRNOS:
        raise FaultSettingsError(f"{where} must be one of {', '.join(FAULT_ERRNOS)}, got {value!r}")
    return str(value)


def _op_fault(value: Any, where: str, current: OpFault) -> OpFault:
    table = _object(value, where, ("error_rate", "errno"))
    return OpFault(
        error_rate=_number(table["error_rate"], f"{where}.error_rate", 0.0, 1.0)
        if "error_rate" in table else current.error_rate,
        errno=_errno_name(table["errno"], f"{where}.errno") if "errno" in table else current.errno,
    )


def _bad_range(value: Any, where: str, size_bytes: int) -> BadRange:
    table = _object(value, where, ("offset", "length", "ops", "errno"))
    if "offset" not in table or "length" not in table:
        raise FaultSettingsError(f"{where} needs offset and length (bytes)")
    offset = _int(table["offset"], f"{where}.offset", 0)
    length = _int(table["length"], f"{where}.length", 1)
    if offset + length > size_bytes:
        raise FaultSettingsError(f"{where}: [{offset}, {offset + length}) is outside the device "
                                 f"(size {size_bytes} bytes)")
    ops = table.get("ops", ["read", "write"])
    if not isinstance(ops, list) or not ops or any(op not in FAULT_OPS or op == "flush" for op in ops):
        raise FaultSettingsError(f"{where}.ops must be a non-empty list of read, write, trim, zero; got {ops!r}")
    return BadRange(offset, length, tuple(dict.fromkeys(ops)), _errno_name(table.get("errno", "EIO"),
                                                                           f"{where}.errno"))


def merge_settings(current: FaultSettings, request: Any, size_bytes: int) -> FaultSettings:
    """``current`` with the keys of ``request`` replaced (``ops`` per operation); raises FaultSettingsError."""
    top = _object(request, "body", ("seed", "offline", "read_only", "ops", "bad_ranges", "latency_spike"))
    changes: dict[str, Any] = {}
    if "seed" in top:
        changes["seed"] = _int(top["seed"], "seed", 0)
    for key in ("offline", "read_only"):
        if key in top:
            changes[key] = _bool(top[key], key)
    if "ops" in top:
        ops = dict(current.ops)
        for op, value in _object(top["ops"], "ops", FAULT_OPS).items():
            ops[op] = _op_fault(value, f"ops.{op}", ops[op])
        changes["ops"] = ops
    if "bad_ranges" in top:
        ranges = top["bad_ranges"]
        if not isinstance(ranges, list):
            raise FaultSettingsError("bad_ranges must be a list of {offset, length, ops, errno} objects")
        changes["bad_ranges"] = tuple(_bad_range(r, f"bad_ranges[{i}]", size_bytes) for i, r in enumerate(ranges))
    if "latency_spike" in top:
        spike = _object(top["latency_spike"], "latency_spike", ("probability", "extra_us"))
        changes["latency_spike"] = LatencySpike(
            probability=_number(spike["probability"], "latency_spike.probability", 0.0, 1.0)
            if "probability" in spike else current.latency_spike.probability,
            extra_us=_number(spike["extra_us"], "latency_spike.extra_us", 0.0, 60e6)
            if "extra_us" in spike else current.latency_spike.extra_us,
        )
    return dataclasses.replace(current, **changes)


# ----------------------------------------------------------------- injector
class FaultInjector:
    """Decides, per request and before the model sees it, whether it fails or is delayed."""

    def __init__(self, size_bytes: int, settings: FaultSettings | None = None) -> None:
        self.size_bytes = size_bytes
        self.settings = settings or FaultSettings()
        self.rng = random.Random(self.settings.seed)
        self.injected: dict[tuple[str, str], int] = {}
        # False while no fault is set, so that the data path pays one test.
        self.active = self._is_active(self.settings)

    @staticmethod
    def _is_active(settings: FaultSettings) -> bool:
        return (settings.offline or settings.read_only or bool(settings.bad_ranges)
                or settings.latency_spike.probability > 0 or any(f.error_rate > 0 for f in settings.ops.values()))

    def _count(self, op: str, kind: str) -> None:
        self.injected[(op, kind)] = self.injected.get((op, kind), 0) + 1

    def _fail(self, op: str, kind: str, name: str, message: str) -> DeviceError:
        self._count(op, kind)
        return DeviceError(getattr(errno, name), f"injected fault ({kind}): {message}")

    def before(self, op: str, offset: int, length: int) -> int:
        """Raise the injected error for this request, or return the extra modeled ns it takes."""
        if not self.active:
            return 0
        settings = self.settings
        if settings.offline:
            raise self._fail(op, "offline", "EIO", "the device is offline")
        if settings.read_only and op in _WRITING_OPS:
            raise self._fail(op, "read_only", "EPERM", "the device is read-only")
        for bad in settings.bad_ranges:
            if bad.hits(op, offset, length):
                raise self._fail(op, "bad_range", bad.errno,
                                 f"{op} [{offset}, {offset + length}) touches bad range "
                                 f"[{bad.offset}, {bad.offset + bad.length})")
        fault = settings.ops[op]
        if fault.error_rate > 0 and self.rng.random() < fault.error_rate:
            raise self._fail(op, "error", fault.errno, f"{op} failed (error_rate {fault.error_rate:g})")
        spike = settings.latency_spike
        if spike.probability > 0 and self.rng.random() < spike.probability:
            self._count(op, "latency_spike")
            return int(spike.extra_us * 1000)
        return 0

    def configure(self, request: Any) -> dict[str, Any]:
        try:
            settings = merge_settings(self.settings, request, self.size_bytes)
        except FaultSettingsError as err:
            raise ApiError(400, str(err)) from None
        if isinstance(request, dict) and "seed" in request:
            self.rng = random.Random(settings.seed)
        self.settings = settings
        self.active = self._is_active(settings)
        return self.status()

    def clear(self) -> dict[str, Any]:
        self.settings = FaultSettings(seed=self.settings.seed)
        self.rng = random.Random(self.settings.seed)
        self.active = False
        return self.status()

    def status(self) -> dict[str, Any]:
        return {**self.settings.to_json(),
                "injected": [{"op": op, "kind": kind, "count": count}
                             for (op, kind), count in sorted(self.injected.items())]}

    def metrics(self) -> Iterator[MetricFamily]:
        samples = [({"op": op, "kind": kind}, float(self.injected.get((op, kind), 0)))
                   for op in FAULT_OPS for kind in FAULT_KINDS]
        yield MetricFamily("blockemu_faults_injected_total", "counter", "Requests failed or delayed by injected "
                           "faults, by operation and kind", samples)
        yield MetricFamily("blockemu_faults_active", "gauge", "1 while any fault is configured",
                           [({}, 1.0 if self.active else 0.0)])


# -------------------------------------------------------------------- layer
class FaultLayer(Layer):
    """Fails or delays requests as the injector decides, before the layers below see them.

    While no fault is set, the data operations are the next layer's own
    (see blockemu/layers/base.py): a served device pays nothing for faults
    it does not use.  A request already on its way when faults change may
    still miss them, as one that arrived a moment earlier would.
    """

    def __init__(self, next_layer: Device) -> None:
        super().__init__(next_layer)
        self.injector = FaultInjector(self.size_bytes)
        self._route()

    def _route(self) -> None:
        if self.injector.active:
            self._intercept(_LAYER_OPS)
        else:
            self._pass_through(_LAYER_OPS)

    def read(self, offset: int, buf: memoryview, now_ns: int) -> int:
        extra_ns = self.injector.before("read", offset, len(buf))
        return self.next.read(offset, buf, now_ns) + extra_ns

    def write(self, offset: int, data: memoryview, fua: bool, now_ns: int) -> int:
        extra_ns = self.injector.before("write", offset, len(data))
        return self.next.write(offset, data, fua, now_ns) + extra_ns

    def trim(self, offset: int, length: int, now_ns: int) -> int:
        extra_ns = self.injector.before("trim", offset, length)
        return self.next.trim(offset, length, now_ns) + extra_ns

    def write_zeroes(self, offset: int, length: int, fua: bool, now_ns: int) -> int:
        extra_ns = self.injector.before("zero", offset, length)
        return self.next.write_zeroes(offset, length, fua, now_ns) + extra_ns

    def flush(self, now_ns: int) -> int:
        extra_ns = self.injector.before("flush", 0, 0)
        return self.next.flush(now_ns) + extra_ns

    def routes(self) -> list[Route]:
        base = f"{API_PREFIX}/faults"
        return [
            Route("GET", base, self.injector.status, "Injected faults and counts"),
            Route("PUT", base, self._rerouted(self.injector.configure),
                  "Change faults (keys given are replaced; ops per operation)", body=FAULTS_BODY),
            Route("DELETE", base, self._rerouted(self.injector.clear), "Remove every fault"),
            *self.next.routes(),
        ]

    def _rerouted(self, change: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        """``change`` the faults, then serve the data operations by whether any is set."""
        def run(**kwargs: Any) -> dict[str, Any]:
            try:
                return change(**kwargs)
            finally:
                self._route()
        return run

    def describe(self) -> dict[str, Any]:
        description = self.next.describe()
        description["faults"] = self.injector.status()
        return description

    def metrics(self) -> Iterator[MetricFamily]:
        yield from self.next.metrics()
        yield from self.injector.metrics()


# The operations faults apply to: background work is the device's own, never failed.
_LAYER_OPS = ("read", "write", "trim", "write_zeroes", "flush")


_ERRNO_SCHEMA = {"type": "string", "enum": list(FAULT_ERRNOS)}
_OP_FAULT = obj({"error_rate": {"type": "number", "minimum": 0, "maximum": 1}, "errno": _ERRNO_SCHEMA})
# merge_settings checks the body (its messages name nested keys); the schema documents it.
FAULTS_BODY = JsonBody(obj({
    "seed": {"type": "integer", "minimum": 0},
    "offline": {"type": "boolean"},
    "read_only": {"type": "boolean"},
    "ops": obj({op: _OP_FAULT for op in FAULT_OPS}),
    "bad_ranges": {"type": "array", "items": obj({
        "offset": {"type": "integer", "minimum": 0}, "length": {"type": "integer", "minimum": 1},
        "ops": {"type": "array", "minItems": 1, "items": {"type": "string",
                                                          "enum": ["read", "write", "trim", "zero"]}},
        "errno": _ERRNO_SCHEMA}, "offset", "length")},
    "latency_spike": obj({"probability": {"type": "number", "minimum": 0, "maximum": 1},
                          "extra_us": {"type": "number", "minimum": 0}}),
}), usage='body must be JSON, e.g. {"ops": {"read": {"error_rate": 0.01}}}', empty=None, checked=False)
