"""nbdkit worker threads keep their Python thread state, and exited threads' states are freed.

Through real nbdkit and libnbd, with a test plugin whose reads report the
frontend's bookkeeping (tests/integration/plugins/threadstate_plugin.py).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blockemu.frontends.nbdkit.launcher import plugin_environment

pytestmark = pytest.mark.integration
PLUGIN = Path(__file__).parent / "plugins" / "threadstate_plugin.py"
THREADS = 8


@pytest.fixture
def socket_path(real_components: None, tmp_path: Path) -> Iterator[Path]:
    sock = tmp_path / "threads.sock"
    server = subprocess.Popen(["nbdkit", "--foreground", "--exit-with-parent", "--threads", str(THREADS),
                               "--unix", str(sock), "python", str(PLUGIN)],
                              env=plugin_environment(), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else "nbdkit exited"
            assert time.monotonic() < deadline, "nbdkit did not start"
            time.sleep(0.05)
        yield sock
        assert server.poll() is None, "nbdkit died"
    finally:
        server.terminate()
        server.wait(timeout=30)


def _statuses(sock: Path, reads: int, depth: int) -> list[dict[str, Any]]:
    """One connection; ``reads`` reads kept ``depth`` deep, so that several worker threads serve them."""
    import nbd as libnbd

    handle = libnbd.NBD()
    handle.connect_unix(str(sock))
    try:
        buffers = []
        for i in range(reads):
            while handle.aio_in_flight() >= depth:
                handle.poll(-1)
            buffer = libnbd.Buffer(512)
            handle.aio_pread(buffer, i * 512)
            buffers.append(buffer)
        while handle.aio_in_flight() > 0:
            handle.poll(-1)
        return [json.loads(bytes(buffer.to_bytearray()).decode()) for buffer in buffers]
    finally:
        handle.shutdown()


def test_a_worker_thread_keeps_its_state_between_requests(socket_path: Path) -> None:
    statuses = _statuses(socket_path, reads=300, depth=4)
    threads = {status["thread"] for status in statuses}
    first_visits = [status for status in statuses if not status["repeat"]]
    # Each thread starts with a fresh state once; without keeping, every request would.
    assert len(first_visits) == len(threads) <= THREADS


def test_states_of_closed_connections_threads_are_freed(socket_path: Path) -> None:
    kept = []
    for _ in range(25):
        statuses = _statuses(socket_path, reads=60, depth=THREADS)
        kept.append(max(status["kept"] for status in statuses))
        # Only live threads' states are kept: this connection's workers, and at
        # most the previous connection's still being joined.
        assert all(status["kept"] <= status["threads"] for status in statuses)
    # 25 connections used up to 200 worker threads; without freeing, kept would grow with them.
    assert max(kept) <= 2 * THREADS, kept
