"""The one small interface every store implements."""

from __future__ import annotations

from typing import Protocol


class Store(Protocol):
    size_bytes: int

    def read_into(self, offset: int, buf: memoryview) -> None: ...

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None: ...

    def zero(self, offset: int, length: int) -> None:
        """Make the range read back as zeros, releasing its memory where possible."""
        ...

    def flush(self) -> None: ...

    def close(self) -> None: ...
