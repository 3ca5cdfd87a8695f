"""Queueing of modeled work on parallel units (NAND dies, zones' channels).

Each unit serves one piece of work at a time, in arrival order.  A request that
needs several units completes when the last of them is done.  This is what
makes concurrent requests queue behind each other in modeled time, in both
timing modes, without any threads.
"""

from __future__ import annotations

from collections.abc import Iterable


class UnitTimeline:
    def __init__(self, units: int) -> None:
        if units <= 0:
            raise ValueError(f"units must be > 0, got {units}")
        self.busy_until = [0] * units
        # Total modeled busy time per unit, for utilisation and energy models.
        self.busy_ns = [0] * units

    @property
    def units(self) -> int:
        return len(self.busy_until)

    def occupy_one(self, start_ns: int, unit: int, cost_ns: int) -> int:
        begin = self.busy_until[unit]
        if begin < start_ns:
            begin = start_ns
        end = begin + cost_ns
        self.busy_until[unit] = end
        self.busy_ns[unit] += cost_ns
        return end

    def occupy(self, start_ns: int, costs: Iterable[tuple[int, int]]) -> int:
        """Queue ``cost_ns`` on each ``unit``; return when the last one finishes."""
        done = start_ns
        for unit, cost_ns in costs:
            end = self.occupy_one(start_ns, unit, cost_ns)
            if end > done:
                done = end
        return done

    def idle_at(self) -> int:
        """When every unit has drained its queue."""
        return max(self.busy_until)
