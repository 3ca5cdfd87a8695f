"""The state of a zram device and what is done to one page.

:class:`ZramCore` holds the page table (a :class:`PageEntry` per stored
page), the staging area of asynchronous compression (:class:`StagedPage`),
the zsmalloc pool's accounting, the algorithms with their cost model, and
the compression CPUs' timeline.  It compresses, installs, frees and
recompresses one page at a time and keeps mm_stat's counts current as it
goes.  :class:`~blockemu.devices.zram.device.ZramDevice` is built on it: the
data path there, asynchronous compression in
:mod:`~blockemu.devices.zram.offload`, the attributes in
:mod:`~blockemu.devices.zram.sysfs`, saving and loading in
:mod:`~blockemu.devices.zram.persistence`.
"""

from __future__ import annotations

import errno
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from blockemu.config import Config
from blockemu.devices.base import Capabilities, DeviceError, out_of_range
from blockemu.devices.zram.codecs import PAGE, Codec, CostModel, parse_cost_overrides
from blockemu.devices.zram.policy import DeviceSignals, PageSignals, PolicySettings, create_policy
from blockemu.devices.zram.zsmalloc import ZsPool
from blockemu.store import Store
from blockemu.timing import UnitTimeline

# ZRAM_PRIMARY_COMP + up to three recompression algorithms (ZRAM_MAX_COMPS = 4).
MAX_PRIORITIES = 4
# What `reset` goes back to: CONFIG_ZRAM_DEF_COMP of Debian's and Android's kernels.
DEFAULT_COMP_ALGORITHM = "lz4"
# "busy" = queued CPU work per CPU over this horizon (see DeviceSignals.busy).
BUSY_HORIZON_NS = 200_000

SAME, COMPRESSED, HUGE = 0, 1, 2
KIND_NAMES = {SAME: "same", COMPRESSED: "compressed", HUGE: "huge"}


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


class ZramCore:
    """A zram device's state and its per-page operations, shared by the device's parts."""

    def __init__(self, config: Config, store: Store) -> None:
        zram = config.zram
        self.config = config
        self.name = config.device.name
        self.size_bytes = config.capacity_bytes
        # Served initialized, as if disksize had been written; `reset` sets it to 0
        # (zram_reset_device) and I/O fails until disksize is written again.
        self.disksize = self.size_bytes
        self.pages = self.size_bytes // PAGE
        self.capabilities = Capabilities(data_in_model=True)
        # Bytes live compressed in the page table: the store holds none of
        # them (a file store keeps the checkpoints of snapshot_contents), but
        # it is the device's to close (whoever built the device opened it).
        self.store = store
        self.realtime = config.timing.mode == "realtime"
        self.pool = ZsPool(config.zram.zsmalloc_chain_size)
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
        if offset < 0 or length < 0 or offset + length > self.disksize:
            if offset < 0 or length < 0 or offset + length > self.size_bytes:
                raise out_of_range(offset, length, self.size_bytes)
            # The kernel's zram has capacity disksize (0 after reset): the block
            # layer ends I/O beyond it with BLK_STS_IOERR.
            raise DeviceError(errno.EIO, f"request [{offset}, {offset + length}) is beyond zram disksize "
                                         f"{self.disksize}" + (" (reset; write disksize first)" if not self.disksize
                                                                 else ""))

    def _reset(self) -> None:
        """zram_reset_device(): every page freed, statistics zeroed, the default algorithm only, disksize 0."""
        self.staging.clear()  # jobs in flight find their pages gone: their results are dropped as stale
        self._untaken = 0
        self._modeled_staged.clear()
        self.entries.clear()
        self._idle_candidates.clear()
        self._pages_by_key.clear()
        self._stored_bytes = 0
        self.pool = ZsPool(self.pool.max_pages_per_zspage)
        self.stats = ZramStats()
        self.limit_pages = 0
        default = Codec(DEFAULT_COMP_ALGORITHM)
        self.algorithms = [default] + [None] * (MAX_PRIORITIES - 1)
        self.cost_model.add(default)
        self.disksize = 0

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

    # ----------------------------------------------------------- page table
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

    def _limit_error(self, extra_pages: int) -> DeviceError:
        # As Linux's zram: zram_write_page() returns -ENOMEM past mem_limit and
        # zram_bio_write() ends the bio with BLK_STS_IOERR, so users read EIO
        # (io_stat's failed_writes says why, and so does this message in the log).
        self.stats.failed_writes += 1
        return DeviceError(
            errno.EIO,
            f"zram mem_limit reached: {self.mem_used_pages * PAGE} bytes used + {extra_pages * PAGE} needed "
            f"> mem_limit {self.limit_pages * PAGE}",
        )

    def _drop_staged(self, index: int) -> None:
        staged = self.staging.pop(index, None)
        if staged is not None and not staged.in_flight:
            self._untaken -= 1

    @property
    def mem_used_pages(self) -> int:
        return self.pool.total_pages + len(self.staging)

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
        # "We touched this entry so mark it as non-IDLE" (zram_recompress).
        entry.idle = False
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
                            idle=False, last_access_ns=entry.last_access_ns, reads=entry.reads,
                            last_read_ns=entry.last_read_ns, probe_ratio=entry.probe_ratio)
            new.handle = self.pool.malloc(size)
            self.pool.free(entry.handle)
            self._account(entry, -1)
            self.entries[index] = new
            self._account(new, +1)
            # No _note_mem_used() here: the kernel updates max_used_pages only in
            # zram_write_page(), so a recompression's transient peak (the new
            # object allocated before the old is freed) is not in mem_used_max.
            self.stats.recompressed_pages += 1
            return cost
        entry.incompressible = True
        return cost
