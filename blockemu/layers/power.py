"""The power layer: controller frequency, governors and energy around any device.

:class:`PowerModel` is a layer (blockemu/layers/base.py) with the interface
of the device below it, so UFS, ZNS and zram need not know about it; the
stack builder (blockemu/stack.py) puts it in when ``[power] enabled = true``.

Service time.  The wrapped device's timing describes it at the highest
operating point.  At frequency f, the controller-bound share ``s`` of the time
a request spends in the device scales with f_max / f and the media-bound rest
does not: time stretches by ``k(f) = s * f_max / f + (1 - s)``.  The stretch is
applied as a time warp: while the device is busy, the wrapped device runs on
a clock that advances 1/k times as fast as real time, so its own queues (NAND
dies, zones) stretch with it and a slower controller lowers throughput as well
as raising latency.  Whenever the device is idle the two clocks agree again.

Frequency changes.  As ufshcd does before scaling clocks, a transition waits
for the requests in flight to complete, then stalls the controller for
``transition_latency_us``; requests arriving meanwhile wait for it.  So the
frequency never changes under a request being served.

Energy.  Busy time (some request in service, or a transition) is charged at
the operating point's busy power, the rest at its idle power.  Busy time is
also what simple_ondemand sees, as UFS's ``get_dev_status`` reports it: time
with requests outstanding at the controller.

Time only moves when the wrapper is called (requests, background steps,
control reads), so polls and hold expiries are processed lazily, in order, up
to each call's time; that keeps it deterministic under a VirtualClock and
correct under a RealClock.

Approximations, on purpose: one frequency domain for the whole device; a
decision taken while a transition is under way waits for it to end; the
governor's busy time excludes transitions (requests are not yet issued to the
controller then); device-specific operations outside the Device protocol
(ZNS zone management, zram's offloaded compression) reach the model without
this layer, unscaled, at the caller's time.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from blockemu.api import Attribute, AttributeGroup, Route, wrap_all
from blockemu.config import PowerSection
from blockemu.devices.base import Device, MetricFamily
from blockemu.layers.base import Layer
from blockemu.policies.governors import (
    GOVERNORS,
    MAX_FREQ,
    Governor,
    GovernorTunables,
    TunableError,
    make_governor,
)


@dataclass(frozen=True)
class OperatingPoint:
    freq_hz: int
    busy_w: float
    idle_w: float


@dataclass
class Transition:
    start_ns: int
    end_ns: int
    to_index: int
    started: bool = False


# Attributes of GET/PUT /api/v1/power/<attr> that only read, after devfreq's writable ones.
READ_ONLY_ATTRIBUTES = (
    "cur_freq", "target_freq", "available_frequencies", "available_governors",
    "energy_joules", "queue_depth", "controller_bound_share", "transition_latency_us",
)


class PowerModel(Layer):
    """A layer around a :class:`Device`: frequency-scaled service time, governor, energy, devfreq statistics."""

    def __init__(self, inner: Device, section: PowerSection, now_ns: Callable[[], int] | None = None,
                 start_ns: int = 0) -> None:
        super().__init__(inner)
        self.section = section
        self.opps = [
            OperatingPoint(f, busy / 1000, idle / 1000)
            for f, busy, idle in zip(section.opp_freq_hz, section.opp_busy_mw, section.opp_idle_mw, strict=True)
        ]
        self.freqs = [opp.freq_hz for opp in self.opps]
        top = self.freqs[-1]
        share = section.controller_bound_share
        self.stretch = [share * top / f + (1 - share) for f in self.freqs]
        self.transition_ns = int(section.transition_latency_us * 1000)
        # Where "now" comes from for control reads; data calls bring their own time.
        self._clock = now_ns
        self.tunables = GovernorTunables(tuple(self.freqs), section)
        n = len(self.opps)
        # Like UFS after probe: the controller starts at full speed.
        self.cur = n - 1
        self.target = self.cur
        # User limits (devfreq's min_freq/max_freq files) and the governor's last wish.
        self.min_index, self.max_index = 0, n - 1
        self._wanted_freq = self.freqs[self.cur]
        self._transition: Transition | None = None
        # Accounting, all in modeled ns.
        self._accounted_ns = start_ns
        self._spans: list[list[int]] = []  # busy spans [start, end) not yet fully accounted
        self.busy_until_ns = start_ns
        self._seg_t = start_ns  # the current busy period's warp: real start, device-clock start, stretch
        self._seg_tau = start_ns
        self._seg_k = 1.0
        self._window_start_ns = start_ns
        self._window_busy_ns = 0
        self._in_flight: list[int] = []  # completion times of requests, for the depth fallback
        self._told_depth: int | None = None
        self.last_queue_depth = 0
        self.time_in_state_ns = [0] * n
        self.busy_in_state_ns = [0] * n
        self.energy_in_state_j = [0.0] * n
        self.trans_table = [[0] * n for _ in range(n)]
        self.total_trans = 0
        # (time, frequency) at each transition start, for tests and plots.
        self.freq_log: list[tuple[int, int]] = [(start_ns, self.freqs[self.cur])]
        self.requests = 0
        self.governor: Governor = make_governor(section.governor, self.tunables)
        self._next_poll_ns: int | None = None
        self._start_governor(start_ns)

    # ------------------------------------------------------------ frequencies
    @property
    def cur_freq(self) -> int:
        return self.freqs[self.cur]

    def opp_index(self, freq_hz: int) -> int:
        """devfreq's rounding: the highest point not above freq_hz, or the lowest point."""
        index = 0
        for i, f in enumerate(self.freqs):
            if f <= freq_hz:
                index = i
        return index

    def _decide(self, freq_hz: int | None, now_ns: int) -> None:
        if freq_hz is None:
            return
        self._wanted_freq = freq_hz
        # devfreq's update_devfreq: the user's min_freq/max_freq bound the governor.
        index = self.opp_index(min(freq_hz, MAX_FREQ))
        self.target = min(max(index, self.min_index), self.max_index)
        self._schedule_transition(now_ns)

    def set_limit(self, name: str, text: str, now_ns: int) -> None:
        """Write min_freq or max_freq: one of the operating points, min <= max."""
        self.advance(now_ns)
        try:
            freq = int(text)
        except ValueError:
            raise TunableError(f"{name}: {text!r} is not an integer") from None
        if freq not in self.freqs:
            raise TunableError(f"{name} = {text}: must be one of {', '.join(map(str, self.freqs))}")
        index = self.freqs.index(freq)
        low, high = (index, self.max_index) if name == "min_freq" else (self.min_index, index)
        if low > high:
            raise TunableError(f"{name} = {text}: min_freq must be <= max_freq "
                               f"({self.freqs[self.min_index]} <= {self.freqs[self.max_index]} now)")
        self.min_index, self.max_index = low, high
        self._decide(self._wanted_freq, now_ns)
        self.advance(now_ns)  # a transition that starts now shows in cur_freq at once, as devfreq's does

    def _schedule_transition(self, now_ns: int) -> None:
        # One transition at a time; a newer decision waits for it to end.
        if self.target == self.cur or self._transition is not None:
            return
        start = max(now_ns, self.busy_until_ns)
        self._transition = Transition(start, start + self.transition_ns, self.target)

    def _start_governor(self, now_ns: int) -> None:
        governor = self.governor
        self._window_start_ns = now_ns
        self._window_busy_ns = 0
        self._next_poll_ns = now_ns + self.tunables.section.polling_ms * 1_000_000 if governor.polling else None
        self._decide(governor.on_start(now_ns, self.cur_freq), now_ns)

    # ---------------------------------------------------------------- events
    def _next_event(self, limit_ns: int) -> tuple[int, int] | None:
        """(time, kind) of the first event at or before limit_ns; kinds sort ties."""
        candidates = []
        transition = self._transition
        if transition is not None:
            if not transition.started:
                candidates.append((transition.start_ns, 0))
            else:
                candidates.append((transition.end_ns, 1))
        deadline = self.governor.deadline_ns()
        if deadline is not None:
            candidates.append((deadline, 2))
        if self._next_poll_ns is not None:
            candidates.append((self._next_poll_ns, 3))
        due = [c for c in candidates if c[0] <= limit_ns]
        return min(due) if due else None

    def advance(self, now_ns: int) -> None:
        """Process every transition, hold expiry and poll up to now_ns, then account up to it."""
        while (event := self._next_event(now_ns)) is not None:
            at, kind = event
            self._account(at)
            if kind == 0:
                transition = self._transition
                assert transition is not None
                transition.started = True
                self.trans_table[self.cur][transition.to_index] += 1
                self.total_trans += 1
                self.cur = transition.to_index
                self.freq_log.append((at, self.cur_freq))
            elif kind == 1:
                self._transition = None
                self._schedule_transition(at)
            elif kind == 2:
                self._decide(self.governor.on_deadline(at, self.cur_freq), at)
            else:
                self._poll(at, now_ns)
        self._account(now_ns)

    def _poll(self, at: int, limit_ns: int) -> None:
        assert self._next_poll_ns is not None
        busy = self._window_busy_ns
        polling_ns = self.tunables.section.polling_ms * 1_000_000
        before = self.cur
        self._decide(self.governor.on_poll(at, busy, at - self._window_start_ns, self.cur_freq), at)
        self._window_start_ns = at
        self._window_busy_ns = 0
        self._next_poll_ns = at + polling_ns
        # An idle window that changed nothing repeats identically until the next
        # arrival or deadline (see blockemu/policies/governors.py): skip ahead.
        if busy == 0 and self.target == before and self._transition is None and not self._spans:
            horizon = limit_ns
            deadline = self.governor.deadline_ns()
            if deadline is not None:
                horizon = min(horizon, deadline - 1)
            skipped = (horizon - self._next_poll_ns) // polling_ns
            if skipped > 0:
                last = self._next_poll_ns + (skipped - 1) * polling_ns
                self._account(last)
                self._window_start_ns = last
                self._next_poll_ns = last + polling_ns

    def _account(self, until_ns: int) -> None:
        since = self._accounted_ns
        if until_ns <= since:
            return
        busy = 0
        for span in self._spans:
            busy += max(0, min(span[1], until_ns) - max(span[0], since))
        stalled = 0
        transition = self._transition
        if transition is not None and transition.started:
            stalled = max(0, min(transition.end_ns, until_ns) - max(transition.start_ns, since))
        idle = until_ns - since - busy - stalled
        opp = self.opps[self.cur]
        self.time_in_state_ns[self.cur] += until_ns - since
        self.busy_in_state_ns[self.cur] += busy + stalled
        self.energy_in_state_j[self.cur] += ((busy + stalled) * opp.busy_w + idle * opp.idle_w) / 1e9
        self._window_busy_ns += busy
        self._spans = [span for span in self._spans if span[1] > until_ns]
        self._accounted_ns = until_ns

    # ------------------------------------------------------------- data path
    def observe_arrival(self, now_ns: int, queue_depth: int) -> None:
        """The runtime's arrival hook: the host-visible queue depth, this request included."""
        self._told_depth = queue_depth

    def _serve(self, now_ns: int, call: Callable[[int], int | None], request: bool) -> int | None:
        now_ns = max(now_ns, self._accounted_ns)  # time never runs backwards here
        self.advance(now_ns)
        if request:
            in_flight = self._in_flight
            while in_flight and in_flight[0] <= now_ns:
                heapq.heappop(in_flight)
            depth = self._told_depth if self._told_depth is not None else len(in_flight) + 1
            self._told_depth = None
            self.last_queue_depth = depth
            self.requests += 1
            self._decide(self.governor.on_arrival(now_ns, depth, self.cur_freq), now_ns)
        start = now_ns
        index = self.cur
        if self._transition is not None:
            start = max(start, self._transition.end_ns)
            index = self._transition.to_index
        if start >= self.busy_until_ns:
            # Idle: a new busy period, with the device's clock caught up to ours.
            self._seg_t = self._seg_tau = start
            self._seg_k = self.stretch[index]
        k = self._seg_k
        device_start = self._seg_tau + int((start - self._seg_t) / k)
        device_done = call(device_start)
        if device_done is None:
            return None
        done = max(start, self._seg_t + round((device_done - self._seg_tau) * k))
        if start >= self.busy_until_ns or not self._spans:
            self._spans.append([start, done])
        else:
            self._spans[-1][1] = max(self._spans[-1][1], done)
        self.busy_until_ns = max(self.busy_until_ns, done)
        if request:
            heapq.heappush(self._in_flight, done)
        return done

    def read(self, offset: int, buf: memoryview, now_ns: int) -> int:
        return self._request(now_ns, lambda t: self.next.read(offset, buf, t))

    def write(self, offset: int, data: memoryview, fua: bool, now_ns: int) -> int:
        return self._request(now_ns, lambda t: self.next.write(offset, data, fua, t))

    def trim(self, offset: int, length: int, now_ns: int) -> int:
        return self._request(now_ns, lambda t: self.next.trim(offset, length, t))

    def write_zeroes(self, offset: int, length: int, fua: bool, now_ns: int) -> int:
        return self._request(now_ns, lambda t: self.next.write_zeroes(offset, length, fua, t))

    def flush(self, now_ns: int) -> int:
        return self._request(now_ns, self.next.flush)

    def _request(self, now_ns: int, call: Callable[[int], int]) -> int:
        done = self._serve(now_ns, call, request=True)
        assert done is not None
        return done

    def background_step(self, now_ns: int) -> int | None:
        return self._serve(now_ns, self.next.background_step, request=False)

    # ------------------------------------------------------------ governors
    def set_governor(self, name: str, now_ns: int) -> None:
        if name not in GOVERNORS:
            raise TunableError(f"governor {name!r} is unknown; available: {', '.join(GOVERNORS)}")
        self.advance(now_ns)
        self.governor = make_governor(name, self.tunables)
        self._start_governor(now_ns)
        self.advance(now_ns)  # a transition that starts now shows in cur_freq at once, as devfreq's does

    def set_tunable(self, name: str, text: str, now_ns: int) -> None:
        self.advance(now_ns)
        self.tunables.set(name, text)  # raises TunableError and changes nothing
        if name == "polling_ms" and self._next_poll_ns is not None:
            # devfreq restarts its timer with the new interval.
            self._next_poll_ns = now_ns + self.tunables.section.polling_ms * 1_000_000
        self._decide(self.governor.on_tunable_change(now_ns, self.cur_freq), now_ns)
        # devfreq's set_freq store returns once update_devfreq has set the
        # frequency: a transition that can start now (the device is idle)
        # shows in cur_freq in the reply; a busy device starts it later.
        self.advance(now_ns)

    # ------------------------------------------------------------ statistics
    @property
    def energy_joules(self) -> float:
        return sum(self.energy_in_state_j)

    def trans_stat(self) -> str:
        """devfreq's trans_stat file (drivers/devfreq/devfreq.c, trans_stat_show), time in ms."""
        lines = ["     From  :   To", "           :" + "".join(f"{f:10d}" for f in self.freqs) + "   time(ms)"]
        for i, f in enumerate(self.freqs):
            mark = "*" if i == self.cur else " "
            counts = "".join(f"{c:10d}" for c in self.trans_table[i])
            lines.append(f"{mark}{f:10d}:{counts}{self.time_in_state_ns[i] // 1_000_000:10d}")
        lines.append(f"Total transition : {self.total_trans}")
        return "\n".join(lines) + "\n"

    def reset_trans_stat(self) -> None:
        n = len(self.freqs)
        self.trans_table = [[0] * n for _ in range(n)]
        self.total_trans = 0
        self.time_in_state_ns = [0] * n

    def snapshot(self) -> dict[str, Any]:
        return {
            "governor": self.governor.name,
            "available_governors": list(GOVERNORS),
            "cur_freq": self.cur_freq,
            "target_freq": self.freqs[self.target],
            "min_freq": self.freqs[self.min_index],
            "max_freq": self.freqs[self.max_index],
            "available_frequencies": list(self.freqs),
            "controller_bound_share": self.section.controller_bound_share,
            "transition_latency_us": self.section.transition_latency_us,
            **self.tunables.snapshot(),
            "queue_depth": self.last_queue_depth,
            "energy_joules": self.energy_joules,
            "total_trans": self.total_trans,
            "time_in_state_ms": {str(f): ns // 1_000_000 for f, ns in zip(self.freqs, self.time_in_state_ns,
                                                                           strict=True)},
            "governor_state": self.governor.state(),
        }

    def _attribute_text(self, name: str) -> str:
        if name == "trans_stat":
            return self.trans_stat()
        if name in ("available_frequencies", "available_governors"):
            return " ".join(map(str, self.snapshot()[name])) + "\n"
        return f"{self.snapshot()[name]}\n"

    # ------------------------------------------------------------ control API
    def _now(self) -> int:
        return self._clock() if self._clock is not None else self._accounted_ns

    def routes(self) -> list[Route]:
        return [*wrap_all(POWER_GROUP.routes(self), self._brought_up_to_date), *self.next.routes()]

    def _brought_up_to_date(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """Account the modeled time up to now before a control request reads or changes anything."""
        def run(**kwargs: Any) -> Any:
            self.advance(max(self._now(), self._accounted_ns))
            return handler(**kwargs)
        return run

    def _store_trans_stat(self, text: str) -> None:
        # devfreq accepts only 0, which resets the statistics.
        if text != "0":
            raise TunableError(f"trans_stat: only 0 (reset) can be written, got {text!r}")
        self.reset_trans_stat()

    # ------------------------------------------------------------ device protocol
    def describe(self) -> dict[str, Any]:
        self.advance(max(self._now(), self._accounted_ns))
        description = self.next.describe()
        description["power"] = self.snapshot()
        return description

    def metrics(self) -> Iterator[MetricFamily]:
        self.advance(max(self._now(), self._accounted_ns))
        per_freq = [str(f) for f in self.freqs]
        yield MetricFamily("blockemu_power_cur_freq_hz", "gauge", "Controller frequency now", [({}, self.cur_freq)])
        yield MetricFamily("blockemu_power_governor", "gauge", "Governor in use (1 for the current one)",
                           [({"governor": g}, 1.0 if g == self.governor.name else 0.0) for g in GOVERNORS])
        yield MetricFamily("blockemu_power_transitions", "counter", "Frequency transitions, by from and to",
                           [({"from_hz": per_freq[i], "to_hz": per_freq[j]}, count)
                            for i, row in enumerate(self.trans_table) for j, count in enumerate(row) if i != j])
        yield MetricFamily("blockemu_power_time_in_state_seconds", "counter", "Modeled time at each frequency",
                           [({"freq_hz": f}, ns / 1e9) for f, ns in zip(per_freq, self.time_in_state_ns,
                                                                         strict=True)])
        yield MetricFamily("blockemu_power_busy_seconds", "counter", "Modeled busy time at each frequency",
                           [({"freq_hz": f}, ns / 1e9) for f, ns in zip(per_freq, self.busy_in_state_ns,
                                                                         strict=True)])
        yield MetricFamily("blockemu_power_energy_joules", "counter", "Modeled energy, by frequency",
                           [({"freq_hz": f}, j) for f, j in zip(per_freq, self.energy_in_state_j, strict=True)])
        busy_now = any(span[0] <= self._accounted_ns < span[1] for span in self._spans)
        opp = self.opps[self.cur]
        yield MetricFamily("blockemu_power_watts", "gauge", "Modeled power draw now (busy or idle power)",
                           [({}, opp.busy_w if busy_now else opp.idle_w)])
        elapsed = sum(self.time_in_state_ns)
        yield MetricFamily("blockemu_power_average_watts", "gauge", "Energy over modeled time since start",
                           [({}, self.energy_joules / (elapsed / 1e9) if elapsed else 0.0)])
        yield MetricFamily("blockemu_power_governor_queue_depth", "gauge",
                           "Queue depth the governor saw at the last arrival", [({}, self.last_queue_depth)])
        yield MetricFamily("blockemu_power_boosts", "counter", "pmqos_qd boosts since the governor was selected",
                           [({}, self.governor.boosts)])
        yield from self.next.metrics()


def _attribute(name: str, store: Callable[[PowerModel, str], Any] | None = None) -> Attribute[PowerModel]:
    return Attribute(name, lambda power: power._attribute_text(name), store)


def _tunable_store(name: str) -> Callable[[PowerModel, str], None]:
    return lambda power, text: power.set_tunable(name, text, power._accounted_ns)


# What GET/PUT /api/v1/power... answer (404) on a device served without the power layer.
POWER_OFF_HINT = ("this device is served without the power model; serve it with --set power.enabled=true "
                  "(or [power] enabled = true in its config)")


# devfreq's files (drivers/devfreq/devfreq.c) and the governors' tunables, every one readable.
POWER_GROUP: AttributeGroup[PowerModel] = AttributeGroup(
    "power", "power",
    (
        _attribute("governor", lambda p, v: p.set_governor(v, p._accounted_ns)),
        _attribute("trans_stat", PowerModel._store_trans_stat),
        _attribute("min_freq", lambda p, v: p.set_limit("min_freq", v, p._accounted_ns)),
        _attribute("max_freq", lambda p, v: p.set_limit("max_freq", v, p._accounted_ns)),
        *(_attribute(name) for name in READ_ONLY_ATTRIBUTES),
        *(_attribute(name, _tunable_store(name)) for name in GovernorTunables.WRITABLE),
    ),
    PowerModel.snapshot,
    errors={TunableError: 400},
)
POWER_ATTRIBUTES = POWER_GROUP.names
