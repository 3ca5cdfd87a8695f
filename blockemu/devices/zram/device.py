"""A zram device: compressed RAM, page by page, in the manner of Linux zram.

Data path (4 KiB pages; partial-page writes read, patch and rewrite the page):

* A page filled with one repeated 8-byte word is a *same page*: only the word
  is kept, no pool memory (zram_same_page_write).
* Any other page is compressed with the algorithm its policy picks
  (:mod:`blockemu.devices.zram.policy`).  If the result reaches the pool's
  ``huge_class_size`` it is stored uncompressed as a *huge page*.
* Objects are accounted by :class:`~blockemu.devices.zram.zsmalloc.ZsPool`, so
  ``mem_used_total`` counts whole size-class slots and zspages.
* With ``mem_limit`` set, a write whose allocation would take the pool above
  it fails with EIO, as Linux's zram fails it (``failed_writes`` counts it),
  before anything of it is stored; the pages it would have replaced keep
  their old contents (the kernel stores a bio's pages up to the first that
  does not fit).

Asynchronous compression (``async_workers`` > 0) stages written pages and
compresses them in batches the runtime runs outside the model lock
(:mod:`blockemu.devices.zram.offload`).

Modeled time.  Compression and decompression run on ``cpu_units`` CPUs
(a :class:`~blockemu.timing.UnitTimeline`): a request's pages are processed
one after another on the least busy CPU, so background swap-out traffic
delays a foreground launch's decompression, as CPU contention does on a
phone.  Per-page costs are the calibrated :class:`~blockemu.devices.zram.codecs.CostModel`
in ``virtual`` mode (reproducible) and the measured CPU time in ``realtime``
mode.  Asynchronous compression is placed on the first ``async_workers``
CPUs at the model's cost; a write waits (in modeled time) while the modeled
staging area is full.  The CPU time really spent is always measured and
exported.

The device is assembled from parts, one concern each: the page table and
per-page work (:mod:`~blockemu.devices.zram.core`), asynchronous compression
(:mod:`~blockemu.devices.zram.offload`), the sysfs attributes and their HTTP
endpoint (:mod:`~blockemu.devices.zram.sysfs`) and persistence
(:mod:`~blockemu.devices.zram.persistence`); the data path, background
recompression and the metrics are here.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any

from blockemu.devices.base import DeviceError, MetricFamily, describe_identity
from blockemu.devices.zram.codecs import PAGE, CodecError
from blockemu.devices.zram.core import MAX_PRIORITIES, SAME, PageEntry, same_pattern
from blockemu.devices.zram.persistence import ZramPersistence
from blockemu.devices.zram.policy import PageSignals
from blockemu.devices.zram.sysfs import ZramAttributes

# Pages the background recompression handles per background_step.
RECOMPRESS_STEP_PAGES = 64


class ZramDevice(ZramAttributes, ZramPersistence):
    kind = "zram"

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
            raise self._limit_error(extra)
        for index, entry in built:
            self._drop_staged(index)
            self._install(index, entry)
        return self._occupy_cpu(now_ns, cost)

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

    # ----------------------------------------------------------- inspection
    def describe(self) -> dict[str, Any]:
        return {
            **describe_identity(self.name, self.kind, self.size_bytes, self.capabilities),
            "zram": self.snapshot(),
        }

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
            ("blockemu_zram_failed_writes", "io_stat failed_writes (mem_limit refusals included)",
             self.stats.failed_writes),
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
