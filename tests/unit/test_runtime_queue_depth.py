"""Queue depth as DeviceRuntime counts it: in at arrival, out after the modeled wait."""

from __future__ import annotations

import threading

from blockemu.runtime import DeviceRuntime
from tests.conftest import small_ufs_config


class BarrierClock:
    """Modeled time that stands still; a wait returns once ``parties`` requests are all waiting."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties)

    def now_ns(self) -> int:
        return 0

    def wait_until(self, t_ns: int) -> None:
        self.barrier.wait(timeout=30)


def test_requests_waiting_together_are_all_in_flight_and_leave_it() -> None:
    parties = 4
    runtime = DeviceRuntime(small_ufs_config(), clock=BarrierClock(parties))
    threads = [threading.Thread(target=runtime.write, args=(i * 4096, memoryview(bytes(4096))))
               for i in range(parties)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    stats = runtime.stats
    # Each arrived while all before it were still waiting.
    assert stats.arrivals_by_depth == {depth: 1 for depth in range(1, parties + 1)}
    assert stats.queue_depth_peak == parties
    assert stats.queue_depth == 0
    runtime.clock = BarrierClock(1)
    runtime.write(0, memoryview(bytes(4096)))
    assert stats.arrivals_by_depth[1] == 2  # the departures were counted out
    assert stats.queue_depth == 0
    assert runtime.describe()["queue_depth"] == {"current": 0, "peak": parties}
    runtime.close()
