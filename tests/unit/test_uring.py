"""blockemu's ctypes io_uring against the host kernel: NOPs, a READ, 128-byte SQEs."""

from __future__ import annotations

import ctypes
import os

import pytest

from blockemu.frontends.ublk.uring import IORING_OP_NOP, IORING_OP_READ, SINGLE_THREAD_FLAGS, IoUring
from tests.conftest import require


def _ring(entries: int, sqe128: bool, flags: int = 0) -> IoUring:
    try:
        return IoUring(entries, sqe128=sqe128, flags=flags)
    except OSError as err:
        require(False, f"io_uring on this kernel ({err})")
        raise


@pytest.mark.parametrize("sqe128", [False, True])
def test_nops_complete_with_their_user_data(sqe128: bool) -> None:
    with _ring(8, sqe128) as ring:
        # More than the SQ holds: prepare() submits when the ring is full.
        for n in range(20):
            ring.prepare(IORING_OP_NOP, -1, user_data=1000 + n)
        ring.submit()
        seen: list[int] = []
        while len(seen) < 20:
            seen += [c.user_data for c in ring.completions() if c.res == 0]
            if len(seen) < 20:
                ring.submit(wait_for=1)
        assert sorted(seen) == [1000 + n for n in range(20)]


@pytest.mark.parametrize("flags", [0, SINGLE_THREAD_FLAGS], ids=["shared", "single-thread"])
def test_read_of_an_eventfd_waits_for_a_write(flags: int) -> None:
    """Also with the ublk queue's flags: the completion is posted when the owner waits for it."""
    fd = os.eventfd(0)
    value = ctypes.c_uint64()
    try:
        with _ring(4, True, flags) as ring:
            ring.prepare(IORING_OP_READ, fd, 7, off=2**64 - 1, addr=ctypes.addressof(value), length=8)
            ring.submit()
            assert list(ring.completions()) == []
            os.eventfd_write(fd, 5)
            ring.submit(wait_for=1)
            [completion] = list(ring.completions())
            assert (completion.user_data, completion.res, value.value) == (7, 8, 5)
    finally:
        os.close(fd)


def test_command_payload_too_large_is_refused() -> None:
    with _ring(4, False) as ring, pytest.raises(ValueError):
        ring.prepare_uring_cmd(0, 0, bytes(32), user_data=1)
