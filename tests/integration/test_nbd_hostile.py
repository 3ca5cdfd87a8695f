"""Hostile NBD clients: random, unaligned, out-of-range and zero-length requests with random flags.

libnbd's strict mode is off, so it sends what the server must cope with.
Every request must be answered (data or an error), the server must stay up,
and every byte the hostile writes did not touch must match a reference.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import numpy as np
import pytest

from blockemu.control.client import ServedDevice

pytestmark = pytest.mark.integration
MIB = 1024 * 1024
SIZE = 64 * MIB
CONNECTIONS = 4
REGION = 8 * MIB  # each connection writes only in its own region; reads go anywhere
OPS_PER_CONNECTION = 400


class Region:
    """What a region must read back as: known bytes, and bytes whose content the protocol leaves open."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.data = np.zeros(REGION, dtype=np.uint8)
        self.unknown = np.zeros(REGION, dtype=bool)

    def wrote(self, offset: int, payload: bytes) -> None:
        lo = offset - self.start
        self.data[lo : lo + len(payload)] = np.frombuffer(payload, dtype=np.uint8)
        self.unknown[lo : lo + len(payload)] = False

    def zeroed(self, offset: int, length: int) -> None:
        lo = offset - self.start
        self.data[lo : lo + length] = 0
        self.unknown[lo : lo + length] = False

    def forget(self, offset: int, length: int) -> None:
        """A failed write or a trim: NBD does not say what those bytes now hold."""
        lo = max(0, offset - self.start)
        self.unknown[lo : max(lo, offset + length - self.start)] = True


class HostileClient:
    """One connection sending random requests; writes stay in its own region of the device."""

    def __init__(self, served: ServedDevice, index: int, seed: int, region: Region) -> None:
        import nbd as libnbd

        self.libnbd = libnbd
        self.index = index
        self.rng = random.Random(seed)
        self.region = region
        self.handle = served.connect()
        self.handle.set_strict_mode(0)  # send unaligned, oversized and badly flagged requests as they are

    def _length(self) -> int:
        rng = self.rng
        return rng.choice([0, 1, 511, 512, 4095, 4096, 4097, rng.randrange(0, 200_000)])

    def _flags(self) -> int:
        # FUA (1) is valid for writes, other bits are unknown to the protocol.
        return self.rng.choice([0, 0, 0, self.libnbd.CMD_FLAG_FUA, 1 << self.rng.randrange(1, 16)])

    def step(self, answers: dict[str, int], failures: list[str]) -> None:
        rng, handle, region, libnbd = self.rng, self.handle, self.region, self.libnbd
        lo, hi = region.start, region.start + REGION
        op = rng.choice(["read", "read_anywhere", "write", "write_outside", "zero", "trim", "flush"])
        try:
            if op == "read":
                n = self._length()
                handle.pread(n, rng.randrange(lo, hi - n), self._flags() & ~libnbd.CMD_FLAG_FUA)
            elif op == "read_anywhere":
                handle.pread(self._length(), rng.choice([rng.randrange(0, SIZE), SIZE - 1, SIZE, SIZE + 4096,
                                                         2**62]), 0)
            elif op == "write":
                n = self._length()
                offset = rng.randrange(lo, hi - n)
                payload = rng.randbytes(n)
                try:
                    handle.pwrite(payload, offset, self._flags())
                except libnbd.Error:
                    region.forget(offset, n)
                    raise
                region.wrote(offset, payload)
            elif op == "write_outside":
                # Past the end of the device: must be refused, and touch nothing.
                handle.pwrite(b"x" * rng.choice([512, 4096]), rng.choice([SIZE, SIZE - 256, SIZE + 1]), 0)
                failures.append(f"connection {self.index}: a write past the end of the device was accepted")
            elif op in ("zero", "trim"):
                n = self._length()
                offset = rng.randrange(lo, hi - n)
                call = handle.zero if op == "zero" else handle.trim
                try:
                    call(n, offset, self._flags())
                except libnbd.Error:
                    region.forget(offset, n)
                    raise
                if op == "zero":
                    region.zeroed(offset, n)
                else:
                    region.forget(offset, n)
            else:
                handle.flush(self._flags())
            answers["data"] += 1
        except libnbd.Error as err:
            if not self.handle.aio_is_ready() and not self.handle.aio_is_processing():
                failures.append(f"connection {self.index}: the server dropped the connection: {err}")
            answers["error"] += 1


def test_hostile_clients_never_break_the_server_or_other_data(served: ServedDevice) -> None:
    import nbd as libnbd

    # Known data everywhere first, so that a stray write anywhere shows.
    setup = served.connect()
    background = np.random.default_rng(1).integers(0, 256, SIZE, dtype=np.uint8).tobytes()
    for offset in range(0, SIZE, 8 * MIB):
        setup.pwrite(background[offset : offset + 8 * MIB], offset)
    setup.flush()
    regions = [Region(i * REGION) for i in range(CONNECTIONS)]
    for region in regions:
        region.data[:] = np.frombuffer(background[region.start : region.start + REGION], dtype=np.uint8)

    answers = {"data": 0, "error": 0}
    failures: list[str] = []
    # The hostile connections run at once, one thread each, while many more
    # connections are open with reads in flight; those are then dropped
    # without a clean NBD shutdown.
    clients = [HostileClient(served, i, 100 + i, regions[i]) for i in range(CONNECTIONS)]
    idle: list[Any] = []
    for _ in range(24):
        handle = served.connect()
        handle.aio_pread(libnbd.Buffer(4096), 0)
        idle.append(handle)
    counts = [{"data": 0, "error": 0} for _ in clients]

    def run(client: HostileClient, answered: dict[str, int]) -> None:
        for _ in range(OPS_PER_CONNECTION):
            client.step(answered, failures)

    threads = [threading.Thread(target=run, args=(client, counts[i]), daemon=True) for i, client in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not any(thread.is_alive() for thread in threads), "a request was never answered"
    for answered in counts:
        for kind, count in answered.items():
            answers[kind] += count
    idle.clear()  # freeing a libnbd handle closes its socket: no NBD_CMD_DISC, replies unread
    for client in clients:
        client.handle.shutdown()
    assert not failures, failures
    assert answers["data"] + answers["error"] == CONNECTIONS * OPS_PER_CONNECTION
    assert answers["error"] > 50 and answers["data"] > 500  # both kinds of answers really happened
    assert served.process is not None and served.process.poll() is None, "the server exited"

    check = served.connect()
    for region in regions:
        got = np.frombuffer(check.pread(REGION, region.start), dtype=np.uint8)
        known = ~region.unknown
        mismatched = np.flatnonzero(got[known] != region.data[known])
        assert not len(mismatched), f"region at {region.start}: {len(mismatched)} bytes differ"
    rest = bytes(check.pread(SIZE - CONNECTIONS * REGION, CONNECTIONS * REGION))
    assert rest == background[CONNECTIONS * REGION :], "bytes no hostile write touched changed"
    check.shutdown()
    device = served.control.device()
    assert device["io"]["write"]["errors"] >= 0 and device["queue_depth"]["current"] == 0
