"""Page codecs for the zram model, named as Linux zram names them.

Each :class:`Codec` compresses one 4 KiB page and decompresses it back with a
real library: ``lz4`` (lz4.block, fast mode; its level is LZ4's acceleration,
as the kernel's lz4 backend uses it), ``lz4hc`` (lz4.block high-compression
mode, levels 1–12) and ``zstd`` (zstandard, levels 1–22).  Frames are what
the kernel's backends write: raw LZ4 blocks, and zstd frames with the
content size and no checksum.

:class:`CostModel` is the per-codec service time used in ``virtual`` timing:
nanoseconds per page to compress and to decompress, measured once on a fixed
synthetic calibration corpus (see :func:`calibration_pages`) and overridable
from ``[zram] cost_us``, so that a run's modeled times do not depend on how
busy the host happened to be at each request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass

import lz4.block
import numpy as np
import zstandard

PAGE = 4096

# Kernel zram names (crypto API names) of the codecs this model implements,
# in the order the kernel lists its backends.
CODEC_NAMES = ("lz4", "lz4hc", "zstd")
# What "level" means per codec, its allowed range and the kernel's default
# (include/linux/lz4.h LZ4HC_DEFAULT_CLEVEL = 9; zstd's default level 3;
# lz4 acceleration 1 is LZ4's default).
LEVEL_RANGES = {"lz4": (1, 65537), "lz4hc": (1, 12), "zstd": (1, 22)}
DEFAULT_LEVELS = {"lz4": 1, "lz4hc": 9, "zstd": 3}


class CodecError(ValueError):
    """An unknown codec, a level out of range, or a corrupt compressed page."""


class Codec:
    """One algorithm at one level; compress and decompress single pages."""

    def __init__(self, name: str, level: int | None = None) -> None:
        if name not in CODEC_NAMES:
            raise CodecError(f"unknown algorithm {name!r}; allowed: {' '.join(CODEC_NAMES)}")
        low, high = LEVEL_RANGES[name]
        level = DEFAULT_LEVELS[name] if level is None else level
        if not low <= level <= high:
            raise CodecError(f"{name} level must be between {low} and {high}, got {level}")
        self.name = name
        self.level = level
        self._local = threading.local()  # zstd contexts are not thread-safe

    @property
    def key(self) -> str:
        """``name:level``, the key used by the cost model and in metrics."""
        return f"{self.name}:{self.level}"

    def __repr__(self) -> str:
        return f"Codec({self.name!r}, {self.level})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def _zstd(self) -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
        pair = getattr(self._local, "zstd", None)
        if pair is None:
            pair = (
                # As the kernel's zstd backend: zstd_get_params(level, PAGE_SIZE)
                # sets contentSizeFlag, so each frame carries the page's size
                # (and, being single-segment, no window descriptor); no checksum.
                zstandard.ZstdCompressor(level=self.level, write_content_size=True, write_checksum=False,
                                         write_dict_id=False),
                zstandard.ZstdDecompressor(),
            )
            self._local.zstd = pair
        return pair

    def compress(self, page: bytes | memoryview) -> bytes:
        if self.name == "lz4":
            return bytes(lz4.block.compress(page, mode="fast", acceleration=self.level, store_size=False))
        if self.name == "lz4hc":
            return bytes(lz4.block.compress(page, mode="high_compression", compression=self.level,
                                            store_size=False))
        return bytes(self._zstd()[0].compress(page))

    def decompress(self, data: bytes, size: int = PAGE) -> bytes:
        try:
            if self.name in ("lz4", "lz4hc"):
                out = bytes(lz4.block.decompress(data, uncompressed_size=size))
            else:
                out = bytes(self._zstd()[1].decompress(data, max_output_size=size))
        except (lz4.block.LZ4BlockError, zstandard.ZstdError) as err:
            raise CodecError(f"{self.name}: corrupt compressed page: {err}") from None
        if len(out) != size:
            raise CodecError(f"{self.name}: page decompressed to {len(out)} bytes, expected {size}")
        return out


def parse_codec(text: str) -> Codec:
    """``zstd`` or ``zstd:7`` → a codec; raises CodecError naming what is allowed."""
    name, _, level_text = text.strip().partition(":")
    if level_text:
        try:
            level = int(level_text)
        except ValueError:
            raise CodecError(f"level in {text!r} must be an integer") from None
        return Codec(name, level)
    return Codec(name)


# ----------------------------------------------------------------- cost model
@dataclass(frozen=True)
class CodecCost:
    compress_ns: int
    decompress_ns: int


def parse_cost_overrides(text: str) -> dict[str, CodecCost]:
    """``"lz4=2.5/0.8, zstd:3=30/7"`` → {key: cost}; microseconds per page, compress/decompress."""
    costs: dict[str, CodecCost] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        compress_text, slash, decompress_text = value.partition("/")
        if not sep or not slash:
            raise CodecError(f"{item!r}: expected ALGO[:LEVEL]=COMPRESS_US/DECOMPRESS_US, e.g. zstd:3=30/7")
        codec = parse_codec(name)
        try:
            compress_us, decompress_us = float(compress_text), float(decompress_text)
        except ValueError:
            raise CodecError(f"{item!r}: costs must be numbers of microseconds") from None
        if compress_us < 0 or decompress_us < 0:
            raise CodecError(f"{item!r}: costs must be >= 0")
        costs[codec.key] = CodecCost(int(compress_us * 1000), int(decompress_us * 1000))
    return costs


def calibration_pages(count: int = 48, seed: int = 12345) -> list[bytes]:
    """A fixed mix of page kinds a swap device sees: text, small integers, pointers, noise.

    Synthetic on purpose: the calibration must be the same on every host so
    that only the host's speed changes the calibrated costs.
    """
    rng = np.random.default_rng(seed)
    words = [bytes(rng.integers(97, 123, int(n), dtype=np.uint8)) for n in rng.integers(2, 10, 400)]
    pages: list[bytes] = []
    for i in range(count):
        kind = i % 4
        if kind == 0:  # text
            text = b" ".join(words[int(j)] for j in rng.integers(0, len(words), 900))
            pages.append(text[:PAGE].ljust(PAGE, b" "))
        elif kind == 1:  # small integers, as in arrays and counters
            pages.append(rng.integers(0, 1000, PAGE // 8, dtype=np.int64).tobytes())
        elif kind == 2:  # pointers into a few heaps, interleaved with zeros
            base = np.array([0x7F00_0000_0000, 0x5555_0000_0000], dtype=np.int64)
            pointers = base[rng.integers(0, 2, PAGE // 16)] + rng.integers(0, 1 << 20, PAGE // 16) * 16
            pages.append(np.stack([pointers, np.zeros_like(pointers)], axis=1).tobytes())
        else:  # already-compressed or encrypted data
            pages.append(rng.bytes(PAGE))
    return pages


_CALIBRATED: dict[str, CodecCost] = {}
_CALIBRATION_LOCK = threading.Lock()


def calibrate(codec: Codec, pages: Iterable[bytes] | None = None, repeats: int = 3) -> CodecCost:
    """Mean CPU time per page of ``codec`` on the calibration corpus, best of ``repeats``.

    Cached per process: the model calibrates once at start-up, not per device.
    """
    with _CALIBRATION_LOCK:
        cached = _CALIBRATED.get(codec.key)
        if cached is not None:
            return cached
        corpus = list(pages) if pages is not None else calibration_pages()
        compressed = [codec.compress(page) for page in corpus]  # warm-up, and inputs for decompression
        best_compress = best_decompress = float("inf")
        for _ in range(repeats):
            best_compress = min(best_compress, _cpu_time(lambda: [codec.compress(p) for p in corpus]))
            best_decompress = min(best_decompress, _cpu_time(lambda: [codec.decompress(c) for c in compressed]))
        cost = CodecCost(int(best_compress / len(corpus)), int(best_decompress / len(corpus)))
        _CALIBRATED[codec.key] = cost
        return cost


def _cpu_time(work: Callable[[], object]) -> float:
    start = time.thread_time_ns()
    work()
    return float(time.thread_time_ns() - start)


class CostModel:
    """Modeled ns per page for each codec: overrides first, else calibrated on this host."""

    def __init__(self, overrides: dict[str, CodecCost] | None = None) -> None:
        self.overrides = dict(overrides or {})
        self.costs: dict[str, CodecCost] = dict(self.overrides)

    def add(self, codec: Codec) -> CodecCost:
        cost = self.costs.get(codec.key)
        if cost is None:
            cost = self.costs[codec.key] = calibrate(codec)
        return cost

    def compress_ns(self, codec: Codec) -> int:
        return self.add(codec).compress_ns

    def decompress_ns(self, codec: Codec) -> int:
        return self.add(codec).decompress_ns

    def as_text(self) -> str:
        """The costs in ``[zram] cost_us`` syntax, to pin a calibration in a config file."""
        return ", ".join(
            f"{key}={cost.compress_ns / 1000:.2f}/{cost.decompress_ns / 1000:.2f}"
            for key, cost in sorted(self.costs.items())
        )


# ------------------------------------------------------------ batch back ends
# A batch is many pages in one contiguous buffer with one codec per page: the
# shape a GPU compressor (nvCOMP's batched API) takes.  The CPU back end
# splits it into contiguous slices, one per thread of the executor it is given;
# lz4 and zstandard release the GIL while they work.
CompressedPage = tuple[bytes, int]  # (compressed bytes, CPU ns spent)


def compress_slice(pages: memoryview, codecs: list[Codec]) -> list[CompressedPage]:
    results: list[CompressedPage] = []
    for i, codec in enumerate(codecs):
        start = time.thread_time_ns()
        data = codec.compress(pages[i * PAGE : (i + 1) * PAGE])
        results.append((data, time.thread_time_ns() - start))
    return results


class InlineBatchCompressor:
    """Compress a batch in the calling thread."""

    name = "inline"

    def compress_batch(self, pages: memoryview, codecs: list[Codec]) -> list[CompressedPage]:
        if len(pages) != len(codecs) * PAGE:
            raise ValueError(f"batch buffer holds {len(pages)} bytes, expected {len(codecs)} pages")
        return compress_slice(pages, codecs)


class ThreadPoolBatchCompressor:
    """Compress a batch on an executor's threads, one contiguous slice per thread."""

    name = "threads"

    def __init__(self, executor: Executor, threads: int) -> None:
        if threads <= 0:
            raise ValueError(f"threads must be > 0, got {threads}")
        self.executor = executor
        self.threads = threads

    def compress_batch(self, pages: memoryview, codecs: list[Codec]) -> list[CompressedPage]:
        if len(pages) != len(codecs) * PAGE:
            raise ValueError(f"batch buffer holds {len(pages)} bytes, expected {len(codecs)} pages")
        count = len(codecs)
        per_slice = max(1, -(-count // self.threads))
        futures = [
            self.executor.submit(compress_slice, pages[first * PAGE : (first + per_slice) * PAGE],
                                 codecs[first : first + per_slice])
            for first in range(0, count, per_slice)
        ]
        return [page for future in futures for page in future.result()]
