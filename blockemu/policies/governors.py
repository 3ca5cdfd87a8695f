"""Frequency governors with Linux devfreq's names and decisions, plus ``pmqos_qd``.

A governor only proposes a frequency in Hz, as devfreq governors do; the
power layer (blockemu/layers/power.py) clamps it to the operating-point table, picks
the highest point not above it (devfreq's default rounding), and charges the
transition.  Governors are called at four kinds of moments:

* ``on_start``: when selected (devfreq's ``DEVFREQ_GOV_START``);
* ``on_poll``: every ``polling_ms`` with the busy and total time of the window
  just ended, for governors with ``polling = True``;
* ``on_arrival``: when a request arrives, with the queue depth it found;
* ``on_deadline``: at the time ``deadline_ns()`` returned (pmqos_qd's hold).

Each returns the frequency it wants, or None for "no new decision".  Between
those moments a governor's state does not change, and ``on_poll`` depends only
on its arguments and that state; the power layer relies on this to skip runs
of identical idle polls.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar

from blockemu.config import GOVERNOR_TUNABLES, POWER_GOVERNORS, PowerSection, Tunable

# devfreq's DEVFREQ_MAX_FREQ: "as fast as allowed", clamped to max_freq.
MAX_FREQ = 2**64 - 1


class TunableError(ValueError):
    """A governor tunable write that is refused; the message is one line."""


class GovernorTransitionError(RuntimeError):
    """A pmqos_qd state change that its transition table does not allow."""


class GovernorTunables:
    """The run-time values of the tunables all governors share (devfreq keeps them per device too).

    Names, types, defaults and bounds are those of ``GOVERNOR_TUNABLES`` in
    blockemu/config/power.py, checked by the same rule as ``[power]`` is.  The
    values are a ``[power]`` section, replaced whole at each write, so that
    a refused write changes nothing.
    """

    TUNABLES: ClassVar[dict[str, Tunable]] = {tunable.name: tunable for tunable in GOVERNOR_TUNABLES}
    WRITABLE: ClassVar[tuple[str, ...]] = tuple(TUNABLES)

    def __init__(self, opp_freq_hz: tuple[int, ...], section: PowerSection | None = None) -> None:
        # Where values start: the configuration's (the defaults without one), on these operating points.
        self.section = dataclasses.replace(section or PowerSection(), opp_freq_hz=tuple(opp_freq_hz))

    @property
    def opp_freq_hz(self) -> tuple[int, ...]:
        return self.section.opp_freq_hz

    def set(self, name: str, text: str) -> None:
        """Parse and validate ``text`` for tunable ``name``; nothing changes on error."""
        tunable = self.TUNABLES.get(name)
        if tunable is None:
            raise TunableError(f"{name} is not a governor tunable; writable: {', '.join(self.WRITABLE)}")
        text = text.strip()
        try:
            value: float = float(text) if tunable.type is float else int(text)
        except ValueError:
            raise TunableError(f"{name}: {text!r} is not "
                               f"{'a number' if tunable.type is float else 'an integer'}") from None
        problem = tunable.problem(value, self.section, ", ".join(map(str, self.opp_freq_hz)))
        if problem:
            raise TunableError(f"{name} = {text}: {problem}")
        change: dict[str, Any] = {name: value}
        self.section = dataclasses.replace(self.section, **change)

    def snapshot(self) -> dict[str, float]:
        return {name: getattr(self.section, name) for name in self.WRITABLE}


class Governor:
    """The base does nothing at every moment; each governor overrides what it reacts to."""

    name: ClassVar[str]
    # Whether on_poll is called every polling_ms.
    polling: ClassVar[bool] = False
    # Minimum-frequency boosts since selected (only pmqos_qd boosts; the metrics report it for all).
    boosts: int = 0

    def __init__(self, tunables: GovernorTunables) -> None:
        self.tunables = tunables

    def on_start(self, now_ns: int, cur_freq: int) -> int | None:
        return None

    def on_poll(self, now_ns: int, busy_ns: int, total_ns: int, cur_freq: int) -> int | None:
        return None

    def on_arrival(self, now_ns: int, queue_depth: int, cur_freq: int) -> int | None:
        return None

    def deadline_ns(self) -> int | None:
        return None

    def on_deadline(self, now_ns: int, cur_freq: int) -> int | None:
        return None

    def on_tunable_change(self, now_ns: int, cur_freq: int) -> int | None:
        """A tunable was written: re-decide now where the decision depends on it."""
        return None

    def state(self) -> dict[str, object]:
        """Governor-specific live state for the control API."""
        return {}


class Performance(Governor):
    name = "performance"

    def on_start(self, now_ns: int, cur_freq: int) -> int | None:
        return MAX_FREQ


class Powersave(Governor):
    name = "powersave"

    def on_start(self, now_ns: int, cur_freq: int) -> int | None:
        return 0  # clamped up to the lowest point


class Userspace(Governor):
    name = "userspace"

    def on_start(self, now_ns: int, cur_freq: int) -> int | None:
        # devfreq's userspace keeps the current frequency until set_freq is written.
        return self.tunables.section.set_freq or cur_freq

    on_tunable_change = on_start


def ondemand_freq(busy_us: int, total_us: int, cur_freq: int, upthreshold: int, downdifferential: int) -> int:
    """devfreq_simple_ondemand_func (drivers/devfreq/governor_simpleondemand.c), integer for integer."""
    if total_us == 0:
        return MAX_FREQ
    # The kernel scales both down to avoid 64-bit overflow; kept for identical rounding.
    if busy_us >= 1 << 24 or total_us >= 1 << 24:
        busy_us >>= 7
        total_us >>= 7
    if busy_us * 100 > total_us * upthreshold:
        return MAX_FREQ
    if cur_freq == 0:
        return MAX_FREQ
    if busy_us * 100 > total_us * (upthreshold - downdifferential):
        return cur_freq
    wanted = busy_us * cur_freq // total_us
    wanted *= 100
    return wanted // (upthreshold - downdifferential // 2)


class SimpleOndemand(Governor):
    name = "simple_ondemand"
    polling = True

    def on_poll(self, now_ns: int, busy_ns: int, total_ns: int, cur_freq: int) -> int | None:
        # UFS's get_dev_status reports busy and total time in microseconds.
        t = self.tunables.section
        return ondemand_freq(busy_ns // 1000, total_ns // 1000, cur_freq, t.upthreshold, t.downdifferential)


class BoostState(enum.Enum):
    FOLLOWING = "following"  # simple_ondemand alone decides
    BOOSTED = "boosted"  # a minimum-frequency request (boost_freq) is held


# pmqos_qd's explicit transitions: (state, event) -> next state.
_PMQOS_TRANSITIONS: dict[tuple[BoostState, str], BoostState] = {
    (BoostState.FOLLOWING, "shallow_arrival"): BoostState.BOOSTED,
    (BoostState.BOOSTED, "shallow_arrival"): BoostState.BOOSTED,  # the hold restarts
    (BoostState.BOOSTED, "hold_expired"): BoostState.FOLLOWING,
}


class PmQosQueueDepth(Governor):
    """simple_ondemand plus a PM-QoS minimum frequency raised by shallow queues.

    A request that arrives with at most ``qd_threshold`` requests in flight
    (itself included) is latency-bound: nothing queues behind it to hide a low
    clock.  It raises the frequency floor to ``boost_freq`` at once, instead of
    waiting up to ``polling_ms`` for the utilisation governor, and the floor is
    held for ``hold_ms`` after the last such arrival, as a driver's
    ``dev_pm_qos_update_request`` with a timeout would.
    """

    name = "pmqos_qd"
    polling = True

    def __init__(self, tunables: GovernorTunables) -> None:
        super().__init__(tunables)
        self.underlying = SimpleOndemand(tunables)
        self.boost_state = BoostState.FOLLOWING
        self.hold_until_ns = 0
        # What simple_ondemand asked for last (None until its first poll).
        self.utilisation_freq: int | None = None
        self.boosts = 0

    def _move(self, event: str) -> None:
        try:
            self.boost_state = _PMQOS_TRANSITIONS[(self.boost_state, event)]
        except KeyError:
            raise GovernorTransitionError(f"pmqos_qd: {event} is not allowed in state {self.boost_state.value}") \
                from None

    def _boost_freq(self) -> int:
        return self.tunables.section.boost_freq or MAX_FREQ

    def _combined(self, cur_freq: int) -> int:
        base = cur_freq if self.utilisation_freq is None else self.utilisation_freq
        if self.boost_state is BoostState.BOOSTED:
            return max(base, self._boost_freq())
        return base

    def on_poll(self, now_ns: int, busy_ns: int, total_ns: int, cur_freq: int) -> int | None:
        self.utilisation_freq = self.underlying.on_poll(now_ns, busy_ns, total_ns, cur_freq)
        return self._combined(cur_freq)

    def on_arrival(self, now_ns: int, queue_depth: int, cur_freq: int) -> int | None:
        if queue_depth > self.tunables.section.qd_threshold:
            return None
        if self.boost_state is BoostState.FOLLOWING:
            self.boosts += 1
        self._move("shallow_arrival")
        self.hold_until_ns = now_ns + int(self.tunables.section.hold_ms * 1_000_000)
        return self._combined(cur_freq)

    def deadline_ns(self) -> int | None:
        return self.hold_until_ns if self.boost_state is BoostState.BOOSTED else None

    def on_deadline(self, now_ns: int, cur_freq: int) -> int | None:
        self._move("hold_expired")
        return self._combined(cur_freq)

    def on_tunable_change(self, now_ns: int, cur_freq: int) -> int | None:
        return self._combined(cur_freq) if self.boost_state is BoostState.BOOSTED else None

    def state(self) -> dict[str, object]:
        return {
            "boost_state": self.boost_state.value,
            "hold_until_s": self.hold_until_ns / 1e9 if self.boost_state is BoostState.BOOSTED else None,
            "boosts": self.boosts,
        }


GOVERNORS: dict[str, type[Governor]] = {
    cls.name: cls for cls in (Performance, Powersave, Userspace, SimpleOndemand, PmQosQueueDepth)
}
if tuple(GOVERNORS) != POWER_GOVERNORS:  # the names [power] governor accepts, listed once in blockemu/config/power.py
    raise ImportError(f"governor classes {tuple(GOVERNORS)} do not match POWER_GOVERNORS {POWER_GOVERNORS}")


def make_governor(name: str, tunables: GovernorTunables) -> Governor:
    try:
        return GOVERNORS[name](tunables)
    except KeyError:
        raise TunableError(f"governor {name!r} is unknown; available: {', '.join(GOVERNORS)}") from None
