"""Memory accounting of zram's allocator, zsmalloc (mm/zsmalloc.c).

Only the accounting is modeled; the bytes themselves live with the page
table.  What matters for ``mm_stat`` is reproduced:

* Objects go to size classes 32, 48, 64, … 4096 bytes (``ZS_MIN_ALLOC_SIZE``
  32, ``ZS_SIZE_CLASS_DELTA`` = PAGE_SIZE >> 8 = 16).
* A class keeps its objects in "zspages" of 1–4 physical pages, the count
  chosen to waste least (``calculate_zspage_chain_size``), so an object costs
  its class size, not its own size: ``mem_used_total ≥ compr_data_size``.
* ``huge_class_size``: the first class holding one object per one-page
  zspage.  zram stores a page whose compressed size reaches it uncompressed
  (a "huge page").
* A zspage is freed when its last object is freed; half-empty zspages stay
  until compaction moves objects out of the emptiest into the fullest ones
  of the same class and frees the emptied zspages (``pages_compacted``).

A pool's layout (which zspage holds which object, and the order in which
partial zspages are refilled) is saved with a persistent zram
(:meth:`ZsPool.state_arrays`), so that a restarted device reports the same
``mem_used_total`` and fills the same zspages next.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PAGE = 4096
MIN_ALLOC = 32
CLASS_DELTA = PAGE >> 8
MAX_PAGES_PER_ZSPAGE = 4


@dataclass
class SizeClass:
    size: int
    pages_per_zspage: int
    objs_per_zspage: int
    # zspage id → objects in use, for zspages with at least one object.
    zspages: dict[int, int] = field(default_factory=dict)
    # zspages with a free slot, in the order they last became partial.
    partial: dict[int, None] = field(default_factory=dict)
    objects: int = 0

    @property
    def pages(self) -> int:
        return len(self.zspages) * self.pages_per_zspage


def _chain_size(size: int) -> int:
    """Pages per zspage that waste the least, as zsmalloc's calculate_zspage_chain_size."""
    best_pages, best_used = 1, 0.0
    for pages in range(1, MAX_PAGES_PER_ZSPAGE + 1):
        used = (pages * PAGE // size) * size / (pages * PAGE)
        if used > best_used:
            best_pages, best_used = pages, used
    return best_pages


class PoolLimitError(Exception):
    """An allocation refused because the pool would exceed its page limit."""


class ZsPool:
    def __init__(self) -> None:
        self.classes: list[SizeClass] = []
        size = MIN_ALLOC
        while size <= PAGE:
            pages = _chain_size(size)
            self.classes.append(SizeClass(size, pages, pages * PAGE // size))
            size += CLASS_DELTA
        self.huge_class_size = next(
            c.size for c in self.classes if c.pages_per_zspage == 1 and c.objs_per_zspage == 1
        )
        self._next_zspage = 0
        self._next_handle = 1
        # handle → (class index, zspage id)
        self._objects: dict[int, tuple[int, int]] = {}
        self.total_pages = 0
        self.pages_compacted = 0

    def class_index(self, size: int) -> int:
        if not 0 < size <= PAGE:
            raise ValueError(f"object size must be in 1..{PAGE}, got {size}")
        return 0 if size <= MIN_ALLOC else -(-(size - MIN_ALLOC) // CLASS_DELTA)

    def class_indices(self, sizes: np.ndarray) -> np.ndarray:
        """:meth:`class_index` of each size (all in 1..PAGE), at once."""
        return np.where(sizes <= MIN_ALLOC, 0, -(-(sizes - MIN_ALLOC) // CLASS_DELTA))

    def pages_needed(self, sizes: list[int]) -> int:
        """Extra physical pages that allocating ``sizes`` would take now (no side effects)."""
        extra = 0
        wanted: dict[int, int] = {}
        for size in sizes:
            index = self.class_index(size)
            wanted[index] = wanted.get(index, 0) + 1
        for index, count in wanted.items():
            cls = self.classes[index]
            free_slots = len(cls.zspages) * cls.objs_per_zspage - cls.objects
            if count > free_slots:
                extra += -(-(count - free_slots) // cls.objs_per_zspage) * cls.pages_per_zspage
        return extra

    def malloc(self, size: int) -> int:
        index = self.class_index(size)
        cls = self.classes[index]
        # Fill a partly used zspage before opening a new one (zsmalloc keeps
        # fullness groups for this; the most recent partial one is close enough).
        if cls.partial:
            target = next(reversed(cls.partial))
        else:
            target = self._next_zspage
            self._next_zspage += 1
            cls.zspages[target] = 0
            cls.partial[target] = None
            self.total_pages += cls.pages_per_zspage
        cls.zspages[target] += 1
        if cls.zspages[target] == cls.objs_per_zspage:
            del cls.partial[target]
        cls.objects += 1
        handle = self._next_handle
        self._next_handle += 1
        self._objects[handle] = (index, target)
        return handle

    def free(self, handle: int) -> None:
        index, zspage = self._objects.pop(handle)
        cls = self.classes[index]
        cls.objects -= 1
        cls.zspages[zspage] -= 1
        if cls.zspages[zspage] == 0:
            del cls.zspages[zspage]
            cls.partial.pop(zspage, None)
            self.total_pages -= cls.pages_per_zspage
        else:
            cls.partial[zspage] = None

    def object_class_size(self, handle: int) -> int:
        return self.classes[self._objects[handle][0]].size

    @property
    def objects(self) -> int:
        return len(self._objects)

    def compact(self) -> int:
        """Migrate objects out of the emptiest zspages of each class; return pages freed."""
        freed = 0
        by_zspage: dict[tuple[int, int], list[int]] = {}
        for handle, (index, zspage) in self._objects.items():
            by_zspage.setdefault((index, zspage), []).append(handle)
        for index, cls in enumerate(self.classes):
            if not cls.zspages:
                continue
            needed = -(-cls.objects // cls.objs_per_zspage)
            if needed >= len(cls.zspages):
                continue
            # Keep the fullest zspages; move everything out of the rest.
            order = sorted(cls.zspages, key=lambda z: (-cls.zspages[z], z))
            keep, drain = order[:needed], order[needed:]
            room = [(z, cls.objs_per_zspage - cls.zspages[z]) for z in keep]
            for source in drain:
                for handle in by_zspage.get((index, source), []):
                    while room and room[0][1] == 0:
                        room.pop(0)
                    dest, free_slots = room[0]
                    room[0] = (dest, free_slots - 1)
                    cls.zspages[dest] += 1
                    self._objects[handle] = (index, dest)
                del cls.zspages[source]
                cls.partial.pop(source, None)
                self.total_pages -= cls.pages_per_zspage
                freed += cls.pages_per_zspage
            cls.partial = {z: None for z in keep if cls.zspages[z] < cls.objs_per_zspage}
        self.pages_compacted += freed
        return freed

    # ----------------------------------------------------------- persistence
    def state_arrays(self) -> dict[str, np.ndarray]:
        """The layout, as arrays: objects by handle, partial zspages in refill order, counters."""
        objects = np.array([(handle, index, zspage) for handle, (index, zspage) in self._objects.items()],
                           dtype=np.int64).reshape(-1, 3)
        partial = [zspage for cls in self.classes for zspage in cls.partial]
        return {
            # Handle order is the order compaction visits objects in.
            "zs_objects": objects,
            "zs_partial": np.array(partial, dtype=np.int64),
            "zs_scalars": np.array([self._next_zspage, self._next_handle, self.pages_compacted], dtype=np.int64),
        }

    def load_state_arrays(self, state: dict[str, np.ndarray]) -> None:
        """Replace an empty pool's layout with a saved one; ValueError (nothing changed) if it is inconsistent."""
        if self._objects:
            raise ValueError("a saved pool layout loads only into an empty pool")
        objects, partial = state["zs_objects"].astype(np.int64), state["zs_partial"].tolist()
        next_zspage, next_handle, compacted = (int(v) for v in state["zs_scalars"].tolist())
        if objects.ndim != 2 or objects.shape[1] != 3:
            raise ValueError(f"saved pool objects have shape {objects.shape}, expected (n, 3)")
        handles, classes, zspages = objects.T
        if len(handles) and not (handles[0] > 0 and (np.diff(handles) > 0).all() and handles[-1] < next_handle):
            raise ValueError(f"saved pool handles are out of order or not in 1..{next_handle - 1}")
        if len(handles) and not (0 <= classes.min() and classes.max() < len(self.classes)
                                 and 0 <= zspages.min() and zspages.max() < next_zspage):
            raise ValueError("saved pool objects name size classes or zspages that do not exist")
        used, first, counts = np.unique(zspages, return_index=True, return_counts=True)
        zspage_class = classes[first]
        if (classes != zspage_class[np.searchsorted(used, zspages)]).any():
            raise ValueError("a saved pool zspage holds objects of two size classes")
        capacity = np.array([cls.objs_per_zspage for cls in self.classes], dtype=np.int64)[zspage_class]
        if (counts > capacity).any():
            raise ValueError("a saved pool zspage holds more objects than its class allows")
        if len(partial) != len(set(partial)) or set(partial) != set(used[counts < capacity].tolist()):
            raise ValueError("saved pool partial zspages do not match its objects")
        # Checked: from here on nothing fails.
        for cls in self.classes:
            cls.zspages, cls.partial, cls.objects = {}, {}, 0
        class_of = dict(zip(used.tolist(), zspage_class.tolist(), strict=True))
        for zspage, index, count in zip(used.tolist(), zspage_class.tolist(), counts.tolist(), strict=True):
            cls = self.classes[index]
            cls.zspages[zspage] = count
            cls.objects += count
        for zspage in partial:
            self.classes[class_of[zspage]].partial[zspage] = None
        self._objects = dict(zip(handles.tolist(), zip(classes.tolist(), zspages.tolist(), strict=True),
                                 strict=True))
        self._next_zspage, self._next_handle, self.pages_compacted = next_zspage, next_handle, compacted
        self.total_pages = sum(cls.pages for cls in self.classes)
