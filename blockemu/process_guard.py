"""Keep a serving process usable as the kernel's swap device.

A block device that backs swap is on the kernel's reclaim path: if the
server's own pages had to be swapped out, or the OOM killer picked it, the
kernel would wait on a device that waits on the kernel.  So the server locks
its memory (``mlockall`` with ``MCL_ONFAULT``, so that a large sparse mapping
is not populated up front, only locked once touched) and opts out of the OOM
killer (``oom_score_adj = -1000``).  It also declares itself an I/O flusher
(``PR_SET_IO_FLUSHER``, Linux ≥ 5.6, meant for user-space block drivers): its
allocations then never wait for swap-out to the device it serves, so memory
pressure cannot make it wait on itself.  The flag is per thread and inherited,
so it is set on the thread that later creates nbdkit's workers.  The client
side needs the same care: ``nbd-client -swap`` does it for the NBD client.
"""

from __future__ import annotations

import ctypes
import os

# <sys/mman.h>
MCL_CURRENT = 1
MCL_FUTURE = 2
MCL_ONFAULT = 4
OOM_SCORE_ADJ_MIN = -1000
# <linux/prctl.h>
PR_SET_IO_FLUSHER = 57


def protect_server_process(oom_score_adj_path: str = "/proc/self/oom_score_adj") -> list[str]:
    """Lock this process's memory and exempt it from the OOM killer; return what could not be done."""
    problems: list[str] = []
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0:
        err = ctypes.get_errno()
        problems.append(f"mlockall failed: {os.strerror(err)} (needs CAP_IPC_LOCK or a larger RLIMIT_MEMLOCK)")
    if libc.prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        problems.append(f"PR_SET_IO_FLUSHER failed: {os.strerror(err)} (needs CAP_SYS_RESOURCE, Linux >= 5.6)")
    try:
        with open(oom_score_adj_path, "w") as f:
            f.write(str(OOM_SCORE_ADJ_MIN))
    except OSError as err:
        problems.append(f"oom_score_adj {OOM_SCORE_ADJ_MIN} failed: {err.strerror} (needs CAP_SYS_RESOURCE)")
    return problems
