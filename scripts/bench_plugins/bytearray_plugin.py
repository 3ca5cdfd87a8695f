"""The baseline for scripts/bench_nbd.py: the least a python nbdkit plugin can do.

A bytearray, parallel thread model, no locking (the GIL serialises the copies).
"""

import nbdkit  # only exists inside nbdkit

API_VERSION = 2
_size = 1024 * 1024 * 1024
_disk = bytearray(0)


def config(key: str, value: str) -> None:
    global _size
    if key != "size":
        raise ValueError(f"unknown key {key!r}; allowed: size")
    _size = int(value)


def get_ready() -> None:
    global _disk
    _disk = bytearray(_size)


def thread_model() -> int:
    return int(nbdkit.THREAD_MODEL_PARALLEL)


def open(readonly: bool) -> int:  # noqa: A001
    return 1


def get_size(h: int) -> int:
    return _size


def can_multi_conn(h: int) -> bool:
    return True


def pread(h: int, buf: bytearray, offset: int, flags: int) -> None:
    buf[:] = _disk[offset : offset + len(buf)]


def pwrite(h: int, buf: bytes, offset: int, flags: int) -> None:
    _disk[offset : offset + len(buf)] = buf
