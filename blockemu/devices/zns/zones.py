"""Zones and their state machine (ZNS §2.1.1), with the open and active resources (Annex A.3).

References are to the NVM Express Zoned Namespace Command Set Specification,
revision 1.1 ("ZNS"): §2.1.1 defines zones and the zone state machine (states
ZSE empty, ZSIO implicitly opened, ZSEO explicitly opened, ZSC closed, ZSF
full, ZSRO read only, ZSO offline), §3.4.3 Zone Management Send; Annex A.3 the
open and active resources.  Where the spec leaves a choice (closing an opened
zone that was never written, the resources a Finish of an empty zone needs)
we do what Linux's null_blk (drivers/block/null_blk/zoned.c) does, so that
hosts see the behaviour they are tested against.

This file is the zone logic alone, as null_blk keeps it in zoned.c:
:class:`ZoneStateMachine` holds the zones, moves them between conditions and
keeps the open/active counts beside them.  The device
(:class:`~blockemu.devices.zns.device.ZnsDevice`) builds on it and supplies
the data (its store) and the time (what a reset or a finish costs).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from blockemu.config import ZnsSection
from blockemu.devices.base import DeviceError
from blockemu.devices.zns.errors import (
    InvalidZoneStateTransitionError,
    TooManyActiveZonesError,
    TooManyOpenZonesError,
    ZoneBoundaryError,
    ZoneFullError,
    ZoneInvalidWriteError,
    ZoneOfflineError,
    ZoneReadOnlyError,
    ZoneRequestError,
)
from blockemu.store import Store

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


class ZoneStateMachine(ABC):
    """The zones of a ZNS device: conditions, transitions, open/active accounting, refusals."""

    # Supplied by the device: the data a reset or an offline zone loses, the
    # latest modeled time, and the cost of a zone management command.
    store: Store
    now_ns: int
    overhead_ns: int
    reset_ns: int
    finish_ns: int

    def __init__(self, zns: ZnsSection, size_bytes: int) -> None:
        self.zone_size = zns.zone_size_mib * MIB
        self.zone_capacity = zns.zone_capacity_bytes
        self.max_open = zns.max_open_zones
        self.max_active = zns.max_active_zones
        self.conventional_zones = zns.conventional_zones
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
            for i in range(size_bytes // self.zone_size)
        ]
        self.conventional_end = zns.conventional_zones * self.zone_size
        # Implicitly opened zones, least recently written first: the one the
        # controller closes when it needs an open resource (ZNS Annex A.3).
        self._implicit: OrderedDict[int, None] = OrderedDict()
        self._explicit: set[int] = set()
        self._closed: set[int] = set()
        # Counters for metrics.
        self.zone_resets = 0
        self.zone_finishes = 0
        self.zone_opens = 0
        self.zone_closes = 0
        self.implicit_closes = 0
        # Refused commands by error class (the device counts its own refusals here too).
        self.refusals: dict[str, int] = {}

    @abstractmethod
    def _occupy_zone(self, zone: Zone, now_ns: int, cost_ns: int) -> int:
        """Charge ``cost_ns`` on the media ``zone`` lies on (reset, finish); return the completion."""

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

    # ---------------------------------------------------------- inspection
    def report_zones(self) -> list[dict[str, Any]]:
        """Zone Management Receive, Report Zones (§3.4.2), in bytes."""
        return [zone.report() for zone in self.zones]

    def condition_counts(self) -> dict[str, int]:
        counts = {condition.value: 0 for condition in ZoneCondition}
        for zone in self.zones:
            counts[zone.condition.value] += 1
        return counts

