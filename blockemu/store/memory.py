"""Sparse in-memory store: one anonymous private mapping of the whole device.

Untouched pages cost nothing (the kernel maps its zero page for reads), so an
8 GiB device holds only what was written.  Zeroing releases whole host pages
with MADV_DONTNEED, which makes them read back as zeros.
"""

from __future__ import annotations

import mmap

_HOST_PAGE = mmap.PAGESIZE
# <sys/mman.h> on Linux; the mmap module names it only from Python 3.13.
_MAP_NORESERVE = 0x4000


class MemoryStore:
    def __init__(self, size_bytes: int) -> None:
        if size_bytes <= 0:
            raise ValueError(f"size_bytes must be > 0, got {size_bytes}")
        self.size_bytes = size_bytes
        # NORESERVE: a large device in a small machine (or VM) must not be
        # refused for memory it may never use.
        self._map = mmap.mmap(-1, size_bytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE)
        self._view = memoryview(self._map)

    def read_into(self, offset: int, buf: memoryview) -> None:
        buf[:] = self._view[offset : offset + len(buf)]

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self._view[offset : offset + len(data)] = data

    def zero(self, offset: int, length: int) -> None:
        end = offset + length
        first = -(-offset // _HOST_PAGE) * _HOST_PAGE
        last = end // _HOST_PAGE * _HOST_PAGE
        if first < last:
            self._map.madvise(mmap.MADV_DONTNEED, first, last - first)
            self._view[offset:first] = bytes(first - offset)
            self._view[last:end] = bytes(end - last)
        else:
            self._view[offset:end] = bytes(length)

    def flush(self) -> None:
        """Memory is the medium: nothing to write back."""

    def close(self) -> None:
        self._view.release()
        self._map.close()
