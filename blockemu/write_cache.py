"""A volatile write cache and power-cut emulation, as a layer around any device.

Real devices acknowledge writes from a volatile cache: what was written since
the last completed flush (and not with FUA) can be lost when the power goes.
``POST /api/v1/powercut`` makes that happen here, then the device keeps
serving, as dm-log-writes / dm-flakey style crash testing needs.

How: the device's store is wrapped in a :class:`JournaledStore`, which keeps
the pre-image of every sector the first time it is overwritten since the last
flush.  A power cut writes the pre-images back (``drop``: all of them;
``torn``: a seeded random subset, so that some sectors of the lost writes
survive and others do not).  A completed flush forgets the pre-images: what
was written before it is durable.

Device state beyond the bytes:

* UFS: the FTL's mapping stays as it is after a cut.  Data is stored by
  logical address, so the mapping never changes what a read returns; sectors
  whose writes were dropped merely stay mapped (a read of a sector that was
  never written before pays a NAND read instead of answering from the map).
  Copying a mapping of megabytes at every flush would cost more than that
  small timing difference is worth.  ``torn`` is supported.
* ZNS and zns_ftl: zone conditions, write pointers and the zoned log's map do
  decide what a read returns, so they are snapshotted (``snapshot_state``)
  at the first change after each flush and restored by the cut, together
  with the bytes.  A FUA write on them commits everything before it, as a
  flush does: a device may always make more durable than asked, and keeping
  a FUA write while rolling back the write pointer below it would be
  inconsistent.  ``torn`` is refused: a random subset of sectors cannot
  agree with a write pointer.
* zram keeps its data in RAM, not in its store, and a power cut would lose
  all of it; it is served without this layer (``/api/v1/powercut`` is 404).
  On a file store it gets :class:`CheckpointLayer` instead (below).

The cache is bounded (``[write_cache] size_mib``).  When the pre-images
would exceed it, the cache is written back as by a flush: everything up to
that request becomes durable.  ``size_mib = 0`` is a write-through device
that loses nothing.

Persistence (``[store] backend = "file"``): every commit above (flush, FUA,
write-back, and the state a power cut leaves) also commits the file store,
with a checkpoint of the device's state when anything changed since the
last one (blockemu/persistence.py says what it holds).  A ``kill -9`` of the
server is then a power cut of the drop kind: a restart finds the data and
state of the last commit.  A FUA write commits everything before it, on
every device: the store's undo journal cannot forget one range and keep the
rest.  A change written through is committed right after; on UFS the store
keeps no pre-images of it (a kill in the middle leaves it partly done, as a
device may leave an unacknowledged command), on zoned devices it does.  A
clean stop (SIGTERM) writes the cache back, as a device does on an orderly
power-down.

zram on a file store: its pages live compressed in the model, not in the
store's data file, so there is nothing to journal.  :class:`CheckpointLayer`
commits where the write cache does (flush, FUA write, clean stop), and a
commit is a checkpoint of the whole model, staged pages compressed first.
A kill loses everything since the last one, as a drop power cut would.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from itertools import groupby
from typing import Any

import numpy as np

from blockemu.config import Config
from blockemu.devices.base import ApiError, Device, MetricFamily
from blockemu.persistence import device_state, persisted_geometry, restore_device_state
from blockemu.store import FileStore, Store, open_store

POWERCUT_MODES = ("drop", "torn")
# Device kinds whose reads depend on model state besides the bytes in the store.
_STATEFUL_KINDS = ("zns", "zns_ftl")


class JournaledStore:
    """A store that remembers each sector's pre-image from the first overwrite since the last commit.

    Pre-images are copied into slots of a few large slabs rather than into a
    buffer each: one copy per contiguous run of sectors (a 1 MiB write used
    to allocate a span, slice it and copy each of its 256 sectors twice more),
    no allocation per sector, and a commit forgets tens of thousands of them
    by dropping one dict instead of freeing each buffer.  The slabs are
    allocated as the cache first fills and kept, like a real cache's DRAM;
    the write cache's size bounds them.
    """

    # Bytes per slab: large enough that a 1 MiB write's pre-images rarely
    # straddle two, small enough that a cache that never fills stays small.
    SLAB_BYTES = 4 * 1024 * 1024

    def __init__(self, inner: Store, sector_bytes: int) -> None:
        if sector_bytes <= 0 or inner.size_bytes % sector_bytes:
            raise ValueError(f"sector_bytes {sector_bytes} must be > 0 and divide the store size {inner.size_bytes}")
        self.inner = inner
        self.size_bytes = inner.size_bytes
        self.sector_bytes = sector_bytes
        # sector index -> slot holding its bytes at the last commit; insertion order is write order.
        self.pre_images: dict[int, int] = {}
        # len(pre_images) * sector_bytes, kept as a plain attribute: the layer
        # reads it twice per write, and a property is a Python call each time.
        self.dirty_bytes = 0
        self._slot_sectors = max(1, self.SLAB_BYTES // sector_bytes)  # slots per slab
        self._slabs: list[memoryview] = []
        self._slots_allocated = 0  # slots in all slabs
        self._next_slot = 0  # slots below this were handed out since the last full commit
        self._free_slots: list[int] = []  # of those, the ones a range commit gave back
        # Set by the layer around a change too large for the cache: it is
        # written through (durable at once), so nothing is remembered.
        self.write_through = False

    def _slot_view(self, slot: int, count: int = 1) -> memoryview:
        """``count`` consecutive slots from ``slot``, all in one slab."""
        slab, index = divmod(slot, self._slot_sectors)
        size = self.sector_bytes
        return self._slabs[slab][index * size : (index + count) * size]

    def _take_slots(self, count: int) -> int:
        """``count`` fresh consecutive slots in one slab (a new slab if this one is too full)."""
        per_slab = self._slot_sectors
        slot = self._next_slot
        if slot // per_slab != (slot + count - 1) // per_slab:
            slot = -(-slot // per_slab) * per_slab  # skip to the next slab's start
        end = slot + count
        while self._slots_allocated < end:
            self._slabs.append(memoryview(bytearray(per_slab * self.sector_bytes)))
            self._slots_allocated += per_slab
        self._next_slot = end
        return slot

    def _remember(self, offset: int, length: int) -> None:
        if length <= 0 or self.write_through:
            return
        size = self.sector_bytes
        first, last = offset // size, (offset + length - 1) // size
        pre_images = self.pre_images
        sectors = range(first, last + 1)
        if pre_images.keys().isdisjoint(sectors):  # none remembered yet (a C loop): one run
            self._remember_run(first, len(sectors))
            return
        # Runs of sectors alike (remembered or not), grouped in C.
        start = first
        for remembered, run in groupby(sectors, key=pre_images.__contains__):
            count = len(list(run))
            if not remembered:
                self._remember_run(start, count)
            start += count

    def _remember_run(self, first: int, count: int) -> None:
        """Copy the pre-images of ``count`` sectors from ``first``, none of them remembered yet."""
        size = self.sector_bytes
        pre_images = self.pre_images
        free = self._free_slots
        while free and count:  # slots a range commit gave back are used first, one by one
            slot = free.pop()
            self.inner.read_into(first * size, self._slot_view(slot))
            pre_images[first] = slot
            self.dirty_bytes += size
            first += 1
            count -= 1
        while count:
            take = min(count, self._slot_sectors)
            slot = self._take_slots(take)
            self.inner.read_into(first * size, self._slot_view(slot, take))
            pre_images.update(zip(range(first, first + take), range(slot, slot + take), strict=True))
            self.dirty_bytes += take * size
            first += take
            count -= take

    def read_into(self, offset: int, buf: memoryview) -> None:
        self.inner.read_into(offset, buf)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        length = len(data)
        size = self.sector_bytes
        first = offset // size
        if first == (offset + length - 1) // size and length > 0 and not self.write_through:
            # _remember's one-sector case, inline: it is most of the writes.
            if first not in self.pre_images:
                free = self._free_slots
                slot = self._next_slot
                if free:
                    slot = free.pop()
                elif slot < self._slots_allocated:  # _take_slots(1) where the slab has room
                    self._next_slot = slot + 1
                else:
                    slot = self._take_slots(1)
                slab, index = divmod(slot, self._slot_sectors)
                self.inner.read_into(first * size, self._slabs[slab][index * size : (index + 1) * size])
                self.pre_images[first] = slot
                self.dirty_bytes += size
        else:
            self._remember(offset, length)
        self.inner.write(offset, data)

    def zero(self, offset: int, length: int) -> None:
        self._remember(offset, length)
        self.inner.zero(offset, length)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()

    def _forget_all(self) -> None:
        self.pre_images = {}
        self.dirty_bytes = 0
        self._next_slot = 0
        self._free_slots = []

    def commit(self, offset: int | None = None, length: int = 0) -> int:
        """Make everything (or the sectors of one range) durable; return the sectors committed."""
        if offset is None:
            count = len(self.pre_images)
            self._forget_all()
            return count
        if length <= 0:
            return 0
        size = self.sector_bytes
        committed = 0
        for sector in range(offset // size, (offset + length - 1) // size + 1):
            slot = self.pre_images.pop(sector, None)
            if slot is not None:
                self._free_slots.append(slot)
                self.dirty_bytes -= size
                committed += 1
        if not self.pre_images:
            self._forget_all()
        return committed

    def revert(self, keep: Callable[[int], bool]) -> tuple[int, int]:
        """Write pre-images back for the sectors ``keep`` refuses; return (reverted, kept)."""
        reverted = kept = 0
        size = self.sector_bytes
        for sector, slot in self.pre_images.items():
            if keep(sector):
                kept += 1
                continue
            self.inner.write(sector * size, self._slot_view(slot))
            reverted += 1
        self._forget_all()
        return reverted, kept


class PowerCutLayer:
    """Wraps a device whose store is a :class:`JournaledStore`: flush/FUA durability and power cuts."""

    def __init__(self, inner: Device, journal: JournaledStore, cache_bytes: int,
                 durable: FileStore | None = None) -> None:
        self.inner = inner
        self.journal = journal
        self.cache_bytes = cache_bytes
        # A persistent store, committed with the cache; None for memory.
        self.durable = durable
        self._changed = False  # since the durable store's last checkpoint
        self.name = inner.name
        self.size_bytes = inner.size_bytes
        self.capabilities = inner.capabilities
        kind = str(getattr(inner, "kind", ""))
        self.kind = kind
        self.rolls_back_state = kind in _STATEFUL_KINDS
        self._state: dict[str, np.ndarray] | None = None  # model state at the last commit, taken lazily
        # Counters for metrics.
        self.powercuts: dict[str, int] = dict.fromkeys(POWERCUT_MODES, 0)
        self.sectors_dropped = 0
        self.sectors_kept = 0
        self.writebacks = 0
        self.last_powercut: dict[str, Any] | None = None

    # ------------------------------------------------------------ durability
    def _before_change(self) -> None:
        self._changed = True
        if self.rolls_back_state and self._state is None:
            self._state = self.inner.snapshot_state()  # type: ignore[attr-defined]

    def _commit(self) -> None:
        if self.durable is not None and self._changed:
            # First: if it fails (a full disk), the flush fails and nothing is forgotten.
            self.durable.checkpoint(device_state(self.inner))
            self._changed = False
        self.journal.commit()
        self._state = None

    def _commit_state(self) -> None:
        self._changed = True
        self._commit()

    def load_or_save_state(self) -> None:
        """At start-up on a file store: load its last commit's state, or commit a new store's initial one."""
        assert self.durable is not None
        if not load_saved_state(self.durable, self.inner):
            self._commit_state()

    def _after_change(self, fua_range: tuple[int, int] | None = None) -> None:
        if fua_range is not None:
            if self.rolls_back_state or self.durable is not None:
                self._commit()
            else:
                self.journal.commit(*fua_range)
        if self.journal.dirty_bytes > self.cache_bytes:
            # A full cache is written back, as a flush would: nothing before this point can be lost.
            self.writebacks += 1
            self._commit()

    def _change(self, length: int, fua_range: tuple[int, int] | None, call: Callable[..., int], *args: Any) -> int:
        """``call(*args)``, journaled; a closure per request would cost a frame more on the data path."""
        if self.journal.dirty_bytes + length > self.cache_bytes:
            # Larger than what the cache can still hold (a discard of the
            # whole device, say): write the cache back, as a flush would, and
            # this change through, instead of keeping pre-images of it all.
            self.writebacks += 1
            self._commit()
            self.journal.write_through = True
            self._changed = True
            # A file store need not journal it either where reads depend on
            # the bytes alone (UFS): the commit right after makes it durable,
            # and a kill in between leaves part of an unacknowledged command
            # done, as a device may.  Zoned devices journal it: their zones'
            # state must match their bytes.
            unjournaled = self.durable if not self.rolls_back_state else None
            if unjournaled is not None:
                unjournaled.journaling = False
            try:
                return call(*args)
            finally:
                self.journal.write_through = False
                if unjournaled is not None:
                    unjournaled.journaling = True
                self._commit()
        # _before_change and _after_change, inline: most requests need no
        # state snapshot, no FUA commit and no write-back.
        self._changed = True
        if self.rolls_back_state and self._state is None:
            self._state = self.inner.snapshot_state()  # type: ignore[attr-defined]
        done = call(*args)
        if fua_range is not None or self.journal.dirty_bytes > self.cache_bytes:
            self._after_change(fua_range)
        return done

    # --------------------------------------------------------------- data path
    def read(self, offset: int, buf: memoryview, now_ns: int) -> int:
        return self.inner.read(offset, buf, now_ns)

    def write(self, offset: int, data: memoryview, fua: bool, now_ns: int) -> int:
        length = len(data)
        return self._change(length, (offset, length) if fua else None, self.inner.write, offset, data, fua, now_ns)

    def trim(self, offset: int, length: int, now_ns: int) -> int:
        return self._change(length, None, self.inner.trim, offset, length, now_ns)

    def write_zeroes(self, offset: int, length: int, fua: bool, now_ns: int) -> int:
        return self._change(length, (offset, length) if fua else None, self.inner.write_zeroes, offset, length, fua,
                            now_ns)

    def flush(self, now_ns: int) -> int:
        done = self.inner.flush(now_ns)
        self._commit()
        return done

    def background_step(self, now_ns: int) -> int | None:
        # Background work (GC, HID) changes state too, and is lost with the rest.
        changed = self._changed
        self._before_change()
        done = self.inner.background_step(now_ns)
        self._changed = changed or done is not None  # an idle step changed nothing
        self._after_change()
        return done

    # ----------------------------------------------------------------- cuts
    def powercut(self, mode: str = "drop", seed: int = 1) -> dict[str, Any]:
        """Lose what a volatile cache would lose; the device then serves on."""
        if mode not in POWERCUT_MODES:
            raise ApiError(400, f"mode must be one of {', '.join(POWERCUT_MODES)}, got {mode!r}")
        if mode == "torn" and self.rolls_back_state:
            raise ApiError(409, f"torn power cuts are not supported on {self.kind}: a random subset of sectors "
                                "cannot agree with the zones' write pointers; use mode drop")
        pending = len(self.journal.pre_images)
        rng = random.Random(seed)
        if mode == "drop":
            reverted, kept = self.journal.revert(lambda sector: False)
        else:
            # Sector order is the order they were first written, so the same writes and seed tear the same way.
            reverted, kept = self.journal.revert(lambda sector: rng.random() < 0.5)
        if self._state is not None:
            self.inner.restore_state(self._state)  # type: ignore[attr-defined]
        self._state = None
        if self.durable is not None:
            self._commit_state()  # what survived the cut is what the device now holds
        self.powercuts[mode] += 1
        self.sectors_dropped += reverted
        self.sectors_kept += kept
        self.last_powercut = {"mode": mode, "seed": seed, "sector_bytes": self.journal.sector_bytes,
                              "pending_sectors": pending, "dropped_sectors": reverted, "kept_sectors": kept,
                              "state_rolled_back": self.rolls_back_state}
        return self.last_powercut

    def status(self) -> dict[str, Any]:
        return {
            "size_bytes": self.cache_bytes,
            "sector_bytes": self.journal.sector_bytes,
            "dirty_bytes": self.journal.dirty_bytes,
            "powercuts": dict(self.powercuts),
            "dropped_sectors": self.sectors_dropped,
            "kept_sectors": self.sectors_kept,
            "writebacks": self.writebacks,
            "last_powercut": self.last_powercut,
        }

    # ------------------------------------------------------------ control API
    def api(self, method: str, path: list[str], body: bytes) -> Any:
        if path == ["powercut"]:
            if method == "GET":
                return self.status()
            if method != "POST":
                raise ApiError(405, 'use POST /api/v1/powercut with {"mode": "drop"|"torn", "seed": N}, '
                                    "or GET for the cache's state")
            mode, seed = parse_powercut_request(body)
            return self.powercut(mode, seed)
        if method == "GET":
            return self.inner.api(method, path, body)
        self._before_change()  # zone resets, appends, copies and aging change state too
        result = self.inner.api(method, path, body)
        self._after_change()
        return result

    def describe(self) -> dict[str, Any]:
        description = self.inner.describe()
        description["write_cache"] = self.status()
        if self.durable is not None:
            description["store"] = self.durable.status()
        return description

    def metrics(self) -> Iterator[MetricFamily]:
        yield MetricFamily("blockemu_powercuts_total", "counter", "Power cuts emulated, by mode",
                           [({"mode": mode}, count) for mode, count in self.powercuts.items()])
        yield MetricFamily("blockemu_powercut_dropped_sectors_total", "counter",
                           "Sectors whose unflushed writes a power cut undid", [({}, self.sectors_dropped)])
        yield MetricFamily("blockemu_powercut_kept_sectors_total", "counter",
                           "Sectors whose unflushed writes survived a torn power cut", [({}, self.sectors_kept)])
        yield MetricFamily("blockemu_write_cache_dirty_bytes", "gauge",
                           "Bytes written since the last flush that a power cut would lose",
                           [({}, self.journal.dirty_bytes)])
        yield MetricFamily("blockemu_write_cache_writebacks_total", "counter",
                           "Times the full write cache was written back as by a flush", [({}, self.writebacks)])
        if self.durable is not None:
            yield from store_metrics(self.durable)
        yield from self.inner.metrics()

    def close(self) -> None:
        if self.durable is not None:
            try:
                self._commit()  # an orderly power-down writes the cache back
            finally:
                self.inner.close()
            return
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # Device-specific extras (zone reports, trace snapshots) pass through.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def load_saved_state(durable: FileStore, device: Any) -> bool:
    """Load the store's last commit into ``device``; False for a new store, whose initial state is still to commit."""
    saved = durable.saved_state
    if saved is None:
        return False
    restore_device_state(device, saved, str(durable.directory / "state"))
    durable.saved_state = None  # the model has it now
    return True


def store_metrics(durable: FileStore) -> Iterator[MetricFamily]:
    yield MetricFamily("blockemu_store_checkpoints_total", "counter",
                       "State checkpoints committed to the file store", [({}, durable.checkpoints)])
    yield MetricFamily("blockemu_store_checkpoint_seconds_total", "counter",
                       "Wall time spent writing checkpoints", [({}, durable.checkpoint_seconds)])
    yield MetricFamily("blockemu_store_checkpoint_bytes", "gauge", "Size of the last checkpoint",
                       [({}, durable.checkpoint_bytes)])
    yield MetricFamily("blockemu_store_undo_bytes", "gauge",
                       "Undo journal bytes since the last checkpoint", [({}, durable.undo_bytes)])


class CheckpointLayer:
    """Commits a device whose data lives in its model (zram) to a file store: a commit is a checkpoint.

    Commits where :class:`PowerCutLayer` does: a flush, a FUA write (and
    with it everything before it), a clean stop; only when something
    changed.  Reads change access times and read counts, which are saved
    with the next commit but do not cause one, as reads do not on UFS.
    There are no power cuts here (``/api/v1/powercut`` stays 404): taking
    a copy of the model at every first change after a flush would cost as
    much as a checkpoint.
    """

    def __init__(self, inner: Device, durable: FileStore) -> None:
        self.inner = inner
        self.durable = durable
        self._changed = False  # since the last checkpoint
        self.name = inner.name
        self.size_bytes = inner.size_bytes
        self.capabilities = inner.capabilities
        self.kind = str(getattr(inner, "kind", ""))

    def _commit(self) -> None:
        if self._changed:
            # The device drains its staged pages into the snapshot itself
            # (ZramDevice.snapshot_contents): a flush acknowledges them.
            self.durable.checkpoint(device_state(self.inner))
            self._changed = False

    def load_or_save_state(self) -> None:
        if not load_saved_state(self.durable, self.inner):
            self._changed = True
            self._commit()

    # --------------------------------------------------------------- data path
    def read(self, offset: int, buf: memoryview, now_ns: int) -> int:
        return self.inner.read(offset, buf, now_ns)

    def write(self, offset: int, data: memoryview, fua: bool, now_ns: int) -> int:
        self._changed = True  # a refused write changes failed_writes
        done = self.inner.write(offset, data, fua, now_ns)
        if fua:
            self._commit()
        return done

    def trim(self, offset: int, length: int, now_ns: int) -> int:
        self._changed = True
        return self.inner.trim(offset, length, now_ns)

    def write_zeroes(self, offset: int, length: int, fua: bool, now_ns: int) -> int:
        self._changed = True
        done = self.inner.write_zeroes(offset, length, fua, now_ns)
        if fua:
            self._commit()
        return done

    def flush(self, now_ns: int) -> int:
        done = self.inner.flush(now_ns)
        self._commit()
        return done

    def background_step(self, now_ns: int) -> int | None:
        done = self.inner.background_step(now_ns)
        if done is not None:  # an idle step changed nothing
            self._changed = True
        return done

    # ------------------------------------------------------------ control API
    def api(self, method: str, path: list[str], body: bytes) -> Any:
        result = self.inner.api(method, path, body)  # a refused attribute write changes nothing
        if method != "GET":  # applied ones (mem_limit, idle, recompress, compact) change state
            self._changed = True
        return result

    def describe(self) -> dict[str, Any]:
        description = self.inner.describe()
        description["store"] = self.durable.status()
        return description

    def metrics(self) -> Iterator[MetricFamily]:
        yield from store_metrics(self.durable)
        yield from self.inner.metrics()

    def close(self) -> None:
        try:
            self._commit()  # an orderly power-down keeps what was written
        finally:
            self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # Device-specific extras (zram's offload hooks, read_attribute) pass through.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def parse_powercut_request(body: bytes) -> tuple[str, int]:
    usage = 'body must be JSON like {"mode": "drop"} or {"mode": "torn", "seed": 7} (both keys optional)'
    try:
        request = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, usage) from None
    if not isinstance(request, dict) or not set(request) <= {"mode", "seed"}:
        raise ApiError(400, usage)
    mode = request.get("mode", "drop")
    seed = request.get("seed", 1)
    if not isinstance(mode, str) or mode not in POWERCUT_MODES:
        raise ApiError(400, f"mode must be one of {', '.join(POWERCUT_MODES)}, got {mode!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ApiError(400, f"seed must be an integer, got {seed!r}")
    return mode, seed


def create_cached_device(config: Config) -> Device:
    """Build ``config``'s device on a journaled store, wrapped in a :class:`PowerCutLayer`.

    zram is built as it is: its pages live in its own table, not in the
    store; on a file store it is wrapped in a :class:`CheckpointLayer`.
    """
    from blockemu.devices import DEVICE_FACTORIES  # the device models import numpy & co; only when serving

    store = open_store(config.store.backend, config.capacity_bytes, config.store.path,
                       geometry=persisted_geometry(config), fsync=config.store.fsync)
    if config.device.type == "zram":
        zram = DEVICE_FACTORIES["zram"](config, store)  # it closes the store
        if not isinstance(store, FileStore):
            return zram
        checkpointed = CheckpointLayer(zram, store)
        try:
            checkpointed.load_or_save_state()
        except BaseException:
            zram.close()
            raise
        return checkpointed
    # The atomic unit a cut keeps or loses: the device's logical block.
    sector_bytes = config.zns.lba_bytes if config.device.type in _STATEFUL_KINDS else 4096
    journal = JournaledStore(store, sector_bytes)
    try:
        device = DEVICE_FACTORIES[config.device.type](config, journal)
    except BaseException:
        store.close()
        raise
    durable = store if isinstance(store, FileStore) else None
    layer = PowerCutLayer(device, journal, config.write_cache.size_mib * 1024 * 1024, durable)
    if durable is not None:
        try:
            layer.load_or_save_state()
        except BaseException:
            device.close()
            raise
    return layer
