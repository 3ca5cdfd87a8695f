"""A host-side zoned log: a randomly writable block device over a ZNS device.

In the spirit of dm-zoned and ZenFS: every write is appended at the write
pointer of an open zone, a map in host memory says where each 4 KiB logical
block lives, and a garbage collector empties zones whose blocks were mostly
overwritten so they can be reset and written again.

* **Placement and victims** come from a :mod:`blockemu.policies.gc` policy.
  Each of its streams writes one zone at a time.
* **Moving data**: ``copy_method = "host"`` reads the valid blocks over the
  host link and writes them back; ``"simple_copy"`` sends NVMe Copy commands
  so the bytes never leave the device.  Either way the bytes really move: a
  read after GC returns what the host wrote.
* **When**: background GC (``background_step``) works while free zones are at
  or below ``gc_start_free_zones``; a host write that finds free zones at the
  reserve (``gc_reserve_free_zones``) collects in the foreground first, and
  its latency shows it.

The log is a model like the devices: time comes in as ``now_ns`` and goes out
as completion times; it has no threads.  The map is kept in memory only.
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from blockemu.config import Config
from blockemu.devices.base import (
    ApiError,
    Capabilities,
    DeviceError,
    MetricFamily,
    describe_identity,
    out_of_range,
)
from blockemu.devices.zns import CopySource, ZnsDevice, ZoneCondition
from blockemu.policies.gc import GcPolicy, ZoneView, make_policy
from blockemu.store import Store

BLOCK = 4096
UNMAPPED = -1
# NVMe Copy source range entry, format 0: what Simple Copy sends over the
# link per range instead of the data.
COPY_RANGE_DESCRIPTOR_BYTES = 32


class ZonedLog:
    """The translation layer proper, over a :class:`ZnsDevice` it owns."""

    def __init__(
        self,
        device: ZnsDevice,
        logical_blocks: int,
        policy: GcPolicy,
        copy_method: str,
        gc_start_free_zones: int,
        gc_reserve_free_zones: int,
        gc_step_blocks: int,
    ) -> None:
        if device.zone_capacity % BLOCK or device.lba_bytes > BLOCK:
            raise ValueError("the zoned log needs zone capacities in whole 4 KiB blocks and lba_bytes <= 4096")
        if copy_method not in ("host", "simple_copy"):
            raise ValueError(f"copy_method must be host or simple_copy, got {copy_method!r}")
        self.device = device
        self.policy = policy
        self.copy_method = copy_method
        self.gc_start_free_zones = gc_start_free_zones
        self.gc_reserve_free_zones = gc_reserve_free_zones
        self.gc_step_blocks = gc_step_blocks
        self.zone_blocks = device.zone_size // BLOCK
        self.capacity_blocks = device.zone_capacity // BLOCK
        sequential = [z.index for z in device.zones if z.is_sequential]
        if logical_blocks > (len(sequential) - policy.streams - gc_reserve_free_zones - 1) * self.capacity_blocks:
            raise ValueError(f"{logical_blocks} logical blocks leave the garbage collector no spare zone")
        self.logical_blocks = logical_blocks
        zones = device.zone_count
        self.l2p = np.full(logical_blocks, UNMAPPED, dtype=np.int64)
        self.p2l = np.full(zones * self.zone_blocks, UNMAPPED, dtype=np.int64)
        self.valid = np.zeros(zones, dtype=np.int64)
        self.last_write = np.zeros(zones, dtype=np.int64)
        self.last_host_write = np.full(logical_blocks, UNMAPPED, dtype=np.int64)
        self.full = np.zeros(zones, dtype=bool)
        self.free: deque[int] = deque(z for z in sequential if device.zones[z].condition is ZoneCondition.EMPTY)
        self.heads: list[int | None] = [None] * policy.streams
        self.write_clock = 0  # host blocks written: the policies' notion of time
        self.victim: int | None = None
        self._victim_cursor = 0
        self._in_gc = False
        # Counters (blocks unless named otherwise).
        self.host_blocks_written = 0
        self.gc_blocks_relocated = 0
        self.gc_link_bytes = 0  # bytes GC moved over the host link (data, or copy descriptors)
        self.gc_copy_commands = 0
        self.gc_busy_ns = 0  # modeled time GC work took, summed over steps
        self.zones_collected = 0
        self.foreground_collections = 0
        self.background_steps = 0

    # ------------------------------------------------------------ inspection
    @property
    def gc_active(self) -> bool:
        return self.victim is not None

    @property
    def write_amplification(self) -> float:
        host = self.host_blocks_written
        return (host + self.gc_blocks_relocated) / host if host else 1.0

    @property
    def mapped_blocks(self) -> int:
        return int(np.count_nonzero(self.l2p >= 0))

    def stats(self) -> dict[str, Any]:
        return {
            "gc_policy": self.policy.name,
            "copy_method": self.copy_method,
            "logical_bytes": self.logical_blocks * BLOCK,
            "mapped_bytes": self.mapped_blocks * BLOCK,
            "free_zones": len(self.free),
            "open_streams": [z for z in self.heads if z is not None],
            "gc_victim": self.victim,
            "host_bytes_written": self.host_blocks_written * BLOCK,
            "gc_bytes_relocated": self.gc_blocks_relocated * BLOCK,
            "gc_link_bytes": self.gc_link_bytes,
            "gc_copy_commands": self.gc_copy_commands,
            "gc_busy_seconds": self.gc_busy_ns / 1e9,
            "zones_collected": self.zones_collected,
            "foreground_collections": self.foreground_collections,
            "write_amplification": round(self.write_amplification, 4),
        }

    # ------------------------------------------------------------- mapping
    def _invalidate(self, lbas: np.ndarray) -> None:
        old = self.l2p[lbas]
        stale = old[old >= 0]
        if len(stale):
            self.p2l[stale] = UNMAPPED
            np.subtract.at(self.valid, stale // self.zone_blocks, 1)
        self.l2p[lbas] = UNMAPPED

    def _map(self, lbas: np.ndarray, first_pba: int) -> None:
        pbas = np.arange(first_pba, first_pba + len(lbas), dtype=np.int64)
        self.l2p[lbas] = pbas
        self.p2l[pbas] = lbas
        zone = first_pba // self.zone_blocks
        self.valid[zone] += len(lbas)
        self.last_write[zone] = self.write_clock

    # ---------------------------------------------------------- allocation
    def _make_room(self, now_ns: int) -> int:
        """Collect in the foreground while only the reserve is free (never from inside GC)."""
        done = now_ns
        if self._in_gc:
            return done
        # Each collection frees at least one block net (victims hold an
        # invalid block), so this ends; GC never needs more than one new zone
        # per victim, which is what the reserve holds.
        while len(self.free) <= self.gc_reserve_free_zones:
            collected = self._collect_one(done, foreground=True)
            if collected is None:
                raise DeviceError(errno.ENOSPC, "zoned log is full: no zone has an invalid block to collect")
            done = collected
        return done

    def _head(self, stream: int, now_ns: int) -> tuple[int, int]:
        """The stream's open zone, with room; a fresh empty zone when it has none."""
        zone = self.heads[stream]
        if zone is not None and not self.full[zone]:
            return zone, now_ns
        now_ns = self._make_room(now_ns)
        # GC may have opened a zone for this very stream (when its stream is
        # the GC stream); keep writing there rather than leaking it.
        zone = self.heads[stream]
        if zone is None or self.full[zone]:
            if not self.free:
                raise DeviceError(errno.ENOSPC, "zoned log: no empty zone left for garbage collection")
            zone = self.free.popleft()
            self.heads[stream] = zone
        return zone, now_ns

    def _room(self, zone: int) -> int:
        wp = self.device.zones[zone].wp
        return self.capacity_blocks - (wp - self.device.zones[zone].start) // BLOCK

    def _advance(self, stream: int, zone: int) -> None:
        if self._room(zone) == 0:
            self.full[zone] = True
            self.heads[stream] = None

    def _append_host(self, stream: int, lbas: np.ndarray, payload: memoryview, now_ns: int) -> int:
        """Write host blocks ``lbas`` (their data in ``payload``) at the stream's write pointer."""
        done = now_ns
        position = 0
        while position < len(lbas):
            zone, start = self._head(stream, now_ns)
            take = min(self._room(zone), len(lbas) - position)
            pba = self.device.zones[zone].wp // BLOCK
            chunk = lbas[position : position + take]
            self._invalidate(chunk)
            done = max(done, self.device.write(pba * BLOCK, payload[position * BLOCK : (position + take) * BLOCK],
                                               False, start))
            self._map(chunk, pba)
            self._advance(stream, zone)
            position += take
        return done

    # ------------------------------------------------------------ data path
    def read(self, offset: int, buf: memoryview, now_ns: int) -> int:
        length = len(buf)
        if length == 0:
            return now_ns
        first = offset // BLOCK
        last = (offset + length - 1) // BLOCK
        if first == last and offset % BLOCK == 0 and length == BLOCK:
            return self._read_blocks(first, 1, buf, now_ns)
        span = bytearray((last - first + 1) * BLOCK)
        done = self._read_blocks(first, last - first + 1, memoryview(span), now_ns)
        skip = offset - first * BLOCK
        buf[:] = span[skip : skip + length]
        return done

    def _read_blocks(self, first: int, count: int, out: memoryview, now_ns: int) -> int:
        """Read whole logical blocks into ``out``, one device read per physically contiguous run."""
        pbas = self.l2p[first : first + count]
        done = now_ns
        i = 0
        while i < count:
            pba = int(pbas[i])
            j = i + 1
            if pba < 0:
                while j < count and pbas[j] < 0:
                    j += 1
                out[i * BLOCK : j * BLOCK] = bytes((j - i) * BLOCK)
            else:
                while j < count and pbas[j] == pba + (j - i) and (pba + j - i) % self.zone_blocks:
                    j += 1
                done = max(done, self.device.read(pba * BLOCK, out[i * BLOCK : j * BLOCK], now_ns))
            i = j
        return done

    def write(self, offset: int, data: memoryview, now_ns: int) -> int:
        length = len(data)
        if length == 0:
            return now_ns
        first = offset // BLOCK
        last = (offset + length - 1) // BLOCK
        count = last - first + 1
        done = now_ns
        if offset % BLOCK or length % BLOCK:
            # Partial blocks: read-modify-write the edges.
            span = bytearray(count * BLOCK)
            view = memoryview(span)
            done = max(done, self._read_blocks(first, 1, view[:BLOCK], now_ns))
            if count > 1:
                done = max(done, self._read_blocks(last, 1, view[-BLOCK:], now_ns))
            skip = offset - first * BLOCK
            view[skip : skip + length] = data
            data = view
        lbas = np.arange(first, last + 1, dtype=np.int64)
        streams = [self.policy.host_stream(int(self.last_host_write[lba]), self.write_clock + k)
                   for k, lba in enumerate(lbas.tolist())]
        self.last_host_write[lbas] = np.arange(self.write_clock, self.write_clock + count, dtype=np.int64)
        issue = done  # after any read-modify-write reads
        start = 0
        while start < count:
            stream = streams[start]
            end = start + 1
            while end < count and streams[end] == stream:
                end += 1
            self.write_clock += end - start
            done = max(done, self._append_host(stream, lbas[start:end], data[start * BLOCK : end * BLOCK], issue))
            start = end
        self.host_blocks_written += count
        return done

    def unmap(self, offset: int, length: int) -> None:
        """Forget whole blocks inside [offset, offset + length); they read back as zeros."""
        first = -(-offset // BLOCK)
        end = (offset + length) // BLOCK
        if end > first:
            self._invalidate(np.arange(first, end, dtype=np.int64))

    # -------------------------------------------------- garbage collection
    def _view(self) -> ZoneView:
        candidates = self.full.copy()
        if self.victim is not None:
            candidates[self.victim] = False
        return ZoneView(self.valid, self.last_write, candidates, self.capacity_blocks, self.write_clock)

    def _relocate(self, budget_blocks: int, now_ns: int) -> int:
        """Move up to ``budget_blocks`` valid blocks out of the victim; reset it once empty."""
        assert self.victim is not None
        victim = self.victim
        base = victim * self.zone_blocks
        owners = self.p2l[base + self._victim_cursor : base + self.capacity_blocks]
        offsets = np.flatnonzero(owners >= 0)[:budget_blocks]
        done = now_ns
        if len(offsets):
            pbas = offsets + base + self._victim_cursor
            self._victim_cursor = int(offsets[-1]) + self._victim_cursor + 1
            done = self._move(pbas, now_ns)
        # A full zone gains no valid blocks, so once none is left it is done.
        if self.valid[victim] == 0:
            done = max(done, self.device.reset_zone(victim, done))
            self.full[victim] = False
            self.last_write[victim] = 0
            self.free.append(victim)
            self.zones_collected += 1
            self.victim = None
            self._victim_cursor = 0
        return done

    def _move(self, pbas: np.ndarray, now_ns: int) -> int:
        """Relocate valid physical blocks to the GC stream, by host copy or Simple Copy."""
        stream = self.policy.gc_stream()
        done = now_ns
        position = 0
        while position < len(pbas):
            zone, start = self._head(stream, now_ns)
            take = min(self._room(zone), len(pbas) - position)
            if self.copy_method == "simple_copy":
                take = min(take, self.device.copy_max_bytes // BLOCK)
            chunk = pbas[position : position + take]
            runs = np.split(chunk, np.flatnonzero(np.diff(chunk) != 1) + 1)
            if self.copy_method == "simple_copy" and len(runs) > self.device.copy_max_ranges:
                runs = runs[: self.device.copy_max_ranges]
                take = sum(len(r) for r in runs)
                chunk = pbas[position : position + take]
            lbas = self.p2l[chunk].copy()
            dest = self.device.zones[zone].wp // BLOCK
            if self.copy_method == "simple_copy":
                sources = [CopySource(int(r[0]) * BLOCK, len(r) * BLOCK) for r in runs]
                _, finished = self.device.copy(sources, zone, start)
                self.gc_copy_commands += 1
                self.gc_link_bytes += COPY_RANGE_DESCRIPTOR_BYTES * len(sources)
            else:
                payload = bytearray(take * BLOCK)
                view = memoryview(payload)
                read_done = start
                filled = 0
                for run in runs:
                    read_done = max(read_done, self.device.read(
                        int(run[0]) * BLOCK, view[filled * BLOCK : (filled + len(run)) * BLOCK], start))
                    filled += len(run)
                finished = self.device.write(dest * BLOCK, view, False, read_done)
                self.gc_link_bytes += 2 * take * BLOCK
            self.p2l[chunk] = UNMAPPED
            np.subtract.at(self.valid, chunk // self.zone_blocks, 1)
            self._map(lbas, dest)
            self._advance(stream, zone)
            self.gc_blocks_relocated += take
            done = max(done, finished)
            position += take
        return done

    def _collect_one(self, now_ns: int, foreground: bool) -> int | None:
        """Collect one whole victim (foreground GC); return its completion or None if nothing to collect."""
        self._in_gc = True
        try:
            if self.victim is None:
                self.victim = self.policy.choose_victim(self._view())
                self._victim_cursor = 0
                if self.victim is None:
                    return None
            done = now_ns
            while self.victim is not None:
                done = self._relocate(self.capacity_blocks, done)
            self.gc_busy_ns += done - now_ns
            if foreground:
                self.foreground_collections += 1
            return done
        finally:
            self._in_gc = False

    def background_step(self, now_ns: int) -> int | None:
        """Relocate one slice of a victim when free zones are low; None when there is nothing to do."""
        if self.victim is None:
            if len(self.free) > self.gc_start_free_zones:
                return None
            self.victim = self.policy.choose_victim(self._view())
            self._victim_cursor = 0
            if self.victim is None:
                return None
        self._in_gc = True
        try:
            done = self._relocate(self.gc_step_blocks, now_ns)
        finally:
            self._in_gc = False
        self.gc_busy_ns += done - now_ns
        self.background_steps += 1
        return max(done, now_ns + 1)

    # --------------------------------------------------------------- state
    def snapshot_state(self) -> dict[str, np.ndarray]:
        return {
            "log_l2p": self.l2p.copy(),
            "log_last_write": self.last_write.copy(),
            "log_last_host_write": self.last_host_write.copy(),
            "log_full": self.full.copy(),
            "log_free": np.array(self.free, dtype=np.int64),
            "log_heads": np.array([-1 if z is None else z for z in self.heads], dtype=np.int64),
            # write clock, victim (-1: none), victim cursor
            "log_scalars": np.array([self.write_clock, -1 if self.victim is None else self.victim,
                                     self._victim_cursor], dtype=np.int64),
        }

    def restore_state(self, state: dict[str, np.ndarray]) -> None:
        if len(state["log_l2p"]) != self.logical_blocks or len(state["log_heads"]) != len(self.heads):
            raise ValueError("saved zoned-log state is for another geometry or gc_policy")
        self.l2p = state["log_l2p"].astype(np.int64)
        self.p2l.fill(UNMAPPED)
        mapped = np.flatnonzero(self.l2p >= 0)
        self.p2l[self.l2p[mapped]] = mapped
        # Valid counts follow from the map (older snapshots also carry them as "log_valid").
        self.valid = np.bincount(self.l2p[mapped] // self.zone_blocks, minlength=len(self.valid)).astype(np.int64)
        self.last_write = state["log_last_write"].astype(np.int64)
        self.last_host_write = state["log_last_host_write"].astype(np.int64)
        self.full = state["log_full"].astype(bool)
        self.free = deque(int(z) for z in state["log_free"].tolist())
        self.heads = [None if z < 0 else int(z) for z in state["log_heads"].tolist()]
        clock, victim, cursor = (int(v) for v in state["log_scalars"].tolist())
        self.write_clock, self.victim, self._victim_cursor = clock, (None if victim < 0 else victim), cursor
        self.check_consistency()

    _COUNTERS = ("host_blocks_written", "gc_blocks_relocated", "gc_link_bytes", "gc_copy_commands", "gc_busy_ns",
                 "zones_collected", "foreground_collections", "background_steps")

    def snapshot_counters(self) -> dict[str, np.ndarray]:
        return {"log_counters": np.array([getattr(self, name) for name in self._COUNTERS], dtype=np.int64)}

    def restore_counters(self, state: dict[str, np.ndarray]) -> None:
        values = state["log_counters"].tolist()
        if len(values) != len(self._COUNTERS):
            raise ValueError(f"saved zoned-log counters have {len(values)} entries, expected {len(self._COUNTERS)}")
        for name, value in zip(self._COUNTERS, values, strict=True):
            setattr(self, name, int(value))

    # ------------------------------------------------------------- checks
    def check_consistency(self) -> None:
        """Assert the map's invariants (tests): l2p and p2l agree, valid counts match."""
        mapped = np.flatnonzero(self.l2p >= 0)
        assert np.array_equal(self.p2l[self.l2p[mapped]], mapped)
        owners = np.flatnonzero(self.p2l >= 0)
        assert np.array_equal(self.l2p[self.p2l[owners]], owners)
        counts = np.bincount(owners // self.zone_blocks, minlength=len(self.valid))
        assert np.array_equal(counts, self.valid)


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

    def api(self, method: str, path: list[str], body: bytes) -> Any:
        head = path[0] if path else ""
        if head == "gc":
            if method != "GET" or len(path) != 1:
                raise ApiError(405, "use GET /api/v1/gc")
            return self.log.stats()
        if head == "zones":
            if method != "GET":
                raise ApiError(409, "the zones belong to the zoned log; only GET /api/v1/zones is allowed")
            return self.zns.api_zones(method, path[1:], body)
        if head == "copy":
            raise ApiError(409, "the zones belong to the zoned log; copy is not allowed")
        raise ApiError(404, f"no such endpoint /api/v1/{'/'.join(path)}; zns_ftl has: gc, zones (GET)")

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
