"""A phone's memory under app switching: watermarks, kswapd, direct reclaim, zram swap, ZCACHE, lmkd.

Pure and clock-injected: every call takes the modeled time and returns when
the calling thread goes on; nothing reads a clock.  One RAM budget of
``ram_pages`` frames holds the apps' resident pages, zram's pool
(``mem_used_total``), ZCACHE's pool and the frames reclaim has taken but
not yet freed (``in_flight``: asynchronous compression not yet done).

Reclaim (mm/vmscan.c, simplified):

* An allocation that finds free memory below the **low** watermark wakes
  **kswapd**, which reclaims ``swap_cluster_max`` pages per pass, on its own
  timeline, until free memory (counting what it has reclaimed but not yet
  freed) reaches **high**.
* An allocation that finds free memory below **min** does **direct
  reclaim** on the allocating thread: at least one pass, more until free
  memory plus what is being freed (kswapd's pass in progress, pages being
  compressed asynchronously) reaches min; then it waits for those frees
  (the kernel's reclaim throttling on pages under writeback).
* A pass takes pages from the cold ends of two global LRU lists, anonymous
  and file, in the proportion ``swappiness : 200 - swappiness``
  (get_scan_count).  Each entry carries its app (the per-app LRU is the
  order of that app's entries).  Active/inactive lists and MGLRU
  generations are not modeled: a page touched again moves to the hot end.
  Anonymous pages are written to the zram swap device (and compressed
  there, synchronously on the reclaiming thread or by its async workers);
  clean file pages are put into ZCACHE when there is one, else dropped.
* Swap-in reads a page from zram and frees its slot: zram is a
  ``SWP_SYNCHRONOUS_IO`` device, so do_swap_page bypasses the swap cache and
  the page must be compressed again when it is next reclaimed.  Android
  sets ``page-cluster`` to 0: no swap readahead.

**lmkd** (Android's low-memory killer) kills the least recently used
background app when swap is nearly full (free swap below
``swap_free_low_percent``) and free memory is below low, or when direct
reclaim can free nothing more.  A killed app's anonymous memory is gone
(resident frames freed, zram slots discarded); its file pages stay in the
page cache.  Its next launch is cold.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from blockemu.experiments.launch.cpu import Cpus
from blockemu.experiments.launch.params import PAGE_KIB, LaunchParams, watermarks
from blockemu.experiments.launch.storage import FileStorage, SwapDevice
from blockemu.experiments.launch.zcache import ZCache

# Page states: anonymous pages are resident, swapped (in zram) or absent
# (never touched, or freed with a killed app); file pages are resident,
# cached (compressed in ZCACHE) or only on disk.
RESIDENT, SWAPPED, ABSENT = 0, 1, 2
CACHED, ON_DISK = 1, 2

Key = tuple[int, int]  # (app, page index in that app's anonymous or file pages)


@dataclass
class App:
    index: int
    anon: list[bytes]
    files: list[bytes]
    hot_anon: list[int]
    hot_file: list[int]
    # First zram slot and first UFS page of this app.
    swap_base: int
    file_base: int
    anon_state: bytearray = field(init=False)
    file_state: bytearray = field(init=False)
    alive: bool = False
    last_used_ns: int = -1
    # Anonymous pages the current launch has touched, and those the last
    # completed launch touched (a hotness-aware swap keeps them apart).
    launching: bool = False
    touched_in_launch: set[int] = field(default_factory=set)
    last_launch_pages: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.anon_state = bytearray([ABSENT]) * len(self.anon)
        self.file_state = bytearray([ON_DISK]) * len(self.files)


@dataclass
class Counters:
    kswapd_wakeups: int = 0
    kswapd_passes: int = 0
    kswapd_pages: int = 0
    direct_passes: int = 0
    direct_pages: int = 0
    # Time threads spent in direct reclaim (reclaiming or waiting for pages
    # being compressed), all threads and the launching thread during launches.
    direct_stall_ns: int = 0
    throttle_waits: int = 0
    swap_outs: int = 0
    swap_ins: int = 0
    file_drops: int = 0
    file_reads_ufs: int = 0  # read commands (a fault and its read-around)
    readaround_pages: int = 0
    zcache_hits: int = 0
    kills: int = 0
    kills_swap_low: int = 0
    kills_no_progress: int = 0
    # Allocations that found nothing to reclaim and no app to kill.
    overcommits: int = 0
    # Proactive decompression (the ariadne policy): pages a helper thread
    # swapped in ahead of the launch, its direct-reclaim stalls, and how
    # often the launching thread waited for a page it was still decompressing.
    prefetched: int = 0
    helper_stall_ns: int = 0
    prefetch_waits: int = 0


class PhoneMemory:
    def __init__(self, params: LaunchParams, ram_pages: int, apps: list[App], swap: SwapDevice,
                 files: FileStorage, cpus: Cpus, zcache: ZCache | None = None) -> None:
        self.params = params
        self.ram_pages = ram_pages
        self.wm_min, self.wm_low, self.wm_high = watermarks(params, ram_pages)
        self.swap_pages = int(ram_pages * params.zram_disksize_fraction)
        self.apps = apps
        self.swap = swap
        self.files = files
        self.cpus = cpus
        self.zcache = zcache
        self.anon_lru: dict[Key, None] = {}  # insertion order = LRU order (oldest first)
        self.file_lru: dict[Key, None] = {}
        self.resident = 0
        self.swap_used = 0
        self.in_flight = 0
        self._pending: list[tuple[int, int]] = []  # (free at ns, pages), a min-heap
        self.kswapd_awake = False
        self.kswapd_clock = 0
        self.fault_ns = int(params.fault_us * 1000)
        self.readaround = max(1, round(params.file_readaround_kib / PAGE_KIB / params.scale))
        self.counters = Counters()
        # Pages a helper thread swapped in, and when each is ready.
        self.ready_at: dict[Key, int] = {}

    # ------------------------------------------------------------ memory
    def free_pages(self) -> int:
        zcache = self.zcache.pool_pages if self.zcache is not None else 0
        return self.ram_pages - self.resident - self.swap.mem_pages() - zcache - self.in_flight

    def _settle(self, now_ns: int) -> None:
        pending = self._pending
        while pending and pending[0][0] <= now_ns:
            _, pages = heapq.heappop(pending)
            self.in_flight -= pages

    def _defer_free(self, at_ns: int, pages: int) -> None:
        if pages:
            self.in_flight += pages
            heapq.heappush(self._pending, (at_ns, pages))

    def advance(self, now_ns: int) -> None:
        """Let background work (kswapd, finished compressions) catch up with ``now_ns``."""
        self._settle(now_ns)
        while self.kswapd_awake and self.kswapd_clock <= now_ns:
            if self.free_pages() + self.in_flight >= self.wm_high:
                self.kswapd_awake = False
                break
            done, reclaimed = self._reclaim_pass(self.kswapd_clock)
            if not reclaimed:
                self.kswapd_awake = False  # nothing left to reclaim: lmkd's turn
                break
            self.counters.kswapd_passes += 1
            self.counters.kswapd_pages += reclaimed
            self.kswapd_clock = max(done, self.kswapd_clock + 1)
            self._settle(now_ns)

    def allocate(self, now_ns: int, foreground: int, helper: bool = False) -> int:
        """Take one frame for ``foreground``; returns when the allocating thread has it.

        ``helper``: the allocating thread is a helper (prefetch), not the app's
        own thread: its direct-reclaim time is counted apart.
        """
        self.advance(now_ns)
        if self.free_pages() < self.wm_low and not self.kswapd_awake:
            self.kswapd_awake = True
            self.kswapd_clock = max(self.kswapd_clock, now_ns)
            self.counters.kswapd_wakeups += 1
            self.advance(now_ns)
        t = now_ns
        entered = False
        while self.free_pages() < self.wm_min:
            # The allocating thread reclaims itself (try_to_free_pages), at
            # least one pass, more while what is on its way to being freed
            # would not bring free memory back to min.
            if not entered or self.free_pages() + self.in_flight < self.wm_min:
                entered = True
                done, reclaimed = self._reclaim_pass(t)
                if reclaimed:
                    self.counters.direct_passes += 1
                    self.counters.direct_pages += reclaimed
                    t = max(t, done)
                    self._settle(t)
                    continue
            # Enough is being freed (kswapd's pass, asynchronous compression):
            # wait for it, as reclaim_throttle does for pages under writeback.
            if self._pending:
                t = self._wait_pending(t)
                continue
            if not self.kill_one(t, foreground, swap_low=False):
                self.counters.overcommits += 1
                break
        if helper:
            self.counters.helper_stall_ns += t - now_ns
        else:
            self.counters.direct_stall_ns += t - now_ns
        if self._swap_low() and self.free_pages() < self.wm_low:
            self.kill_one(t, foreground, swap_low=True)
        self.resident += 1
        return t

    def _wait_pending(self, now_ns: int) -> int:
        self.counters.throttle_waits += 1
        t = max(now_ns, self._pending[0][0])
        self._settle(t)
        return t

    def _swap_low(self) -> bool:
        free_swap = self.swap_pages - self.swap_used
        return free_swap * 100 < self.params.swap_free_low_percent * self.swap_pages

    # ----------------------------------------------------------- reclaim
    def _reclaim_pass(self, now_ns: int) -> tuple[int, int]:
        """One pass of up to swap_cluster_max pages from the LRU tails; (thread done, pages reclaimed)."""
        want = self.params.swap_cluster_max
        anon_room = max(0, self.swap_pages - self.swap_used)
        anon_target = min(anon_room, len(self.anon_lru), round(want * self.params.swappiness / 200))
        file_target = min(len(self.file_lru), want - anon_target)
        # One list short of pages: the other makes up the pass (get_scan_count's fallbacks).
        anon_target = min(anon_room, len(self.anon_lru), want - file_target)
        t = now_ns
        if anon_target:
            iterator = iter(self.anon_lru)
            victims = [next(iterator) for _ in range(anon_target)]
            for key in victims:
                del self.anon_lru[key]
                self.ready_at.pop(key, None)
                app = self.apps[key[0]]
                t = self.swap.write(app.swap_base + key[1], app.anon[key[1]], t, key[1] in app.last_launch_pages)
                app.anon_state[key[1]] = SWAPPED
            self.resident -= anon_target
            self.swap_used += anon_target
            self.counters.swap_outs += anon_target
            self._defer_free(self.swap.compressed_by(t), anon_target)
        if file_target:
            iterator = iter(self.file_lru)
            victims = [next(iterator) for _ in range(file_target)]
            for key in victims:
                del self.file_lru[key]
            self.resident -= file_target
            if self.zcache is None:
                for key in victims:
                    self.apps[key[0]].file_state[key[1]] = ON_DISK
                self.counters.file_drops += file_target
                self._defer_free(t, file_target)
            else:
                t, frees = self.zcache.store([(key, self.apps[key[0]].files[key[1]]) for key in victims], t)
                for key in victims:
                    self.apps[key[0]].file_state[key[1]] = CACHED if key in self.zcache else ON_DISK
                for at, pages in frees:
                    self._defer_free(at, pages)
        return t, anon_target + file_target

    # -------------------------------------------------------------- lmkd
    def kill_one(self, now_ns: int, foreground: int, swap_low: bool) -> bool:
        """Kill the least recently used app that is alive and not ``foreground``; False if none."""
        candidates = [a for a in self.apps if a.alive and a.index != foreground]
        if not candidates:
            return False
        victim = min(candidates, key=lambda a: a.last_used_ns)
        for i, state in enumerate(victim.anon_state):
            if state == RESIDENT:
                del self.anon_lru[(victim.index, i)]
                self.ready_at.pop((victim.index, i), None)
                self.resident -= 1
            elif state == SWAPPED:
                self.swap.discard(victim.swap_base + i, now_ns)
                self.swap_used -= 1
        victim.anon_state[:] = bytes([ABSENT]) * len(victim.anon)
        victim.alive = False
        victim.last_launch_pages = set()
        self.counters.kills += 1
        if swap_low:
            self.counters.kills_swap_low += 1
        else:
            self.counters.kills_no_progress += 1
        return True

    # ------------------------------------------------------------ faults
    def touch_anon(self, app: App, i: int, now_ns: int, write: bytes | None = None) -> int:
        """The app touches anonymous page ``i``; returns when the fault (if any) is done."""
        key = (app.index, i)
        state = app.anon_state[i]
        if app.launching:
            app.touched_in_launch.add(i)
        if state == RESIDENT:
            self.anon_lru.pop(key)
            self.anon_lru[key] = None
            t = now_ns
            ready = self.ready_at.pop(key, None)
            if ready is not None and ready > t:
                self.counters.prefetch_waits += 1
                t = ready
        else:
            t = self.allocate(now_ns, app.index)
            if state == SWAPPED:
                data, t = self.swap.read(app.swap_base + i, t)
                if data != app.anon[i]:
                    raise AssertionError(f"app {app.index} anonymous page {i}: zram returned other contents")
                self.swap.discard(app.swap_base + i, t)
                self.swap_used -= 1
                self.counters.swap_ins += 1
            app.anon_state[i] = RESIDENT
            self.anon_lru[key] = None
            t += self.fault_ns
        if write is not None:
            app.anon[i] = write
        return t

    def prefetch_anon(self, app: App, i: int, now_ns: int) -> int:
        """A helper thread swaps in anonymous page ``i`` if it is in zram; returns the helper's time."""
        if app.anon_state[i] != SWAPPED:
            return now_ns
        key = (app.index, i)
        t = self.allocate(now_ns, app.index, helper=True)
        data, t = self.swap.read(app.swap_base + i, t)
        if data != app.anon[i]:
            raise AssertionError(f"app {app.index} anonymous page {i}: zram returned other contents")
        self.swap.discard(app.swap_base + i, t)
        self.swap_used -= 1
        self.counters.swap_ins += 1
        self.counters.prefetched += 1
        app.anon_state[i] = RESIDENT
        self.anon_lru[key] = None
        self.ready_at[key] = t
        return t

    def touch_file(self, app: App, i: int, now_ns: int) -> int:
        key = (app.index, i)
        state = app.file_state[i]
        if state == RESIDENT:
            self.file_lru.pop(key)
            self.file_lru[key] = None
            return now_ns
        t = self.allocate(now_ns, app.index)
        hit = self.zcache.load(key, t) if self.zcache is not None and state == CACHED else None
        if hit is not None:
            data, t = hit
            if data != app.files[i]:
                raise AssertionError(f"app {app.index} file page {i}: ZCACHE returned other contents")
            self.counters.zcache_hits += 1
        else:
            # The faulting page and the others of its read-around window not in RAM, in one command.
            first = i - i % self.readaround
            window = [j for j in range(first, min(first + self.readaround, len(app.files)))
                      if j == i or app.file_state[j] != RESIDENT]
            for j in window:
                if j != i:
                    t = self.allocate(t, app.index)
                    app.file_state[j] = RESIDENT
                    self.file_lru[(app.index, j)] = None
                    self.counters.readaround_pages += 1
                if self.zcache is not None:
                    self.zcache.invalidate((app.index, j))
            t = self.files.read(app.file_base + window[0], t, window[-1] - window[0] + 1)
            self.counters.file_reads_ufs += 1
        app.file_state[i] = RESIDENT
        self.file_lru[key] = None
        return t + self.fault_ns
