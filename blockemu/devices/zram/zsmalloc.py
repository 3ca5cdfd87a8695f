"""Memory accounting of zram's allocator, zsmalloc (mm/zsmalloc.c, Linux 6.12).

Only the accounting is modeled; the bytes themselves live with the page
table.  What ``mm_stat`` reports follows the kernel's rules exactly:

* **Size classes.**  ``ZS_MIN_ALLOC_SIZE`` 32 to ``ZS_MAX_ALLOC_SIZE`` 4096
  in steps of ``ZS_SIZE_CLASS_DELTA`` = PAGE_SIZE >> 8 = 16: 255 classes.
* **Handle.**  zs_malloc() looks a class up for ``size + ZS_HANDLE_SIZE``
  (8 bytes on 64-bit: the object's first word holds its handle), so a
  100-byte object lives in the 112-byte class and a 4096-byte (huge) one in
  the last class.
* **Zspage chains.**  A class keeps its objects in zspages of 1 to
  ``CONFIG_ZSMALLOC_CHAIN_SIZE`` pages (8 by default, mm/Kconfig, 4..16),
  the count with the least absolute waste, ties to the shortest, and 1 for a
  power-of-two size (``calculate_zspage_chain_size``).  An object therefore
  costs its class, not its own size: ``mem_used_total >= compr_data_size``.
* **Merged classes.**  Neighbouring classes with the same pages and objects
  per zspage are one class (``can_merge``), which is why the top classes,
  one object per one-page zspage, all share the 4096-byte class.
* **huge_class_size**: the size of the largest class that is not huge,
  minus ``ZS_HANDLE_SIZE - 1`` (3632 - 7 = 3625 with chains of 8 pages).
  zram stores a page whose compressed size reaches it uncompressed.
* **Fullness groups.**  A class files its zspages by how full they are
  (``ZS_INUSE_RATIO_0, _10 … _99, _100``: ``100 * inuse / objs / 10 + 1``);
  zs_malloc() fills the fullest partial zspage, the most recently filed one
  of its group first, and a zspage is freed when its last object is.
* **Compaction** (``__zs_compact``) moves objects from the emptiest zspage
  into the fullest one of the same class until no zspage's worth of slots
  is free, and frees the emptied zspages (``pages_compacted``).

A pool's layout (which zspage holds which object, and the order in which
partial zspages are refilled) is saved with a persistent zram
(:meth:`ZsPool.state_arrays`), so that a restarted device reports the same
``mem_used_total`` and fills the same zspages next.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PAGE = 4096
MIN_ALLOC = 32  # ZS_MIN_ALLOC_SIZE: max(32, chain << PAGE_SHIFT >> OBJ_INDEX_BITS) = 32 on x86-64
CLASS_DELTA = PAGE >> 8  # ZS_SIZE_CLASS_DELTA (CLASS_BITS 8)
CLASS_COUNT = -(-(PAGE - MIN_ALLOC) // CLASS_DELTA) + 1  # ZS_SIZE_CLASSES: 255
HANDLE_SIZE = 8  # ZS_HANDLE_SIZE: sizeof(unsigned long)
# CONFIG_ZSMALLOC_CHAIN_SIZE: mm/Kconfig's default, and Debian's 6.12 kernel's.
DEFAULT_CHAIN_SIZE = 8
CHAIN_SIZE_RANGE = (4, 16)  # mm/Kconfig: range 4 16
FULLNESS_FULL = 11  # ZS_INUSE_RATIO_100; 1..10 are the partial groups _10 … _99


def fullness_group(inuse: int, objs_per_zspage: int) -> int:
    """get_fullness_group(): 0 empty, 11 full, else 100 * inuse / objs / 10 + 1."""
    if inuse == 0:
        return 0
    if inuse == objs_per_zspage:
        return FULLNESS_FULL
    return 100 * inuse // objs_per_zspage // 10 + 1


def chain_size(class_size: int, max_pages: int = DEFAULT_CHAIN_SIZE) -> int:
    """calculate_zspage_chain_size(): pages per zspage with the least absolute waste."""
    if class_size & (class_size - 1) == 0:
        return 1
    best, least = 1, PAGE * max_pages
    for pages in range(1, max_pages + 1):
        waste = pages * PAGE % class_size
        if waste < least:
            best, least = pages, waste
    return best


@dataclass
class SizeClass:
    size: int
    pages_per_zspage: int
    objs_per_zspage: int
    # zspage id → objects in use, for zspages with at least one object.
    zspages: dict[int, int] = field(default_factory=dict)
    # Partial zspages by fullness group (index 1..10), each in the order they
    # were filed there: the last is the head of the kernel's list.
    groups: list[dict[int, None]] = field(default_factory=lambda: [{} for _ in range(FULLNESS_FULL)])
    objects: int = 0

    @property
    def pages(self) -> int:
        return len(self.zspages) * self.pages_per_zspage

    def refile(self, zspage: int, before: int, after: int) -> None:
        """fix_fullness_group(): move a zspage whose use changed from ``before`` to ``after`` objects."""
        old, new = fullness_group(before, self.objs_per_zspage), fullness_group(after, self.objs_per_zspage)
        if old == new:
            return
        if 0 < old < FULLNESS_FULL:
            del self.groups[old][zspage]
        if 0 < new < FULLNESS_FULL:
            self.groups[new][zspage] = None

    def fullest_partial(self) -> int | None:
        """find_get_zspage(): the head of the fullest non-empty partial group."""
        for group in reversed(self.groups[1:]):
            if group:
                return next(reversed(group))
        return None

    def partial_order(self) -> list[int]:
        return [zspage for group in self.groups[1:] for zspage in group]


class ZsPool:
    def __init__(self, max_pages_per_zspage: int = DEFAULT_CHAIN_SIZE) -> None:
        low, high = CHAIN_SIZE_RANGE
        if not low <= max_pages_per_zspage <= high:
            raise ValueError(f"zsmalloc chain size must be {low}..{high} pages, got {max_pages_per_zspage}")
        self.max_pages_per_zspage = max_pages_per_zspage
        # zs_create_pool(): from the largest class down, a class with the same
        # geometry as the one above is merged into it.
        by_index: list[SizeClass] = []
        self.huge_class_size = 0
        for index in reversed(range(CLASS_COUNT)):
            size = min(MIN_ALLOC + index * CLASS_DELTA, PAGE)
            pages = chain_size(size, max_pages_per_zspage)
            objs = pages * PAGE // size
            if pages != 1 and objs != 1 and not self.huge_class_size:
                self.huge_class_size = size - (HANDLE_SIZE - 1)
            above = by_index[-1] if by_index else None
            if above is not None and (above.pages_per_zspage, above.objs_per_zspage) == (pages, objs):
                by_index.append(above)
            else:
                by_index.append(SizeClass(size, pages, objs))
        by_index.reverse()
        self.classes: list[SizeClass] = list({id(c): c for c in by_index}.values())
        position = {id(c): i for i, c in enumerate(self.classes)}
        class_at = np.array([position[id(c)] for c in by_index], dtype=np.int64)  # kernel index → position
        # lookup_size_class() for every object size 0..PAGE: size + handle word → kernel index → position.
        looked_up = np.arange(PAGE + 1) + HANDLE_SIZE
        kernel_index = np.minimum(CLASS_COUNT - 1,
                                  np.where(looked_up <= MIN_ALLOC, 0, -(-(looked_up - MIN_ALLOC) // CLASS_DELTA)))
        self._class_of_size = class_at[kernel_index]
        self._class_of_size_list: list[int] = self._class_of_size.tolist()  # the scalar path's (malloc's) copy
        self._next_zspage = 0
        self._next_handle = 1
        # handle → (class position, zspage id)
        self._objects: dict[int, tuple[int, int]] = {}
        self.total_pages = 0
        self.pages_compacted = 0

    def class_index(self, size: int) -> int:
        """Position in :attr:`classes` of the class an object of ``size`` bytes goes to (lookup_size_class)."""
        if not 0 < size <= PAGE:
            raise ValueError(f"object size must be in 1..{PAGE}, got {size}")
        return self._class_of_size_list[size]

    def class_indices(self, sizes: np.ndarray) -> np.ndarray:
        """:meth:`class_index` of each size (all in 1..PAGE), at once."""
        return self._class_of_size[sizes]

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
        target = cls.fullest_partial()
        if target is None:
            target = self._next_zspage
            self._next_zspage += 1
            cls.zspages[target] = 0
            self.total_pages += cls.pages_per_zspage
        inuse = cls.zspages[target]
        cls.zspages[target] = inuse + 1
        cls.refile(target, inuse, inuse + 1)
        cls.objects += 1
        handle = self._next_handle
        self._next_handle += 1
        self._objects[handle] = (index, target)
        return handle

    def free(self, handle: int) -> None:
        index, zspage = self._objects.pop(handle)
        cls = self.classes[index]
        cls.objects -= 1
        inuse = cls.zspages[zspage]
        cls.refile(zspage, inuse, inuse - 1)
        if inuse == 1:
            del cls.zspages[zspage]
            self.total_pages -= cls.pages_per_zspage
        else:
            cls.zspages[zspage] = inuse - 1

    def object_class_size(self, handle: int) -> int:
        return self.classes[self._objects[handle][0]].size

    @property
    def objects(self) -> int:
        return len(self._objects)

    def compact(self) -> int:
        """zs_compact(): per class, move objects from the emptiest zspages into the fullest; return pages freed."""
        by_zspage: dict[int, list[int]] = {}
        for handle, (_, zspage) in self._objects.items():
            by_zspage.setdefault(zspage, []).append(handle)
        freed = 0
        for index in reversed(range(len(self.classes))):
            freed += self._compact_class(index, by_zspage)
        self.pages_compacted += freed
        return freed

    def _compact_class(self, index: int, by_zspage: dict[int, list[int]]) -> int:
        cls = self.classes[index]
        objs = cls.objs_per_zspage
        freed = 0
        dst: int | None = None

        def isolate(groups: range) -> int | None:
            for group in groups:
                if cls.groups[group]:
                    return cls.groups[group].popitem()[0]  # the list's head
            return None

        # zs_can_compact(): at least one zspage's worth of free slots.
        while (len(cls.zspages) * objs - cls.objects) // objs > 0:
            if dst is None:
                dst = isolate(range(FULLNESS_FULL - 1, 0, -1))
                if dst is None:
                    break
            src = isolate(range(1, FULLNESS_FULL))
            if src is None:
                break
            moving = by_zspage.pop(src, [])
            room = objs - cls.zspages[dst]
            moved, stay = moving[:room], moving[room:]
            for handle in moved:
                self._objects[handle] = (index, dst)
            by_zspage.setdefault(dst, []).extend(moved)
            cls.zspages[dst] += len(moved)
            if stay:
                by_zspage[src] = stay
                cls.zspages[src] = len(stay)
                cls.groups[fullness_group(len(stay), objs)][src] = None  # putback_zspage
            else:
                del cls.zspages[src]
                self.total_pages -= cls.pages_per_zspage
                freed += cls.pages_per_zspage
            if cls.zspages[dst] == objs:
                dst = None  # full: filed nowhere
        if dst is not None:
            cls.groups[fullness_group(cls.zspages[dst], objs)][dst] = None
        return freed

    # ----------------------------------------------------------- persistence
    def state_arrays(self) -> dict[str, np.ndarray]:
        """The layout, as arrays: objects by handle, partial zspages in refill order, counters."""
        objects = np.array([(handle, index, zspage) for handle, (index, zspage) in self._objects.items()],
                           dtype=np.int64).reshape(-1, 3)
        partial = [zspage for cls in self.classes for zspage in cls.partial_order()]
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
            raise ValueError("saved pool objects name size classes or zspages that do not exist "
                             f"(a pool of {self.max_pages_per_zspage}-page zspages has {len(self.classes)} classes)")
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
            cls.zspages, cls.objects = {}, 0
            cls.groups = [{} for _ in range(FULLNESS_FULL)]
        class_of = dict(zip(used.tolist(), zspage_class.tolist(), strict=True))
        for zspage, index, count in zip(used.tolist(), zspage_class.tolist(), counts.tolist(), strict=True):
            cls = self.classes[index]
            cls.zspages[zspage] = count
            cls.objects += count
        for zspage in partial:
            cls = self.classes[class_of[zspage]]
            cls.groups[fullness_group(cls.zspages[zspage], cls.objs_per_zspage)][zspage] = None
        self._objects = dict(zip(handles.tolist(), zip(classes.tolist(), zspages.tolist(), strict=True),
                                 strict=True))
        self._next_zspage, self._next_handle, self.pages_compacted = next_zspage, next_handle, compacted
        self.total_pages = sum(cls.pages for cls in self.classes)
