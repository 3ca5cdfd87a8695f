"""The study's two storage devices, each the real model behind a page-sized adapter.

* :class:`ZramSwap`: the :class:`~blockemu.devices.zram.device.ZramDevice`
  as a swap device — one slot per anonymous page, written when reclaim
  swaps a page out, read and discarded on swap-in, discarded when its app is
  killed.  Asynchronous compression (``async_workers`` > 0): the pool's
  batches are run as soon as they are handed over (the workers keep up in
  real time), while the *modeled* time at which their compression is done
  (the device's ``flush``) is when the reclaimed frames are really free.
* :class:`UfsFiles`: the :class:`~blockemu.devices.ufs.device.UfsDevice`
  holding the apps' files, written once sequentially and then aged
  (fragmented) like a phone's storage; a file page that is neither in RAM
  nor in ZCACHE is read from it with its latency model.

Both are used only through the devices' public data-path API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from blockemu.config import config_from_mapping
from blockemu.devices.ufs.device import UfsDevice
from blockemu.devices.zram.codecs import PAGE
from blockemu.devices.zram.device import ZramDevice
from blockemu.stack import build
from blockemu.store import MemoryStore
from blockemu.store.null import NullStore


class SwapDevice(Protocol):
    # ``hot``: the page was used by its app's last launch (only a
    # hotness-aware swap, ariadne.HotColdSwap, looks at it).
    def write(self, slot: int, page: bytes, now_ns: int, hot: bool = False) -> int: ...

    def compressed_by(self, now_ns: int) -> int: ...

    def read(self, slot: int, now_ns: int) -> tuple[bytes, int]: ...

    def discard(self, slot: int, now_ns: int) -> None: ...

    def mem_pages(self) -> int: ...


class FileStorage(Protocol):
    def read(self, page: int, now_ns: int, pages: int = 1) -> int: ...


class ZramSwap:
    def __init__(self, device: ZramDevice) -> None:
        self.device = device
        self._buf = bytearray(PAGE)
        self.asynchronous = device.async_workers > 0

    @property
    def devices(self) -> list[ZramDevice]:
        return [self.device]

    def write(self, slot: int, page: bytes, now_ns: int, hot: bool = False) -> int:
        return self.device.write(slot * PAGE, memoryview(page), False, now_ns)

    def compressed_by(self, now_ns: int) -> int:
        """When every page written so far is compressed (modeled); runs the handed-over batches."""
        if not self.asynchronous:
            return now_ns
        done = self.device.flush(now_ns)
        while True:
            job = self.device.offload_take(now_ns)
            if job is None:
                break
            job.run()
            self.device.offload_finish(job, now_ns)
        return done

    def read(self, slot: int, now_ns: int) -> tuple[bytes, int]:
        done = self.device.read(slot * PAGE, memoryview(self._buf), now_ns)
        return bytes(self._buf), done

    def discard(self, slot: int, now_ns: int) -> None:
        self.device.trim(slot * PAGE, PAGE, now_ns)

    def mem_pages(self) -> int:
        return self.device.mm_stat_values()[2] // PAGE

    def mm_stat_values(self) -> list[int]:
        return self.device.mm_stat_values()

    def recompress_idle(self, now_ns: int, until_ns: int) -> int:
        """Let the device's own background recompression run between ``now_ns`` and ``until_ns``."""
        t = now_ns
        while t < until_ns:
            done = self.device.background_step(t)
            if done is None:
                break
            t = max(done, t + 1)
        return t


def build_zram(pages: int, cores: int, settings: Mapping[str, object], cost_us: str) -> ZramDevice:
    capacity_mib = max(1, -(-pages * PAGE // 2**20))
    zram = {"cpu_units": cores, "cost_us": cost_us, "recomp_algorithms": "", **settings}
    config = config_from_mapping({"device": {"type": "zram", "name": "launch_zram", "capacity_mib": capacity_mib},
                                  "zram": zram}, "<experiment launch>")
    return build(config, layers=(), store=MemoryStore(config.capacity_bytes)).get(ZramDevice)


class UfsFiles:
    def __init__(self, device: UfsDevice, ready_ns: int) -> None:
        self.device = device
        self._buf = memoryview(bytearray(PAGE * 64))
        self.reads = 0
        # The device's time when the files were written: the study's time 0.
        self._offset = ready_ns

    def read(self, page: int, now_ns: int, pages: int = 1) -> int:
        """One read command of ``pages`` contiguous file pages (a fault and its read-around)."""
        self.reads += 1
        if pages * PAGE > len(self._buf):
            self._buf = memoryview(bytearray(pages * PAGE))
        return self.device.read(page * PAGE, self._buf[: pages * PAGE], now_ns + self._offset) - self._offset


def build_ufs(pages: int, fragmentation_percent: float, seed: int) -> UfsFiles:
    """A UFS device holding ``pages`` file pages, written in order, then aged."""
    capacity_mib = max(256, -(-pages * PAGE * 2 // 2**20))
    config = config_from_mapping({"device": {"type": "ufs", "name": "launch_ufs", "capacity_mib": capacity_mib}},
                                 "<experiment launch>")
    device = build(config, layers=(), store=NullStore(config.capacity_bytes)).get(UfsDevice)
    chunk = 256
    zeros = memoryview(bytes(chunk * PAGE))
    t = 0
    for first in range(0, pages, chunk):
        count = min(chunk, pages - first)
        t = device.write(first * PAGE, zeros[: count * PAGE], False, t)
    if fragmentation_percent > 0:
        device.age(fragmentation_percent, seed=seed)
    return UfsFiles(device, t)
