"""Persistence (``[store] backend = "file"``): what a checkpoint holds, and the layer that commits zram's.

The file store (blockemu/store/file.py) keeps the bytes and commits
checkpoints; a layer decides when to commit: the write-cache layer
(blockemu/layers/write_cache.py) for devices whose data is in the store, and
:class:`CheckpointLayer` here for a device whose data is in its model (zram).
The stack builder (blockemu/stack.py) opens the store bound to the settings
that shape the saved state, loads the last commit into a new model, or
commits a new store's initial state.  A checkpoint holds:

* the model state that decides what reads return and what the device does
  next (``snapshot_state``: UFS's FTL map, free list and HID state machine;
  ZNS's zone conditions, write pointers and implicit-open order; the zoned
  log's map), and
* the data a device keeps in its model rather than in the store
  (``snapshot_contents``: zram's compressed pages with their slots, the
  algorithms and mem_limit, the zsmalloc layout).  It is as large as the
  data, so it is persisted only, never put in traces or taken at every
  change for power cuts as ``snapshot_state`` is; and
* the counters that ``GET /api/v1/device`` and the metrics report
  (``snapshot_counters``), so that a restarted device describes itself as it
  did at the commit (for zram: what mm_stat and io_stat count; the work and
  CPU time of this server process start at zero, as request statistics do).

Each part is an optional Protocol of blockemu/devices/base.py; a model has
whichever it needs.  Derived arrays (the FTL's reverse map and valid counts,
the zoned log's valid counts) are rebuilt on load instead of stored.  Modeled
time is not saved: a restarted server's clock starts at zero, as its timing
statistics do.

zram on a file store: its pages live compressed in the model, not in the
store's data file, so there is nothing to journal.  :class:`CheckpointLayer`
commits where the write cache does (flush, FUA write, clean stop), and a
commit is a checkpoint of the whole model, staged pages compressed first.
A kill loses everything since the last one, as a drop power cut would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from blockemu.api import Route, wrap_all
from blockemu.devices.base import Device, MetricFamily, SavesContents, SavesCounters, SavesState
from blockemu.layers.base import Layer
from blockemu.store.file import ByteChunks, FileStore, StoreError


def device_state(model: Device) -> dict[str, np.ndarray | ByteChunks]:
    """What a checkpoint of ``model`` holds: whichever of the three parts it has."""
    state: dict[str, np.ndarray | ByteChunks] = {}
    if isinstance(model, SavesState):
        state.update(model.snapshot_state())
    if isinstance(model, SavesContents):
        state.update(model.snapshot_contents())
    if isinstance(model, SavesCounters):
        state.update(model.snapshot_counters())
    return state


def restore_device_state(model: Device, state: dict[str, np.ndarray], where: str) -> None:
    """Load a checkpoint into a freshly built ``model``, parts in that order; a state that does not fit is refused."""
    try:
        if isinstance(model, SavesState):
            model.restore_state(state)
        if isinstance(model, SavesContents):
            model.restore_contents(state)
        if isinstance(model, SavesCounters):
            model.restore_counters(state)
    except (ValueError, KeyError, IndexError) as err:
        raise StoreError(f"{where}: the saved state does not fit this device ({err}); refusing to start") from None


def load_saved_state(durable: FileStore, model: Device) -> bool:
    """Load the store's last commit into ``model``; False for a new store, whose initial state is still to commit."""
    saved = durable.saved_state
    if saved is None:
        return False
    restore_device_state(model, saved, str(durable.directory / "state"))
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


class CheckpointLayer(Layer):
    """Commits a device whose data lives in its model (zram) to a file store: a commit is a checkpoint.

    Commits where the write-cache layer does: a flush, a FUA write (and
    with it everything before it), a clean stop; only when something
    changed.  Reads change access times and read counts, which are saved
    with the next commit but do not cause one, as reads do not on UFS.
    There are no power cuts here (``/api/v1/powercut`` stays 404): taking
    a copy of the model at every first change after a flush would cost as
    much as a checkpoint.
    """

    def __init__(self, inner: Device, durable: FileStore) -> None:
        super().__init__(inner)
        self.durable = durable
        self._changed = False  # since the last checkpoint

    def _commit(self) -> None:
        if self._changed:
            # The device drains its staged pages into the snapshot itself
            # (ZramDevice.snapshot_contents): a flush acknowledges them.
            self.durable.checkpoint(device_state(self.next))
            self._changed = False

    def commit_state(self) -> None:
        """Commit the model's state now (a new store's initial state)."""
        self._changed = True
        self._commit()

    # --------------------------------------------------------------- data path
    def write(self, offset: int, data: memoryview, fua: bool, now_ns: int) -> int:
        self._changed = True  # a refused write changes failed_writes
        done = self.next.write(offset, data, fua, now_ns)
        if fua:
            self._commit()
        return done

    def trim(self, offset: int, length: int, now_ns: int) -> int:
        self._changed = True
        return self.next.trim(offset, length, now_ns)

    def write_zeroes(self, offset: int, length: int, fua: bool, now_ns: int) -> int:
        self._changed = True
        done = self.next.write_zeroes(offset, length, fua, now_ns)
        if fua:
            self._commit()
        return done

    def flush(self, now_ns: int) -> int:
        done = self.next.flush(now_ns)
        self._commit()
        return done

    def background_step(self, now_ns: int) -> int | None:
        done = self.next.background_step(now_ns)
        if done is not None:  # an idle step changed nothing
            self._changed = True
        return done

    # ------------------------------------------------------------ control API
    def routes(self) -> list[Route]:
        # An applied write (mem_limit, idle, recompress, compact) changes state; a refused one changes nothing.
        return wrap_all(self.next.routes(), self._changing, changing_only=True)

    def _changing(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        def run(**kwargs: Any) -> Any:
            result = handler(**kwargs)
            self._changed = True
            return result
        return run

    def describe(self) -> dict[str, Any]:
        description = self.next.describe()
        description["store"] = self.durable.status()
        return description

    def metrics(self) -> Iterator[MetricFamily]:
        yield from store_metrics(self.durable)
        yield from self.next.metrics()

    def close(self) -> None:
        try:
            self._commit()  # an orderly power-down keeps what was written
        finally:
            self.next.close()
