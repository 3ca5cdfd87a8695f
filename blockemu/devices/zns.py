"""An NVMe ZNS (Zoned Namespace) device with Simple Copy.

References are to the NVM Express Zoned Namespace Command Set Specification,
revision 1.1 ("ZNS"): §2.1.1 defines zones and the zone state machine (states
ZSE empty, ZSIO implicitly opened, ZSEO explicitly opened, ZSC closed, ZSF
full, ZSRO read only, ZSO offline), §3.1.2 the status codes, §3.3.2 the Copy
command, §3.4.1 Zone Append and §3.4.3 Zone Management Send; Annex A.3 the
open and active resources.  Where the spec leaves a choice (closing an opened
zone that was never written, the resources a Finish of an empty zone needs)
we do what Linux's null_blk (drivers/block/null_blk/zoned.c) does, so that
hosts see the behaviour they are tested against.

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

import argparse
import enum
import errno
import json
import sys
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from blockemu.config import Config
from blockemu.devices.base import (
    ApiError,
    Capabilities,
    DeviceError,
    MetricFamily,
    describe_identity,
    out_of_range,
)
from blockemu.store import Store
from blockemu.timing import UnitTimeline

MIB = 1024 * 1024


class ZoneType(enum.Enum):
    CONVENTIONAL = "conventional"
    SEQUENTIAL_WRITE_REQUIRED = "sequential_write_required"


class ZoneCondition(enum.Enum):
    """Zone states of ZNS §2.1.1, plus "not write pointer" for conventional zones (as ZBC)."""

    NOT_WRITE_POINTER = "not_write_pointer"
    EMPTY = "empty"  # ZSE
    IMPLICITLY_OPEN = "implicitly_open"  # ZSIO
    EXPLICITLY_OPEN = "explicitly_open"  # ZSEO
    CLOSED = "closed"  # ZSC
    FULL = "full"  # ZSF
    READ_ONLY = "read_only"  # ZSRO
    OFFLINE = "offline"  # ZSO


OPEN_CONDITIONS = frozenset({ZoneCondition.IMPLICITLY_OPEN, ZoneCondition.EXPLICITLY_OPEN})
# Annex A.3: a zone holds an active resource while opened or closed.
ACTIVE_CONDITIONS = OPEN_CONDITIONS | {ZoneCondition.CLOSED}
# Zones that Reset Zone with Select All resets (§3.4.3).
RESETTABLE_CONDITIONS = ACTIVE_CONDITIONS | {ZoneCondition.FULL}


# ----------------------------------------------------------------- errors
class ZoneError(DeviceError):
    """A command refused by the zone rules; the host sees EIO, the API a 409."""

    # NVMe command-specific status code (ZNS §3.1.2), None where NVMe has none.
    status_code: ClassVar[int | None] = None
    http_status: ClassVar[int] = 409

    def __init__(self, message: str) -> None:
        super().__init__(errno.EIO, message)


class ZoneBoundaryError(ZoneError):
    status_code = 0xB8


class ZoneFullError(ZoneError):
    status_code = 0xB9


class ZoneReadOnlyError(ZoneError):
    status_code = 0xBA


class ZoneOfflineError(ZoneError):
    status_code = 0xBB


class ZoneInvalidWriteError(ZoneError):
    status_code = 0xBC


class TooManyActiveZonesError(ZoneError):
    status_code = 0xBD


class TooManyOpenZonesError(ZoneError):
    status_code = 0xBE


class InvalidZoneStateTransitionError(ZoneError):
    status_code = 0xBF


class ReadBeyondWritePointerError(ZoneError):
    """A read above a write pointer with ``read_across_wp = false`` (ZBC's URSWRZ = 0)."""


class ZoneRequestError(DeviceError):
    """A malformed request (alignment, sizes, limits of a command): EINVAL, HTTP 400."""

    http_status: ClassVar[int] = 400

    def __init__(self, message: str) -> None:
        super().__init__(errno.EINVAL, message)


# ------------------------------------------------------------------ zones
@dataclass
class Zone:
    index: int
    start: int  # bytes
    size: int
    capacity: int
    type: ZoneType
    condition: ZoneCondition
    wp: int  # absolute byte address of the next write; start + capacity when full

    @property
    def is_sequential(self) -> bool:
        return self.type is ZoneType.SEQUENTIAL_WRITE_REQUIRED

    @property
    def readable_end(self) -> int:
        """Data ends here; above it a sequential zone reads as unwritten."""
        return self.start + self.size if not self.is_sequential else self.wp

    def report(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "start": self.start,
            "length": self.size,
            "capacity": self.capacity,
            # Linux reports an all-ones write pointer for conventional zones.
            "wp": self.wp if self.is_sequential else None,
            "type": self.type.value,
            "condition": self.condition.value,
        }


@dataclass(frozen=True)
class CopySource:
    offset: int
    length: int


class ZnsDevice:
    kind = "zns"

    def __init__(self, config: Config, store: Store) -> None:
        zns = config.zns
        self.config = config
        self.name = config.device.name
        self.size_bytes = config.capacity_bytes
        self.store = store
        self.lba_bytes = zns.lba_bytes
        self.zone_size = zns.zone_size_mib * MIB
        self.zone_capacity = zns.zone_capacity_bytes
        self.max_open = zns.max_open_zones
        self.max_active = zns.max_active_zones
        self.zone_append_max = zns.zone_append_max_kib * 1024
        self.read_across_wp = zns.read_across_wp
        self.copy_max_ranges = zns.copy_max_ranges
        self.copy_max_bytes = zns.copy_max_kib * 1024
        self.conventional_zones = zns.conventional_zones
        self.capabilities = Capabilities(
            trim=False, zero=True, zoned=True, block_size=(self.lba_bytes, self.lba_bytes, 32 * MIB),
            atomic_write_bytes=self.lba_bytes, reads_depend_on_state=True,
        )
        self.zones = [
            Zone(
                index=i,
                start=i * self.zone_size,
                size=self.zone_size,
                capacity=self.zone_size if i < zns.conventional_zones else self.zone_capacity,
                type=ZoneType.CONVENTIONAL if i < zns.conventional_zones else ZoneType.SEQUENTIAL_WRITE_REQUIRED,
                condition=ZoneCondition.NOT_WRITE_POINTER if i < zns.conventional_zones else ZoneCondition.EMPTY,
                wp=i * self.zone_size,
            )
            for i in range(self.size_bytes // self.zone_size)
        ]
        self.conventional_end = zns.conventional_zones * self.zone_size
        # Implicitly opened zones, least recently written first: the one the
        # controller closes when it needs an open resource (ZNS Annex A.3).
        self._implicit: OrderedDict[int, None] = OrderedDict()
        self._explicit: set[int] = set()
        self._closed: set[int] = set()

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

        # Counters for metrics.
        self.host_read_bytes = 0
        self.host_write_bytes = 0
        self.zone_resets = 0
        self.zone_finishes = 0
        self.zone_opens = 0
        self.zone_closes = 0
        self.implicit_closes = 0
        self.appends = 0
        self.append_bytes = 0
        self.copy_commands = 0
        self.copied_bytes = 0
        self.refusals: dict[str, int] = {}

    # ----------------------------------------------------------- zone lookup
    @property
    def zone_count(self) -> int:
        return len(self.zones)

    def zone_at(self, offset: int) -> Zone:
        return self.zones[offset // self.zone_size]

    def zone(self, index: int) -> Zone:
        if not 0 <= index < len(self.zones):
            raise self._refuse(ZoneRequestError(f"no zone {index}; zones are 0..{len(self.zones) - 1}"))
        return self.zones[index]

    def _sequential(self, index: int) -> Zone:
        zone = self.zone(index)
        if not zone.is_sequential:
            raise self._refuse(ZoneRequestError(f"zone {index} is conventional: it has no write pointer"))
        return zone

    @property
    def open_zones(self) -> int:
        return len(self._implicit) + len(self._explicit)

    @property
    def active_zones(self) -> int:
        return self.open_zones + len(self._closed)

    def _refuse(self, error: DeviceError) -> DeviceError:
        name = type(error).__name__
        self.refusals[name] = self.refusals.get(name, 0) + 1
        return error

    # ------------------------------------------------ state machine (§2.1.1)
    def _set_condition(self, zone: Zone, condition: ZoneCondition) -> None:
        """Move ``zone`` to ``condition``, keeping the open/active bookkeeping beside it."""
        old = zone.condition
        if old is ZoneCondition.IMPLICITLY_OPEN:
            del self._implicit[zone.index]
        elif old is ZoneCondition.EXPLICITLY_OPEN:
            self._explicit.discard(zone.index)
        elif old is ZoneCondition.CLOSED:
            self._closed.discard(zone.index)
        if condition is ZoneCondition.IMPLICITLY_OPEN:
            self._implicit[zone.index] = None
        elif condition is ZoneCondition.EXPLICITLY_OPEN:
            self._explicit.add(zone.index)
        elif condition is ZoneCondition.CLOSED:
            self._closed.add(zone.index)
        zone.condition = condition

    def _check_writable(self, zone: Zone) -> None:
        """Refuse writing to a zone whose condition forbids it (§2.1.1, status §3.1.2)."""
        condition = zone.condition
        if condition is ZoneCondition.FULL:
            raise self._refuse(ZoneFullError(f"zone {zone.index} is full"))
        if condition is ZoneCondition.READ_ONLY:
            raise self._refuse(ZoneReadOnlyError(f"zone {zone.index} is read only"))
        if condition is ZoneCondition.OFFLINE:
            raise self._refuse(ZoneOfflineError(f"zone {zone.index} is offline"))

    def _open_resources(self, zone: Zone, what: str) -> int | None:
        """Check that ``zone`` may become opened; return the zone to close implicitly, if any.

        Changes nothing: the caller commits (closes the returned zone) only
        once the whole command is known to succeed.  ZNS Annex A.3: opening
        an empty zone takes an active resource; any open takes an open
        resource, which the controller may free by closing an implicitly
        opened zone (we close the least recently written one, as null_blk).
        """
        condition = zone.condition
        if condition in OPEN_CONDITIONS:
            return None
        if condition is ZoneCondition.EMPTY and self.max_active and self.active_zones >= self.max_active:
            raise self._refuse(TooManyActiveZonesError(
                f"{what} zone {zone.index}: {self.active_zones} zones are active, max_active_zones is "
                f"{self.max_active}; close+finish or reset one"))
        if not self.max_open or self.open_zones < self.max_open:
            return None
        if self._implicit:
            return next(iter(self._implicit))
        raise self._refuse(TooManyOpenZonesError(
            f"{what} zone {zone.index}: {self.open_zones} zones are explicitly open, max_open_zones is "
            f"{self.max_open}; close one"))

    def _implicit_close(self, index: int | None) -> None:
        if index is None:
            return
        # §2.1.1 transition ZSIO → ZSC, initiated by the controller to free
        # an open resource (Annex A.3).
        victim = self.zones[index]
        self._set_condition(victim, ZoneCondition.CLOSED)
        self.implicit_closes += 1

    def _check_sequential_write(self, zone: Zone, offset: int, length: int, what: str) -> int | None:
        """Every rule a write of ``length`` bytes at ``offset`` into ``zone`` must obey.

        Returns the zone to close implicitly.  Raises and changes nothing when
        a rule is broken.
        """
        self._check_writable(zone)
        if offset + length > zone.start + zone.size:
            raise self._refuse(ZoneBoundaryError(
                f"{what} [{offset}, {offset + length}) crosses the end of zone {zone.index} at "
                f"{zone.start + zone.size}"))
        if offset != zone.wp:
            raise self._refuse(ZoneInvalidWriteError(
                f"{what} at {offset} is not at zone {zone.index}'s write pointer {zone.wp}"))
        if offset + length > zone.start + zone.capacity:
            raise self._refuse(ZoneBoundaryError(
                f"{what} of {length} bytes at {offset} passes zone {zone.index}'s capacity "
                f"(writable up to {zone.start + zone.capacity})"))
        return self._open_resources(zone, what)

    def _commit_sequential_write(self, zone: Zone, length: int, close_first: int | None) -> None:
        self._implicit_close(close_first)
        if zone.condition in (ZoneCondition.EMPTY, ZoneCondition.CLOSED):
            # §2.1.1: a write to a zone in ZSE or ZSC implicitly opens it (→ ZSIO).
            self._set_condition(zone, ZoneCondition.IMPLICITLY_OPEN)
        elif zone.condition is ZoneCondition.IMPLICITLY_OPEN:
            self._implicit.move_to_end(zone.index)  # now the most recently written
        zone.wp += length
        if zone.wp == zone.start + zone.capacity:
            # §2.1.1: writing the last block of the zone capacity → ZSF,
            # releasing its open and active resources.
            self._set_condition(zone, ZoneCondition.FULL)

    # --------------------------------------------------- zone management send
    def open_zone(self, index: int, now_ns: int) -> int:
        """Open Zone (§3.4.3): ZSE, ZSIO, ZSC → ZSEO."""
        zone = self._sequential(index)
        self.now_ns = max(self.now_ns, now_ns)
        condition = zone.condition
        if condition is ZoneCondition.EXPLICITLY_OPEN:
            return now_ns + self.overhead_ns
        if condition is ZoneCondition.FULL:
            raise self._refuse(InvalidZoneStateTransitionError(f"open zone {index}: it is full (ZSF → ZSEO)"))
        self._check_writable(zone)
        if condition is ZoneCondition.IMPLICITLY_OPEN:
            # §2.1.1 ZSIO → ZSEO: the open resource is kept.
            self._set_condition(zone, ZoneCondition.EXPLICITLY_OPEN)
        else:
            close_first = self._open_resources(zone, "open")
            self._implicit_close(close_first)
            # §2.1.1 ZSE → ZSEO or ZSC → ZSEO.
            self._set_condition(zone, ZoneCondition.EXPLICITLY_OPEN)
        self.zone_opens += 1
        return now_ns + self.overhead_ns

    def close_zone(self, index: int, now_ns: int) -> int:
        """Close Zone (§3.4.3): ZSIO, ZSEO → ZSC (ZSE if nothing was written, as null_blk)."""
        zone = self._sequential(index)
        self.now_ns = max(self.now_ns, now_ns)
        condition = zone.condition
        if condition is ZoneCondition.CLOSED:
            return now_ns + self.overhead_ns
        if condition not in OPEN_CONDITIONS:
            self._refuse_read_only_or_offline(zone)
            raise self._refuse(InvalidZoneStateTransitionError(
                f"close zone {index}: it is {condition.value}; only open zones can be closed"))
        # §2.1.1 ZSIO/ZSEO → ZSC; a zone opened but never written returns to
        # ZSE, since a closed zone must hold data to be worth an active resource.
        self._set_condition(zone, ZoneCondition.EMPTY if zone.wp == zone.start else ZoneCondition.CLOSED)
        self.zone_closes += 1
        return now_ns + self.overhead_ns

    def finish_zone(self, index: int, now_ns: int) -> int:
        """Finish Zone (§3.4.3): ZSE, ZSIO, ZSEO, ZSC → ZSF."""
        zone = self._sequential(index)
        self.now_ns = max(self.now_ns, now_ns)
        condition = zone.condition
        if condition is ZoneCondition.FULL:
            return now_ns + self.overhead_ns
        self._check_writable(zone)
        if condition is ZoneCondition.EMPTY:
            # ZSE → ZSF passes through an opened state: it needs the
            # resources an open would (null_blk's null_finish_zone).
            self._implicit_close(self._open_resources(zone, "finish"))
        # §2.1.1 → ZSF: the write pointer moves to the end of the capacity;
        # the unwritten blocks read as zeros.
        self._set_condition(zone, ZoneCondition.FULL)
        zone.wp = zone.start + zone.capacity
        self.zone_finishes += 1
        return self._occupy_zone(zone, now_ns, self.finish_ns) + self.overhead_ns

    def reset_zone(self, index: int, now_ns: int) -> int:
        """Reset Zone (§3.4.3): ZSIO, ZSEO, ZSC, ZSF → ZSE."""
        zone = self._sequential(index)
        self.now_ns = max(self.now_ns, now_ns)
        if zone.condition is ZoneCondition.EMPTY:
            return now_ns + self.overhead_ns
        self._refuse_read_only_or_offline(zone)
        return self._reset(zone, now_ns) + self.overhead_ns

    def _refuse_read_only_or_offline(self, zone: Zone) -> None:
        if zone.condition is ZoneCondition.READ_ONLY:
            raise self._refuse(ZoneReadOnlyError(f"zone {zone.index} is read only; it cannot be reset"))
        if zone.condition is ZoneCondition.OFFLINE:
            raise self._refuse(ZoneOfflineError(f"zone {zone.index} is offline"))

    def _reset(self, zone: Zone, now_ns: int) -> int:
        # §2.1.1 → ZSE: write pointer back to the zone start, resources
        # released, data gone (the store reads zeros there again).
        written = zone.wp - zone.start
        self._set_condition(zone, ZoneCondition.EMPTY)
        zone.wp = zone.start
        if written:
            self.store.zero(zone.start, written)
        self.zone_resets += 1
        return self._occupy_zone(zone, now_ns, self.reset_ns)

    def reset_all(self, now_ns: int) -> int:
        """Reset Zone with Select All (§3.4.3): every zone in ZSIO, ZSEO, ZSC or ZSF."""
        self.now_ns = max(self.now_ns, now_ns)
        done = now_ns
        for zone in self.zones:
            if zone.condition in RESETTABLE_CONDITIONS:
                done = max(done, self._reset(zone, now_ns))
        return done + self.overhead_ns

    def offline_zone(self, index: int, now_ns: int) -> int:
        """Offline Zone (§3.4.3): ZSRO → ZSO; the host retires a read-only zone."""
        zone = self._sequential(index)
        self.now_ns = max(self.now_ns, now_ns)
        if zone.condition is ZoneCondition.OFFLINE:
            return now_ns + self.overhead_ns
        if zone.condition is not ZoneCondition.READ_ONLY:
            raise self._refuse(InvalidZoneStateTransitionError(
                f"offline zone {index}: it is {zone.condition.value}; only read-only zones can be taken offline"))
        self._set_condition(zone, ZoneCondition.OFFLINE)
        return now_ns + self.overhead_ns

    def inject_fault(self, index: int, condition: ZoneCondition) -> None:
        """Controller-initiated ZSRO or ZSO (§2.1.1): worn-out media, for fault testing."""
        zone = self._sequential(index)
        if condition not in (ZoneCondition.READ_ONLY, ZoneCondition.OFFLINE):
            raise self._refuse(ZoneRequestError(f"a fault makes a zone read_only or offline, not {condition.value}"))
        if zone.condition is ZoneCondition.OFFLINE:
            raise self._refuse(InvalidZoneStateTransitionError(f"zone {index} is already offline"))
        self._set_condition(zone, condition)
        if condition is ZoneCondition.OFFLINE:
            # A ZSO zone has no data and no valid write pointer.
            self.store.zero(zone.start, zone.wp - zone.start)
            zone.wp = zone.start

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

    # ---------------------------------------------------------- background
    def background_step(self, now_ns: int) -> int | None:
        self.now_ns = max(self.now_ns, now_ns)
        return None  # the device has no work of its own; GC is the host's job

    def set_control_time(self, now_ns: int) -> None:
        """The runtime's clock before a control-API command, which carries no time of its own."""
        self.now_ns = max(self.now_ns, now_ns)

    # --------------------------------------------------------------- state
    def snapshot_state(self) -> dict[str, np.ndarray]:
        """Zone conditions, write pointers and the implicit-open LRU order (traces, persistence)."""
        conditions = list(ZoneCondition)
        return {
            "zns_condition": np.array([conditions.index(z.condition) for z in self.zones], dtype=np.int8),
            "zns_wp": np.array([z.wp for z in self.zones], dtype=np.int64),
            "zns_implicit_lru": np.array(list(self._implicit), dtype=np.int64),
        }

    def restore_state(self, state: dict[str, np.ndarray]) -> None:
        conditions = list(ZoneCondition)
        codes, wps = state["zns_condition"], state["zns_wp"]
        if len(codes) != len(self.zones) or len(wps) != len(self.zones):
            raise ValueError(f"saved state has {len(codes)} zones, this device {len(self.zones)}")
        for zone, code, wp in zip(self.zones, codes.tolist(), wps.tolist(), strict=True):
            condition = conditions[code]
            if zone.is_sequential == (condition is ZoneCondition.NOT_WRITE_POINTER) or not (
                zone.start <= wp <= zone.start + zone.capacity
            ):
                raise ValueError(f"saved state of zone {zone.index} ({condition.value}, wp {wp}) does not fit it")
            zone.condition, zone.wp = condition, wp
        self._implicit = OrderedDict((int(i), None) for i in state["zns_implicit_lru"].tolist())
        self._explicit = {z.index for z in self.zones if z.condition is ZoneCondition.EXPLICITLY_OPEN}
        self._closed = {z.index for z in self.zones if z.condition is ZoneCondition.CLOSED}
        if set(self._implicit) != {z.index for z in self.zones if z.condition is ZoneCondition.IMPLICITLY_OPEN}:
            raise ValueError("saved implicit-open order does not match the zones' conditions")

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

    # ---------------------------------------------------------- inspection
    def report_zones(self) -> list[dict[str, Any]]:
        """Zone Management Receive, Report Zones (§3.4.2), in bytes."""
        return [zone.report() for zone in self.zones]

    def condition_counts(self) -> dict[str, int]:
        counts = {condition.value: 0 for condition in ZoneCondition}
        for zone in self.zones:
            counts[zone.condition.value] += 1
        return counts

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
    def api(self, method: str, path: list[str], body: bytes) -> Any:
        head = path[0] if path else ""
        if head == "zones":
            return self.api_zones(method, path[1:], body)
        if head == "copy":
            if method != "POST" or len(path) != 1:
                raise ApiError(405, "use POST /api/v1/copy")
            return self.api_copy(body)
        raise ApiError(404, f"no such endpoint /api/v1/{'/'.join(path)}; zns has: zones, copy")

    def api_zones(self, method: str, rest: list[str], body: bytes) -> Any:
        """GET zones, GET zones/<n>, POST zones/reset-all, POST zones/<n>/<action>."""
        now = self.now_ns
        try:
            if not rest:
                if method != "GET":
                    raise ApiError(405, "use GET /api/v1/zones")
                return self.report_zones()
            if rest == ["reset-all"]:
                if method != "POST":
                    raise ApiError(405, "use POST /api/v1/zones/reset-all")
                self.reset_all(now)
                return {"reset": True, "conditions": self.condition_counts()}
            index = self._api_zone_index(rest[0])
            if len(rest) == 1:
                if method != "GET":
                    raise ApiError(405, f"use GET /api/v1/zones/{index}, or POST /api/v1/zones/{index}/<action>")
                return self.zones[index].report()
            action = rest[1]
            if len(rest) != 2 or action not in ZONE_ACTIONS:
                raise ApiError(404, f"no zone action {'/'.join(rest[1:])!r}; allowed: {', '.join(ZONE_ACTIONS)}")
            if method != "POST":
                raise ApiError(405, f"use POST /api/v1/zones/{index}/{action}")
            if action == "append":
                offset, _ = self.append(index, body, now)
                return {"offset": offset, "length": len(body), "zone": self.zones[index].report()}
            if action == "fault":
                self.inject_fault(index, _parse_fault(body))
            else:
                {"open": self.open_zone, "close": self.close_zone, "finish": self.finish_zone,
                 "reset": self.reset_zone, "offline": self.offline_zone}[action](index, now)
            return self.zones[index].report()
        except DeviceError as err:
            raise ApiError(_http_status(err), str(err)) from None

    def _api_zone_index(self, text: str) -> int:
        if not (text.isascii() and text.isdigit()) or int(text) >= len(self.zones):
            raise ApiError(404, f"no zone {text!r}; zones are 0..{len(self.zones) - 1}")
        return int(text)

    def api_copy(self, body: bytes) -> Any:
        sources, dest_zone = parse_copy_request(body, len(self.zones))
        try:
            offset, _ = self.copy(sources, dest_zone, self.now_ns)
        except DeviceError as err:
            raise ApiError(_http_status(err), str(err)) from None
        return {"offset": offset, "length": sum(s.length for s in sources), "dest_zone": dest_zone}

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


COPY_USAGE = 'body must be JSON {"sources": [{"offset": bytes, "length": bytes}, ...], "dest_zone": index}'


def parse_copy_request(body: bytes, zones: int) -> tuple[list[CopySource], int]:
    """Validate a POST /api/v1/copy body; raise ApiError 400 naming what is wrong."""
    try:
        request = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, COPY_USAGE) from None
    if not isinstance(request, dict) or set(request) != {"sources", "dest_zone"}:
        raise ApiError(400, COPY_USAGE)
    dest_zone = request["dest_zone"]
    if isinstance(dest_zone, bool) or not isinstance(dest_zone, int) or not 0 <= dest_zone < zones:
        raise ApiError(400, f"dest_zone must be a zone index 0..{zones - 1}, got {dest_zone!r}")
    raw_sources = request["sources"]
    if not isinstance(raw_sources, list) or not raw_sources:
        raise ApiError(400, "sources must be a non-empty list of {\"offset\", \"length\"} objects")
    sources = []
    for i, item in enumerate(raw_sources):
        if not isinstance(item, dict) or set(item) != {"offset", "length"} or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in item.values()
        ):
            raise ApiError(400, f"sources[{i}] must be {{\"offset\": bytes, \"length\": bytes}} with integers >= 0")
        sources.append(CopySource(item["offset"], item["length"]))
    return sources, dest_zone


# ----------------------------------------------------------------- ctl CLI
def _print_report(zones: list[dict[str, Any]]) -> None:
    """One line per zone, in the spirit of ``blkzone report``."""
    for z in zones:
        wp = "-" if z["wp"] is None else f"0x{z['wp'] - z['start']:x}"
        print(f"zone {z['index']:>5}: start 0x{z['start']:012x}, len 0x{z['length']:x}, cap 0x{z['capacity']:x}, "
              f"wptr {wp}, {z['type']}, {z['condition']}")


def _ctl_zone(args: argparse.Namespace, base: str) -> int:
    from blockemu.cli import http_request, print_result

    api = base + "/api/v1"
    action = args.zone
    if action == "report":
        result = http_request(api + "/zones")
        if args.json:
            print_result(result)
        else:
            _print_report(result)
    elif action == "reset-all":
        print_result(http_request(api + "/zones/reset-all", "POST", b""))
    elif action == "append":
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        print_result(http_request(f"{api}/zones/{args.index}/append", "POST", data))
    elif action == "copy":
        sources = []
        for text in args.source:
            offset, sep, length = text.partition(":")
            if not sep or not offset.isdigit() or not length.isdigit():
                print(f"blockemu: --source {text!r}: expected OFFSET:LENGTH in bytes, e.g. 0:65536", file=sys.stderr)
                return 2
            sources.append({"offset": int(offset), "length": int(length)})
        body = json.dumps({"sources": sources, "dest_zone": args.dest_zone}).encode()
        print_result(http_request(api + "/copy", "POST", body))
    elif action == "fault":
        print_result(http_request(f"{api}/zones/{args.index}/fault", "POST", args.condition.encode()))
    else:
        print_result(http_request(f"{api}/zones/{args.index}/{action}", "POST", b""))
    return 0


def add_ctl(ctl_subparsers: Any) -> None:
    """``blockemu ctl zone ...``: zone management through the control API."""
    zone = ctl_subparsers.add_parser("zone", help="ZNS zones: report, open, close, finish, reset, append, copy")
    zone.set_defaults(ctl_func=_ctl_zone)
    sub = zone.add_subparsers(dest="zone", required=True)
    report = sub.add_parser("report", help="list zones (like blkzone report)")
    report.add_argument("--json", action="store_true", help="print the API's JSON instead of lines")
    for action, text in (("open", "explicitly open"), ("close", "close"), ("finish", "finish (make full)"),
                         ("reset", "reset (empty, data gone)"), ("offline", "take a read-only zone offline")):
        sub.add_parser(action, help=f"{text} zone INDEX").add_argument("index", type=int)
    sub.add_parser("reset-all", help="reset every open, closed or full zone")
    append = sub.add_parser("append", help="Zone Append the bytes of FILE ('-' for stdin); prints the offset")
    append.add_argument("index", type=int)
    append.add_argument("file")
    copy = sub.add_parser("copy", help="Simple Copy source ranges to a zone's write pointer")
    copy.add_argument("--dest-zone", type=int, required=True)
    copy.add_argument("--source", action="append", required=True, metavar="OFFSET:LENGTH",
                      help="source range in bytes, repeatable")
    fault = sub.add_parser("fault", help="inject a media fault: make zone INDEX read_only or offline")
    fault.add_argument("index", type=int)
    fault.add_argument("condition", choices=FAULT_CONDITIONS)
