"""The baseline for scripts/bench_nbd.py: the least a python nbdkit plugin can do.

A bytearray, parallel thread model, no locking (the GIL serialises the copies).
With ``keep_thread_state=1`` it also keeps each nbdkit worker thread's Python
thread state between requests, as blockemu's plugin does
(blockemu/frontends/nbdkit/threads.py), so that the two pay the same frontend
cost and their ratio is the cost of the model alone.
"""

from collections.abc import Callable

import nbdkit  # only exists inside nbdkit

API_VERSION = 2
_size = 1024 * 1024 * 1024
_disk = bytearray(0)


def _no_op() -> None:
    pass


_keep_thread_state: Callable[[], None] = _no_op


def config(key: str, value: str) -> None:
    global _size, _keep_thread_state
    if key == "size":
        _size = int(value)
    elif key == "keep_thread_state":
        if value not in ("0", "1"):
            raise ValueError(f"keep_thread_state must be 0 or 1, got {value!r}")
        if value == "1":
            from blockemu.frontends.nbdkit.threads import keep_thread_state

            _keep_thread_state = keep_thread_state
    else:
        raise ValueError(f"unknown key {key!r}; allowed: size, keep_thread_state")


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
    _keep_thread_state()
    buf[:] = _disk[offset : offset + len(buf)]


def pwrite(h: int, buf: bytes, offset: int, flags: int) -> None:
    _keep_thread_state()
    _disk[offset : offset + len(buf)] = buf
