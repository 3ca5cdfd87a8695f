"""A zram device: compressed RAM, page by page, in the manner of Linux zram.

Data path (4 KiB pages; partial-page writes read, patch and rewrite the page):

* A page filled with one repeated 8-byte word is a *same page*: only the word
  is kept, no pool memory (zram_same_page_write).
* Any other page is compressed with the algorithm its policy picks
  (:mod:`blockemu.policies.compression`).  If the result reaches the pool's
  ``huge_class_size`` it is stored uncompressed as a *huge page*.
* Objects are accounted by :class:`~blockemu.devices.zsmalloc.ZsPool`, so
  ``mem_used_total`` counts whole size-class slots and zspages.
* With ``mem_limit`` set, a write whose allocation would take the pool above
  it fails with ENOSPC before anything of it is stored; the pages it would
  have replaced keep their old contents.

Asynchronous compression (``async_workers`` > 0): a written page is copied to
a bounded *staging* area and the write completes; staged pages are read from
staging until a compressed copy replaces them.  The model owns no threads:
the runtime takes :class:`CompressionBatch` jobs (``offload_take``), runs them
on its executor outside the model lock, and hands them back
(``offload_finish``).  A result whose page was rewritten meanwhile is dropped.
When staging is full of pages no job has taken yet, the writer compresses
the oldest batch itself (back-pressure).  Staged pages are memory too: each
counts as one page in ``mem_used_total`` and against ``mem_limit``.

Modeled time.  Compression and decompression run on ``cpu_units`` CPUs
(a :class:`~blockemu.timing.UnitTimeline`): a request's pages are processed
one after another on the least busy CPU, so background swap-out traffic
delays a foreground launch's decompression, as CPU contention does on a
phone.  Per-page costs are the calibrated :class:`~blockemu.codecs.CostModel`
in ``virtual`` mode (reproducible) and the measured CPU time in ``realtime``
mode.  Asynchronous compression is placed on the first ``async_workers``
CPUs at the model's cost; a write waits (in modeled time) while the modeled
staging area is full.  The CPU time really spent is always measured and
exported.

Persistence (``[store] backend = "file"``): :meth:`ZramDevice.snapshot_contents`
gives every stored page with its slot's index state and the pool layout as
arrays, and the write-cache layer checkpoints them at each commit
(blockemu/write_cache.py, CheckpointLayer).
"""

from __future__ import annotations

import errno
import heapq
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blockemu.codecs import (
    CODEC_NAMES,
    PAGE,
    Codec,
    CodecError,
    CostModel,
    InlineBatchCompressor,
    ThreadPoolBatchCompressor,
    parse_codec,
    parse_cost_overrides,
)
from blockemu.config import Config
from blockemu.devices.base import (
    ApiError,
    Capabilities,
    DeviceError,
    MetricFamily,
    describe_identity,
    out_of_range,
)
from blockemu.devices.zsmalloc import ZsPool
from blockemu.policies.compression import (
    DeviceSignals,
    PageSignals,
    PolicySettings,
    create_policy,
)
from blockemu.store import Store
from blockemu.store.file import ByteChunks
from blockemu.timing import UnitTimeline

# ZRAM_PRIMARY_COMP + up to three recompression algorithms (ZRAM_MAX_COMPS = 4).
MAX_PRIORITIES = 4
NS_PER_S = 1_000_000_000
# "busy" = queued CPU work per CPU over this horizon (see DeviceSignals.busy).
BUSY_HORIZON_NS = 200_000
# Pages the background recompression handles per background_step.
RECOMPRESS_STEP_PAGES = 64

SAME, COMPRESSED, HUGE = 0, 1, 2
KIND_NAMES = {SAME: "same", COMPRESSED: "compressed", HUGE: "huge"}

ATTRIBUTES = (
    "comp_algorithm", "recomp_algorithm", "algorithm_params", "idle", "recompress", "mm_stat", "io_stat",
    "mem_limit", "mem_used_max", "compact", "disksize", "initstate",
)
READABLE = ("comp_algorithm", "recomp_algorithm", "mm_stat", "io_stat", "disksize", "initstate")
WRITABLE = ("comp_algorithm", "recomp_algorithm", "algorithm_params", "idle", "recompress", "mem_limit",
            "mem_used_max", "compact")


class ZramValueError(ValueError):
    """A malformed or refused attribute write (the kernel's -EINVAL)."""


@dataclass(slots=True)
class PageEntry:
    kind: int
    # Algorithm priority used (-1 for same and huge pages), and the codec.
    priority: int = -1
    codec: Codec | None = None
    data: bytes | None = None  # compressed bytes, or the raw page if huge
    pattern: bytes = b""  # the 8-byte word of a same page
    handle: int = 0  # pool object, 0 for same pages
    size: int = 0  # bytes counted in compr_data_size
    idle: bool = False
    last_access_ns: int = 0
    reads: int = 0
    last_read_ns: int | None = None
    probe_ratio: float = 1.0
    # Recompression already failed to shrink it (ZRAM_INCOMPRESSIBLE).
    incompressible: bool = False


@dataclass(slots=True)
class StagedPage:
    data: bytes
    priority: int
    codec: Codec
    generation: int
    probe_ratio: float
    reads: int
    last_read_ns: int | None
    in_flight: bool = False


@dataclass
class CompressionBatch:
    """Staged pages in one contiguous buffer, one codec each; ``run`` compresses them."""

    indices: list[int]
    generations: list[int]
    codecs: list[Codec]
    buffer: bytearray
    results: list[tuple[bytes, int]] | None = None

    def run(self, executor: Executor | None = None, threads: int = 1) -> None:
        """Pure CPU work: safe outside the model lock, on any thread."""
        view = memoryview(self.buffer)
        if executor is None:
            self.results = InlineBatchCompressor().compress_batch(view, self.codecs)
        else:
            self.results = ThreadPoolBatchCompressor(executor, threads).compress_batch(view, self.codecs)


@dataclass
class CodecCounters:
    compress_pages: int = 0
    decompress_pages: int = 0
    compress_cpu_ns: int = 0
    decompress_cpu_ns: int = 0
    compress_modeled_ns: int = 0
    decompress_modeled_ns: int = 0


@dataclass
class ZramStats:
    failed_reads: int = 0
    failed_writes: int = 0
    notify_free: int = 0
    huge_pages_since: int = 0
    mem_used_max_pages: int = 0
    recompressed_pages: int = 0
    recompress_attempts: int = 0
    staged_reads: int = 0
    backpressure_batches: int = 0
    async_batches: int = 0
    stale_results: int = 0
    codecs: dict[str, CodecCounters] = field(default_factory=dict)

    def codec(self, key: str) -> CodecCounters:
        counters = self.codecs.get(key)
        if counters is None:
            counters = self.codecs[key] = CodecCounters()
        return counters


def same_pattern(page: bytes) -> bytes | None:
    """The word a page repeats, if it is filled with one 8-byte word (zram's same-element check)."""
    word = page[:8]
    return word if word * (PAGE // 8) == page else None


def probe_ratio(page: bytes) -> float:
    """A cheap compressibility estimate: fast LZ4 on two 512-byte samples."""
    sample = page[:512] + page[2048:2560]
    return len(PROBE_CODEC.compress(sample)) / len(sample)


PROBE_CODEC = Codec("lz4", 8)


def parse_kernel_args(text: str, allowed: tuple[str, ...], attribute: str) -> dict[str, str]:
    """``key=value key=value`` as the kernel's next_arg() splits it; every value non-empty."""
    args: dict[str, str] = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if not sep or not value:
            raise ZramValueError(f"{attribute}: expected key=value, got {token!r}; keys: {', '.join(allowed)}")
        if key not in allowed:
            raise ZramValueError(f"{attribute}: unknown key {key!r}; allowed: {', '.join(allowed)}")
        if key in args:
            raise ZramValueError(f"{attribute}: {key} given twice")
        args[key] = value
    return args


def parse_unsigned(value: str, what: str) -> int:
    if not (value.isascii() and value.isdigit()):  # "²".isdigit() is true, int("²") fails
        raise ZramValueError(f"{what} must be a non-negative decimal integer, got {value!r}")
    return int(value)


def memparse(text: str, what: str) -> int:
    """The kernel's memparse: a number with an optional K, M, G, T suffix."""
    value = text.strip()
    multiplier = 1
    if value and value[-1] in "kKmMgGtT":
        multiplier = 1024 ** ("kmgt".index(value[-1].lower()) + 1)
        value = value[:-1]
    try:
        number = int(value, 0)
    except ValueError:
        raise ZramValueError(f"{what} must be bytes with an optional K, M, G or T suffix, got {text.strip()!r}") \
            from None
    if number < 0:
        raise ZramValueError(f"{what} must be >= 0, got {text.strip()!r}")
    return number * multiplier


class ZramDevice:
    kind = "zram"

    def __init__(self, config: Config, store: Store) -> None:
        zram = config.zram
        self.config = config
        self.name = config.device.name
        self.size_bytes = config.capacity_bytes
        self.pages = self.size_bytes // PAGE
        self.capabilities = Capabilities(data_in_model=True)
        # Bytes live compressed in the page table: the store holds none of
        # them (a file store keeps the checkpoints of snapshot_contents), but
        # it is the device's to close (create_device opened it).
        self.store = store
        self.realtime = config.timing.mode == "realtime"
        self.pool = ZsPool()
        self.entries: dict[int, PageEntry] = {}
        self.staging: OrderedDict[int, StagedPage] = OrderedDict()
        self._untaken = 0  # staged pages no job has taken
        self._generation = 0
        self.stats = ZramStats()
        self.limit_pages = zram.mem_limit_mib * 256
        self.algorithms: list[Codec | None] = [None] * MAX_PRIORITIES
        self.algorithms[0] = Codec(zram.comp_algorithm, zram.comp_level or None)
        for priority, text in enumerate(filter(None, (s.strip() for s in zram.recomp_algorithms.split(","))), 1):
            name, _, level = text.partition(":")
            self.algorithms[priority] = Codec(name, int(level) if level else None)
        self.cost_model = CostModel(parse_cost_overrides(zram.cost_us))
        for codec in self.algorithms:
            if codec is not None:
                self.cost_model.add(codec)
        self.policy = create_policy(zram.policy, PolicySettings(
            idle_after_s=zram.idle_recompress_after_s, hot_reads=zram.hot_reads, hot_window_s=zram.hot_window_s,
            incompressible_ratio=zram.incompressible_ratio, busy_threshold=zram.busy_threshold))
        self.cpus = UnitTimeline(zram.cpu_units)
        self.async_workers = zram.async_workers
        self.async_units = min(zram.async_workers, zram.cpu_units)
        self.staging_pages = zram.staging_pages
        self.batch_pages = zram.batch_pages
        self.offload_threads = zram.async_workers
        # Modeled completion times of staged pages' compression (a min-heap).
        self._modeled_staged: list[int] = []
        self.overhead_ns = int(zram.request_overhead_us * 1000)
        self.copy_ns = int(zram.page_copy_us * 1000)
        # Pages eligible for background recompression, oldest access first.
        self._idle_candidates: OrderedDict[int, None] = OrderedDict()
        self._now = 0  # latest modeled time seen; `idle N` ages pages against it
        # Stored pages per algorithm key (or "same"/"huge") and the bytes they
        # count in compr_data_size, kept as entries come and go.
        self._pages_by_key: dict[str, int] = {}
        self._stored_bytes = 0
        # Asks the runtime to keep the serving process out of reclaim (swap use).
        self.lock_memory = zram.lock_memory

    # ------------------------------------------------------------- helpers
    @property
    def max_priority(self) -> int:
        return max(p for p, codec in enumerate(self.algorithms) if codec is not None)

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size_bytes:
            raise out_of_range(offset, length, self.size_bytes)

    def _seen(self, now_ns: int) -> None:
        if now_ns > self._now:
            self._now = now_ns

    def busy(self, now_ns: int) -> float:
        backlog = sum(max(0, until - now_ns) for until in self.cpus.busy_until)
        return backlog / (self.cpus.units * BUSY_HORIZON_NS)

    def _signals(self, now_ns: int) -> DeviceSignals:
        return DeviceSignals(now_ns=now_ns, busy=self.busy(now_ns), max_priority=self.max_priority)

    def _occupy_cpu(self, now_ns: int, cost_ns: int, units: int | None = None) -> int:
        limit = self.cpus.units if units is None else units
        unit = min(range(limit), key=lambda u: self.cpus.busy_until[u])
        return self.cpus.occupy_one(now_ns, unit, cost_ns)

    def _cost(self, measured_ns: int, modeled_ns: int) -> int:
        return measured_ns if self.realtime else modeled_ns

    # --------------------------------------------------------- page access
    def _page_bytes(self, index: int, count_read: bool = False) -> tuple[bytes, int]:
        """Current contents of a page and the cost of getting them (decompression)."""
        staged = self.staging.get(index)
        if staged is not None:
            if count_read:
                self.stats.staged_reads += 1
            return staged.data, self.copy_ns
        entry = self.entries.get(index)
        if entry is None:
            return bytes(PAGE), 0
        if entry.kind == SAME:
            return entry.pattern * (PAGE // 8), self.copy_ns
        if entry.kind == HUGE:
            assert entry.data is not None
            return entry.data, self.copy_ns
        assert entry.codec is not None and entry.data is not None
        start = time.thread_time_ns()
        page = entry.codec.decompress(entry.data)
        measured = time.thread_time_ns() - start
        modeled = self.cost_model.decompress_ns(entry.codec)
        counters = self.stats.codec(entry.codec.key)
        counters.decompress_pages += 1
        counters.decompress_cpu_ns += measured
        counters.decompress_modeled_ns += modeled
        return page, self._cost(measured, modeled)

    def _touch(self, index: int, now_ns: int, read: bool) -> None:
        entry = self.entries.get(index)
        staged = self.staging.get(index)
        if read:
            if staged is not None:
                staged.reads += 1
                staged.last_read_ns = now_ns
            elif entry is not None:
                entry.reads += 1
                entry.last_read_ns = now_ns
        if entry is not None and index not in self.staging:
            entry.idle = False
            entry.last_access_ns = now_ns
            if entry.kind != SAME:
                self._idle_candidates[index] = None
                self._idle_candidates.move_to_end(index)

    # ------------------------------------------------------------ data path
    def read(self, offset: int, buf: memoryview, now_ns: int) -> int:
        length = len(buf)
        self._check(offset, length)
        self._seen(now_ns)
        cost = self.overhead_ns
        position = 0
        try:
            while position < length:
                index, within = divmod(offset + position, PAGE)
                take = min(PAGE - within, length - position)
                page, page_cost = self._page_bytes(index, count_read=True)
                buf[position : position + take] = page[within : within + take]
                cost += page_cost
                self._touch(index, now_ns, read=True)
                position += take
        except CodecError as err:
            self.stats.failed_reads += 1
            raise DeviceError(errno.EIO, str(err)) from None
        if cost == self.overhead_ns:
            return now_ns + cost
        return self._occupy_cpu(now_ns, cost)

    def _new_pages(self, offset: int, data: memoryview) -> tuple[list[tuple[int, bytes]], int]:
        """Whole new page contents for a write, patching partial pages; and the read cost."""
        pages: list[tuple[int, bytes]] = []
        cost = 0
        length = len(data)
        position = 0
        while position < length:
            index, within = divmod(offset + position, PAGE)
            take = min(PAGE - within, length - position)
            if take == PAGE:
                pages.append((index, bytes(data[position : position + PAGE])))
            else:
                old, read_cost = self._page_bytes(index)
                cost += read_cost
                patched = bytearray(old)
                patched[within : within + take] = data[position : position + take]
                pages.append((index, bytes(patched)))
            position += take
        return pages, cost

    def write(self, offset: int, data: memoryview, fua: bool, now_ns: int) -> int:
        self._check(offset, len(data))
        self._seen(now_ns)
        if not len(data):
            return now_ns + self.overhead_ns
        try:
            pages, read_cost = self._new_pages(offset, data)
        except CodecError as err:
            self.stats.failed_writes += 1
            raise DeviceError(errno.EIO, str(err)) from None
        if self.async_workers and not fua:
            return self._write_async(pages, read_cost, now_ns)
        return self._write_sync(pages, read_cost, now_ns)

    def _choose(self, index: int, page: bytes, now_ns: int) -> tuple[int, Codec, float, int, int | None]:
        """(priority, codec, probe ratio, reads, last read) for a page about to be compressed."""
        entry = self.entries.get(index)
        staged = self.staging.get(index)
        if staged is not None:
            reads, last_read = staged.reads, staged.last_read_ns
        elif entry is not None:
            reads, last_read = entry.reads, entry.last_read_ns
        else:
            reads, last_read = 0, None
        ratio = probe_ratio(page)
        signals = PageSignals(reads=reads, last_read_ns=last_read, probe_ratio=ratio)
        priority = self.policy.write_priority(signals, self._signals(now_ns))
        codec = self.algorithms[priority] if 0 <= priority < MAX_PRIORITIES else None
        if codec is None:
            raise RuntimeError(f"policy {self.policy.name} chose priority {priority}, which has no algorithm")
        return priority, codec, ratio, reads, last_read

    def _compress(self, codec: Codec, page: bytes) -> tuple[bytes, int, int]:
        start = time.thread_time_ns()
        compressed = codec.compress(page)
        measured = time.thread_time_ns() - start
        return compressed, measured, self.cost_model.compress_ns(codec)

    def _account_compress(self, codec: Codec, measured: int, modeled: int) -> None:
        counters = self.stats.codec(codec.key)
        counters.compress_pages += 1
        counters.compress_cpu_ns += measured
        counters.compress_modeled_ns += modeled

    def _build_entry(self, index: int, page: bytes, priority: int, codec: Codec | None, compressed: bytes | None,
                     ratio: float, reads: int, last_read: int | None, now_ns: int) -> PageEntry:
        pattern = same_pattern(page)
        if pattern is not None:
            entry = PageEntry(SAME, pattern=pattern)
        elif codec is None or compressed is None or len(compressed) >= self.pool.huge_class_size:
            entry = PageEntry(HUGE, data=page, size=PAGE)
        else:
            entry = PageEntry(COMPRESSED, priority=priority, codec=codec, data=compressed, size=len(compressed))
        entry.probe_ratio = ratio
        entry.reads = reads
        entry.last_read_ns = last_read
        entry.last_access_ns = now_ns
        return entry

    def _install(self, index: int, entry: PageEntry) -> None:
        """Replace a page's entry; the new object is allocated before the old is freed, as zram does."""
        if entry.kind != SAME:
            entry.handle = self.pool.malloc(entry.size)
        if entry.kind == HUGE:
            self.stats.huge_pages_since += 1
        self._free(index)
        self.entries[index] = entry
        self._account(entry, +1)
        if entry.kind != SAME:
            self._idle_candidates[index] = None
            self._idle_candidates.move_to_end(index)
        self._note_mem_used()

    def _free(self, index: int) -> bool:
        entry = self.entries.pop(index, None)
        self._idle_candidates.pop(index, None)
        if entry is None:
            return False
        self._account(entry, -1)
        if entry.handle:
            self.pool.free(entry.handle)
        return True

    def _account(self, entry: PageEntry, sign: int) -> None:
        """Keep per-kind counts and compr_data_size current, so that mm_stat costs O(1) to read."""
        key = entry.codec.key if entry.kind == COMPRESSED and entry.codec else KIND_NAMES[entry.kind]
        self._pages_by_key[key] = self._pages_by_key.get(key, 0) + sign
        if not self._pages_by_key[key]:
            del self._pages_by_key[key]
        self._stored_bytes += sign * entry.size

    def _note_mem_used(self) -> None:
        used = self.mem_used_pages
        if used > self.stats.mem_used_max_pages:
            self.stats.mem_used_max_pages = used

    def _over_limit(self, extra_pages: int) -> bool:
        return bool(self.limit_pages) and self.mem_used_pages + extra_pages > self.limit_pages

    def _enospc(self, extra_pages: int) -> DeviceError:
        self.stats.failed_writes += 1
        return DeviceError(
            errno.ENOSPC,
            f"zram mem_limit reached: {self.mem_used_pages * PAGE} bytes used + {extra_pages * PAGE} needed "
            f"> mem_limit {self.limit_pages * PAGE}",
        )

    def _write_sync(self, pages: list[tuple[int, bytes]], read_cost: int, now_ns: int) -> int:
        built: list[tuple[int, PageEntry]] = []
        cost = self.overhead_ns + read_cost
        for index, page in pages:
            if same_pattern(page) is not None:
                built.append((index, self._build_entry(index, page, -1, None, None, 0.0, 0, None, now_ns)))
                cost += self.copy_ns
                continue
            priority, codec, ratio, reads, last_read = self._choose(index, page, now_ns)
            compressed, measured, modeled = self._compress(codec, page)
            self._account_compress(codec, measured, modeled)
            cost += self._cost(measured, modeled)
            built.append((index, self._build_entry(index, page, priority, codec, compressed, ratio, reads,
                                                   last_read, now_ns)))
        # All-or-nothing: check the whole request against mem_limit first.
        extra = self.pool.pages_needed([e.size for _, e in built if e.kind != SAME])
        if self._over_limit(extra):
            raise self._enospc(extra)
        for index, entry in built:
            self._drop_staged(index)
            self._install(index, entry)
        return self._occupy_cpu(now_ns, cost)

    def _drop_staged(self, index: int) -> None:
        staged = self.staging.pop(index, None)
        if staged is not None and not staged.in_flight:
            self._untaken -= 1

    def _write_async(self, pages: list[tuple[int, bytes]], read_cost: int, now_ns: int) -> int:
        same: list[tuple[int, PageEntry]] = []
        to_stage: list[tuple[int, bytes]] = []
        for index, page in pages:
            if same_pattern(page) is not None:
                same.append((index, self._build_entry(index, page, -1, None, None, 0.0, 0, None, now_ns)))
            else:
                to_stage.append((index, page))
        new_staged = sum(1 for index, _ in to_stage if index not in self.staging)
        if self._over_limit(new_staged):
            raise self._enospc(new_staged)
        ack = now_ns + self.overhead_ns + read_cost + self.copy_ns * len(pages)
        # Modeled back-pressure: wait until enough staged pages are compressed.
        modeled = self._modeled_staged
        while modeled and modeled[0] <= now_ns:
            heapq.heappop(modeled)
        excess = len(modeled) + len(to_stage) - self.staging_pages
        if excess > 0:
            freed_at = heapq.nsmallest(min(excess, len(modeled)), modeled)
            if freed_at:
                ack = max(ack, freed_at[-1] + self.overhead_ns + self.copy_ns * len(pages))
        for index, entry in same:
            self._drop_staged(index)
            self._install(index, entry)
        compress_cost = 0
        for index, page in to_stage:
            priority, codec, ratio, reads, last_read = self._choose(index, page, now_ns)
            self._drop_staged(index)
            self._generation += 1
            self.staging[index] = StagedPage(page, priority, codec, self._generation, ratio, reads, last_read)
            self._untaken += 1
            compress_cost += self.cost_model.compress_ns(codec)
            stored = self.entries.get(index)
            if stored is not None:
                stored.idle = False
        if to_stage:
            done = self._occupy_cpu(ack, compress_cost, self.async_units)
            for _ in to_stage:
                heapq.heappush(modeled, done)
        self._note_mem_used()
        # Real back-pressure: keep the staging memory bounded even when the
        # executor lags (or there is none) by compressing in the writer.
        measured = 0
        while self._untaken > self.staging_pages:
            job = self.offload_take(now_ns)
            if job is None:
                break
            start = time.thread_time_ns()
            job.run()
            measured += time.thread_time_ns() - start
            self.offload_finish(job, now_ns)
            self.stats.backpressure_batches += 1
        if self.realtime and measured:
            ack = max(ack, now_ns + measured)
        return ack

    def trim(self, offset: int, length: int, now_ns: int) -> int:
        self._check(offset, length)
        self._seen(now_ns)
        # Only whole pages are freed: a partial discard is skipped, as zram does.
        first = -(-offset // PAGE)
        end = (offset + length) // PAGE
        for index in range(first, end):
            self._drop_staged(index)
            self._free(index)
        # zram_bio_discard counts every whole page it frees, whatever the page
        # held; counting only stored pages would also depend on how far the
        # asynchronous compression had got.
        self.stats.notify_free += max(0, end - first)
        return now_ns + self.overhead_ns

    def write_zeroes(self, offset: int, length: int, fua: bool, now_ns: int) -> int:
        """Whole pages are freed (they read back as zeros); partial pages are written with zeros."""
        self._check(offset, length)
        self._seen(now_ns)
        end = offset + length
        first = -(-offset // PAGE)
        last = end // PAGE
        if first >= last:
            return self.write(offset, memoryview(bytes(length)), fua, now_ns)
        done = now_ns + self.overhead_ns
        if offset < first * PAGE:
            done = max(done, self.write(offset, memoryview(bytes(first * PAGE - offset)), fua, now_ns))
        if last * PAGE < end:
            done = max(done, self.write(last * PAGE, memoryview(bytes(end - last * PAGE)), fua, now_ns))
        for index in range(first, last):
            self._drop_staged(index)
            self._free(index)
        return done

    def flush(self, now_ns: int) -> int:
        """Completes when the modeled workers have compressed every staged page.

        The runtime additionally waits until the real jobs are done
        (``offload_pending``), so that flush means "nothing left in staging".
        """
        self._seen(now_ns)
        pending = max(self._modeled_staged, default=now_ns)
        return max(now_ns, pending) + self.overhead_ns

    # ------------------------------------------------------ offload (async)
    def offload_pending(self) -> bool:
        return bool(self.staging)

    def offload_take(self, now_ns: int) -> CompressionBatch | None:
        """The oldest staged pages no job has taken, as one batch, or None."""
        if not self._untaken:
            return None
        indices: list[int] = []
        generations: list[int] = []
        codecs: list[Codec] = []
        buffer = bytearray()
        for index, staged in self.staging.items():
            if staged.in_flight:
                continue
            staged.in_flight = True
            indices.append(index)
            generations.append(staged.generation)
            codecs.append(staged.codec)
            buffer += staged.data
            if len(indices) == self.batch_pages:
                break
        self._untaken -= len(indices)
        self.stats.async_batches += 1
        return CompressionBatch(indices, generations, codecs, buffer)

    def offload_finish(self, job: CompressionBatch, now_ns: int) -> None:
        """Install a batch's results; pages rewritten or trimmed since it was taken are skipped."""
        self._seen(now_ns)
        assert job.results is not None, "offload_finish called before the job ran"
        for i, (index, generation) in enumerate(zip(job.indices, job.generations, strict=True)):
            compressed, measured = job.results[i]
            codec = job.codecs[i]
            self._account_compress(codec, measured, self.cost_model.compress_ns(codec))
            staged = self.staging.get(index)
            if staged is None or staged.generation != generation:
                self.stats.stale_results += 1
                continue
            del self.staging[index]
            entry = self._build_entry(index, staged.data, staged.priority, codec, compressed, staged.probe_ratio,
                                      staged.reads, staged.last_read_ns, now_ns)
            # The limit was checked when the page was staged (as a whole page);
            # a new zspage may still overshoot it by a few pages here.
            self._install(index, entry)

    def drain(self, now_ns: int) -> None:
        """Compress every staged page in the caller (tests, replay, a checkpoint), leaving staging empty.

        Pages a job has taken but not handed back are compressed here too:
        a checkpoint cannot wait for the executor, which needs the model
        lock to finish.  Their job's results then arrive stale and are
        dropped (the generation check in :meth:`offload_finish`).
        """
        while True:
            job = self.offload_take(now_ns)
            if job is None:
                break
            job.run()
            self.offload_finish(job, now_ns)
        taken = list(self.staging.items())
        if taken:
            job = CompressionBatch([index for index, _ in taken], [staged.generation for _, staged in taken],
                                   [staged.codec for _, staged in taken],
                                   bytearray(b"".join(staged.data for _, staged in taken)))
            job.run()
            self.offload_finish(job, now_ns)

    # --------------------------------------------------------- background
    def background_step(self, now_ns: int) -> int | None:
        """Policy-driven recompression of idle pages, a slice at a time."""
        self._seen(now_ns)
        idle_after = self.policy.idle_after_ns
        if idle_after is None or self.max_priority == 0:
            return None
        signals = self._signals(now_ns)
        if not self.policy.background_allowed(signals):
            return None
        cutoff = now_ns - idle_after
        cost = 0
        handled = 0
        while self._idle_candidates and handled < RECOMPRESS_STEP_PAGES:
            index = next(iter(self._idle_candidates))
            entry = self.entries[index]
            if entry.last_access_ns > cutoff:
                break
            del self._idle_candidates[index]
            handled += 1
            page_signals = PageSignals(entry.reads, entry.last_read_ns, entry.probe_ratio, entry.priority)
            target = self.policy.recompress_priority(page_signals, signals)
            if target is None or entry.incompressible:
                continue
            cost += self._recompress_page(index, entry, target, MAX_PRIORITIES, 0)
        if not handled:
            return None
        return self._occupy_cpu(now_ns, cost) if cost else now_ns

    def _recompress_page(self, index: int, entry: PageEntry, first_priority: int, end_priority: int,
                         threshold: int) -> int:
        """Try algorithms ``first_priority`` … ``end_priority - 1``; keep the first smaller result.

        Returns the cost spent.  As zram_recompress: the result must land in a
        smaller size class, below ``threshold`` if given, and below the huge
        size; if no algorithm manages that, the page is marked incompressible.
        """
        if entry.kind == SAME or index in self.staging:
            return 0
        if entry.kind == COMPRESSED and entry.priority >= first_priority:
            return 0
        page, cost = self._page_bytes(index)
        old_class = self.pool.class_index(entry.size)
        self.stats.recompress_attempts += 1
        for priority in range(first_priority, min(end_priority, MAX_PRIORITIES)):
            codec = self.algorithms[priority]
            if codec is None:
                continue
            compressed, measured, modeled = self._compress(codec, page)
            self._account_compress(codec, measured, modeled)
            cost += self._cost(measured, modeled)
            size = len(compressed)
            if size >= self.pool.huge_class_size or self.pool.class_index(size) >= old_class:
                continue
            if threshold and size >= threshold:
                continue
            if self._over_limit(self.pool.pages_needed([size])):
                return cost
            new = PageEntry(COMPRESSED, priority=priority, codec=codec, data=compressed, size=size,
                            idle=entry.idle, last_access_ns=entry.last_access_ns, reads=entry.reads,
                            last_read_ns=entry.last_read_ns, probe_ratio=entry.probe_ratio)
            new.handle = self.pool.malloc(size)
            self.pool.free(entry.handle)
            self._account(entry, -1)
            self.entries[index] = new
            self._account(new, +1)
            # A smaller object can still need a new zspage of its class: mem_used_max never falls behind.
            self._note_mem_used()
            self.stats.recompressed_pages += 1
            return cost
        entry.incompressible = True
        return cost

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

    # ------------------------------------------------------- sysfs view
    @property
    def mem_used_pages(self) -> int:
        return self.pool.total_pages + len(self.staging)

    def mm_stat_values(self) -> list[int]:
        # Staging is bounded (staging_pages + one batch), so this loop is short.
        staged_only = sum(1 for index in self.staging if index not in self.entries)
        same = self._pages_by_key.get("same", 0)
        huge = self._pages_by_key.get("huge", 0)
        compr = self._stored_bytes + PAGE * len(self.staging)
        return [
            (len(self.entries) + staged_only) * PAGE,  # orig_data_size
            compr,  # compr_data_size
            self.mem_used_pages * PAGE,  # mem_used_total
            self.limit_pages * PAGE,  # mem_limit
            self.stats.mem_used_max_pages * PAGE,  # mem_used_max
            same,  # same_pages
            self.pool.pages_compacted,  # pages_compacted
            huge,  # huge_pages
            self.stats.huge_pages_since,  # huge_pages_since
        ]

    def read_attribute(self, attribute: str) -> str:
        if attribute not in ATTRIBUTES:
            raise ZramValueError(f"unknown zram attribute {attribute!r}; allowed: {', '.join(ATTRIBUTES)}")
        if attribute not in READABLE:
            raise ZramValueError(f"{attribute} is write-only, as in sysfs")
        if attribute == "comp_algorithm":
            return self._available(self.algorithms[0])
        if attribute == "recomp_algorithm":
            return "".join(f"#{p}: {self._available(c)}" for p, c in enumerate(self.algorithms)
                           if p > 0 and c is not None)
        if attribute == "mm_stat":
            # mm_stat_show: "%8llu %8llu %8llu %8lu %8ld %8llu %8lu %8llu %8llu\n"
            return " ".join(f"{value:8d}" for value in self.mm_stat_values()) + "\n"
        if attribute == "io_stat":
            s = self.stats
            # io_stat_show: "%8llu %8llu 0 %8llu\n" (the 0 was invalid_io, retired)
            return f"{s.failed_reads:8d} {s.failed_writes:8d} 0 {s.notify_free:8d}\n"
        if attribute == "disksize":
            return f"{self.size_bytes}\n"
        return "1\n"  # initstate: the device is configured from the start

    @staticmethod
    def _available(selected: Codec | None) -> str:
        # zcomp_available_show: every backend, the selected one in brackets,
        # each followed by a space, then a newline.
        names = [f"[{n}]" if selected is not None and n == selected.name else n for n in CODEC_NAMES]
        return " ".join(names) + " \n"

    def write_attribute(self, attribute: str, text: str) -> None:
        """Apply a sysfs-style write; a malformed one raises ZramValueError and changes nothing."""
        if attribute not in ATTRIBUTES:
            raise ZramValueError(f"unknown zram attribute {attribute!r}; allowed: {', '.join(ATTRIBUTES)}")
        if attribute not in WRITABLE:
            raise ZramValueError(f"{attribute} is read-only, as in sysfs")
        value = text.strip()
        getattr(self, f"_store_{attribute}")(value)

    def _store_comp_algorithm(self, value: str) -> None:
        # The kernel refuses this once disksize is set (EBUSY); here pages keep
        # the codec they were written with, so switching on a live device is safe.
        if value not in CODEC_NAMES:
            raise ZramValueError(f"comp_algorithm: unknown algorithm {value!r}; allowed: {' '.join(CODEC_NAMES)}")
        codec = Codec(value)
        self.cost_model.add(codec)
        self.algorithms[0] = codec

    def _store_recomp_algorithm(self, value: str) -> None:
        args = parse_kernel_args(value, ("algo", "priority"), "recomp_algorithm")
        if "algo" not in args:
            raise ZramValueError("recomp_algorithm: algo= is required, e.g. 'algo=zstd priority=1'")
        priority = parse_unsigned(args.get("priority", "1"), "recomp_algorithm priority")
        if not 1 <= priority < MAX_PRIORITIES:
            raise ZramValueError(f"recomp_algorithm: priority must be 1..{MAX_PRIORITIES - 1}, got {priority}")
        if args["algo"] not in CODEC_NAMES:
            raise ZramValueError(f"recomp_algorithm: unknown algorithm {args['algo']!r}; "
                                 f"allowed: {' '.join(CODEC_NAMES)}")
        codec = Codec(args["algo"])
        self.cost_model.add(codec)
        self.algorithms[priority] = codec

    def _store_algorithm_params(self, value: str) -> None:
        args = parse_kernel_args(value, ("priority", "algo", "level", "dict"), "algorithm_params")
        if "dict" in args:
            raise ZramValueError("algorithm_params: dict= is not supported by this model")
        if "priority" in args:
            priority = parse_unsigned(args["priority"], "algorithm_params priority")
        elif "algo" in args:
            matches = [p for p, c in enumerate(self.algorithms) if c is not None and c.name == args["algo"]]
            if not matches:
                raise ZramValueError(f"algorithm_params: algorithm {args['algo']!r} is not configured")
            priority = matches[0]
        else:
            raise ZramValueError("algorithm_params: priority= or algo= is required")
        if not 0 <= priority < MAX_PRIORITIES or self.algorithms[priority] is None:
            raise ZramValueError(f"algorithm_params: no algorithm at priority {priority}")
        current = self.algorithms[priority]
        assert current is not None
        if "algo" in args and args["algo"] != current.name:
            raise ZramValueError(f"algorithm_params: priority {priority} is {current.name}, not {args['algo']}")
        if "level" not in args:
            raise ZramValueError("algorithm_params: level= is required (dict= is not supported)")
        try:
            level = int(args["level"])
            codec = Codec(current.name, level)
        except (ValueError, CodecError) as err:
            raise ZramValueError(f"algorithm_params: {err}") from None
        self.cost_model.add(codec)
        self.algorithms[priority] = codec

    def _store_idle(self, value: str) -> None:
        if value == "all":
            cutoff = None
        else:
            cutoff = self._now - parse_unsigned(value, "idle (seconds, or 'all')") * NS_PER_S
        for entry in self.entries.values():
            if cutoff is None or entry.last_access_ns <= cutoff:
                entry.idle = True

    def _store_recompress(self, value: str) -> None:
        args = parse_kernel_args(value, ("type", "max_pages", "threshold", "algo", "priority"), "recompress")
        want_idle = want_huge = False
        if "type" in args:
            kinds = {"idle": (True, False), "huge": (False, True), "huge_idle": (True, True)}
            if args["type"] not in kinds:
                raise ZramValueError(f"recompress: type must be idle, huge or huge_idle, got {args['type']!r}")
            want_idle, want_huge = kinds[args["type"]]
        max_pages = parse_unsigned(args["max_pages"], "recompress max_pages") if "max_pages" in args else None
        threshold = parse_unsigned(args.get("threshold", "0"), "recompress threshold")
        if threshold >= self.pool.huge_class_size:
            raise ZramValueError(f"recompress: threshold must be below {self.pool.huge_class_size}, got {threshold}")
        first, end = 1, MAX_PRIORITIES
        if "priority" in args:
            first = parse_unsigned(args["priority"], "recompress priority") or 1
            end = first + 1
        if "algo" in args:
            matches = [p for p, c in enumerate(self.algorithms) if p > 0 and c is not None and c.name == args["algo"]]
            if not matches:
                raise ZramValueError(f"recompress: {args['algo']!r} is not a configured recomp_algorithm")
            first, end = matches[0], matches[0] + 1
        if not any(self.algorithms[p] is not None for p in range(first, min(end, MAX_PRIORITIES))):
            raise ZramValueError(f"recompress: no recomp_algorithm at priority {first}"
                                 f"{'' if end == first + 1 else ' or above'}; set one with recomp_algorithm")
        done = 0
        cost = 0
        for index, entry in list(self.entries.items()):
            if max_pages is not None and done >= max_pages:
                break
            if entry.kind == SAME or entry.incompressible:
                continue
            if want_idle and not entry.idle:
                continue
            if want_huge and entry.kind != HUGE:
                continue
            if threshold and entry.size < threshold:
                continue
            cost += self._recompress_page(index, entry, first, end, threshold)
            done += 1
        if cost:
            self._occupy_cpu(self._now, cost)

    def _store_mem_limit(self, value: str) -> None:
        limit = memparse(value, "mem_limit")
        self.limit_pages = -(-limit // PAGE)

    def _store_mem_used_max(self, value: str) -> None:
        if value != "0":
            raise ZramValueError(f"mem_used_max accepts only 0 (reset to current usage), got {value!r}")
        self.stats.mem_used_max_pages = self.mem_used_pages

    def _store_compact(self, value: str) -> None:
        self.pool.compact()

    # ----------------------------------------------------------- control
    def snapshot(self) -> dict[str, Any]:
        values = self.mm_stat_values()
        names = ("orig_data_size", "compr_data_size", "mem_used_total", "mem_limit", "mem_used_max", "same_pages",
                 "pages_compacted", "huge_pages", "huge_pages_since")
        return {
            "comp_algorithm": self.algorithms[0].key if self.algorithms[0] else None,
            "recomp_algorithm": {str(p): c.key for p, c in enumerate(self.algorithms) if p > 0 and c is not None},
            "policy": self.policy.name,
            "mm_stat": dict(zip(names, values, strict=True)),
            "io_stat": {"failed_reads": self.stats.failed_reads, "failed_writes": self.stats.failed_writes,
                        "invalid_io": 0, "notify_free": self.stats.notify_free},
            "async_workers": self.async_workers,
            "staged_pages": len(self.staging),
            "huge_class_size": self.pool.huge_class_size,
            "cost_us": self.cost_model.as_text(),
        }

    def describe(self) -> dict[str, Any]:
        return {
            **describe_identity(self.name, self.kind, self.size_bytes, self.capabilities),
            "zram": self.snapshot(),
        }

    def api(self, method: str, path: list[str], body: bytes) -> Any:
        if not path or path[0] != "zram":
            raise ApiError(404, f"no such endpoint /api/v1/{'/'.join(path)}; zram has: zram, zram/<attribute>")
        rest = path[1:]
        if not rest:
            if method != "GET":
                raise ApiError(405, "use GET /api/v1/zram, or GET/PUT /api/v1/zram/<attribute>")
            return self.snapshot()
        if len(rest) != 1 or rest[0] not in ATTRIBUTES:
            raise ApiError(404, f"no zram attribute {'/'.join(rest)!r}; allowed: {', '.join(ATTRIBUTES)}")
        attribute = rest[0]
        if method == "GET":
            if attribute not in READABLE:
                raise ApiError(405, f"{attribute} is write-only, as in sysfs")
            return self.read_attribute(attribute)
        if method == "PUT":
            if attribute not in WRITABLE:
                raise ApiError(405, f"{attribute} is read-only, as in sysfs")
            try:
                text = body.decode("ascii")
            except UnicodeDecodeError:
                raise ApiError(400, f"{attribute}: value must be ASCII text") from None
            try:
                self.write_attribute(attribute, text)
            except ZramValueError as err:
                raise ApiError(400, str(err)) from None
            return self.snapshot()
        raise ApiError(405, f"{method} is not allowed on a zram attribute; use GET or PUT")

    # ----------------------------------------------------------- metrics
    def metrics(self) -> Iterator[MetricFamily]:
        values = self.mm_stat_values()
        gauges = (
            ("blockemu_zram_orig_data_bytes", "mm_stat orig_data_size: uncompressed bytes stored", values[0]),
            ("blockemu_zram_compr_data_bytes", "mm_stat compr_data_size: compressed bytes stored", values[1]),
            ("blockemu_zram_mem_used_bytes", "mm_stat mem_used_total: pool (and staging) memory", values[2]),
            ("blockemu_zram_mem_limit_bytes", "mm_stat mem_limit (0: none)", values[3]),
            ("blockemu_zram_mem_used_max_bytes", "mm_stat mem_used_max", values[4]),
            ("blockemu_zram_same_pages", "mm_stat same_pages", values[5]),
            ("blockemu_zram_huge_pages", "mm_stat huge_pages", values[7]),
            ("blockemu_zram_staged_pages", "Pages waiting in the asynchronous staging area", len(self.staging)),
        )
        for name, help_text, value in gauges:
            yield MetricFamily(name, "gauge", help_text, [({}, value)])
        counters = (
            ("blockemu_zram_pages_compacted", "mm_stat pages_compacted", values[6]),
            ("blockemu_zram_huge_pages_since", "mm_stat huge_pages_since", values[8]),
            ("blockemu_zram_failed_reads", "io_stat failed_reads", self.stats.failed_reads),
            ("blockemu_zram_failed_writes", "io_stat failed_writes (ENOSPC included)", self.stats.failed_writes),
            ("blockemu_zram_notify_free", "io_stat notify_free: whole pages discarded", self.stats.notify_free),
            ("blockemu_zram_recompressed_pages", "Pages recompressed to a smaller size",
             self.stats.recompressed_pages),
            ("blockemu_zram_staged_reads", "Reads served from the staging area", self.stats.staged_reads),
            ("blockemu_zram_backpressure_batches", "Batches the writer compressed because staging was full",
             self.stats.backpressure_batches),
        )
        for name, help_text, value in counters:
            yield MetricFamily(name, "counter", help_text, [({}, value)])
        per_codec = sorted(self.stats.codecs.items())
        yield MetricFamily("blockemu_zram_codec_pages", "counter", "Pages (de)compressed, by algorithm",
                           [({"algo": k, "op": op}, getattr(c, f"{op}_pages"))
                            for k, c in per_codec for op in ("compress", "decompress")])
        yield MetricFamily("blockemu_zram_cpu_seconds", "counter", "Measured CPU time of (de)compression",
                           [({"algo": k, "op": op}, getattr(c, f"{op}_cpu_ns") / 1e9)
                            for k, c in per_codec for op in ("compress", "decompress")])
        yield MetricFamily("blockemu_zram_modeled_cpu_seconds", "counter",
                           "Cost-model time of (de)compression (what virtual timing charges)",
                           [({"algo": k, "op": op}, getattr(c, f"{op}_modeled_ns") / 1e9)
                            for k, c in per_codec for op in ("compress", "decompress")])
        yield MetricFamily("blockemu_zram_stored_pages", "gauge", "Stored pages by algorithm (or same/huge)",
                           [({"algo": k}, v) for k, v in sorted(self.pages_by_algorithm().items())])
        yield MetricFamily("blockemu_zram_cost_model_seconds", "gauge", "Per-page cost model, by algorithm",
                           [({"algo": k, "op": "compress"}, c.compress_ns / 1e9)
                            for k, c in sorted(self.cost_model.costs.items())]
                           + [({"algo": k, "op": "decompress"}, c.decompress_ns / 1e9)
                              for k, c in sorted(self.cost_model.costs.items())])
        yield MetricFamily("blockemu_zram_cpu_busy_seconds", "counter", "Modeled busy time per compression CPU",
                           [({"cpu": str(u)}, ns / 1e9) for u, ns in enumerate(self.cpus.busy_ns)])

    def pages_by_algorithm(self) -> dict[str, int]:
        counts = dict(self._pages_by_key)
        if self.staging:
            counts["staged"] = len(self.staging)
        return counts

    def close(self) -> None:
        self.entries.clear()
        self._pages_by_key.clear()
        self._stored_bytes = 0
        self.staging.clear()
        self.store.close()
