"""Host-Initiated Defragmentation (JEDEC UFS 4.1, JESD220G) as Linux exposes it.

The kernel's ``hid/`` sysfs group (drivers/ufs/core/ufs-sysfs.c) maps its files
onto device attributes; we mirror the files, their values and their meaning:

=================  =====  =======================================================
file               mode   meaning
=================  =====  =======================================================
analysis_trigger   write  ``enable`` → bDefragOperation = 1 (analysis only),
                          ``disable`` → 0 (stop analysis and defrag)
defrag_trigger     write  ``enable`` → bDefragOperation = 2 (analysis + defrag),
                          ``disable`` → 0
fragmented_size    read   bHIDAvailableSize: fragmented data found by analysis
defrag_size        rw     bHIDSize: how much to defragment (0: all found)
progress_ratio     read   bHIDProgressRatio: completed / requested, 0–100
state              read   bHIDState, as the kernel's strings
=================  =====  =======================================================

Sizes are in bytes here (the kernel passes the device's raw u32; JESD220G
leaves the unit to the device, and bytes are what users script against).
The controller only keeps the state machine; the work is done by the device
through :class:`HidWork`, so the same machine can drive any FTL.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from blockemu.api import Attribute, AttributeGroup


class HidState(enum.Enum):
    IDLE = "idle"
    ANALYSIS_IN_PROGRESS = "analysis_in_progress"
    DEFRAG_REQUIRED = "defrag_required"
    DEFRAG_IN_PROGRESS = "defrag_in_progress"
    DEFRAG_COMPLETED = "defrag_completed"
    DEFRAG_NOT_REQUIRED = "defrag_not_required"


# The states the machine stays in until the host writes a trigger: a waiter
# for another state stops here (``ctl hid wait``, ControlClient.wait_hid).
FINAL_STATES = frozenset({HidState.IDLE, HidState.DEFRAG_REQUIRED, HidState.DEFRAG_COMPLETED,
                          HidState.DEFRAG_NOT_REQUIRED})


class HidOperation(enum.IntEnum):
    """bDefragOperation values (include/ufs/ufs.h: enum ufs_hid_defrag_operation)."""

    DISABLE = 0
    ANALYSIS = 1
    ANALYSIS_AND_DEFRAG = 2


class HidTransitionError(Exception):
    """A write the HID state machine refuses in its current state."""


class HidValueError(ValueError):
    """A malformed attribute value."""



@dataclass
class AnalysisResult:
    fragmented_bytes: int


class HidWork(Protocol):
    """What the device does for the controller, in modeled time."""

    def hid_analysis_cost_ns(self) -> int: ...

    def hid_analyse(self) -> AnalysisResult: ...

    def hid_defrag_step(self, now_ns: int, budget_bytes: int) -> tuple[int, int]:
        """Defragment up to ``budget_bytes``; return (bytes done, completion ns)."""
        ...


class HidController:
    def __init__(self, work: HidWork, defrag_size: int = 0) -> None:
        self._work = work
        self.state = HidState.IDLE
        self.operation = HidOperation.DISABLE
        self.defrag_size = defrag_size
        self.fragmented_size = 0
        self._requested = 0
        self._done = 0
        self._analysis_done_at: int | None = None
        # Counters for metrics.
        self.defrag_bytes_total = 0
        self.analyses_total = 0
        self.defrags_completed_total = 0

    # ------------------------------------------------------------ sysfs view
    @property
    def progress_ratio(self) -> int:
        if self._requested == 0:
            return 100 if self.state is HidState.DEFRAG_COMPLETED else 0
        return min(100, self._done * 100 // self._requested)

    def snapshot(self) -> dict[str, str | int]:
        return {
            "state": self.state.value,
            "progress_ratio": self.progress_ratio,
            "fragmented_size": self.fragmented_size,
            "defrag_size": self.defrag_size,
        }

    def read(self, attribute: str) -> str:
        """The attribute's value as its file reads, without the newline; HidValueError if not readable."""
        show = _hid_attribute(attribute).show
        if show is None:
            raise HidValueError(f"{attribute} is write-only, as in sysfs")
        return show(self).rstrip("\n")

    def write(self, attribute: str, text: str) -> None:
        """Apply a sysfs-style write; malformed or refused writes change nothing."""
        store = _hid_attribute(attribute).store
        if store is None:
            raise HidValueError(f"{attribute} is read-only, as in sysfs")
        store(self, text.strip())

    def store_defrag_size(self, value: str) -> None:
        try:
            size = int(value, 0)
        except ValueError:
            raise HidValueError(f"defrag_size must be a non-negative integer (bytes), got {value!r}") from None
        if not 0 <= size <= 2**64 - 1:
            raise HidValueError(f"defrag_size must be a non-negative integer (bytes), got {value!r}")
        self.defrag_size = size

    def store_trigger(self, attribute: str, value: str) -> None:
        """``enable``/``disable`` on analysis_trigger or defrag_trigger; refused writes change nothing."""
        if value not in ("enable", "disable"):
            raise HidValueError(f"{attribute} accepts 'enable' or 'disable', got {value!r}")
        if value == "disable":
            self.set_operation(HidOperation.DISABLE)
        elif attribute == "analysis_trigger":
            self.set_operation(HidOperation.ANALYSIS)
        else:
            self.set_operation(HidOperation.ANALYSIS_AND_DEFRAG)

    # ---------------------------------------------------------------- state
    def state_arrays(self) -> dict[str, np.ndarray]:
        """The state machine's variables, for snapshots and checkpoints (counters separately)."""
        states, operations = list(HidState), list(HidOperation)
        return {
            "hid_state": np.array([states.index(self.state), operations.index(self.operation),
                                   self.fragmented_size, self._requested, self._done], dtype=np.int64),
            # bHIDSize is a u64 in sysfs; it may exceed int64.
            "hid_defrag_size": np.array([self.defrag_size], dtype=np.uint64),
        }

    def load_state_arrays(self, state: dict[str, np.ndarray]) -> None:
        states, operations = list(HidState), list(HidOperation)
        code, operation, fragmented, requested, done = (int(v) for v in state["hid_state"].tolist())
        if not (0 <= code < len(states) and 0 <= operation < len(operations)):
            raise ValueError(f"saved HID state ({code}, {operation}) is not a state of this model")
        self.state, self.operation = states[code], operations[operation]
        self.fragmented_size, self._requested, self._done = fragmented, requested, done
        self.defrag_size = int(state["hid_defrag_size"][0])
        # Its completion time was on the old run's clock: an analysis in
        # progress starts over (same result: the mapping is the saved one).
        self._analysis_done_at = None

    def counter_arrays(self) -> dict[str, np.ndarray]:
        return {"hid_counters": np.array([self.defrag_bytes_total, self.analyses_total,
                                          self.defrags_completed_total], dtype=np.int64)}

    def load_counter_arrays(self, state: dict[str, np.ndarray]) -> None:
        self.defrag_bytes_total, self.analyses_total, self.defrags_completed_total = (
            int(v) for v in state["hid_counters"].tolist())

    # -------------------------------------------------------- state machine
    def set_operation(self, operation: HidOperation) -> None:
        if operation is HidOperation.DISABLE:
            # Stopping returns the device to "idle (analysis required)"; what
            # was already rewritten stays rewritten, progress is kept for the
            # host to read.
            self.operation = operation
            self._analysis_done_at = None
            if self.state in (HidState.ANALYSIS_IN_PROGRESS, HidState.DEFRAG_IN_PROGRESS):
                self.state = HidState.IDLE
            return
        if self.state is HidState.DEFRAG_IN_PROGRESS:
            raise HidTransitionError(
                "defragmentation is in progress; write 'disable' first to stop it"
            )
        if self.state is HidState.ANALYSIS_IN_PROGRESS and operation is self.operation:
            return
        self.operation = operation
        self._analysis_done_at = None
        self.state = HidState.ANALYSIS_IN_PROGRESS

    @property
    def busy(self) -> bool:
        return self.state in (HidState.ANALYSIS_IN_PROGRESS, HidState.DEFRAG_IN_PROGRESS)

    def step(self, now_ns: int, budget_bytes: int) -> int | None:
        """Advance the background operation; return when to call again, or None."""
        if self.state is HidState.ANALYSIS_IN_PROGRESS:
            if self._analysis_done_at is None:
                self._analysis_done_at = now_ns + self._work.hid_analysis_cost_ns()
                return self._analysis_done_at
            if now_ns < self._analysis_done_at:
                return self._analysis_done_at
            self._finish_analysis()
            return now_ns if self.state is HidState.DEFRAG_IN_PROGRESS else None
        if self.state is HidState.DEFRAG_IN_PROGRESS:
            remaining = self._requested - self._done
            moved, done_at = self._work.hid_defrag_step(now_ns, min(budget_bytes, remaining))
            self._done += moved
            self.defrag_bytes_total += moved
            if moved == 0 or self._done >= self._requested:
                self.state = HidState.DEFRAG_COMPLETED
                self.operation = HidOperation.DISABLE
                self.defrags_completed_total += 1
                self.fragmented_size = self._work.hid_analyse().fragmented_bytes
            return done_at
        return None

    def _finish_analysis(self) -> None:
        self._analysis_done_at = None
        self.analyses_total += 1
        result = self._work.hid_analyse()
        self.fragmented_size = result.fragmented_bytes
        if result.fragmented_bytes == 0:
            self.state = HidState.DEFRAG_NOT_REQUIRED
            self.operation = HidOperation.DISABLE
            return
        if self.operation is HidOperation.ANALYSIS:
            self.state = HidState.DEFRAG_REQUIRED
            self.operation = HidOperation.DISABLE
            return
        self._requested = (
            min(self.defrag_size, result.fragmented_bytes) if self.defrag_size else result.fragmented_bytes
        )
        self._done = 0
        self.state = HidState.DEFRAG_IN_PROGRESS


# The hid/ files, as drivers/ufs/core/ufs-sysfs.c declares them (the table above says what each means).
HID_GROUP: AttributeGroup[HidController] = AttributeGroup(
    "hid", "HID",
    (
        Attribute("analysis_trigger", store=lambda c, v: c.store_trigger("analysis_trigger", v)),
        Attribute("defrag_trigger", store=lambda c, v: c.store_trigger("defrag_trigger", v)),
        Attribute("fragmented_size", show=lambda c: f"{c.fragmented_size}\n"),
        Attribute("defrag_size", show=lambda c: f"{c.defrag_size}\n", store=HidController.store_defrag_size),
        Attribute("progress_ratio", show=lambda c: f"{c.progress_ratio}\n"),
        Attribute("state", show=lambda c: f"{c.state.value}\n"),
    ),
    HidController.snapshot,
    errors={HidValueError: 400, HidTransitionError: 409},
)
HID_ATTRIBUTES = HID_GROUP.names


def _hid_attribute(attribute: str) -> Attribute[HidController]:
    found = HID_GROUP.find(attribute)
    if found is None:
        raise HidValueError(f"unknown HID attribute {attribute!r}; allowed: {', '.join(HID_ATTRIBUTES)}")
    return found
