"""Asynchronous compression (``async_workers`` > 0): staging, batches, back-pressure.

A written page is copied to a bounded *staging* area and the write
completes; staged pages are read from staging until a compressed copy
replaces them.  The model owns no threads: the runtime takes
:class:`CompressionBatch` jobs (``offload_take``), runs them on its executor
outside the model lock, and hands them back (``offload_finish``).  A result
whose page was rewritten meanwhile is dropped.
When staging is full of pages no job has taken yet, the writer compresses
the oldest batch itself (back-pressure).  Staged pages are memory too: each
counts as one page in ``mem_used_total`` and against ``mem_limit``.
"""

from __future__ import annotations

import heapq
import time
from concurrent.futures import Executor
from dataclasses import dataclass

from blockemu.devices.zram.codecs import Codec, InlineBatchCompressor, ThreadPoolBatchCompressor
from blockemu.devices.zram.core import PageEntry, StagedPage, ZramCore, same_pattern


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


class ZramOffload(ZramCore):
    """Staged writes, and the batches the runtime compresses outside the model lock."""

    # -------------------------------------------------------- staged writes
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
            raise self._limit_error(new_staged)
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
