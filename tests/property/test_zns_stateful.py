"""Random zone operations on the ZNS model against a small reference model.

The reference keeps, per sequential zone, a condition name, a write pointer in
blocks and the bytes written; it applies the rules in the plainest way it can.
After every step the model must agree with it (same outcome, same refusal
class, same zones) and keep the invariants of the issue: zones contiguous,
0 <= wp - start <= capacity, open/active counts within the limits.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from blockemu.config import config_from_mapping
from blockemu.devices.base import DeviceError
from blockemu.devices.zns.device import CopySource, ZnsDevice
from blockemu.devices.zns.errors import (
    InvalidZoneStateTransitionError,
    TooManyActiveZonesError,
    TooManyOpenZonesError,
    ZoneBoundaryError,
    ZoneFullError,
    ZoneInvalidWriteError,
    ZoneOfflineError,
    ZoneReadOnlyError,
)
from blockemu.devices.zns.zones import ZoneCondition
from blockemu.store import MemoryStore

BLOCK = 4096
ZONES = 6
CONVENTIONAL = 1
ZONE_BLOCKS = 512  # 2 MiB zones ...
CAP_BLOCKS = 256  # ... with 1 MiB capacity
MAX_OPEN = 2
MAX_ACTIVE = 3


def build_device() -> ZnsDevice:
    config = config_from_mapping({
        "device": {"type": "zns", "name": "zns_prop", "capacity_mib": 2 * ZONES},
        "zns": {"zone_size_mib": 2, "zone_capacity_mib": 1, "conventional_zones": CONVENTIONAL,
                "max_open_zones": MAX_OPEN, "max_active_zones": MAX_ACTIVE, "zone_append_max_kib": 64,
                "copy_max_ranges": 4, "copy_max_kib": 64},
    }, "<property>")
    return ZnsDevice(config, MemoryStore(config.capacity_bytes))


@dataclass
class RefZone:
    condition: str = "empty"
    wp: int = 0  # blocks from the zone start
    data: bytearray = field(default_factory=bytearray)


class Reference:
    def __init__(self) -> None:
        self.zones = {i: RefZone() for i in range(CONVENTIONAL, ZONES)}
        self.implicit_lru: list[int] = []  # least recently written first

    def count(self, *conditions: str) -> int:
        return sum(z.condition in conditions for z in self.zones.values())

    def need_open(self, index: int, from_empty: bool) -> int | None:
        """None if fine, -1 if an implicit close is needed first; raise when refused."""
        if from_empty and self.count("implicitly_open", "explicitly_open", "closed") >= MAX_ACTIVE:
            raise TooManyActiveZonesError("")
        if self.count("implicitly_open", "explicitly_open") < MAX_OPEN:
            return None
        if not self.implicit_lru:
            raise TooManyOpenZonesError("")
        return self.implicit_lru[0]

    def _close_implicit(self, victim: int | None) -> None:
        if victim is not None:
            self.zones[victim].condition = "closed"
            self.implicit_lru.remove(victim)

    def _leave(self, index: int) -> None:
        if index in self.implicit_lru:
            self.implicit_lru.remove(index)

    def refuse_unwritable(self, zone: RefZone) -> None:
        if zone.condition == "full":
            raise ZoneFullError("")
        if zone.condition == "read_only":
            raise ZoneReadOnlyError("")
        if zone.condition == "offline":
            raise ZoneOfflineError("")

    def write(self, index: int, at_block: int, payload: bytes) -> None:
        zone = self.zones[index]
        blocks = len(payload) // BLOCK
        if (index * ZONE_BLOCKS + at_block + blocks) > ZONES * ZONE_BLOCKS:
            raise DeviceError(errno.EINVAL, "")  # outside the device: checked before any zone rule
        self.refuse_unwritable(zone)
        if at_block + blocks > ZONE_BLOCKS:
            raise ZoneBoundaryError("")
        if at_block != zone.wp:
            raise ZoneInvalidWriteError("")
        if at_block + blocks > CAP_BLOCKS:
            raise ZoneBoundaryError("")
        if zone.condition in ("empty", "closed"):
            self._close_implicit(self.need_open(index, zone.condition == "empty"))
            zone.condition = "implicitly_open"
        if zone.condition == "implicitly_open":
            self._leave(index)
            self.implicit_lru.append(index)
        zone.wp += blocks
        zone.data += payload
        if zone.wp == CAP_BLOCKS:
            zone.condition = "full"
            self._leave(index)

    def open(self, index: int) -> None:
        zone = self.zones[index]
        if zone.condition == "explicitly_open":
            return
        if zone.condition == "full":
            raise InvalidZoneStateTransitionError("")
        self.refuse_unwritable(zone)
        if zone.condition != "implicitly_open":
            self._close_implicit(self.need_open(index, zone.condition == "empty"))
        self._leave(index)
        zone.condition = "explicitly_open"

    def close(self, index: int) -> None:
        zone = self.zones[index]
        if zone.condition == "closed":
            return
        if zone.condition in ("read_only", "offline"):
            self.refuse_unwritable(zone)
        if zone.condition not in ("implicitly_open", "explicitly_open"):
            raise InvalidZoneStateTransitionError("")
        self._leave(index)
        zone.condition = "closed" if zone.wp else "empty"

    def finish(self, index: int) -> None:
        zone = self.zones[index]
        if zone.condition == "full":
            return
        self.refuse_unwritable(zone)
        if zone.condition == "empty":
            self._close_implicit(self.need_open(index, True))
        self._leave(index)
        zone.condition = "full"
        zone.data += bytes((CAP_BLOCKS - zone.wp) * BLOCK)
        zone.wp = CAP_BLOCKS

    def reset(self, index: int) -> None:
        zone = self.zones[index]
        if zone.condition == "read_only":
            raise ZoneReadOnlyError("")
        if zone.condition == "offline":
            raise ZoneOfflineError("")
        self._leave(index)
        self.zones[index] = RefZone()

    def reset_all(self) -> None:
        for index, zone in self.zones.items():
            if zone.condition in ("implicitly_open", "explicitly_open", "closed", "full"):
                self.reset(index)

    def fault(self, index: int, condition: str) -> None:
        zone = self.zones[index]
        if zone.condition == "offline":
            raise InvalidZoneStateTransitionError("")
        self._leave(index)
        zone.condition = condition
        if condition == "offline":
            zone.wp, zone.data = 0, bytearray()


zone_index = st.integers(CONVENTIONAL, ZONES - 1)
# Large enough that zones fill within a run; appends stay under zone_append_max.
block_count = st.integers(1, 64)
append_count = st.integers(1, 16)


class ZnsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dev = build_device()
        self.ref = Reference()
        self.now = 0
        self.serial = 0

    def payload(self, blocks: int) -> bytes:
        self.serial += 1
        return bytes([self.serial % 251 + 1]) * (blocks * BLOCK)

    def both(self, model_call: object, reference_call: object) -> None:
        """Run both; they must succeed together or refuse with the same error class."""
        assert callable(model_call) and callable(reference_call)
        expected: type[DeviceError] | None = None
        try:
            reference_call()
        except DeviceError as err:
            expected = type(err)
        self.now += 1000
        if expected is None:
            model_call()
        else:
            try:
                model_call()
            except DeviceError as err:
                assert type(err) is expected, f"model raised {type(err).__name__}, reference {expected.__name__}"
            else:
                raise AssertionError(f"model accepted what the reference refuses with {expected.__name__}")

    @rule(index=zone_index, blocks=block_count, skew=st.sampled_from([0, 0, 0, -1, 1, 200]))
    def write(self, index: int, blocks: int, skew: int) -> None:
        at = max(0, self.ref.zones[index].wp + skew)
        data = self.payload(blocks)
        start = self.dev.zones[index].start
        self.both(lambda: self.dev.write(start + at * BLOCK, memoryview(data), False, self.now),
                  lambda: self.ref.write(index, at, data))

    @rule(index=zone_index, blocks=append_count)
    def append(self, index: int, blocks: int) -> None:
        data = self.payload(blocks)
        at = self.ref.zones[index].wp
        self.both(lambda: self.dev.append(index, data, self.now), lambda: self.ref.write(index, at, data))

    @rule(index=zone_index, action=st.sampled_from(["open", "close", "finish", "reset"]))
    def manage(self, index: int, action: str) -> None:
        model = {"open": self.dev.open_zone, "close": self.dev.close_zone, "finish": self.dev.finish_zone,
                 "reset": self.dev.reset_zone}[action]
        self.both(lambda: model(index, self.now), lambda: getattr(self.ref, action)(index))

    @rule()
    def reset_all(self) -> None:
        self.both(lambda: self.dev.reset_all(self.now), self.ref.reset_all)

    @rule(index=zone_index, condition=st.sampled_from(["read_only", "offline"]))
    def fault(self, index: int, condition: str) -> None:
        self.both(lambda: self.dev.inject_fault(index, ZoneCondition(condition)),
                  lambda: self.ref.fault(index, condition))

    @rule(source=zone_index, dest=zone_index, blocks=st.integers(1, 4))
    def copy(self, source: int, dest: int, blocks: int) -> None:
        src = self.ref.zones[source]
        if src.condition == "offline" or src.wp < blocks:
            return  # copying unwritten or offline blocks is covered by the unit tests
        payload = bytes(src.data[:blocks * BLOCK])
        start = self.dev.zones[source].start
        at = self.ref.zones[dest].wp
        self.both(lambda: self.dev.copy([CopySource(start, blocks * BLOCK)], dest, self.now),
                  lambda: self.ref.write(dest, at, payload))

    @invariant()
    def agrees_with_reference(self) -> None:
        for index, ref in self.ref.zones.items():
            zone = self.dev.zones[index]
            assert zone.condition.value == ref.condition, (index, zone.condition, ref.condition)
            assert zone.wp - zone.start == ref.wp * BLOCK, (index, zone.wp - zone.start, ref.wp)
        assert list(self.dev._implicit) == self.ref.implicit_lru

    @invariant()
    def zones_are_contiguous_and_within_limits(self) -> None:
        position = 0
        for zone in self.dev.zones:
            assert zone.start == position
            position += zone.size
            assert 0 <= zone.wp - zone.start <= zone.capacity
            assert zone.condition in ZoneCondition
        assert position == self.dev.size_bytes
        assert self.dev.open_zones <= MAX_OPEN
        assert self.dev.active_zones <= MAX_ACTIVE
        conditions = [z.condition for z in self.dev.zones]
        assert self.dev.open_zones == sum(c in (ZoneCondition.IMPLICITLY_OPEN, ZoneCondition.EXPLICITLY_OPEN)
                                          for c in conditions)

    @invariant()
    def data_reads_back(self) -> None:
        for index, ref in self.ref.zones.items():
            if ref.condition == "offline" or not ref.wp:
                continue
            zone = self.dev.zones[index]
            buf = bytearray(ref.wp * BLOCK)
            self.dev.read(zone.start, memoryview(buf), self.now)
            assert buf == ref.data


TestZnsStateMachine = ZnsMachine.TestCase
TestZnsStateMachine.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
