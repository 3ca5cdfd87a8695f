"""A served device: the model, its clock, its lock, its statistics.

Frontends (the nbdkit plugin, replay, later ublk) call :class:`DeviceRuntime`
and nothing else.  It serialises access to the model, stamps each request with
its modeled arrival time, waits for its modeled completion (a real sleep in
realtime mode, a clock jump in virtual mode), keeps the queue-depth and latency
statistics, and drives the device's background work (HID, later GC) on a thread.
"""

from __future__ import annotations

import math
import sys
import threading
from bisect import bisect_left
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blockemu.api import API_PREFIX, JsonBody, Route, obj, wrap_all
from blockemu.clock import Clock, RealClock, VirtualClock
from blockemu.config import TIMING_MODES, Config
from blockemu.devices.base import (
    ApiError,
    ControlTimed,
    LocksMemory,
    ObservesArrival,
    Offloading,
    RecordsCommands,
)
from blockemu.process_guard import protect_server_process
from blockemu.stack import Stack, build
from blockemu.trace import TraceWriter

OPS = ("read", "write", "flush", "trim", "zero")
# Modeled latency histogram bounds, seconds (10 µs … 1 s).
LATENCY_BUCKETS = (
    10e-6, 25e-6, 50e-6, 75e-6, 100e-6, 150e-6, 250e-6, 500e-6,
    1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1.0,
)
_LATENCY_BUCKETS_NS = tuple(round(bound * 1e9) for bound in LATENCY_BUCKETS)


@dataclass
class OpStats:
    requests: int = 0
    bytes: int = 0
    errors: int = 0
    latency_sum_ns: int = 0
    # One count per bucket of LATENCY_BUCKETS plus +Inf (not cumulative).
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))

    @property
    def latency_sum_s(self) -> float:
        return self.latency_sum_ns / 1e9


class IoStats:
    def __init__(self) -> None:
        self.ops = {op: OpStats() for op in OPS}
        # Queue depth: a request is counted into ``in_flight`` when it arrives
        # (under the runtime's lock) and appended to ``departed`` once its
        # modeled wait is over, without the lock; the next arrival settles the
        # two.  Taking the lock a second time per request is what turned
        # nbdkit's threads into a convoy: a thread woken on the lock holds it
        # while it waits for the GIL, so every request behind it blocks on the
        # lock and hands the GIL on.  ``list.append`` is atomic under the GIL.
        self.in_flight = 0
        self.departed: list[None] = []
        self.queue_depth_peak = 0
        # How many requests arrived at each queue depth (1, 2, ... n).
        self.arrivals_by_depth: dict[int, int] = {}

    @property
    def queue_depth(self) -> int:
        """Requests in flight now."""
        return self.in_flight - len(self.departed)

    def record(self, op: str, nbytes: int, latency_ns: int) -> None:
        stats = self.ops[op]
        stats.requests += 1
        stats.bytes += nbytes
        stats.latency_sum_ns += latency_ns  # integers: cheaper per request than floats
        stats.latency_counts[bisect_left(_LATENCY_BUCKETS_NS, latency_ns)] += 1


class DeviceRuntime:
    """Serves a built device (blockemu/stack.py); with no ``stack`` given, it builds ``config``'s with every layer."""

    def __init__(self, config: Config, stack: Stack | None = None, clock: Clock | None = None) -> None:
        self.config = config
        if clock is None:
            clock = VirtualClock() if config.timing.mode == "virtual" else RealClock(config.timing.time_scale)
        self.clock = clock
        if stack is None:
            # Layers read the clock to bring their statistics up to date
            # between requests; self.clock changes if timing is switched.
            stack = build(config, lambda: self.clock.now_ns())
        self.stack = stack
        # Requests enter here: the outermost layer (faults), or the bare model.
        self.device = stack.top
        # Optional hooks (blockemu/devices/base.py), found once on the stack's parts.
        # observe_arrival(now_ns, queue_depth) learns the host-visible queue
        # depth (this request included) before the request is served.
        observer = next((part for part in stack.parts if isinstance(part, ObservesArrival)), None)
        self._observe_arrival: Callable[[int, int], None] | None = (
            observer.observe_arrival if observer is not None else None)
        # Control commands that do modeled work (a zone reset, a Simple Copy)
        # arrive now, like requests: set_control_time(now_ns) tells the model.
        self._control_timed = next((part for part in stack.parts if isinstance(part, ControlTimed)), None)
        # A device meant to back swap (zram) keeps the process out of reclaim.
        self._lock_memory = any(isinstance(part, LocksMemory) and part.lock_memory for part in stack.parts)
        self.timing_mode = config.timing.mode
        self.time_scale = config.timing.time_scale
        self.lock = threading.Lock()
        self.stats = IoStats()
        self._work = threading.Condition(self.lock)
        self._stopping = False
        self._worker: threading.Thread | None = None
        # Optional device hook (zram's asynchronous compression): CPU work run
        # outside the model lock on an executor owned here, not by the model.
        self._offload = next((part for part in stack.parts
                              if isinstance(part, Offloading) and part.offload_threads > 0), None)
        self._offload_ready = threading.Condition(self.lock)
        self._offload_idle = threading.Condition(self.lock)
        self._offload_thread: threading.Thread | None = None
        self._offload_executor: ThreadPoolExecutor | None = None
        # Request recorder; None when not tracing, so the data path pays one test.
        self.trace: TraceWriter | None = None

    # ---------------------------------------------------------------- data path
    def _serve(self, op: str, offset: int, nbytes: int, fua: bool, call: Callable[..., int], *args: Any) -> None:
        """Serve ``call(*args, arrival_ns)``, which returns the modeled completion time.

        The call and its arguments come separately, not as a closure: this is
        run for every request, and under nbdkit each Python frame costs
        several times what it does in a plain interpreter.
        """
        stats = self.stats
        # acquire/release rather than "with": a with statement looks up __enter__
        # and __exit__ on every request, which costs more than the two calls.
        lock = self.lock
        lock.acquire()
        try:
            # Count this request in and settle the departures (see IoStats).
            departed = len(stats.departed)
            if departed:
                # Exactly the departures counted here are removed; any appended
                # meanwhile stay for the next arrival.
                del stats.departed[:departed]
                stats.in_flight -= departed
            stats.in_flight += 1
            depth = stats.in_flight
            if depth > stats.queue_depth_peak:
                stats.queue_depth_peak = depth
            arrivals = stats.arrivals_by_depth
            arrivals[depth] = arrivals.get(depth, 0) + 1
            clock = self.clock  # the one this request waits on, even if timing is switched meanwhile
            arrival = clock.now_ns()
            if self._observe_arrival is not None:
                self._observe_arrival(arrival, depth)
            try:
                done = call(*args, arrival)
            except Exception:
                stats.ops[op].errors += 1
                stats.in_flight -= 1
                if self.trace is not None:  # the host saw an error: a replay skips it
                    self.trace.append(arrival, op, offset, nbytes, fua, depth, True)
                raise
            if self.trace is not None:
                self.trace.append(arrival, op, offset, nbytes, fua, depth)
            stats.record(op, nbytes, done - arrival)
            if self._offload is not None:
                self._offload_ready.notify()
        finally:
            lock.release()
        try:
            # Outside the lock, so that other requests queue in modeled time.
            clock.wait_until(done)
        finally:
            stats.departed.append(None)  # counted out without the lock (see IoStats)

    def read(self, offset: int, buf: memoryview) -> None:
        self._serve("read", offset, len(buf), False, self.device.read, offset, buf)

    def write(self, offset: int, data: memoryview, fua: bool = False) -> None:
        self._serve("write", offset, len(data), fua, self.device.write, offset, data, fua)

    def trim(self, offset: int, length: int) -> None:
        self._serve("trim", offset, length, False, self.device.trim, offset, length)

    def write_zeroes(self, offset: int, length: int, fua: bool = False) -> None:
        self._serve("zero", offset, length, fua, self.device.write_zeroes, offset, length, fua)

    def flush(self) -> None:
        # A device with offloaded work (zram staging) is flushed once that work is done.
        self._wait_offload_idle()
        self._serve("flush", 0, 0, False, self.device.flush)

    # ------------------------------------------------------------ control plane
    def routes(self) -> list[Route]:
        """The runtime's routes and the served stack's, each of the stack's run under the model lock."""
        return [
            Route("GET", f"{API_PREFIX}/device", self.describe, "Description and live statistics", errors=()),
            Route("GET", f"{API_PREFIX}/timing", self._timing_request, "Timing mode and modeled time"),
            Route("PUT", f"{API_PREFIX}/timing", self._set_timing_request, "Switch timing at run time",
                  body=TIMING_BODY),
            Route("GET", f"{API_PREFIX}/trace", self._trace_status, "Tracing status"),
            Route("POST", f"{API_PREFIX}/trace/start", self.start_trace, "Record every request to a new file",
                  body=TRACE_START_BODY, errors=(400, 409)),
            Route("POST", f"{API_PREFIX}/trace/stop", self.stop_trace, "Stop recording", errors=(409,)),
            *wrap_all(self.device.routes(), self._locked),
        ]

    def _locked(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        def run(**kwargs: Any) -> Any:
            with self.lock:
                if self._control_timed is not None:
                    self._control_timed.set_control_time(self.clock.now_ns())
                result = handler(**kwargs)
                self._work.notify_all()
                return result
        return run

    def describe(self) -> dict[str, Any]:
        with self.lock:
            description = self.device.describe()
            description["timing"] = self.timing_status()
            description["io"] = {
                op: {"requests": s.requests, "bytes": s.bytes, "errors": s.errors}
                for op, s in self.stats.ops.items()
            }
            description["queue_depth"] = {
                "current": self.stats.queue_depth,
                "peak": self.stats.queue_depth_peak,
            }
            return description

    # ----------------------------------------------------------------- timing
    def set_timing(self, mode: str, time_scale: float) -> dict[str, Any]:
        """Switch timing mode at run time; modeled time carries on from where it was."""
        if mode not in TIMING_MODES:
            raise ApiError(400, f"mode must be one of {', '.join(TIMING_MODES)}, got {mode!r}")
        if not (time_scale > 0 and math.isfinite(time_scale)):  # JSON's Infinity parses as a float
            raise ApiError(400, f"time_scale must be a finite number > 0, got {time_scale}")
        with self.lock:
            now = self.clock.now_ns()
            self.clock = VirtualClock(now) if mode == "virtual" else RealClock(time_scale, now)
            self.timing_mode, self.time_scale = mode, time_scale
            return self.timing_status()

    def timing_status(self) -> dict[str, Any]:
        return {"mode": self.timing_mode, "time_scale": self.time_scale, "modeled_now_s": self.clock.now_ns() / 1e9}

    def _timing_request(self) -> dict[str, Any]:
        with self.lock:
            return self.timing_status()

    def _set_timing_request(self, mode: str | None = None, time_scale: float | None = None) -> dict[str, Any]:
        return self.set_timing(mode or self.timing_mode, float(self.time_scale if time_scale is None else time_scale))

    # ---------------------------------------------------------------- tracing
    def start_trace(self, path: str | Path) -> dict[str, Any]:
        """Record every request from now on, starting with a snapshot of the device's state."""
        with self.lock:
            if self.trace is not None:
                raise ApiError(409, f"already tracing to {self.trace.path}; stop it first")
            # The model's state, which a replay starts from.
            self.trace = TraceWriter.create(path, self.config, self.stack.model, self.clock.now_ns())
            # Zone management and Simple Copy do not pass _serve: the model records them.
            for part in self.stack.parts:
                if isinstance(part, RecordsCommands):
                    part.recorder = self.trace
            return self.trace.status()

    def stop_trace(self) -> dict[str, Any]:
        with self.lock:
            if self.trace is None:
                raise ApiError(409, "not tracing")
            trace, self.trace = self.trace, None
            for part in self.stack.parts:
                if isinstance(part, RecordsCommands):
                    part.recorder = None
            trace.close()
            return trace.status()

    def _trace_status(self) -> dict[str, Any]:
        return self.trace.status() if self.trace is not None else {"tracing": False}

    # ---------------------------------------------------------- background work
    def run_background_until_idle(self) -> None:
        """Drive background work to completion in the caller's thread (tests, replay)."""
        self._drain_offload_inline()
        while True:
            with self.lock:
                done = self.device.background_step(self.clock.now_ns())
            if done is None:
                return
            self.clock.wait_until(done)

    def start(self) -> None:
        if self._lock_memory:
            # See blockemu/process_guard.py.
            for problem in protect_server_process():
                print(f"blockemu: warning: {problem}", file=sys.stderr, flush=True)
        self._start_offload()
        if self._worker is None:
            self._worker = threading.Thread(target=self._background_loop, name="blockemu-background", daemon=True)
            self._worker.start()

    def stop(self) -> None:
        with self.lock:
            self._stopping = True
            self._work.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5)
            self._worker = None
        if self._offload_thread is not None:
            self._offload_thread.join(timeout=5)
            self._offload_thread = None
        if self._offload_executor is not None:
            self._offload_executor.shutdown(wait=True)
            self._offload_executor = None

    def _background_loop(self) -> None:
        while True:
            with self.lock:
                if self._stopping:
                    return
                done = self.device.background_step(self.clock.now_ns())
                if done is None:
                    # Idle until the control plane asks for work (or a timeout,
                    # so that work started by the data path is noticed too).
                    self._work.wait(timeout=0.5)
                    continue
            self.clock.wait_until(done)

    # ------------------------------------------------------------ offloaded work
    def _start_offload(self) -> None:
        if self._offload is None or self._offload_thread is not None:
            return
        threads = self._offload.offload_threads
        self._offload_executor = ThreadPoolExecutor(threads, thread_name_prefix="blockemu-offload")
        self._offload_thread = threading.Thread(target=self._offload_loop, name="blockemu-offload-dispatch",
                                                daemon=True)
        self._offload_thread.start()

    def _offload_loop(self) -> None:
        """Take a job under the lock, run it on the executor without the lock, hand it back."""
        device = self._offload
        assert device is not None
        while True:
            with self.lock:
                job = None
                while job is None:
                    if self._stopping:
                        return
                    job = device.offload_take(self.clock.now_ns())
                    if job is None:
                        self._offload_idle.notify_all()
                        self._offload_ready.wait(timeout=0.5)
            try:
                job.run(self._offload_executor, device.offload_threads)
            except Exception:  # a broken pool must not strand staged pages: redo it here
                job.run(None, 1)
            with self.lock:
                device.offload_finish(job, self.clock.now_ns())
                self._offload_idle.notify_all()

    def _drain_offload_inline(self) -> None:
        device = self._offload
        if device is None:
            return
        while True:
            with self.lock:
                job = device.offload_take(self.clock.now_ns())
            if job is None:
                return
            job.run(None, 1)
            with self.lock:
                device.offload_finish(job, self.clock.now_ns())

    def _wait_offload_idle(self) -> None:
        device = self._offload
        if device is None:
            return
        thread = self._offload_thread
        if thread is None or not thread.is_alive():  # not started (tests, replay) or failed: do it here
            self._drain_offload_inline()
            return
        with self.lock:
            self._offload_ready.notify()
            while device.offload_pending() and not self._stopping and thread.is_alive():
                self._offload_idle.wait(timeout=0.5)
        if device.offload_pending() and not self._stopping:
            self._drain_offload_inline()

    def close(self) -> None:
        self.stop()
        if self.trace is not None:
            self.stop_trace()
        self.device.close()


TIMING_BODY = JsonBody(obj({"mode": {"type": "string", "enum": list(TIMING_MODES)},
                            "time_scale": {"type": "number", "exclusiveMinimum": 0}}, minProperties=1),
                       usage='body must be JSON like {"mode": "realtime", "time_scale": 20}', empty={})
TRACE_START_BODY = JsonBody(obj({"path": {"type": "string"}}, "path"),
                            usage='body must be JSON: {"path": "/absolute/new/file.trace"}')
