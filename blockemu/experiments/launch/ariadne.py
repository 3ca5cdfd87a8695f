"""A reference hotness-aware policy after Ariadne (Liang et al., HPCA 2025, arXiv 2502.12826).

Ariadne's three techniques, as far as this model can express them with the
real zram model and nothing invented:

1. *Hotness-aware data organization*: an app's anonymous pages touched
   during its most recent launch are hot (Ariadne's observation: the data a
   relaunch uses is largely the same from one relaunch to the next); the
   others are cold.  Hot and cold pages live in separate zones — here two
   :class:`~blockemu.devices.zram.device.ZramDevice` instances sharing the
   same cores.
2. *Size-adaptive compression*: hot data is compressed for fast
   decompression, cold data for ratio.  Ariadne does this with LZ4 on small
   vs large chunks; the zram model compresses single pages, so the hot zone
   uses ``lz4`` and the cold zone ``zstd`` (the better-ratio codec the model
   has).  This is the part that differs from the paper.
3. *Proactive decompression*: when an app is launched, a helper thread
   decompresses its hot pages still in zram, in the order the last launch
   touched them, so that the launching thread finds them resident (or waits
   only for the rest of one page's decompression).
"""

from __future__ import annotations

from blockemu.devices.zram.device import ZramDevice
from blockemu.experiments.launch.storage import ZramSwap

HOT_SETTINGS = {"policy": "single", "comp_algorithm": "lz4"}
COLD_SETTINGS = {"policy": "single", "comp_algorithm": "zstd"}


class HotColdSwap:
    """Two zram zones behind one swap interface; a page goes to the zone its hotness names."""

    def __init__(self, hot: ZramDevice, cold: ZramDevice) -> None:
        # One set of cores for both zones, as on the phone.
        cold.cpus = hot.cpus
        self.zones = (ZramSwap(cold), ZramSwap(hot))
        self._zone_of: dict[int, int] = {}  # slot → 0 (cold) or 1 (hot)
        self.hot_writes = 0
        self.cold_writes = 0

    @property
    def devices(self) -> list[ZramDevice]:
        return [zone.device for zone in self.zones]

    def write(self, slot: int, page: bytes, now_ns: int, hot: bool = False) -> int:
        zone = int(hot)
        previous = self._zone_of.get(slot)
        if previous is not None and previous != zone:
            self.zones[previous].discard(slot, now_ns)
        self._zone_of[slot] = zone
        if hot:
            self.hot_writes += 1
        else:
            self.cold_writes += 1
        return self.zones[zone].write(slot, page, now_ns)

    def compressed_by(self, now_ns: int) -> int:
        return max(zone.compressed_by(now_ns) for zone in self.zones)

    def read(self, slot: int, now_ns: int) -> tuple[bytes, int]:
        return self.zones[self._zone_of[slot]].read(slot, now_ns)

    def discard(self, slot: int, now_ns: int) -> None:
        zone = self._zone_of.pop(slot, None)
        if zone is not None:
            self.zones[zone].discard(slot, now_ns)

    def mem_pages(self) -> int:
        return sum(zone.mem_pages() for zone in self.zones)

    def recompress_idle(self, now_ns: int, until_ns: int) -> int:
        return now_ns  # single-algorithm zones: nothing to recompress

    def mm_stat_values(self) -> list[int]:
        return [sum(values) for values in zip(*(zone.device.mm_stat_values() for zone in self.zones),
                                              strict=True)]
