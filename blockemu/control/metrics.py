"""Prometheus collector: reads the runtime and the model at scrape time.

The models never import prometheus_client; they yield plain
:class:`~blockemu.devices.base.MetricFamily` objects and this module turns them
into Prometheus families, adding the ``device`` label everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from blockemu.runtime import LATENCY_BUCKETS, DeviceRuntime


class RuntimeCollector(Collector):
    def __init__(self, runtime: DeviceRuntime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        runtime = self.runtime
        name = runtime.device.name
        with runtime.lock:
            stats = runtime.stats
            requests = CounterMetricFamily("blockemu_requests", "Requests served, by operation",
                                           labels=["device", "op"])
            nbytes = CounterMetricFamily("blockemu_bytes", "Bytes transferred, by operation",
                                         labels=["device", "op"])
            errors = CounterMetricFamily("blockemu_request_errors", "Requests answered with an error",
                                         labels=["device", "op"])
            latency = HistogramMetricFamily("blockemu_request_modeled_latency_seconds",
                                            "Modeled request latency (arrival to completion)",
                                            labels=["device", "op"])
            for op, s in stats.ops.items():
                requests.add_metric([name, op], s.requests)
                nbytes.add_metric([name, op], s.bytes)
                errors.add_metric([name, op], s.errors)
                cumulative = 0
                buckets = []
                for bound, count in zip((*LATENCY_BUCKETS, float("inf")), s.latency_counts, strict=True):
                    cumulative += count
                    buckets.append((repr(bound) if bound != float("inf") else "+Inf", cumulative))
                latency.add_metric([name, op], buckets, s.latency_sum_s)
            yield requests
            yield nbytes
            yield errors
            yield latency
            qd = GaugeMetricFamily("blockemu_queue_depth", "Requests in flight now", labels=["device"])
            qd.add_metric([name], stats.queue_depth)
            yield qd
            peak = GaugeMetricFamily("blockemu_queue_depth_peak", "Most requests in flight at once",
                                     labels=["device"])
            peak.add_metric([name], stats.queue_depth_peak)
            yield peak
            arrivals = CounterMetricFamily("blockemu_arrivals_by_queue_depth",
                                           "Requests by the queue depth they arrived at (themselves included)",
                                           labels=["device", "depth"])
            for depth, count in sorted(stats.arrivals_by_depth.items()):
                arrivals.add_metric([name, str(depth)], count)
            yield arrivals
            clock = GaugeMetricFamily("blockemu_modeled_time_seconds", "The device's modeled clock",
                                      labels=["device"])
            clock.add_metric([name], runtime.clock.now_ns() / 1e9)
            yield clock
            for family in runtime.device.metrics():
                labels = ["device", *sorted({k for sample_labels, _ in family.samples for k in sample_labels})]
                base = family.name.removesuffix("_total")
                metric: Metric
                if family.kind == "counter":
                    metric = CounterMetricFamily(base, family.help, labels=labels)
                else:
                    metric = GaugeMetricFamily(family.name, family.help, labels=labels)
                for sample_labels, value in family.samples:
                    metric.add_metric([name, *(sample_labels.get(k, "") for k in labels[1:])], value)
                yield metric


def make_registry(runtime: DeviceRuntime) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(runtime))
    return registry
