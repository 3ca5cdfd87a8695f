"""Per-page compression algorithm choice for the zram model.

zram keeps an ordered list of algorithms: priority 0 is ``comp_algorithm``
(the primary), priorities 1–3 are ``recomp_algorithm`` entries.  A policy
answers these questions, and nothing else:

* :meth:`CompressionPolicy.write_priority`: which algorithm compresses a page
  being written;
* :meth:`CompressionPolicy.recompress_priority`: whether a page that has been
  idle for :attr:`CompressionPolicy.idle_after_ns` should be recompressed in
  the background, and from which priority on (the device tries that one and
  those above it, in order, and keeps the first result in a smaller size
  class, as zram's recompression does);
* :meth:`CompressionPolicy.background_allowed`: whether background
  recompression may run at all right now.

Policies are picked by name (``[zram] policy``): ``single``, ``multi``,
``heuristic``.  Explicit ``recompress`` writes (the kernel's attribute) work
under every policy; the policy only decides what happens on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class PageSignals:
    """What the device knows about one page when a policy is asked."""

    # Reads of this page (swap-ins) in its lifetime on the device.
    reads: int
    # Modeled time of its last read, or None if it was never read.
    last_read_ns: int | None
    # Compressed size / page size of a cheap probe (LZ4 on two 512-byte
    # samples); near 1.0 means the page will hardly compress.
    probe_ratio: float
    # Priority of the algorithm the page is stored with now (-1: not stored).
    stored_priority: int = -1


@dataclass(frozen=True)
class DeviceSignals:
    now_ns: int
    # Share of the device's compression CPUs busy at now (0.0–1.0), counting
    # queued work: > 1.0 means work is waiting for a CPU.
    busy: float
    # Highest configured priority (0 if no recomp_algorithm is set).
    max_priority: int


class CompressionPolicy(Protocol):
    name: str
    # Background recompression looks at pages idle at least this long;
    # None: the policy never recompresses on its own.
    idle_after_ns: int | None

    def write_priority(self, page: PageSignals, device: DeviceSignals) -> int: ...

    def recompress_priority(self, page: PageSignals, device: DeviceSignals) -> int | None: ...

    def background_allowed(self, device: DeviceSignals) -> bool:
        """Whether background recompression may run now (checked before each slice)."""
        ...


@dataclass(frozen=True)
class PolicySettings:
    idle_after_s: float = 60.0
    hot_reads: int = 2
    hot_window_s: float = 30.0
    incompressible_ratio: float = 0.9
    busy_threshold: float = 0.75


class SinglePolicy:
    """One algorithm for everything: zram without recomp_algorithm."""

    name = "single"
    idle_after_ns: int | None = None

    def __init__(self, settings: PolicySettings) -> None:
        self.settings = settings

    def write_priority(self, page: PageSignals, device: DeviceSignals) -> int:
        return 0

    def recompress_priority(self, page: PageSignals, device: DeviceSignals) -> int | None:
        return None

    def background_allowed(self, device: DeviceSignals) -> bool:
        return False


class MultiPolicy:
    """Upstream zram's multi-compression, automated.

    Writes use the primary (fast) algorithm.  Pages idle for ``idle_after_s``
    are recompressed (what a user gets by writing ``idle`` then ``recompress
    type=idle``): the ``recomp_algorithm`` entries are tried in priority order
    from the one above the page's current algorithm, and the first result in a
    smaller size class is kept, as the kernel does.
    """

    name = "multi"

    def __init__(self, settings: PolicySettings) -> None:
        self.settings = settings
        self.idle_after_ns: int | None = int(settings.idle_after_s * NS_PER_S)

    def write_priority(self, page: PageSignals, device: DeviceSignals) -> int:
        return 0

    def recompress_priority(self, page: PageSignals, device: DeviceSignals) -> int | None:
        if device.max_priority == 0 or page.stored_priority >= device.max_priority:
            return None
        return page.stored_priority + 1

    def background_allowed(self, device: DeviceSignals) -> bool:
        return True


class HeuristicPolicy:
    """Pick per page from access history, a compressibility probe and device load.

    On write, in this order:

    1. **Incompressible** (probe ratio ≥ ``incompressible_ratio``): primary.
       A high-ratio codec would burn CPU for a page that ends up huge anyway.
    2. **Hot** (read ≥ ``hot_reads`` times, the last within ``hot_window_s``):
       primary.  Such a page is in some app's working set and will be swapped
       in again soon; its decompression is on a launch's critical path, and
       the fast codec decompresses several times faster.
    3. **Busy device** (compression CPUs ≥ ``busy_threshold`` busy, queued
       work included): primary, so that swap-out does not fall behind; the
       page can still be recompressed when it goes cold.
    4. Otherwise (a **cold**, compressible page written while there is CPU to
       spare): the highest-priority ``recomp_algorithm`` straight away, saving
       the later recompression pass.

    In the background, pages idle for ``idle_after_s`` that are stored with a
    lower priority, are not hot and are compressible are recompressed with the
    highest priority, but only while the device is below ``busy_threshold``.
    With no ``recomp_algorithm`` configured, it behaves like ``single``.
    """

    name = "heuristic"

    def __init__(self, settings: PolicySettings) -> None:
        self.settings = settings
        self.idle_after_ns: int | None = int(settings.idle_after_s * NS_PER_S)
        self.hot_window_ns = int(settings.hot_window_s * NS_PER_S)

    def is_hot(self, page: PageSignals, now_ns: int) -> bool:
        return (
            page.reads >= self.settings.hot_reads
            and page.last_read_ns is not None
            and now_ns - page.last_read_ns <= self.hot_window_ns
        )

    def write_priority(self, page: PageSignals, device: DeviceSignals) -> int:
        if device.max_priority == 0:
            return 0
        if page.probe_ratio >= self.settings.incompressible_ratio:
            return 0
        if self.is_hot(page, device.now_ns):
            return 0
        if device.busy >= self.settings.busy_threshold:
            return 0
        return device.max_priority

    def recompress_priority(self, page: PageSignals, device: DeviceSignals) -> int | None:
        if device.max_priority == 0 or page.stored_priority >= device.max_priority:
            return None
        if self.is_hot(page, device.now_ns) or page.probe_ratio >= self.settings.incompressible_ratio:
            return None
        return device.max_priority

    def background_allowed(self, device: DeviceSignals) -> bool:
        return device.busy < self.settings.busy_threshold


POLICIES: dict[str, type[SinglePolicy] | type[MultiPolicy] | type[HeuristicPolicy]] = {
    "single": SinglePolicy,
    "multi": MultiPolicy,
    "heuristic": HeuristicPolicy,
}


def create_policy(name: str, settings: PolicySettings) -> CompressionPolicy:
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown compression policy {name!r}; allowed: {', '.join(POLICIES)}") from None
    return cls(settings)
