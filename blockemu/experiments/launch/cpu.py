"""The phone's cores, shared by every thread the study models, and an accelerator that uses none.

One :class:`~blockemu.timing.UnitTimeline` of ``cpu_cores`` units is the
whole CPU: the zram device (de)compresses on it (its ``cpus`` timeline,
sized ``cpu_cores``), and :class:`Cpus` places the rest on the same units —
the launching thread's own work, ZCACHE compression in reclaim (on the
reclaiming thread), asynchronous ZCACHE workers — so that all of them
compete for the same cores.  Work goes to the core that frees up first, as
a load-balancing scheduler would place a runnable thread.
"""

from __future__ import annotations

from collections import defaultdict

from blockemu.timing import UnitTimeline


class Cpus:
    def __init__(self, timeline: UnitTimeline) -> None:
        self.timeline = timeline
        # Modeled CPU ns per kind of work (launch, zcache_compress, ...).
        self.spent_ns: dict[str, int] = defaultdict(int)

    @property
    def cores(self) -> int:
        return self.timeline.units

    def run(self, start_ns: int, cost_ns: int, kind: str) -> int:
        """Run ``cost_ns`` of work that becomes runnable at ``start_ns``; return when it ends."""
        if cost_ns <= 0:
            return start_ns
        busy = self.timeline.busy_until
        unit = min(range(len(busy)), key=busy.__getitem__)
        self.spent_ns[kind] += cost_ns
        return self.timeline.occupy_one(start_ns, unit, cost_ns)


class Accelerator:
    """A compression engine beside the CPU: per batch a setup and a DMA each way, then its throughput.

    It runs one batch at a time (a single queue) and uses no core.  What
    it computes is the codec's output (the study compresses the batch with
    the real codec, through the same batch shape the zram model's async
    path builds); only its time comes from here, so a real device's
    compressor can replace the codec call and this timing without changing
    the callers.
    """

    def __init__(self, setup_us: float, dma_gbps: float, throughput_gbps: float) -> None:
        if setup_us < 0 or dma_gbps <= 0 or throughput_gbps <= 0:
            raise ValueError("offload_setup_us must be >= 0 and offload_dma_gbps, offload_throughput_gbps > 0")
        self.setup_ns = int(setup_us * 1000)
        self.dma_bytes_per_ns = dma_gbps
        self.bytes_per_ns = throughput_gbps
        self.busy_until = 0
        self.batches = 0
        self.busy_ns = 0

    def submit(self, start_ns: int, in_bytes: int, out_bytes: int) -> int:
        """A batch of ``in_bytes`` compressing to ``out_bytes``: when its results are back in RAM."""
        begin = max(start_ns, self.busy_until)
        cost = self.setup_ns + int((in_bytes + out_bytes) / self.dma_bytes_per_ns) + int(in_bytes / self.bytes_per_ns)
        self.busy_until = begin + cost
        self.batches += 1
        self.busy_ns += cost
        return self.busy_until
