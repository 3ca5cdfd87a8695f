"""Clocks injected into device models.

Models never read the time themselves: they are handed ``now_ns`` by whoever
drives them.  :class:`VirtualClock` makes runs deterministic (tests, replay,
``timing.mode = "virtual"``); :class:`RealClock` lets a served device complete
requests at their modeled time, optionally slowed by ``time_scale``, in the
spirit of SimPy's real-time environment.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int:
        """Modeled time in nanoseconds since the clock started."""
        ...

    def wait_until(self, t_ns: int) -> None:
        """Return once modeled time ``t_ns`` has been reached."""
        ...


class VirtualClock:
    """Modeled time that only moves when told to; waiting moves it."""

    def __init__(self, start_ns: int = 0) -> None:
        if start_ns < 0:
            raise ValueError(f"start_ns must be >= 0, got {start_ns}")
        self._now = start_ns
        self._lock = threading.Lock()

    def now_ns(self) -> int:
        return self._now

    def wait_until(self, t_ns: int) -> None:
        # Time never runs backwards: a request that completes "earlier" than
        # one already accounted for leaves the clock where it is.  (Every
        # request comes here: acquire/release cost half of a with statement,
        # and nothing between them can raise.)
        lock = self._lock
        lock.acquire()
        if t_ns > self._now:
            self._now = t_ns
        lock.release()

    advance_to = wait_until


class RealClock:
    """Wall-clock time, scaled: one modeled second lasts ``time_scale`` real seconds."""

    def __init__(self, time_scale: float = 1.0, start_ns: int = 0) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.time_scale = time_scale
        self._start = time.monotonic_ns()
        # Modeled time at creation: a device switched from virtual to realtime
        # keeps counting from where its virtual clock was.
        self._offset = start_ns

    def now_ns(self) -> int:
        return self._offset + int((time.monotonic_ns() - self._start) / self.time_scale)

    def wait_until(self, t_ns: int) -> None:
        delay_ns = (t_ns - self.now_ns()) * self.time_scale
        if delay_ns > 0:
            time.sleep(delay_ns / 1e9)
