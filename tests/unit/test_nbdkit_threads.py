"""keep_thread_state outside nbdkit: threads Python manages are left alone."""

from __future__ import annotations

import threading

from blockemu.frontends.nbdkit import threads as nbdkit_threads


def test_python_threads_are_not_kept() -> None:
    # Their states are freed by Python at thread exit; a kept pointer would dangle.
    before = nbdkit_threads.kept_thread_states()
    threads = [threading.Thread(target=nbdkit_threads.keep_thread_state) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    nbdkit_threads.keep_thread_state()  # the main thread too
    assert nbdkit_threads.kept_thread_states() == before
