"""WriteBooster (UFS 3.1+, JESD220): an SLC buffer in front of TLC, with the Linux driver's sysfs names.

Host writes land in the SLC buffer at the SLC rate while it has room, and at
the TLC rate once it is full.  The buffer is emptied by *folding* (the spec's
"flush"): its data is read back and programmed to TLC, on the same dies as
host I/O.  This class keeps the accounting and the attributes; the device
charges the die time (blockemu/devices/ufs/device.py).

The attributes, as Documentation/ABI/testing/sysfs-driver-ufs names them
(checked against the document; the kernel's files live in the host
controller's folder, ``attributes/`` for the device attributes):

===================  =====  ===================================================
file                 mode   meaning
===================  =====  ===================================================
wb_on                rw     ``1``/``0``: WriteBooster on (fWriteBoosterEn)
enable_wb_buf_flush  rw     ``1``/``0``: fold when the command queue is empty
                            (fWriteBoosterBufferFlushEn)
wb_flush_threshold   rw     1–10, tenths of the buffer: below this much free
                            buffer the device folds even with flushing off
                            (the kernel keeps it powered to flush in hibern8)
wb_avail_buf         read   dAvailableWriteBoosterBufferSize: free buffer in
                            tenths, ``0x0000000A`` = 100%
wb_cur_buf           read   dCurrentWriteBoosterBufferSize, here in bytes
wb_flush_status      read   bWriteBoosterBufferFlushStatus: 0 idle, 1 in
                            progress, 3 completed
wb_life_time_est     read   bWriteBoosterBufferLifeTimeEst: 0x01 (0–10% used)
                            to 0x0A, 0x0B past the rated P/E cycles
===================  =====  ===================================================

The device attributes read as the kernel prints them (``0x%08X``); the three
host-side files print decimals.  Folding keeps the physical order of the log
(the FTL's PPNs do not change): the model charges its NAND work and counts
its programs in write amplification, but reads cost the same from SLC and TLC.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

import numpy as np

from blockemu.api import Attribute, AttributeGroup
from blockemu.devices.base import MetricFamily


class FlushStatus(enum.IntEnum):
    """bWriteBoosterBufferFlushStatus values (sysfs-driver-ufs)."""

    IDLE = 0
    IN_PROGRESS = 1
    STOPPED = 2
    COMPLETED = 3
    FAILED = 4


class WbValueError(ValueError):
    """A malformed WriteBooster attribute write."""


class WriteBooster:
    def __init__(self, buffer_bytes: int, enabled: bool, flush_enabled: bool, flush_threshold: int,
                 slc_pe_cycles: int) -> None:
        if buffer_bytes <= 0:
            raise ValueError(f"WriteBooster buffer must be > 0 bytes, got {buffer_bytes}")
        self.buffer_sectors = buffer_bytes // 4096
        self.enabled = enabled
        self.flush_enabled = flush_enabled
        self.flush_threshold = flush_threshold
        self.slc_pe_cycles = slc_pe_cycles
        self.used_sectors = 0  # host data in SLC, not yet folded
        self.flush_status = FlushStatus.IDLE
        # Counters (sectors).
        self.slc_sectors = 0
        self.tlc_direct_sectors = 0
        self.folded_sectors = 0

    # ------------------------------------------------------------- data path
    def admit(self, sectors: int) -> int:
        """Place ``sectors`` host sectors: return how many go to SLC (the rest go to TLC)."""
        if self.enabled:
            slc = min(sectors, self.buffer_sectors - self.used_sectors)
            self.used_sectors += slc
        else:
            slc = 0
        self.slc_sectors += slc
        self.tlc_direct_sectors += sectors - slc
        return slc

    def fold_wanted(self) -> bool:
        """Whether an idle device folds now (flushing on, or less free buffer than the threshold)."""
        return self.used_sectors > 0 and (self.flush_enabled or self.avail_tenths < self.flush_threshold)

    def fold(self, sectors: int) -> int:
        """Fold up to ``sectors`` from SLC to TLC; return how many."""
        take = min(sectors, self.used_sectors)
        self.used_sectors -= take
        self.folded_sectors += take
        self.flush_status = FlushStatus.COMPLETED if self.used_sectors == 0 else FlushStatus.IN_PROGRESS
        return take

    def note_stopped(self) -> None:
        """The device stopped folding with data left (flushing turned off or host I/O resumed)."""
        if self.flush_status is FlushStatus.IN_PROGRESS:
            self.flush_status = FlushStatus.STOPPED

    # ------------------------------------------------------------ attributes
    @property
    def avail_tenths(self) -> int:
        return (self.buffer_sectors - self.used_sectors) * 10 // self.buffer_sectors

    @property
    def life_time_est(self) -> int:
        rated = self.buffer_sectors * self.slc_pe_cycles
        return min(0x0B, 1 + self.slc_sectors * 10 // rated)

    def snapshot(self) -> dict[str, int]:
        return {
            "wb_on": int(self.enabled),
            "enable_wb_buf_flush": int(self.flush_enabled),
            "wb_flush_threshold": self.flush_threshold,
            "wb_avail_buf": self.avail_tenths,
            "wb_cur_buf": self.buffer_sectors * 4096,
            "wb_flush_status": int(self.flush_status),
            "wb_life_time_est": self.life_time_est,
            "buffer_used_bytes": self.used_sectors * 4096,
            "slc_written_bytes": self.slc_sectors * 4096,
            "tlc_direct_bytes": self.tlc_direct_sectors * 4096,
            "folded_bytes": self.folded_sectors * 4096,
        }

    def store_flag(self, attribute: str, value: str) -> None:
        # The kernel parses with kstrtouint and refuses values above 1 (-EINVAL).
        if value not in ("0", "1"):
            raise WbValueError(f"{attribute} accepts 0 or 1, got {value!r}")
        if attribute == "wb_on":
            self.enabled = value == "1"
        else:
            self.flush_enabled = value == "1"
            if not self.flush_enabled:
                self.note_stopped()

    def store_threshold(self, value: str) -> None:
        # wb_flush_threshold_store: 0 or more than UFS_WB_BUF_REMAIN_PERCENT(100) is -EINVAL.
        if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 10:
            raise WbValueError(f"wb_flush_threshold accepts 1 to 10 (tenths of the buffer), got {value!r}")
        self.flush_threshold = int(value)

    # ------------------------------------------------------------------ state
    def state_arrays(self) -> dict[str, np.ndarray]:
        return {"wb_state": np.array([self.used_sectors, int(self.enabled), int(self.flush_enabled),
                                      self.flush_threshold, int(self.flush_status)], dtype=np.int64)}

    def load_state_arrays(self, state: dict[str, np.ndarray]) -> None:
        used, enabled, flush, threshold, status = (int(v) for v in state["wb_state"].tolist())
        if not 0 <= used <= self.buffer_sectors:
            raise ValueError(f"saved WriteBooster buffer holds {used} sectors, this buffer {self.buffer_sectors}")
        self.used_sectors, self.enabled, self.flush_enabled = used, bool(enabled), bool(flush)
        self.flush_threshold, self.flush_status = threshold, FlushStatus(status)

    _COUNTERS = ("slc_sectors", "tlc_direct_sectors", "folded_sectors")

    def counter_arrays(self) -> dict[str, np.ndarray]:
        return {"wb_counters": np.array([getattr(self, n) for n in self._COUNTERS], dtype=np.int64)}

    def load_counter_arrays(self, state: dict[str, np.ndarray]) -> None:
        if "wb_counters" in state:
            for name, value in zip(self._COUNTERS, state["wb_counters"].tolist(), strict=True):
                setattr(self, name, int(value))


def _hex(value: int) -> str:
    return f"0x{value:08X}\n"  # ufs-sysfs.c prints device attributes so


# The files, as sysfs-driver-ufs names them (the table above says what each means).
WB_GROUP: AttributeGroup[WriteBooster] = AttributeGroup(
    "wb", "WriteBooster",
    (
        Attribute("wb_on", show=lambda w: f"{int(w.enabled)}\n", store=lambda w, v: w.store_flag("wb_on", v)),
        Attribute("enable_wb_buf_flush", show=lambda w: f"{int(w.flush_enabled)}\n",
                  store=lambda w, v: w.store_flag("enable_wb_buf_flush", v)),
        Attribute("wb_flush_threshold", show=lambda w: f"{w.flush_threshold}\n", store=WriteBooster.store_threshold),
        Attribute("wb_avail_buf", show=lambda w: _hex(w.avail_tenths)),
        Attribute("wb_cur_buf", show=lambda w: _hex(w.buffer_sectors * 4096)),
        Attribute("wb_flush_status", show=lambda w: _hex(int(w.flush_status))),
        Attribute("wb_life_time_est", show=lambda w: _hex(w.life_time_est)),
    ),
    WriteBooster.snapshot,
    errors={WbValueError: 400},
)
WB_ATTRIBUTES = WB_GROUP.names


def wb_metrics(wb: WriteBooster | None) -> Iterator[MetricFamily]:
    """``blockemu_ufs_wb_*``: the WriteBooster SLC buffer (nothing without it)."""
    if wb is None:
        return
    for name, kind, text, value in (
        ("enabled", "gauge", "wb_on: 1 while WriteBooster is on", int(wb.enabled)),
        ("buffer_bytes", "gauge", "SLC buffer size (wb_cur_buf)", wb.buffer_sectors * 4096),
        ("buffer_used_bytes", "gauge", "Host data in the SLC buffer not yet folded", wb.used_sectors * 4096),
        ("avail_buf", "gauge", "wb_avail_buf: free buffer in tenths (10 = 100%)", wb.avail_tenths),
        ("slc_written_bytes", "counter", "Host bytes written into the SLC buffer", wb.slc_sectors * 4096),
        ("tlc_direct_bytes", "counter", "Host bytes written at the TLC rate (buffer full or off)",
         wb.tlc_direct_sectors * 4096),
        ("folded_bytes", "counter", "Bytes folded from SLC to TLC", wb.folded_sectors * 4096),
        ("life_time_est", "gauge", "wb_life_time_est (1: 0-10% of rated P/E cycles used)", wb.life_time_est),
    ):
        yield MetricFamily(f"blockemu_ufs_wb_{name}", kind, text, [({}, value)])
