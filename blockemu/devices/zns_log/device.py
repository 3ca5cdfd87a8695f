"""The zoned log served as a conventional block device (``[device] type = "zns_ftl"``).

The block-device face of :mod:`blockemu.devices.zns_log.log`: range checks,
the log's size from ``[zns_ftl] overprovision_percent``, describe, the
control API (``/gc``, read-only ``/zones``) and the metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from blockemu.api import API_PREFIX, Route
from blockemu.config import Config
from blockemu.devices.base import (
    ApiError,
    Capabilities,
    MetricFamily,
    describe_identity,
    out_of_range,
)
from blockemu.devices.zns.device import ZnsDevice
from blockemu.devices.zns_log.log import BLOCK, ZonedLog
from blockemu.policies.gc import make_policy
from blockemu.store import Store


def logical_blocks_for(config: Config, device: ZnsDevice) -> int:
    sequential = sum(1 for z in device.zones if z.is_sequential)
    usable = sequential * (device.zone_capacity // BLOCK)
    return int(usable * (1 - config.zns_ftl.overprovision_percent / 100))


class ZnsFtlDevice:
    """The zoned log served as a conventional block device (``[device] type = "zns_ftl"``)."""

    kind = "zns_ftl"

    def __init__(self, config: Config, store: Store) -> None:
        ftl = config.zns_ftl
        self.config = config
        self.zns = ZnsDevice(config, store)
        logical = logical_blocks_for(config, self.zns)
        self.log = ZonedLog(
            self.zns,
            logical,
            make_policy(ftl.gc_policy, logical, ftl.hot_window_percent),
            ftl.copy_method,
            ftl.gc_start_free_zones,
            ftl.gc_reserve_free_zones,
            ftl.gc_step_blocks,
        )
        self.name = config.device.name
        self.size_bytes = logical * BLOCK
        self.capabilities = Capabilities(block_size=(512, BLOCK, 32 * 1024 * 1024),
                                         atomic_write_bytes=self.zns.lba_bytes, reads_depend_on_state=True)

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size_bytes:
            raise out_of_range(offset, length, self.size_bytes)

    def read(self, offset: int, buf: memoryview, now_ns: int) -> int:
        self._check(offset, len(buf))
        # Unmapped blocks are answered from the map alone: command overhead only.
        return max(self.log.read(offset, buf, now_ns), now_ns + self.zns.overhead_ns)

    def write(self, offset: int, data: memoryview, fua: bool, now_ns: int) -> int:
        self._check(offset, len(data))
        done = self.log.write(offset, data, now_ns)
        return done + (self.zns.flush_ns if fua else 0)

    def trim(self, offset: int, length: int, now_ns: int) -> int:
        self._check(offset, length)
        self.log.unmap(offset, length)
        return now_ns + self.zns.overhead_ns

    def write_zeroes(self, offset: int, length: int, fua: bool, now_ns: int) -> int:
        self._check(offset, length)
        first = -(-offset // BLOCK) * BLOCK
        end = max(first, (offset + length) // BLOCK * BLOCK)
        done = now_ns + self.zns.overhead_ns
        self.log.unmap(offset, length)
        # Partial blocks at the edges are written as zeros.
        for start, stop in ((offset, min(first, offset + length)), (max(end, offset), offset + length)):
            if stop > start:
                done = max(done, self.log.write(start, memoryview(bytes(stop - start)), now_ns))
        return done + (self.zns.flush_ns if fua else 0)

    def flush(self, now_ns: int) -> int:
        return self.zns.flush(now_ns)

    def background_step(self, now_ns: int) -> int | None:
        self.zns.background_step(now_ns)
        return self.log.background_step(now_ns)

    def set_control_time(self, now_ns: int) -> None:
        self.zns.set_control_time(now_ns)

    def snapshot_state(self) -> dict[str, np.ndarray]:
        return {**self.zns.snapshot_state(), **self.log.snapshot_state()}

    def restore_state(self, state: dict[str, np.ndarray]) -> None:
        self.zns.restore_state(state)
        self.log.restore_state(state)

    def snapshot_counters(self) -> dict[str, np.ndarray]:
        return {**self.zns.snapshot_counters(), **self.log.snapshot_counters()}

    def restore_counters(self, state: dict[str, np.ndarray]) -> None:
        self.zns.restore_counters(state)
        self.log.restore_counters(state)

    def describe(self) -> dict[str, Any]:
        return {
            **describe_identity(self.name, self.kind, self.size_bytes, self.capabilities),
            "zns": self.zns.describe_zns(),
            "gc": self.log.stats(),
        }

    def routes(self) -> list[Route]:
        # The zone commands stay declared, refused with 409: the zones belong to the log.
        return [
            Route("GET", f"{API_PREFIX}/gc", self.log.stats, "Garbage collection statistics"),
            *self.zns.zone_report_routes(),
            *(replace(route, handler=_refuse_zone_command, errors=(409,),
                      summary="Refused: the zones belong to the zoned log")
              for route in self.zns.zone_command_routes()),
        ]

    def metrics(self) -> Iterator[MetricFamily]:
        yield from self.zns.zns_metrics()
        log = self.log
        yield MetricFamily("blockemu_zns_ftl_host_bytes_written", "counter", "Bytes the host wrote to the log",
                           [({}, log.host_blocks_written * BLOCK)])
        yield MetricFamily("blockemu_zns_ftl_gc_relocated_bytes", "counter", "Bytes garbage collection relocated",
                           [({"method": log.copy_method}, log.gc_blocks_relocated * BLOCK)])
        yield MetricFamily("blockemu_zns_ftl_gc_link_bytes", "counter",
                           "Bytes garbage collection moved over the host link (data or copy descriptors)",
                           [({"method": log.copy_method}, log.gc_link_bytes)])
        yield MetricFamily("blockemu_zns_ftl_gc_busy_seconds", "counter", "Modeled time spent in GC work",
                           [({}, log.gc_busy_ns / 1e9)])
        yield MetricFamily("blockemu_zns_ftl_zones_collected", "counter", "Zones emptied and reset by GC",
                           [({"mode": "all"}, log.zones_collected)])
        yield MetricFamily("blockemu_zns_ftl_foreground_collections", "counter",
                           "Zones collected inside a host write because free zones ran out",
                           [({}, log.foreground_collections)])
        yield MetricFamily("blockemu_zns_ftl_free_zones", "gauge", "Empty zones", [({}, len(log.free))])
        yield MetricFamily("blockemu_zns_ftl_mapped_bytes", "gauge", "Logical bytes mapped",
                           [({}, log.mapped_blocks * BLOCK)])
        yield MetricFamily("blockemu_zns_ftl_write_amplification", "gauge",
                           "(host + relocated blocks) / host blocks", [({}, log.write_amplification)])

    def close(self) -> None:
        self.zns.close()


def _refuse_zone_command(**_: Any) -> Any:
    raise ApiError(409, "the zones belong to the zoned log; only GET /api/v1/zones is allowed")
