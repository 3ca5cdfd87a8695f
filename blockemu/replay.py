"""Replay a trace through a device model in virtual time.

Two engines compute the same thing:

* ``scalar`` feeds requests one by one to the device's own data path (with a
  null store: replay models time and state, not bytes).  It works for every
  device type and is the reference.
* ``vector`` (UFS only) processes runs of reads, writes and flushes with numpy.
  Within a run no garbage collection happens (the run is cut before the first
  write that would trigger it), so every write's physical sectors are known in
  advance: the log head, then the free superblocks in FIFO order.  A read sees
  the last write to each sector before it in the run, else the mapping at the
  start of the run.  Each die serves its pieces of work in arrival order,
  ``end_j = max(arrival_j, end_{j-1}) + cost_j``, which with prefix sums
  ``C`` becomes ``end_j = C_j + max(busy_before, cummax(arrival_i - C_{i-1}))``
  and is evaluated for all dies at once.  Trims, write-zeroes and the writes
  that trigger garbage collection go through the scalar path.  Tests check
  that both engines give identical completion times.

Records the live device refused (``FLAG_REFUSED``) are skipped and counted;
a request the replay device refuses although the live one served it (a fio
iolog that breaks the zone rules, a trace replayed on another config) is
counted too and ends the same way on the replay device: nothing changes.
Zone management and Simple Copy (trace version 2) go to the zoned device's
own commands, so a ZNS trace replays to the same zones.

Open-loop replay (the default for traces with times) issues each request at
its recorded arrival time; closed-loop replay (fio v2 iologs, or
``--closed-loop``) issues each request when the previous one completes (QD1).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from blockemu.config import Config
from blockemu.devices.base import Device, DeviceError, SavesState
from blockemu.devices.ufs.device import UfsDevice
from blockemu.devices.ufs.ftl import SECTOR
from blockemu.devices.zns.device import CopySource, ZnsDevice
from blockemu.precondition import precondition as precondition_device
from blockemu.stack import build
from blockemu.store.null import NullStore
from blockemu.trace import DATA_OPS, FLAG_FUA, FLAG_REFUSED, OP_CODES, OPS, ZONE_OPS, Trace

READ, WRITE, FLUSH, TRIM, ZERO = (OP_CODES[name] for name in DATA_OPS)
FIRST_ZONE_OP = len(DATA_OPS)
COPY_SOURCE, COPY = OP_CODES["copy_source"], OP_CODES["copy"]
# Trace op -> ZnsDevice.zone_command action.
ZONE_ACTIONS = {OP_CODES[name]: name.removeprefix("zone_") for name in ZONE_OPS if name.startswith("zone_")}


@dataclass
class ReplayResult:
    arrivals_ns: np.ndarray
    completions_ns: np.ndarray
    ops: np.ndarray
    lengths: np.ndarray
    engine: str
    wall_s: float
    device: Device
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def latencies_ns(self) -> np.ndarray:
        return self.completions_ns - self.arrivals_ns

    @property
    def makespan_ns(self) -> int:
        if not len(self.arrivals_ns):
            return 0
        return int(self.completions_ns.max() - self.arrivals_ns.min())

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requests": len(self.ops),
            "engine": self.engine,
            "modeled_makespan_s": self.makespan_ns / 1e9,
            "wall_s": round(self.wall_s, 3),
            "requests_per_wall_s": round(len(self.ops) / self.wall_s) if self.wall_s > 0 else None,
            "refused": {"recorded": int(self.extra.get("refused_recorded", 0)),
                        "in_replay": int(self.extra.get("refused_in_replay", 0))},
            "ops": {},
        }
        if "precondition" in self.extra:
            out["precondition"] = self.extra["precondition"]
        latencies = self.latencies_ns
        for code, name in enumerate(OPS):
            mask = self.ops == code
            if not mask.any():
                continue
            lat = latencies[mask] / 1e3
            nbytes = int(self.lengths[mask].sum())
            busy_s = self.makespan_ns / 1e9
            out["ops"][name] = {
                "requests": int(mask.sum()),
                "bytes": nbytes,
                "mean_us": round(float(lat.mean()), 3),
                # One call: one partition of the latencies for all three.
                **{f"p{q}_us": round(float(v), 3) for q, v in zip((50, 95, 99), np.percentile(lat, (50, 95, 99)),
                                                                  strict=True)},
                "max_us": round(float(lat.max()), 3),
                "mb_per_modeled_s": round(nbytes / busy_s / 1e6, 3) if busy_s > 0 else None,
            }
        return out


def build_replay_device(config: Config, trace: Trace | None = None) -> Device:
    """The bare model (no layers) on a null store, in the state the trace started from."""
    device = build(config, layers=(), store=NullStore(config.capacity_bytes)).model
    if trace is not None and trace.state:
        if not isinstance(device, SavesState):
            raise ValueError(f"the trace carries device state but a {config.device.type} device cannot load it")
        device.restore_state(trace.state)
    return device


def replay(config: Config, trace: Trace, *, engine: str = "auto", closed_loop: bool | None = None,
           progress: Callable[[int, int], None] | None = None, precondition: str = "none") -> ReplayResult:
    """Run ``trace`` through a fresh device built from ``config`` (plus the trace's saved state).

    ``precondition`` (none, full, trace) writes the device first, untimed
    (blockemu/precondition.py).
    """
    if engine not in ("auto", "scalar", "vector"):
        raise ValueError(f"engine must be auto, scalar or vector, got {engine!r}")
    build_config = config
    if precondition == "trace":
        # [aging] at start-up would write its whole span; here it lays out only what the trace reads first.
        build_config = dataclasses.replace(config, aging=dataclasses.replace(config.aging, fragmentation_percent=0.0))
    device = build_replay_device(build_config, trace)
    records = trace.records
    # What the live device refused, the host saw fail: not replayed, counted.
    refused = (records["flags"] & FLAG_REFUSED) != 0
    refused_recorded = int(np.count_nonzero(refused))
    if refused_recorded:
        records = records[~refused]
    if trace.has_times and len(records) > 1 and (records["t_ns"][1:] < records["t_ns"][:-1]).any():
        # A converted CSV need not be in time order; arrivals must be.
        records = records[np.argsort(records["t_ns"], kind="stable")]
    if len(records):
        end = records["offset"].astype(np.int64) + records["length"].astype(np.int64)
        bad = np.flatnonzero(end > device.size_bytes)
        if len(bad):
            raise ValueError(f"trace request {int(bad[0])} ends at byte {int(end[bad[0]])}, "
                             f"beyond the device ({device.size_bytes} bytes); replay it on a larger config")
        if int(records["op"].max()) >= FIRST_ZONE_OP and not isinstance(device, ZnsDevice):
            raise ValueError(f"the trace holds zone-management commands; a {config.device.type} device has no "
                             "zones (replay it on a zns config)")
    conditioned = precondition_device(device, config, precondition, records)
    closed = (not trace.has_times) if closed_loop is None else closed_loop
    vector = device.capabilities.vector_replay
    if engine == "auto":
        engine = "vector" if vector else "scalar"
    if engine == "vector" and not vector:
        raise ValueError("the vector engine models only the plain UFS model (no L2P cache limit, no "
                         f"WriteBooster), not this {config.device.type} config; use --engine scalar, or "
                         "--set ufs.l2p_cache_kib=0 --set ufs.wb_enabled=false")
    arrivals = records["t_ns"].astype(np.int64)
    if len(arrivals):
        arrivals = arrivals - arrivals[0]
    started = time.perf_counter()
    if engine == "vector":
        # The capability says it is a UFS model: the engine reads its FTL and dies.
        done, arrivals = VectorUfsReplay(cast(UfsDevice, device), records, arrivals, closed, progress).run()
        served = np.ones(len(records), dtype=bool)
    else:
        done, arrivals, served = _replay_scalar(device, records, arrivals, closed, progress)
    wall = time.perf_counter() - started
    # Copy sources are part of their copy, not requests; refusals have no latency.
    requests = records["op"] != COPY_SOURCE
    keep = served & requests
    extra: dict[str, Any] = {"refused_recorded": refused_recorded,
                             "refused_in_replay": int(np.count_nonzero(requests & ~served))}
    if precondition != "none":
        extra["precondition"] = conditioned.as_dict()
    return ReplayResult(arrivals[keep], done[keep], records["op"][keep], records["length"][keep].astype(np.int64),
                        engine, wall, device, extra)


def _scalar_one(device: Device, op: int, offset: int, length: int, fua: bool, now: int, buf: memoryview) -> int:
    if op == READ:
        return device.read(offset, buf[:length], now)
    if op == WRITE:
        return device.write(offset, buf[:length], fua, now)
    if op == FLUSH:
        return device.flush(now)
    if op == TRIM:
        return device.trim(offset, length, now)
    return device.write_zeroes(offset, length, fua, now)


def _zone_one(device: ZnsDevice, op: int, offset: int, length: int, now: int, buf: memoryview,
              sources: list[CopySource]) -> int:
    if op == COPY:
        try:
            return device.copy(sources, offset // device.zone_size, now)[1]
        finally:
            sources.clear()
    return device.zone_command(ZONE_ACTIONS[op], offset // device.zone_size, now, buf[:length])[1]


def _replay_scalar(device: Device, records: np.ndarray, arrivals: np.ndarray, closed: bool,
                   progress: Callable[[int, int], None] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Completions, arrivals, and which records the device served (not refused, not a copy source)."""
    count = len(records)
    done = np.empty(count, dtype=np.int64)
    served = np.ones(count, dtype=bool)
    arrivals = arrivals.copy()
    buf = memoryview(bytearray(int(records["length"].max()) if count else 0))
    ops = records["op"].tolist()
    offsets = records["offset"].tolist()
    lengths = records["length"].tolist()
    fuas = (records["flags"] & FLAG_FUA).astype(bool).tolist()
    zoned = device if isinstance(device, ZnsDevice) else None
    sources: list[CopySource] = []
    previous = 0
    for i in range(count):
        now = previous if closed else int(arrivals[i])
        arrivals[i] = now
        op = ops[i]
        try:
            if op < FIRST_ZONE_OP:
                previous = _scalar_one(device, op, offsets[i], lengths[i], fuas[i], now, buf)
            elif op == COPY_SOURCE:
                sources.append(CopySource(offsets[i], lengths[i]))
                served[i] = False
                previous = now
            else:
                assert zoned is not None  # replay() refuses zone ops for other devices
                previous = _zone_one(zoned, op, offsets[i], lengths[i], now, buf, sources)
        except DeviceError:
            # Refused here as it would be live: the device's state is unchanged.
            served[i] = False
            previous = now
        done[i] = previous
        if progress is not None and i % 500_000 == 0:
            progress(i, count)
    return done, arrivals, served


class VectorUfsReplay:
    """The vectorised UFS engine described in the module docstring."""

    def __init__(self, device: UfsDevice, records: np.ndarray, arrivals: np.ndarray, closed: bool,
                 progress: Callable[[int, int], None] | None) -> None:
        self.dev = device
        self.ftl = device.ftl
        self.ops = records["op"].astype(np.int64)
        self.offsets = records["offset"].astype(np.int64)
        self.lengths = records["length"].astype(np.int64)
        self.fua = (records["flags"] & FLAG_FUA).astype(bool)
        self.arrivals = arrivals.copy()
        self.closed = closed
        self.progress = progress
        self.done = np.zeros(len(records), dtype=np.int64)
        # Sector span of every request (empty for flushes and zero-length ones).
        first = self.offsets // SECTOR
        last = (self.offsets + self.lengths - 1) // SECTOR
        self.first = first
        self.nsec = np.where(self.lengths > 0, last - first + 1, 0)
        self.nsec[self.ops == FLUSH] = 0
        self.write_sectors = np.where(self.ops == WRITE, self.nsec, 0)
        self._buf = memoryview(bytearray(int(self.lengths.max()) if len(self.lengths) else 0))

    def run(self) -> tuple[np.ndarray, np.ndarray]:
        count = len(self.ops)
        scalar_ops = (self.ops == TRIM) | (self.ops == ZERO)
        next_scalar = np.flatnonzero(scalar_ops)
        cumulative_writes = np.concatenate([[0], np.cumsum(self.write_sectors)])
        i = 0
        previous_done = 0
        reported = 0
        while i < count:
            if self.progress is not None and i >= reported:
                self.progress(i, count)
                reported = i + 500_000
            if self.closed:
                self.arrivals[i] = previous_done
            if scalar_ops[i] or (self.closed and max(self.dev.dies.busy_until) > self.arrivals[i]):
                previous_done = self._scalar(i)
                i += 1
                continue
            # The run ends at the next trim/zero, or before the write that would need GC.
            k = int(np.searchsorted(next_scalar, i))
            end = int(next_scalar[k]) if k < len(next_scalar) else count
            room = self._room_without_gc()
            fits = int(np.searchsorted(cumulative_writes, cumulative_writes[i] + room, side="right")) - 1
            end = min(end, fits)
            if end <= i:  # this very write needs GC: the device's own path does it
                previous_done = self._scalar(i)
                i += 1
                continue
            previous_done = self._run(i, end)
            i = end
        return self.done, self.arrivals

    def _scalar(self, i: int) -> int:
        now = int(self.arrivals[i])
        done = _scalar_one(self.dev, int(self.ops[i]), int(self.offsets[i]), int(self.lengths[i]),
                           bool(self.fua[i]), now, self._buf)
        self.done[i] = done
        return done

    def _room_without_gc(self) -> int:
        sbs = self.ftl.geometry.sectors_per_superblock
        spare = max(0, self.ftl.free_superblocks - self.ftl.gc_reserve)
        return (sbs - self.ftl._open_offset) + spare * sbs

    def _log_head(self, count: int) -> np.ndarray:
        """The next ``count`` physical sectors the FTL will program, without GC."""
        sbs = self.ftl.geometry.sectors_per_superblock
        pieces = [np.arange(self.ftl._open * sbs + self.ftl._open_offset, (self.ftl._open + 1) * sbs)]
        have = len(pieces[0])
        for superblock in list(self.ftl._free):
            if have >= count:
                break
            pieces.append(np.arange(superblock * sbs, (superblock + 1) * sbs))
            have += sbs
        return np.concatenate(pieces)[:count]

    def _run(self, start: int, end: int) -> int:
        dev, ftl = self.dev, self.ftl
        geometry = ftl.geometry
        spg, dies = geometry.sectors_per_group, geometry.dies
        ops = self.ops[start:end]
        nsec = self.nsec[start:end]
        n = end - start
        req = np.repeat(np.arange(n), nsec)
        lpn = np.repeat(self.first[start:end], nsec) + (np.arange(len(req)) - np.repeat(np.cumsum(nsec) - nsec, nsec))
        is_write = ops[req] == WRITE
        w_req, w_lpn = req[is_write], lpn[is_write]
        w_ppn = self._log_head(len(w_lpn))
        r_req, r_lpn = req[~is_write], lpn[~is_write]

        # The PPN each read sector sees: the run's last earlier write, else the mapping.
        r_ppn = ftl.l2p[r_lpn].copy()
        if len(w_lpn) and len(r_lpn):
            scale = n + 1
            w_key = w_lpn * scale + w_req
            order = np.argsort(w_key, kind="stable")
            w_sorted = w_key[order]
            r_key = r_lpn * scale + r_req
            # Searched in key order (numpy narrows each search by the last), then put back.
            r_order = np.argsort(r_key)
            hit = np.empty(len(r_key), dtype=np.int64)
            hit[r_order] = np.searchsorted(w_sorted, r_key[r_order], side="left") - 1
            valid = hit >= 0
            hit_lpn = np.where(valid, w_sorted[np.maximum(hit, 0)] // scale, -1)
            valid &= hit_lpn == r_lpn
            r_ppn[valid] = w_ppn[order[hit[valid]]]

        # Read statistics, as UfsDevice.read counts them.
        mapped = r_ppn >= 0
        m_req, m_ppn = r_req[mapped], r_ppn[mapped]
        cont = np.zeros(len(m_req), dtype=bool)
        if len(m_req) > 1:
            cont[1:] = (m_req[1:] == m_req[:-1]) & (np.diff(m_ppn) == 1)
        runs = np.bincount(m_req, minlength=n) - np.bincount(m_req[cont], minlength=n)
        dev.reads_with_media += int(np.count_nonzero(runs))
        dev.read_physical_runs += int(runs.sum())

        # Work per (request, die): reads pay a tR per distinct NAND group.
        groups = m_ppn // spg
        ngroups = ftl.physical_sectors // spg + 1
        # One sector of each distinct (request, group): each costs a tR.
        rg_first = _unique_inverse(m_req * ngroups + groups)[2]
        dev.read_tr_total += len(rg_first)
        sector_key = m_req * dies + groups % dies
        write_key = w_req * dies + (w_ppn // spg) % dies
        # The (request, die) pairs that have work, as keys request * dies + die in
        # order; counted sparsely (most requests touch one or two of the dies).
        used, inverse, _ = _unique_inverse(np.concatenate([sector_key, write_key]))
        sector_at, write_at = inverse[: len(sector_key)], inverse[len(sector_key):]
        tr_per = np.bincount(sector_at[rg_first], minlength=len(used))
        sec_per = np.bincount(sector_at, minlength=len(used))
        read_cost = (tr_per * dev.tr_ns + sec_per * dev.read_ns_per_sector).astype(np.int64)
        w_per = np.bincount(write_at, minlength=len(used))
        write_cost = (w_per * dev.write_ns_per_sector).astype(np.int64)
        cost = np.where(read_cost > 0, read_cost, write_cost)
        entry_req, entry_die, entry_cost = used // dies, used % dies, cost

        overhead = np.full(n, dev.overhead_ns, dtype=np.int64)
        overhead[ops == FLUSH] = 0
        extra = np.where(self.fua[start:end] & (ops == WRITE), dev.flush_ns, 0)
        extra[ops == FLUSH] = dev.flush_ns
        busy = np.array(dev.dies.busy_until, dtype=np.int64)

        if self.closed:
            # QD1: every die is idle when a request arrives (checked by run()).
            service = np.zeros(n, dtype=np.int64)
            np.maximum.at(service, entry_req, entry_cost)
            service += overhead + extra
            arrivals = self.arrivals[start] + np.concatenate([[0], np.cumsum(service[:-1])])
            self.arrivals[start:end] = arrivals
            ends = arrivals[entry_req] + entry_cost
            done = arrivals + service
        else:
            arrivals = self.arrivals[start:end]
            if not len(entry_req):  # only flushes and reads of unmapped sectors
                self.done[start:end] = arrivals + overhead + extra
                self._apply_writes(w_lpn, w_ppn)
                return int(self.done[end - 1])
            # By die, then request: the entries are in request order and a stable
            # sort on the small die number keeps it (a radix sort, linear).
            order = np.argsort(entry_die.astype(np.int16), kind="stable")
            e_req, e_die, e_cost = entry_req[order], entry_die[order], entry_cost[order]
            a = arrivals[e_req]
            seg_start = np.flatnonzero(np.concatenate([[True], e_die[1:] != e_die[:-1]]))
            csum = np.cumsum(e_cost)
            seg_base = np.repeat(csum[seg_start] - e_cost[seg_start], np.diff(np.append(seg_start, len(e_die))))
            c_incl = csum - seg_base
            value = a - (c_incl - e_cost)
            # A segmented running max: lift each die's segment above the previous ones.
            lift = np.int64(1) << 52
            rank = np.repeat(np.arange(len(seg_start)), np.diff(np.append(seg_start, len(e_die))))
            running = np.maximum.accumulate(value + rank * lift) - rank * lift
            ends = c_incl + np.maximum(running, busy[e_die])
            last_end = np.zeros(n, dtype=np.int64)
            np.maximum.at(last_end, e_req, ends)
            done = np.maximum(last_end, arrivals) + overhead + extra
            entry_die, entry_cost = e_die, e_cost
        if len(entry_die):
            np.maximum.at(busy, entry_die, ends)
            busy_sum = np.bincount(entry_die, weights=entry_cost, minlength=dies)
            for d in np.unique(entry_die).tolist():
                dev.dies.busy_ns[d] += int(busy_sum[d])
                dev.dies.busy_until[d] = int(busy[d])
        self.done[start:end] = done

        self._apply_writes(w_lpn, w_ppn)
        return int(done[-1])

    def _apply_writes(self, lpns: np.ndarray, predicted: np.ndarray) -> None:
        """Apply the run's writes to the FTL: they must land where the run predicted."""
        if len(lpns):
            programmed = self.ftl.program(lpns, distinct=False)
            if programmed[0] != predicted[0] or programmed[-1] != predicted[-1]:
                raise AssertionError("vector replay predicted the log head wrong")


def _unique_inverse(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """np.unique's (values, inverse) and one index of each value in ``keys``.

    The keys come in long sorted runs (request order), which a stable sort
    (timsort) takes in nearly linear time; np.unique would hash them first.
    """
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    distinct = np.ones(len(ordered), dtype=bool)
    if len(ordered) > 1:
        np.not_equal(ordered[1:], ordered[:-1], out=distinct[1:])
    inverse = np.empty(len(keys), dtype=np.int64)
    inverse[order] = np.cumsum(distinct) - 1
    return ordered[distinct], inverse, order[distinct]


def format_summary(summary: dict[str, Any]) -> str:
    width = max([6, *(len(name) + 1 for name in summary["ops"])])  # zone ops have long names
    lines = [
        f"requests {summary['requests']}, modeled makespan {summary['modeled_makespan_s']:.6f} s, "
        f"replayed in {summary['wall_s']} s ({summary['requests_per_wall_s']} requests/s, {summary['engine']} engine)",
        f"{'op':{width}s}{'requests':>10s}{'MiB':>10s}{'mean us':>10s}{'p50 us':>10s}{'p95 us':>10s}"
        f"{'p99 us':>10s}{'max us':>10s}",
    ]
    for name, s in summary["ops"].items():
        lines.append(f"{name:{width}s}{s['requests']:10d}{s['bytes'] / 2**20:10.1f}{s['mean_us']:10.1f}"
                     f"{s['p50_us']:10.1f}{s['p95_us']:10.1f}{s['p99_us']:10.1f}{s['max_us']:10.1f}")
    if "precondition" in summary:
        p = summary["precondition"]
        reached = "n/a" if p["fragmentation_percent"] is None else f"{p['fragmentation_percent']:.1f}%"
        lines.insert(0, f"precondition {p['mode']}: wrote {p['bytes_written'] / 2**20:.1f} MiB in {p['seconds']} s "
                        f"(untimed), fragmentation {reached} (asked {p['target_fragmentation_percent']:g}%)")
    refused = summary.get("refused", {})
    if refused.get("recorded") or refused.get("in_replay"):
        lines.append(f"refused: {refused['recorded']} by the recorded device (skipped), "
                     f"{refused['in_replay']} by the replay device")
    return "\n".join(lines)


def print_progress(done: int, total: int) -> None:
    if total >= 1_000_000:
        print(f"replay: {done}/{total} requests", file=sys.stderr, flush=True)
