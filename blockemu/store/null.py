"""A store that keeps nothing: for runs that need a model's time and state, not its bytes."""

from __future__ import annotations


class NullStore:
    def __init__(self, size_bytes: int) -> None:
        self.size_bytes = size_bytes

    def read_into(self, offset: int, buf: memoryview) -> None:
        """Leaves ``buf`` as it is: nothing was kept."""

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        pass

    def zero(self, offset: int, length: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
