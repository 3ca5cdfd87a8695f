"""A test plugin for blockemu/frontends/nbdkit/threads.py: every read returns a status line.

The status, JSON padded with spaces to the read's length, says whether the
worker thread's Python state survived from an earlier request (a
threading.local set then is still there), how many states are being kept, and
how many threads the process has.
"""

import json
import os
import threading

import nbdkit  # only exists inside nbdkit

from blockemu.frontends.nbdkit.threads import keep_thread_state, kept_thread_states

API_VERSION = 2
_local = threading.local()


def thread_model() -> int:
    return int(nbdkit.THREAD_MODEL_PARALLEL)


def open(readonly: bool) -> int:  # noqa: A001
    return 1


def get_size(h: int) -> int:
    return 1024 * 1024


def pread(h: int, buf: bytearray, offset: int, flags: int) -> None:
    keep_thread_state()
    repeat = getattr(_local, "seen", False)
    _local.seen = True
    status = {
        "repeat": repeat,
        "thread": threading.get_native_id(),
        "kept": kept_thread_states(),
        "threads": len(os.listdir("/proc/self/task")),
    }
    buf[:] = json.dumps(status).encode().ljust(len(buf))
