"""ZCACHE: clean file pages that reclaim evicts are kept compressed in RAM instead of dropped.

A later read of such a page decompresses it (a hit) instead of reading the
UFS device.  This is the design of Linux's zcache/cleancache (staging,
2.6.39–3.x) and of vendor "file compression" caches on phones:

* a *put* (:meth:`ZCache.store`) compresses a page with a real codec; pages
  that do not shrink below ``max_object_bytes`` are not kept (dropped, as
  reclaim would have);
* a *get* (:meth:`ZCache.load`) is exclusive: the page goes back to the
  page cache and leaves the compressed cache;
* the pool is bounded (``max_pages``); when full, the oldest objects are
  evicted (their pages will be read from UFS next time).

Allocators (:class:`ZbudAllocator`, :class:`ZsmallocAllocator`) decide how
many RAM pages the compressed objects take.  Compression runs in one of
three modes: ``sync`` (on the reclaiming thread, which waits), ``async`` (on
worker threads that compete for the cores; the evicted page's frame is
freed only when its compression is done, and reclaim drops pages instead
when ``queue_pages`` are already waiting), or ``offload`` (an
:class:`~blockemu.experiments.launch.cpu.Accelerator`, batch by batch, no
core used).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from blockemu.devices.zram.codecs import PAGE, Codec, CostModel
from blockemu.devices.zram.zsmalloc import ZsPool
from blockemu.experiments.launch.cpu import Accelerator, Cpus

# zbud (mm/zbud.c): 64-byte chunks, one chunk of header per page, so a page
# holds 63 chunks of objects, at most two objects ("buddies").
ZBUD_CHUNK = 64
ZBUD_CHUNKS = PAGE // ZBUD_CHUNK - 1

MODES = ("sync", "async", "offload")


class Allocator(Protocol):
    name: str

    def malloc(self, size: int) -> int: ...

    def free(self, handle: int) -> None: ...

    @property
    def pages(self) -> int: ...


class ZbudAllocator:
    """At most two objects per page (mm/zbud.c); a new object goes to the unbuddied page it fits best."""

    name = "zbud"

    def __init__(self) -> None:
        # Unbuddied pages by their free chunks: unbuddied[free] = {page ids}.
        self._unbuddied: list[set[int]] = [set() for _ in range(ZBUD_CHUNKS + 1)]
        self._pages: dict[int, list[int]] = {}  # page id → chunk sizes of its objects
        self._objects: dict[int, int] = {}  # handle → page id
        self._sizes: dict[int, int] = {}  # handle → chunks
        self._next_page = 0
        self._next_handle = 1

    @property
    def pages(self) -> int:
        return len(self._pages)

    def malloc(self, size: int) -> int:
        chunks = -(-size // ZBUD_CHUNK)
        if not 0 < chunks <= ZBUD_CHUNKS:
            raise ValueError(f"zbud object must be 1..{ZBUD_CHUNKS * ZBUD_CHUNK} bytes, got {size}")
        # zbud_alloc: the first unbuddied list with enough free chunks.
        page = None
        for free in range(chunks, ZBUD_CHUNKS + 1):
            if self._unbuddied[free]:
                page = min(self._unbuddied[free])
                self._unbuddied[free].discard(page)
                break
        if page is None:
            page = self._next_page
            self._next_page += 1
            self._pages[page] = [chunks]
            self._unbuddied[ZBUD_CHUNKS - chunks].add(page)
        else:
            self._pages[page].append(chunks)  # now buddied: two objects, no room for a third
        handle = self._next_handle
        self._next_handle += 1
        self._objects[handle] = page
        self._sizes[handle] = chunks
        return handle

    def free(self, handle: int) -> None:
        page = self._objects.pop(handle)
        chunks = self._sizes.pop(handle)
        held = self._pages[page]
        if len(held) == 1:
            self._unbuddied[ZBUD_CHUNKS - held[0]].discard(page)
            del self._pages[page]
            return
        held.remove(chunks)
        self._unbuddied[ZBUD_CHUNKS - held[0]].add(page)


class ZsmallocAllocator:
    """Size classes packed into zspages: the zram model's own zsmalloc accounting."""

    name = "zsmalloc"

    def __init__(self) -> None:
        self._pool = ZsPool()

    @property
    def pages(self) -> int:
        return self._pool.total_pages

    def malloc(self, size: int) -> int:
        return self._pool.malloc(size)

    def free(self, handle: int) -> None:
        self._pool.free(handle)


ALLOCATORS: dict[str, type[ZbudAllocator] | type[ZsmallocAllocator]] = {
    "zbud": ZbudAllocator, "zsmalloc": ZsmallocAllocator}


@dataclass
class ZCacheStats:
    puts: int = 0
    rejected: int = 0  # did not shrink enough
    queue_full: int = 0  # async: dropped because the queue was full
    evicted: int = 0
    hits: int = 0
    misses: int = 0
    compress_cpu_ns: int = 0
    decompress_cpu_ns: int = 0
    offload_ns: int = 0


@dataclass
class _Object:
    handle: int
    data: bytes


class ZCache:
    def __init__(self, codec: Codec, costs: CostModel, allocator: Allocator, mode: str, cpus: Cpus,
                 max_pages: int, max_object_bytes: int, queue_pages: int,
                 accelerator: Accelerator | None = None, workers: int = 2) -> None:
        if mode not in MODES:
            raise ValueError(f"zcache mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "offload" and accelerator is None:
            raise ValueError("zcache mode offload needs an accelerator")
        self.codec = codec
        self.compress_ns = costs.compress_ns(codec)
        self.decompress_ns = costs.decompress_ns(codec)
        self.allocator = allocator
        self.mode = mode
        self.cpus = cpus
        self.max_pages = max_pages
        self.max_object_bytes = min(max_object_bytes, ZBUD_CHUNKS * ZBUD_CHUNK)
        self.queue_pages = queue_pages
        self.accelerator = accelerator
        self.objects: OrderedDict[tuple[int, int], _Object] = OrderedDict()
        # Async: completion times of queued compressions (oldest first), and
        # when each worker thread is next free (a worker runs one page at a time).
        self._queued: list[int] = []
        self._workers = [0] * workers
        self.stats = ZCacheStats()

    @property
    def pool_pages(self) -> int:
        return self.allocator.pages

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self.objects

    def store(self, items: list[tuple[tuple[int, int], bytes]], now_ns: int) -> tuple[int, list[tuple[int, int]]]:
        """Put evicted clean pages; returns (when the reclaiming thread goes on, [(free_at_ns, pages)]).

        Each page's frame is free at the returned time: at once for a page
        not kept, after its compression for a kept one.
        """
        thread = now_ns
        frees: list[tuple[int, int]] = []
        if self.mode == "async":
            self._queued = [t for t in self._queued if t > now_ns]
        compressed_all: list[tuple[tuple[int, int], bytes]] = []
        dropped = 0
        for key, page in items:
            if self.mode == "async" and len(self._queued) >= self.queue_pages:
                self.stats.queue_full += 1
                dropped += 1
                continue
            data = self.codec.compress(page)
            self.stats.puts += 1
            if self.mode == "sync":
                thread = self.cpus.run(thread, self.compress_ns, "zcache_compress")
                self.stats.compress_cpu_ns += self.compress_ns
                done = thread
            elif self.mode == "async":
                worker = min(range(len(self._workers)), key=self._workers.__getitem__)
                done = self.cpus.run(max(now_ns, self._workers[worker]), self.compress_ns, "zcache_compress")
                self._workers[worker] = done
                self.stats.compress_cpu_ns += self.compress_ns
                self._queued.append(done)
            else:
                done = now_ns  # set per batch below
            if len(data) > self.max_object_bytes:
                self.stats.rejected += 1
                frees.append((done, 1))
                continue
            compressed_all.append((key, data))
            if self.mode != "offload":
                self._install(key, data)
                frees.append((done, 1))
        if self.mode == "offload" and items:
            assert self.accelerator is not None
            done = self.accelerator.submit(now_ns, PAGE * (len(items) - dropped),
                                           sum(len(d) for _, d in compressed_all))
            self.stats.offload_ns += done - now_ns
            for key, data in compressed_all:
                self._install(key, data)
            frees = [(done, len(items) - dropped)]
        if dropped:
            frees.append((now_ns, dropped))
        return thread, frees

    def _install(self, key: tuple[int, int], data: bytes) -> None:
        self.invalidate(key)
        self.objects[key] = _Object(self.allocator.malloc(len(data)), data)
        while self.allocator.pages > self.max_pages and self.objects:
            _, victim = self.objects.popitem(last=False)
            self.allocator.free(victim.handle)
            self.stats.evicted += 1

    def load(self, key: tuple[int, int], now_ns: int) -> tuple[bytes, int] | None:
        """A read fault on a file page: (contents, done) on a hit, None on a miss."""
        obj = self.objects.pop(key, None)
        if obj is None:
            self.stats.misses += 1
            return None
        self.allocator.free(obj.handle)
        self.stats.hits += 1
        self.stats.decompress_cpu_ns += self.decompress_ns
        page = self.codec.decompress(obj.data)
        return page, self.cpus.run(now_ns, self.decompress_ns, "zcache_decompress")

    def invalidate(self, key: tuple[int, int]) -> None:
        obj = self.objects.pop(key, None)
        if obj is not None:
            self.allocator.free(obj.handle)
