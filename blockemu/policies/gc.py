"""Garbage-collection policies of the host-side zoned log, chosen by ``[zns_ftl] gc_policy``.

A policy decides two things, behind one small interface:

* **placement**: which write stream (an open zone) a block goes to, for host
  writes and for blocks GC relocates;
* **victim selection**: which full zone to collect next.

=============  =======  ========================================================
name           streams  idea
=============  =======  ========================================================
greedy         2        fewest valid blocks first (least copying now)
cost_benefit   2        LFS's (1 − u) · age / (1 + u) (Rosenblum & Ousterhout
                        1992), age scaled as F2FS does: old, fairly empty zones
zone_aware     3        separates hot host writes, cold host writes and GC
                        relocations into their own zones, so that zones fill
                        with data of one lifetime and die whole; victims by
                        cost-benefit over the separated zones
=============  =======  ========================================================

Every policy writes GC relocations to a zone of their own, as dm-zoned's
reclaim and F2FS's GC do: if host writes shared the zone GC relocates into,
they could use up the zone GC holds in reserve, and GC would deadlock.

Time here is the log's *write clock*: host blocks written so far.  It makes
the policies independent of the timing model and the runs reproducible.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from blockemu.config import GC_POLICY_STREAMS


@dataclass(frozen=True)
class ZoneView:
    """What a policy may look at: per-zone arrays, indexed by zone number."""

    # Valid (mapped) blocks in each zone.
    valid_blocks: np.ndarray
    # Write clock of the last block written into each zone.
    last_write: np.ndarray
    # Zones that may be collected now (full, not being written).
    candidates: np.ndarray
    # Blocks a zone holds when full.
    capacity_blocks: int
    # The write clock now.
    now: int


class GcPolicy(ABC):
    name: ClassVar[str]
    # Open zones the policy writes to at once (its streams): host, then GC.
    streams: ClassVar[int] = 2

    def host_stream(self, previous_write: int, now: int) -> int:
        """Stream of a host write; ``previous_write`` is the block's last write clock, -1 if never."""
        return 0

    def gc_stream(self) -> int:
        """Stream that relocated blocks go to; never one that host writes use."""
        return 1

    @abstractmethod
    def scores(self, view: ZoneView) -> np.ndarray:
        """A score per zone; the candidate with the highest score is collected."""

    def choose_victim(self, view: ZoneView) -> int | None:
        """The best candidate that has at least one invalid block, or None."""
        eligible = view.candidates & (view.valid_blocks < view.capacity_blocks)
        if not eligible.any():
            return None
        scores = np.where(eligible, self.scores(view).astype(np.float64), -np.inf)
        return int(np.argmax(scores))


class GreedyPolicy(GcPolicy):
    name = "greedy"

    def scores(self, view: ZoneView) -> np.ndarray:
        return -view.valid_blocks


def cost_benefit_scores(view: ZoneView) -> np.ndarray:
    """(1 − u) · age / (1 + u), with age scaled to (0, 1] over the candidates.

    Raw ages grow without bound, and then an old zone that is 99 % valid
    outscores a young half-empty one, so GC copies whole zones to free a
    few blocks.  F2FS's cost-benefit (fs/f2fs/gc.c, get_cb_cost) scales age
    between the youngest and oldest candidates for the same reason.
    """
    utilisation = view.valid_blocks / view.capacity_blocks
    age = (view.now - view.last_write).astype(np.float64)
    ages = age[view.candidates]
    youngest, oldest = (float(ages.min()), float(ages.max())) if len(ages) else (0.0, 0.0)
    scaled = (age - youngest + 1.0) / (oldest - youngest + 1.0)
    return (1.0 - utilisation) * scaled / (1.0 + utilisation)


class CostBenefitPolicy(GcPolicy):
    name = "cost_benefit"

    def scores(self, view: ZoneView) -> np.ndarray:
        return cost_benefit_scores(view)


HOT, COLD, RELOCATED = 0, 1, 2


class ZoneAwarePolicy(GcPolicy):
    """Hot/cold/relocated streams, victims by cost-benefit.

    A block is hot when the host rewrites it within ``hot_window_blocks`` host
    writes of its previous write; blocks seen for the first time are cold.
    GC relocations are by definition blocks that outlived their zone, so
    they get a stream of their own instead of diluting the hot zones.  Each
    stream is one open zone: the ZNS open/active limits bound how many
    temperatures a host can separate, which is why this policy stops at three.
    """

    name = "zone_aware"
    streams = 3

    def __init__(self, hot_window_blocks: int) -> None:
        if hot_window_blocks <= 0:
            raise ValueError(f"hot_window_blocks must be > 0, got {hot_window_blocks}")
        self.hot_window_blocks = hot_window_blocks

    def host_stream(self, previous_write: int, now: int) -> int:
        if previous_write >= 0 and now - previous_write < self.hot_window_blocks:
            return HOT
        return COLD

    def gc_stream(self) -> int:
        return RELOCATED

    def scores(self, view: ZoneView) -> np.ndarray:
        return cost_benefit_scores(view)


POLICY_CLASSES: dict[str, type[GcPolicy]] = {
    cls.name: cls for cls in (GreedyPolicy, CostBenefitPolicy, ZoneAwarePolicy)
}


if {name: cls.streams for name, cls in POLICY_CLASSES.items()} != GC_POLICY_STREAMS:
    # [zns_ftl] gc_policy is validated against blockemu/config/zns.py's table, listed there once.
    raise ImportError(f"GC policy classes {list(POLICY_CLASSES)} do not match GC_POLICY_STREAMS {GC_POLICY_STREAMS}")


def make_policy(name: str, logical_blocks: int, hot_window_percent: float = 25.0) -> GcPolicy:
    """Build the policy called ``name`` for a log exporting ``logical_blocks`` blocks."""
    if name not in POLICY_CLASSES:
        raise ValueError(f"unknown gc_policy {name!r}; allowed: {', '.join(POLICY_CLASSES)}")
    if name == ZoneAwarePolicy.name:
        return ZoneAwarePolicy(max(1, int(logical_blocks * hot_window_percent / 100)))
    return POLICY_CLASSES[name]()
