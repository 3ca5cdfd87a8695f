"""Saving and loading a zram device's contents (``[store] backend = "file"``).

:meth:`ZramPersistence.snapshot_contents` gives every stored page with its
slot's index state and the pool layout as arrays, and the write-cache layer
checkpoints them at each commit (CheckpointLayer);
:meth:`ZramPersistence.restore_contents` loads them into an empty device
after checking that they fit it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

from blockemu.devices.zram.codecs import PAGE, parse_codec
from blockemu.devices.zram.core import (
    COMPRESSED,
    HUGE,
    KIND_NAMES,
    MAX_PRIORITIES,
    SAME,
    PageEntry,
)
from blockemu.devices.zram.offload import ZramOffload
from blockemu.store.file import ByteChunks


class ZramPersistence(ZramOffload):
    """Snapshot and restore of the page table, the algorithms, mem_limit, the pool and the counters."""

    # ------------------------------------------------------- persistence
    # Flags of a saved slot.
    _IDLE, _INCOMPRESSIBLE, _WAS_READ = 1, 2, 4
    # Counters mm_stat and io_stat report (plus recompressed pages): device
    # state, saved with it.  The rest of ZramStats (per-codec work and CPU
    # time, async batches, staged reads) describes this server process, as
    # the runtime's request statistics do, and starts at zero.
    _COUNTERS = ("failed_reads", "failed_writes", "notify_free", "huge_pages_since", "mem_used_max_pages",
                 "recompressed_pages")

    def snapshot_contents(self) -> dict[str, np.ndarray | ByteChunks]:
        """Every stored page and its slot, the algorithms, mem_limit and the pool layout, as arrays.

        Staged pages are compressed and stored first (:meth:`drain`), so that
        the snapshot holds every acknowledged write.  Slots are saved in the
        page table's order, which ``recompress max_pages=`` follows, and
        times as ages before the latest time seen, because a restarted
        server's clock starts again at zero: a page idle for a minute is
        still idle for a minute after a restart.
        """
        self.drain(self._now)
        now, count = self._now, len(self.entries)
        entries = list(self.entries.values())

        def column(values: Iterator[Any], dtype: type) -> np.ndarray:
            return np.fromiter(values, dtype=dtype, count=count)

        # One pass per column: cheaper than one loop appending to a dozen lists.
        # Codecs are shared objects: look each one's key up once.
        codec_keys: dict[str, int] = {}
        codec_ids: dict[int, int] = {id(None): -1}
        for codec in {id(e.codec): e.codec for e in entries}.values():
            if codec is not None:
                codec_ids[id(codec)] = codec_keys.setdefault(codec.key, len(codec_keys))
        # A same page's object is its 8-byte word; a huge page's, the page.
        objects = [e.pattern if e.kind == SAME else e.data or b"" for e in entries]
        return {
            "zram_slots": column(iter(self.entries), np.int64),
            "zram_kind": column((e.kind for e in entries), np.int8),
            "zram_priority": column((e.priority for e in entries), np.int8),
            "zram_codec": column((codec_ids[id(e.codec)] for e in entries), np.int16),
            "zram_size": column((e.size for e in entries), np.int32),
            "zram_handle": column((e.handle for e in entries), np.int64),
            "zram_flags": column((self._IDLE * e.idle | self._INCOMPRESSIBLE * e.incompressible
                                  | self._WAS_READ * (e.last_read_ns is not None) for e in entries), np.uint8),
            "zram_access_age_ns": column((now - e.last_access_ns for e in entries), np.int64),
            "zram_reads": column((e.reads for e in entries), np.int64),
            "zram_read_age_ns": column((0 if e.last_read_ns is None else now - e.last_read_ns for e in entries),
                                       np.int64),
            "zram_probe_ratio": column((e.probe_ratio for e in entries), np.float64),
            "zram_object_offsets": np.concatenate(([0], np.cumsum(column(map(len, objects), np.int64)))),
            "zram_objects": ByteChunks(objects),  # loads as a uint8 array
            "zram_codec_keys": np.array(list(codec_keys), dtype=np.str_).reshape(-1),
            "zram_algorithms": np.array(["" if c is None else c.key for c in self.algorithms], dtype=np.str_),
            "zram_idle_order": np.fromiter(self._idle_candidates, dtype=np.int64, count=len(self._idle_candidates)),
            "zram_limit_pages": np.array([self.limit_pages], dtype=np.int64),
            **self.pool.state_arrays(),
        }

    def restore_contents(self, state: dict[str, np.ndarray]) -> None:
        """Load :meth:`snapshot_contents` into a device that holds nothing yet; ValueError if it does not fit."""
        if self.entries or self.staging:
            raise ValueError("saved zram contents load only into an empty device")
        slots = state["zram_slots"]
        count = len(slots)
        columns = ("zram_kind", "zram_priority", "zram_codec", "zram_size", "zram_handle", "zram_flags",
                   "zram_access_age_ns", "zram_reads", "zram_read_age_ns", "zram_probe_ratio")
        for name in columns:
            if state[name].shape != (count,):
                raise ValueError(f"saved {name} has shape {state[name].shape}, expected ({count},)")
        if count and not (int(slots.min()) >= 0 and int(slots.max()) < self.pages):
            raise ValueError(f"saved zram slots reach beyond the device's {self.pages} pages")
        if len(np.unique(slots)) != count:
            raise ValueError("saved zram slots repeat a page")
        algorithms = [parse_codec(key) if key else None for key in state["zram_algorithms"].tolist()]
        if len(algorithms) != MAX_PRIORITIES or algorithms[0] is None:
            raise ValueError(f"saved zram algorithms {state['zram_algorithms'].tolist()} are not "
                             f"{MAX_PRIORITIES} priorities with a primary one")
        codecs = [parse_codec(key) for key in state["zram_codec_keys"].tolist()]
        kinds, sizes, codec_ids = state["zram_kind"], state["zram_size"], state["zram_codec"]
        priorities, handles = state["zram_priority"], state["zram_handle"]
        same, compressed, huge = kinds == SAME, kinds == COMPRESSED, kinds == HUGE
        if not (same | compressed | huge).all():
            raise ValueError("saved zram slots have an unknown kind")
        offsets, blob = state["zram_object_offsets"], state["zram_objects"]
        if len(offsets) != count + 1 or int(offsets[0]) != 0 or int(offsets[-1]) != len(blob):
            raise ValueError("saved zram object offsets do not cover the objects")
        lengths = np.diff(offsets)
        expected_length = np.where(same, 8, np.where(huge, PAGE, sizes))
        if (lengths != expected_length).any() or (same & (sizes != 0)).any() or (huge & (sizes != PAGE)).any():
            raise ValueError("saved zram object lengths do not match their slots")
        if (compressed & ((sizes <= 0) | (sizes >= self.pool.huge_class_size))).any():
            raise ValueError("saved zram compressed sizes are outside 1..huge_class_size")
        if (compressed & ((codec_ids < 0) | (codec_ids >= len(codecs)) | (priorities < 0)
                          | (priorities >= MAX_PRIORITIES))).any() or (~compressed & (codec_ids != -1)).any():
            raise ValueError("saved zram slots name algorithms that do not exist")
        pooled = ~same
        objects = state["zs_objects"]
        if objects.ndim != 2 or objects.shape[1:] != (3,) or (same & (handles != 0)).any() or not np.array_equal(
                np.sort(handles[pooled]), objects[:, 0]):
            raise ValueError("saved zram slots and pool objects do not match")
        # Pool objects are in handle order: put the slots' sizes in that order too.
        by_handle = sizes[pooled][np.argsort(handles[pooled])].astype(np.int64)
        if (self.pool.class_indices(by_handle) != objects[:, 1]).any():
            raise ValueError("saved zram objects are in the wrong size class for their compressed size")
        idle_order = state["zram_idle_order"].tolist()
        if len(set(idle_order)) != len(idle_order) or not set(idle_order) <= set(slots[pooled].tolist()):
            raise ValueError("saved zram idle candidates are not stored pages")
        limit = state["zram_limit_pages"].tolist()
        if len(limit) != 1 or limit[0] < 0:
            raise ValueError(f"saved zram mem_limit {limit} is not one page count")
        self.pool.load_state_arrays(state)  # checks the layout itself; changes nothing if it fails
        # Checked: from here on nothing fails.
        for codec in [*codecs, *filter(None, algorithms)]:
            self.cost_model.add(codec)
        self.algorithms = algorithms
        self.limit_pages = int(limit[0])
        raw = blob.tobytes()
        flags = state["zram_flags"]
        now = self._now
        codec_of = [*codecs, None]  # codec id -1: none
        # Columns as Python lists, then one positional PageEntry per slot (tens of thousands of them).
        rows = zip(slots.tolist(), kinds.tolist(), priorities.tolist(), codec_ids.tolist(), offsets[:-1].tolist(),
                   offsets[1:].tolist(), handles.tolist(), sizes.tolist(), (flags & self._IDLE).astype(bool).tolist(),
                   (now - state["zram_access_age_ns"]).tolist(), state["zram_reads"].tolist(),
                   np.where(flags & self._WAS_READ, now - state["zram_read_age_ns"], -1).tolist(),
                   (flags & self._WAS_READ).astype(bool).tolist(), state["zram_probe_ratio"].tolist(),
                   (flags & self._INCOMPRESSIBLE).astype(bool).tolist(), strict=True)
        entries = self.entries
        for index, kind, priority, codec_id, start, end, handle, size, idle, access, reads, last_read, was_read, \
                ratio, incompressible in rows:
            data = raw[start:end]
            same_page = kind == SAME
            # PageEntry's fields in order: kind, priority, codec, data, pattern, handle, size, idle,
            # last_access_ns, reads, last_read_ns, probe_ratio, incompressible.
            entries[index] = PageEntry(kind, priority, codec_of[codec_id], None if same_page else data,
                                       data if same_page else b"", handle, size, idle, access, reads,
                                       last_read if was_read else None, ratio, incompressible)
        # What _account keeps per entry, counted at once.
        keys = np.where(compressed, codec_ids, -1 - kinds.astype(np.int16))  # -1 - kind for same and huge pages
        for key, pages in zip(*(column.tolist() for column in np.unique(keys, return_counts=True)), strict=True):
            self._pages_by_key[codecs[key].key if key >= 0 else KIND_NAMES[-1 - key]] = pages
        self._stored_bytes = int(sizes.sum())
        self._idle_candidates = OrderedDict((index, None) for index in idle_order)

    def snapshot_counters(self) -> dict[str, np.ndarray]:
        return {"zram_counters": np.array([getattr(self.stats, name) for name in self._COUNTERS], dtype=np.int64)}

    def restore_counters(self, state: dict[str, np.ndarray]) -> None:
        values = state["zram_counters"].tolist()
        if len(values) != len(self._COUNTERS):
            raise ValueError(f"saved zram counters have {len(values)} entries, expected {len(self._COUNTERS)}")
        for name, value in zip(self._COUNTERS, values, strict=True):
            setattr(self.stats, name, int(value))
