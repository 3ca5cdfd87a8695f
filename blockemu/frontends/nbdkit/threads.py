"""Keep each nbdkit worker thread's Python thread state from one request to the next.

nbdkit's python plugin wraps every callback in ``PyGILState_Ensure`` /
``PyGILState_Release``.  Its worker threads are not Python threads, so each
Ensure creates a fresh thread state and each Release destroys it again: every
request allocates and frees a thread state and its frame stack (an mmap and a
munmap, whose TLB shootdown interrupts the other cores).  Measured with fio's
nbd engine on a 2-core machine, that churn is most of the server's CPU: a
trivial bytearray plugin spends 55-60 µs of CPU per 4 KiB write at QD16 with
it and about 8 µs without it (scripts/bench_nbd.py compares both).

:func:`keep_thread_state` takes one extra ``PyGILState_Ensure`` reference the
first time a worker thread runs Python.  nbdkit's own Release then only drops
the GIL and the thread state survives for the thread's next request.  The
reference is never released by the thread itself, so the states of threads
that have exited (nbdkit joins a connection's workers when it closes) are
collected here: whenever a new thread registers, states whose thread is gone
from ``/proc/self/task`` are cleared and deleted, as the interpreter does with
a daemon thread's state at exit.  Anything left is freed at interpreter
finalisation, which nbdkit only reaches after every connection is closed.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any

# Thread-state address -> native thread id, for every state kept alive.
_kept: dict[int, int] = {}
_kept_lock = threading.Lock()
_local = threading.local()


def _python_api() -> tuple[Any, Any, Any, Any] | None:
    try:
        api = ctypes.pythonapi
        ensure, get = api.PyGILState_Ensure, api.PyThreadState_Get
        clear, delete = api.PyThreadState_Clear, api.PyThreadState_Delete
    except (AttributeError, OSError):  # an interpreter that does not export its C API
        return None
    ensure.restype, ensure.argtypes = ctypes.c_int, []
    get.restype, get.argtypes = ctypes.c_void_p, []
    clear.restype, clear.argtypes = None, [ctypes.c_void_p]
    delete.restype, delete.argtypes = None, [ctypes.c_void_p]
    return ensure, get, clear, delete


_api = _python_api()
# The threading module's own registry of the threads it manages, by ident.
_python_threads: dict[int, threading.Thread] = getattr(threading, "_active", {})


def keep_thread_state() -> None:
    """Call first in every data-path callback; after a thread's first request it is one attribute read."""
    try:
        _local.kept  # noqa: B018 - the attribute's presence is the test
    except AttributeError:
        _register()


def _register() -> None:
    global _api
    _local.kept = True
    if _api is None:
        return
    if threading.get_ident() in _python_threads:
        # A thread the threading module started (or the main thread) frees
        # its own state when it ends, whatever its reference count: keeping
        # a pointer to it here would outlive it.  Only nbdkit's threads qualify.
        return
    ensure, get, _, _ = _api
    with _kept_lock:
        alive = _alive_thread_ids()
        if alive is None:
            # Without /proc the exited threads' states could never be freed:
            # do without keeping rather than leak a state per worker thread.
            _api = None
            return
        _collect_exited(alive)
        ensure()
        state = get()
        assert state is not None
        _kept[state] = threading.get_native_id()


def _alive_thread_ids() -> set[int] | None:
    try:
        return {int(name) for name in os.listdir("/proc/self/task")}
    except OSError:
        return None


def _collect_exited(alive: set[int]) -> None:
    """Free the kept states of threads not in ``alive``; called with ``_kept_lock`` held."""
    assert _api is not None
    _, _, clear, delete = _api
    for state, thread_id in list(_kept.items()):
        if thread_id not in alive:
            del _kept[state]
            clear(state)
            delete(state)


def kept_thread_states() -> int:
    """How many thread states are being kept (tests, diagnostics)."""
    with _kept_lock:
        return len(_kept)
