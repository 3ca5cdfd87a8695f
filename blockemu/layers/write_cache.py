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
  decide what a read returns (their capabilities say
  ``reads_depend_on_state``), so they are snapshotted (``snapshot_state``)
  at the first change after each flush and restored by the cut, together
  with the bytes.  A FUA write on them commits everything before it, as a
  flush does: a device may always make more durable than asked, and keeping
  a FUA write while rolling back the write pointer below it would be
  inconsistent.  ``torn`` is refused: a random subset of sectors cannot
  agree with a write pointer.
* zram keeps its data in RAM, not in its store (its capabilities say
  ``data_in_model``), and a power cut would lose all of it; it is served
  without this layer (``/api/v1/powercut`` is 404).  On a file store it gets
  :class:`~blockemu.layers.checkpoint.CheckpointLayer` instead.

The cache is bounded (``[write_cache] size_mib``).  When the pre-images
would exceed it, the cache is written back as by a flush: everything up to
that request becomes durable.  ``size_mib = 0`` is a write-through device
that loses nothing.

Persistence (``[store] backend = "file"``): every commit above (flush, FUA,
write-back, and the state a power cut leaves) also commits the file store,
with a checkpoint of the device's state when anything changed since the
last one (blockemu/layers/checkpoint.py says what it holds).  A ``kill -9`` of the
server is then a power cut of the drop kind: a restart finds the data and
state of the last commit.  A FUA write commits everything before it, on
every device: the store's undo journal cannot forget one range and keep the
rest.  A change written through is committed right after; on UFS the store
keeps no pre-images of it (a kill in the middle leaves it partly done, as a
device may leave an unacknowledged command), on zoned devices it does.  A
clean stop (SIGTERM) writes the cache back, as a device does on an orderly
power-down.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from itertools import groupby
from typing import Any

import numpy as np

from blockemu.api import API_PREFIX, JsonBody, Route, obj, wrap_all
from blockemu.devices.base import ApiError, Device, MetricFamily, SavesState
from blockemu.layers.base import Layer
from blockemu.layers.checkpoint import device_state, store_metrics
from blockemu.store import FileStore, Store

POWERCUT_MODES = ("drop", "torn")


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

    def __init__(self, inner: Store, sector_bytes: int | None = None) -> None:
        self.inner = inner
        self.size_bytes = inner.size_bytes
        # sector index -> slot holding its bytes at the last commit; insertion order is write order.
        self.pre_images: dict[int, int] = {}
        # len(pre_images) * sector_bytes, kept as a plain attribute: the layer
        # reads it twice per write, and a property is a Python call each time.
        self.dirty_bytes = 0
        self._slabs: list[memoryview] = []
        self._slots_allocated = 0  # slots in all slabs
        self._next_slot = 0  # slots below this were handed out since the last full commit
        self._free_slots: list[int] = []  # of those, the ones a range commit gave back
        # Set by the layer around a change too large for the cache: it is
        # written through (durable at once), so nothing is remembered.  Also
        # set until the journal knows its sector (start).
        self.write_through = True
        self.sector_bytes = 0
        self._slot_sectors = 0  # slots per slab
        if sector_bytes is not None:
            self.start(sector_bytes)

    def start(self, sector_bytes: int) -> None:
        """Remember pre-images from now on, in units of ``sector_bytes``.

        The model says its unit (``Capabilities.atomic_write_bytes``), and
        the model is built on this store: so the stack builds it first and
        the write-cache layer starts the journal.
        """
        if sector_bytes <= 0 or self.size_bytes % sector_bytes:
            raise ValueError(f"sector_bytes {sector_bytes} must be > 0 and divide the store size {self.size_bytes}")
        if self.pre_images:
            raise ValueError("the journal already remembers sectors; its unit cannot change")
        self.sector_bytes = sector_bytes
        self._slot_sectors = max(1, self.SLAB_BYTES // sector_bytes)
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
        if not self.write_through:
            length = len(data)
            size = self.sector_bytes
            first = offset // size
            if first == (offset + length - 1) // size and length > 0:
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


class PowerCutLayer(Layer):
    """A layer on a model whose store is a :class:`JournaledStore`: flush/FUA durability and power cuts."""

    def __init__(self, inner: Device, journal: JournaledStore, cache_bytes: int,
                 durable: FileStore | None = None) -> None:
        super().__init__(inner)
        capabilities = inner.capabilities
        if not journal.sector_bytes:  # not started: the model was built on it before saying its unit
            journal.start(capabilities.atomic_write_bytes)
        self.journal = journal
        self.cache_bytes = cache_bytes
        # A persistent store, committed with the cache; None for memory.
        self.durable = durable
        self._changed = False  # since the durable store's last checkpoint
        # The model whose state a cut rolls back with the bytes; None where reads depend on the bytes alone.
        self._stateful: SavesState | None = None
        if capabilities.reads_depend_on_state:
            if not isinstance(inner, SavesState):
                raise TypeError(f"{self.kind}: reads depend on its state, but it cannot snapshot it (SavesState)")
            self._stateful = inner
        self.rolls_back_state = self._stateful is not None
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
        if self._stateful is not None and self._state is None:
            self._state = self._stateful.snapshot_state()

    def _commit(self) -> None:
        if self.durable is not None and self._changed:
            # First: if it fails (a full disk), the flush fails and nothing is forgotten.
            self.durable.checkpoint(device_state(self.next))
            self._changed = False
        self.journal.commit()
        self._state = None

    def commit_state(self) -> None:
        """Commit the model's state now (a new store's initial state, what a power cut left)."""
        self._changed = True
        self._commit()

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
        stateful = self._stateful
        if stateful is not None and self._state is None:
            self._state = stateful.snapshot_state()
        done = call(*args)
        if fua_range is not None or self.journal.dirty_bytes > self.cache_bytes:
            self._after_change(fua_range)
        return done

    # --------------------------------------------------------------- data path
    def write(self, offset: int, data: memoryview, fua: bool, now_ns: int) -> int:
        length = len(data)
        return self._change(length, (offset, length) if fua else None, self.next.write, offset, data, fua, now_ns)

    def trim(self, offset: int, length: int, now_ns: int) -> int:
        return self._change(length, None, self.next.trim, offset, length, now_ns)

    def write_zeroes(self, offset: int, length: int, fua: bool, now_ns: int) -> int:
        return self._change(length, (offset, length) if fua else None, self.next.write_zeroes, offset, length, fua,
                            now_ns)

    def flush(self, now_ns: int) -> int:
        done = self.next.flush(now_ns)
        self._commit()
        return done

    def background_step(self, now_ns: int) -> int | None:
        # Background work (GC, HID) changes state too, and is lost with the rest.
        changed = self._changed
        self._before_change()
        done = self.next.background_step(now_ns)
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
            assert self._stateful is not None  # it took the snapshot
            self._stateful.restore_state(self._state)
        self._state = None
        if self.durable is not None:
            self.commit_state()  # what survived the cut is what the device now holds
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
    def routes(self) -> list[Route]:
        base = f"{API_PREFIX}/powercut"
        return [
            Route("GET", base, self.status, "Write cache state"),
            Route("POST", base, self.powercut, "Lose the writes since the last completed flush, then serve on",
                  body=POWERCUT_BODY, errors=(400, 409)),
            # Zone resets, appends, copies and aging change state too.
            *wrap_all(self.next.routes(), self._changing, changing_only=True),
        ]

    def _changing(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        def run(**kwargs: Any) -> Any:
            self._before_change()
            result = handler(**kwargs)
            self._after_change()
            return result
        return run

    def describe(self) -> dict[str, Any]:
        description = self.next.describe()
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
        yield from self.next.metrics()

    def close(self) -> None:
        if self.durable is not None:
            try:
                self._commit()  # an orderly power-down writes the cache back
            finally:
                self.next.close()
            return
        self.next.close()


POWERCUT_BODY = JsonBody(obj({"mode": {"type": "string", "enum": list(POWERCUT_MODES)},
                              "seed": {"type": "integer"}}),
                         usage='body must be JSON like {"mode": "drop"} or {"mode": "torn", "seed": 7} '
                               "(both keys optional)", empty={})
