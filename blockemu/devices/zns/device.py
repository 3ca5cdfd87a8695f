"""An NVMe ZNS (Zoned Namespace) device with Simple Copy.

References are to the NVM Express Zoned Namespace Command Set Specification,
revision 1.1 ("ZNS"): §3.1.2 the status codes, §3.3.2 the Copy command,
§3.4.1 Zone Append.  The zones and their state machine (§2.1.1, Annex A.3)
are in :mod:`blockemu.devices.zns.zones`, the zone errors in
:mod:`blockemu.devices.zns.errors`.

The model:

* Zones of ``zone_size`` bytes, each writable up to ``zone_capacity``; the
  first ``conventional_zones`` are randomly writable (NVMe ZNS itself has no
  conventional zones: they stand for the conventional namespace F2FS wants).
* Every write, Write Zeroes, Zone Append and Simple Copy destination is
  checked completely before anything changes: a refused command raises a
  :class:`ZoneError` (or :class:`ZoneRequestError` for malformed requests) and
  leaves zones, data and counters other than the refusal counters untouched.
* Data lives in the :class:`~blockemu.store.Store` by logical address; a zone
  reset zeroes its range, so reads above a write pointer return zeros.
* Service time: zones are striped over ``parallel_units`` flash units in
  ``stripe_kib`` chunks (:class:`~blockemu.timing.UnitTimeline`).  A read pays
  one ``read_latency_us`` per unit it touches plus its bytes at the unit's
  share of ``read_mbps``; a write pays its bytes at the unit's share of
  ``write_mbps``; host data also crosses one host link at ``host_link_mbps``.
  Simple Copy pays the media read and program but not the link: that is the
  point of copy offload.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from blockemu.api import API_PREFIX, JsonBody, RawBody, Route, enum_param, index_param, obj
from blockemu.config import Config
from blockemu.devices.base import (
    ApiError,
    Capabilities,
    CommandRecorder,
    DeviceError,
    MetricFamily,
    describe_identity,
    out_of_range,
)
from blockemu.devices.zns.errors import (
    ReadBeyondWritePointerError,
    TooManyActiveZonesError,
    TooManyOpenZonesError,
    ZoneBoundaryError,
    ZoneError,
    ZoneOfflineError,
    ZoneRequestError,
)
from blockemu.devices.zns.zones import MIB, Zone, ZoneCondition, ZoneStateMachine
from blockemu.store import Store
from blockemu.timing import UnitTimeline


@dataclass(frozen=True)
class CopySource:
    offset: int
    length: int


class ZnsDevice(ZoneStateMachine):
    kind = "zns"

    def __init__(self, config: Config, store: Store) -> None:
        zns = config.zns
        super().__init__(zns, config.capacity_bytes)
        self.config = config
        self.name = config.device.name
        self.size_bytes = config.capacity_bytes
        self.store = store
        self.lba_bytes = zns.lba_bytes
        self.zone_append_max = zns.zone_append_max_kib * 1024
        self.read_across_wp = zns.read_across_wp
        self.copy_max_ranges = zns.copy_max_ranges
        self.copy_max_bytes = zns.copy_max_kib * 1024
        self.capabilities = Capabilities(
            trim=False, zero=True, zoned=True, block_size=(self.lba_bytes, self.lba_bytes, 32 * MIB),
            atomic_write_bytes=self.lba_bytes, reads_depend_on_state=True,
        )

        # Service-time constants.
        self.units = UnitTimeline(zns.parallel_units)
        self.link = UnitTimeline(1)
        self.stripe = zns.stripe_kib * 1024
        unit_read_bytes_per_ns = zns.read_mbps * 1e6 / zns.parallel_units / 1e9
        unit_write_bytes_per_ns = zns.write_mbps * 1e6 / zns.parallel_units / 1e9
        self.read_ns_per_byte = 1.0 / unit_read_bytes_per_ns
        self.write_ns_per_byte = 1.0 / unit_write_bytes_per_ns
        self.link_ns_per_byte = 1e9 / (zns.host_link_mbps * 1e6)
        self.read_latency_ns = int(zns.read_latency_us * 1000)
        self.overhead_ns = int(zns.command_overhead_us * 1000)
        self.reset_ns = int(zns.zone_reset_us * 1000)
        self.finish_ns = int(zns.zone_finish_us * 1000)
        self.flush_ns = int(zns.flush_us * 1000)
        # Latest modeled time seen (requests, set_control_time); control-API
        # commands, which carry no time of their own, are stamped with it.
        self.now_ns = 0

        # Counters for metrics (the zone transitions' are the state machine's).
        self.host_read_bytes = 0
        self.host_write_bytes = 0
        self.appends = 0
        self.append_bytes = 0
        self.copy_commands = 0
        self.copied_bytes = 0
        # Set by the runtime while tracing (blockemu.devices.base.RecordsCommands).
        self.recorder: CommandRecorder | None = None

    # --------------------------------------------------------------- costs
    def _unit_bytes(self, offset: int, length: int) -> dict[int, int]:
        """Bytes of [offset, offset + length) on each flash unit."""
        units = self.units.units
        stripe = self.stripe
        per_unit: dict[int, int] = {}
        position = offset
        end = offset + length
        while position < end:
            chunk = position // stripe
            take = min(end, (chunk + 1) * stripe) - position
            unit = chunk % units
            per_unit[unit] = per_unit.get(unit, 0) + take
            position += take
        return per_unit

    def _media_read(self, offset: int, length: int, start_ns: int) -> int:
        """Read the written part of [offset, offset + length) off the flash."""
        done = start_ns
        end = offset + length
        position = offset
        while position < end:
            zone = self.zone_at(position)
            stop = min(end, zone.start + zone.size)
            media_end = min(stop, zone.readable_end)
            if media_end > position:
                costs = [(unit, self.read_latency_ns + int(nbytes * self.read_ns_per_byte))
                         for unit, nbytes in self._unit_bytes(position, media_end - position).items()]
                done = max(done, self.units.occupy(start_ns, costs))
            position = stop
        return done

    def _media_program(self, offset: int, length: int, start_ns: int) -> int:
        costs = [(unit, int(nbytes * self.write_ns_per_byte))
                 for unit, nbytes in self._unit_bytes(offset, length).items()]
        return self.units.occupy(start_ns, costs)

    def _link(self, nbytes: int, start_ns: int) -> int:
        return self.link.occupy_one(start_ns, 0, int(nbytes * self.link_ns_per_byte))

    def _occupy_zone(self, zone: Zone, now_ns: int, cost_ns: int) -> int:
        """Charge ``cost_ns`` on every unit the zone is striped over (reset, finish)."""
        if not cost_ns:
            return now_ns
        units = self._unit_bytes(zone.start, zone.size)
        return self.units.occupy(now_ns, [(unit, cost_ns) for unit in units])

    # ------------------------------------------------------------ data path
    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size_bytes:
            raise self._refuse(out_of_range(offset, length, self.size_bytes))

    def _check_aligned(self, offset: int, length: int, what: str) -> None:
        if offset % self.lba_bytes or length % self.lba_bytes:
            raise self._refuse(ZoneRequestError(
                f"{what} [{offset}, {offset + length}) is not in whole {self.lba_bytes}-byte blocks"))

    def _check_readable(self, offset: int, length: int) -> None:
        end = offset + length
        position = offset
        while position < end:
            zone = self.zone_at(position)
            stop = min(end, zone.start + zone.size)
            if zone.condition is ZoneCondition.OFFLINE:
                raise self._refuse(ZoneOfflineError(f"read of zone {zone.index}: it is offline"))
            if not self.read_across_wp and stop > zone.readable_end:
                raise self._refuse(ReadBeyondWritePointerError(
                    f"read [{offset}, {end}) passes zone {zone.index}'s write pointer {zone.wp} "
                    "(read_across_wp = false)"))
            position = stop

    def read(self, offset: int, buf: memoryview, now_ns: int) -> int:
        length = len(buf)
        self._check_range(offset, length)
        self.now_ns = max(self.now_ns, now_ns)
        if length == 0:
            return now_ns + self.overhead_ns
        self._check_readable(offset, length)
        self.store.read_into(offset, buf)
        self.host_read_bytes += length
        media_done = self._media_read(offset, length, now_ns)
        return self._link(length, media_done) + self.overhead_ns

    def _check_write(self, offset: int, length: int, what: str) -> tuple[Zone, int | None]:
        self._check_range(offset, length)
        self._check_aligned(offset, length, what)
        zone = self.zone_at(offset)
        if not zone.is_sequential:
            if offset + length > self.conventional_end:
                raise self._refuse(ZoneBoundaryError(
                    f"{what} [{offset}, {offset + length}) runs from conventional into sequential zones"))
            return zone, None
        return zone, self._check_sequential_write(zone, offset, length, what)

    def write(self, offset: int, data: memoryview, fua: bool, now_ns: int) -> int:
        length = len(data)
        self.now_ns = max(self.now_ns, now_ns)
        if length == 0:
            self._check_range(offset, 0)
            return now_ns + self.overhead_ns
        zone, close_first = self._check_write(offset, length, "write")
        if zone.is_sequential:
            self._commit_sequential_write(zone, length, close_first)
        self.store.write(offset, data)
        self.host_write_bytes += length
        done = self._media_program(offset, length, self._link(length, now_ns)) + self.overhead_ns
        return done + (self.flush_ns if fua else 0)

    def write_zeroes(self, offset: int, length: int, fua: bool, now_ns: int) -> int:
        """Write Zeroes obeys the same zone rules as Write (ZNS §3.3.9); no data crosses the link."""
        self.now_ns = max(self.now_ns, now_ns)
        if length == 0:
            self._check_range(offset, 0)
            return now_ns + self.overhead_ns
        zone, close_first = self._check_write(offset, length, "write zeroes")
        if zone.is_sequential:
            self._commit_sequential_write(zone, length, close_first)
        self.store.zero(offset, length)
        done = self._media_program(offset, length, now_ns) + self.overhead_ns
        return done + (self.flush_ns if fua else 0)

    def trim(self, offset: int, length: int, now_ns: int) -> int:
        raise self._refuse(DeviceError(
            errno.EOPNOTSUPP, "trim is not supported by the zns device; reset whole zones instead"))

    def flush(self, now_ns: int) -> int:
        self.now_ns = max(self.now_ns, now_ns)
        self.store.flush()
        return now_ns + self.flush_ns

    def append(self, index: int, data: bytes | bytearray | memoryview, now_ns: int) -> tuple[int, int]:
        """Zone Append (§3.4.1): write at the zone's write pointer; return (offset written, completion)."""
        length = len(data)
        zone = self._sequential(index)
        self.now_ns = max(self.now_ns, now_ns)
        if length == 0:
            raise self._refuse(ZoneRequestError("zone append needs at least one block of data"))
        if length > self.zone_append_max:
            raise self._refuse(ZoneRequestError(
                f"zone append of {length} bytes exceeds zone_append_max ({self.zone_append_max} bytes)"))
        if length % self.lba_bytes:
            raise self._refuse(ZoneRequestError(
                f"zone append of {length} bytes is not a whole number of {self.lba_bytes}-byte blocks"))
        offset = zone.wp
        close_first = self._check_sequential_write(zone, offset, length, "zone append")
        self._commit_sequential_write(zone, length, close_first)
        self.store.write(offset, data)
        self.host_write_bytes += length
        self.appends += 1
        self.append_bytes += length
        done = self._media_program(offset, length, self._link(length, now_ns)) + self.overhead_ns
        return offset, done

    def copy(self, sources: Sequence[CopySource], dest_zone: int, now_ns: int) -> tuple[int, int]:
        """Simple Copy (NVM Command Set Copy, ZNS §3.3.2) to ``dest_zone``'s write pointer.

        The sources are read inside the device and written at the
        destination's write pointer under the same rules as a write.  Returns
        (destination offset, completion).  Costs media time, not link time.
        """
        self.now_ns = max(self.now_ns, now_ns)
        if not sources:
            raise self._refuse(ZoneRequestError("copy needs at least one source range"))
        if len(sources) > self.copy_max_ranges:
            raise self._refuse(ZoneRequestError(
                f"copy has {len(sources)} source ranges; copy_max_ranges is {self.copy_max_ranges}"))
        total = 0
        for source in sources:
            if source.length <= 0:
                raise self._refuse(ZoneRequestError(f"copy source at {source.offset} has length {source.length}"))
            self._check_range(source.offset, source.length)
            self._check_aligned(source.offset, source.length, "copy source")
            self._check_readable(source.offset, source.length)
            total += source.length
        if total > self.copy_max_bytes:
            raise self._refuse(ZoneRequestError(
                f"copy of {total} bytes exceeds copy_max ({self.copy_max_bytes} bytes)"))
        zone = self._sequential(dest_zone)
        offset = zone.wp
        close_first = self._check_sequential_write(zone, offset, total, "copy")
        payload = bytearray(total)
        view = memoryview(payload)
        position = 0
        read_done = now_ns
        for source in sources:
            self.store.read_into(source.offset, view[position : position + source.length])
            read_done = max(read_done, self._media_read(source.offset, source.length, now_ns))
            position += source.length
        self._commit_sequential_write(zone, total, close_first)
        self.store.write(offset, payload)
        self.copy_commands += 1
        self.copied_bytes += total
        done = self._media_program(offset, total, read_done) + self.overhead_ns
        return offset, done

    # ------------------------------------------------ commands from outside
    # The control API and the ublk frontend send zone management and Simple
    # Copy through these two doors, so that a trace holds each of them,
    # refused ones included (blockemu/trace.py); the zoned log's own appends
    # and copies do not pass here.
    def zone_command(self, action: str, index: int, now_ns: int,
                     data: bytes | bytearray | memoryview = b"") -> tuple[int, int]:
        """open, close, finish, reset, offline, append, reset_all (``index`` ignored), fault_read_only or
        fault_offline on zone ``index``: (offset appended at, else the zone's start; completion)."""
        start = 0 if action == "reset_all" else index * self.zone_size
        offset = start
        try:
            if action == "append":
                offset, done = self.append(index, data, now_ns)
            elif action == "reset_all":
                done = self.reset_all(now_ns)
            elif action.startswith("fault_"):
                self.inject_fault(index, ZoneCondition(action.removeprefix("fault_")))
                done = now_ns
            else:
                done = {"open": self.open_zone, "close": self.close_zone, "finish": self.finish_zone,
                        "reset": self.reset_zone, "offline": self.offline_zone}[action](index, now_ns)
        except DeviceError:
            if self.recorder is not None:
                self.recorder.record(now_ns, f"zone_{action}", start, len(data), True)
            raise
        if self.recorder is not None:
            self.recorder.record(now_ns, f"zone_{action}", start, len(data), False)
        return offset, done

    def copy_command(self, sources: Sequence[CopySource], dest_zone: int, now_ns: int) -> tuple[int, int]:
        """Simple Copy from outside the device: :meth:`copy`, recorded as its sources then the copy."""
        refused = True
        try:
            offset, done = self.copy(sources, dest_zone, now_ns)
            refused = False
        finally:
            if self.recorder is not None:
                for source in sources:
                    self.recorder.record(now_ns, "copy_source", source.offset, source.length, refused)
                self.recorder.record(now_ns, "copy", dest_zone * self.zone_size,
                                     sum(s.length for s in sources), refused)
        return offset, done

    # ---------------------------------------------------------- background
    def background_step(self, now_ns: int) -> int | None:
        self.now_ns = max(self.now_ns, now_ns)
        return None  # the device has no work of its own; GC is the host's job

    def set_control_time(self, now_ns: int) -> None:
        """The runtime's clock before a control-API command, which carries no time of its own."""
        self.now_ns = max(self.now_ns, now_ns)

    # ------------------------------------------------------------- counters
    # Counters describe() and the metrics report; checkpoints keep them, traces and power cuts do not.
    _COUNTERS = ("host_read_bytes", "host_write_bytes", "zone_resets", "zone_finishes", "zone_opens", "zone_closes",
                 "implicit_closes", "appends", "append_bytes", "copy_commands", "copied_bytes")

    def snapshot_counters(self) -> dict[str, np.ndarray]:
        names = sorted(self.refusals)
        return {
            "zns_counters": np.array([getattr(self, name) for name in self._COUNTERS], dtype=np.int64),
            "zns_refusal_names": np.array(names, dtype=np.str_),
            "zns_refusal_counts": np.array([self.refusals[name] for name in names], dtype=np.int64),
        }

    def restore_counters(self, state: dict[str, np.ndarray]) -> None:
        values = state["zns_counters"].tolist()
        if len(values) != len(self._COUNTERS):
            raise ValueError(f"saved ZNS counters have {len(values)} entries, expected {len(self._COUNTERS)}")
        for name, value in zip(self._COUNTERS, values, strict=True):
            setattr(self, name, int(value))
        self.refusals = {str(name): int(count) for name, count in
                         zip(state["zns_refusal_names"].tolist(), state["zns_refusal_counts"].tolist(), strict=True)}

    def describe(self) -> dict[str, Any]:
        return {
            **describe_identity(self.name, self.kind, self.size_bytes, self.capabilities),
            "zns": self.describe_zns(),
        }

    def describe_zns(self) -> dict[str, Any]:
        return {
            "zones": self.zone_count,
            "zone_size_bytes": self.zone_size,
            "zone_capacity_bytes": self.zone_capacity,
            "conventional_zones": self.conventional_zones,
            "lba_bytes": self.lba_bytes,
            "max_open_zones": self.max_open,
            "max_active_zones": self.max_active,
            "zone_append_max_bytes": self.zone_append_max,
            "read_across_wp": self.read_across_wp,
            "open_zones": self.open_zones,
            "active_zones": self.active_zones,
            "conditions": self.condition_counts(),
            "host_read_bytes": self.host_read_bytes,
            "host_write_bytes": self.host_write_bytes,
            "zone_resets": self.zone_resets,
            "zone_finishes": self.zone_finishes,
            "implicit_closes": self.implicit_closes,
            "appends": self.appends,
            "copy_commands": self.copy_commands,
            "copied_bytes": self.copied_bytes,
            "refusals": dict(sorted(self.refusals.items())),
        }

    # ---------------------------------------------------------- control API
    def routes(self) -> list[Route]:
        return [*self.zone_report_routes(), *self.zone_command_routes()]

    def zone_report_routes(self) -> list[Route]:
        """GET zones and GET zones/{index}: what a zoned log on this device still serves."""
        index = {"index": index_param(lambda: len(self.zones), "zone")}
        return [
            Route("GET", f"{API_PREFIX}/zones", self.report_zones, "Zone report"),
            Route("GET", f"{API_PREFIX}/zones/{{index}}", lambda index: self.zones[index].report(),
                  "One zone's report", index, errors=(404,)),
        ]

    def zone_command_routes(self) -> list[Route]:
        params = {"index": index_param(lambda: len(self.zones), "zone"),
                  "action": enum_param(ZONE_ACTIONS, "zone action")}
        return [
            Route("POST", f"{API_PREFIX}/zones/reset-all", self._reset_all_request, "Reset every zone",
                  errors=(400, 409)),
            Route("POST", f"{API_PREFIX}/zones/{{index}}/{{action}}", self._zone_action,
                  "Zone management; append takes the data as the body, fault one of "
                  f"{', '.join(FAULT_CONDITIONS)}", params, RawBody("append: the data; fault: the condition"),
                  errors=(400, 404, 409)),
            Route("POST", f"{API_PREFIX}/copy", self._copy_request, "Simple Copy", body=COPY_BODY,
                  errors=(400, 409)),
        ]

    def _reset_all_request(self) -> dict[str, Any]:
        try:
            self.zone_command("reset_all", 0, self.now_ns)
        except DeviceError as err:
            raise ApiError(_http_status(err), str(err)) from None
        return {"reset": True, "conditions": self.condition_counts()}

    def _zone_action(self, index: int, action: str, data: bytes) -> dict[str, Any]:
        try:
            if action == "append":
                offset, _ = self.zone_command(action, index, self.now_ns, data)
                return {"offset": offset, "length": len(data), "zone": self.zones[index].report()}
            if action == "fault":
                self.zone_command(f"fault_{_parse_fault(data).value}", index, self.now_ns)
            else:
                self.zone_command(action, index, self.now_ns)
        except DeviceError as err:
            raise ApiError(_http_status(err), str(err)) from None
        return self.zones[index].report()

    def _copy_request(self, sources: list[dict[str, int]], dest_zone: int) -> dict[str, Any]:
        if dest_zone >= len(self.zones):
            raise ApiError(400, f"dest_zone must be a zone index 0..{len(self.zones) - 1}, got {dest_zone!r}")
        ranges = [CopySource(s["offset"], s["length"]) for s in sources]
        try:
            offset, _ = self.copy_command(ranges, dest_zone, self.now_ns)
        except DeviceError as err:
            raise ApiError(_http_status(err), str(err)) from None
        return {"offset": offset, "length": sum(s.length for s in ranges), "dest_zone": dest_zone}

    # ------------------------------------------------------------- metrics
    def metrics(self) -> Iterator[MetricFamily]:
        yield from self.zns_metrics()

    def zns_metrics(self) -> Iterator[MetricFamily]:
        yield MetricFamily("blockemu_zns_zones", "gauge", "Zones in each condition",
                           [({"condition": c}, n) for c, n in self.condition_counts().items()])
        yield MetricFamily("blockemu_zns_open_zones", "gauge", "Zones holding an open resource",
                           [({}, self.open_zones)])
        yield MetricFamily("blockemu_zns_active_zones", "gauge", "Zones holding an active resource",
                           [({}, self.active_zones)])
        yield MetricFamily("blockemu_zns_zone_resets", "counter", "Zones reset", [({}, self.zone_resets)])
        yield MetricFamily("blockemu_zns_zone_finishes", "counter", "Zone Finish commands that filled a zone",
                           [({}, self.zone_finishes)])
        yield MetricFamily("blockemu_zns_implicit_closes", "counter",
                           "Implicitly opened zones closed by the device to free an open resource",
                           [({}, self.implicit_closes)])
        yield MetricFamily("blockemu_zns_appends", "counter", "Zone Append commands", [({}, self.appends)])
        yield MetricFamily("blockemu_zns_append_bytes", "counter", "Bytes written by Zone Append",
                           [({}, self.append_bytes)])
        yield MetricFamily("blockemu_zns_copy_commands", "counter", "Simple Copy commands",
                           [({}, self.copy_commands)])
        yield MetricFamily("blockemu_zns_copied_bytes", "counter", "Bytes copied inside the device by Simple Copy",
                           [({}, self.copied_bytes)])
        yield MetricFamily("blockemu_zns_host_bytes", "counter", "Data bytes over the host link",
                           [({"direction": "read"}, self.host_read_bytes),
                            ({"direction": "write"}, self.host_write_bytes)])
        yield MetricFamily("blockemu_zns_limit_violations", "counter",
                           "Commands refused for the open or active zone limit",
                           [({"limit": "open"}, self.refusals.get(TooManyOpenZonesError.__name__, 0)),
                            ({"limit": "active"}, self.refusals.get(TooManyActiveZonesError.__name__, 0))])
        yield MetricFamily("blockemu_zns_refusals", "counter", "Commands refused, by error",
                           [({"error": name}, n) for name, n in sorted(self.refusals.items())])
        yield MetricFamily("blockemu_zns_unit_busy_seconds", "counter", "Modeled busy time per flash unit",
                           [({"unit": str(u)}, ns / 1e9) for u, ns in enumerate(self.units.busy_ns)])
        yield MetricFamily("blockemu_zns_link_busy_seconds", "counter", "Modeled busy time of the host link",
                           [({}, self.link.busy_ns[0] / 1e9)])

    def close(self) -> None:
        self.store.close()


def _http_status(err: DeviceError) -> int:
    """409 for a zone rule (the request was fine, the zone's state refuses it), else 400."""
    return err.http_status if isinstance(err, ZoneError | ZoneRequestError) else 400


ZONE_ACTIONS = ("open", "close", "finish", "reset", "append", "offline", "fault")
FAULT_CONDITIONS = (ZoneCondition.READ_ONLY.value, ZoneCondition.OFFLINE.value)


def _parse_fault(body: bytes) -> ZoneCondition:
    text = body.decode("ascii", errors="replace").strip()
    if text not in FAULT_CONDITIONS:
        raise ApiError(400, f"fault body must be one of {', '.join(FAULT_CONDITIONS)}, got {text!r}")
    return ZoneCondition(text)


COPY_BODY = JsonBody(obj({
    "sources": {"type": "array", "minItems": 1, "items": obj({"offset": {"type": "integer", "minimum": 0},
                                                               "length": {"type": "integer", "minimum": 0}},
                                                              "offset", "length")},
    "dest_zone": {"type": "integer", "minimum": 0}}, "sources", "dest_zone"),
    usage='body must be JSON {"sources": [{"offset": bytes, "length": bytes}, ...], "dest_zone": index}')
