"""The launch study's memory model on small cases, with exact expected counts and times.

Watermarks (kernel formulas), kswapd vs direct reclaim, reclaim throttling,
lmkd's choice, sync vs async compression accounting (zram and ZCACHE), and
ZCACHE hits, misses and allocators.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import replace
from pathlib import Path

import pytest

from blockemu.devices.zram.codecs import PAGE, Codec, CostModel, parse_cost_overrides
from blockemu.experiments.launch.cpu import Accelerator, Cpus
from blockemu.experiments.launch.memory import ABSENT, RESIDENT, SWAPPED, App, PhoneMemory
from blockemu.experiments.launch.params import LaunchParams, ParamError, apply_overrides, watermarks
from blockemu.experiments.launch.run import PolicyError, parse_policy, run_policy
from blockemu.experiments.launch.storage import ZramSwap, build_zram
from blockemu.experiments.launch.workload import app_sizes, switching_sequence
from blockemu.experiments.launch.zcache import ZbudAllocator, ZCache, ZsmallocAllocator
from blockemu.timing import UnitTimeline

# 100 frames with min/low/high = 10/20/30 pages: min_free_kbytes 40 and
# watermark_scale_factor 1000 on 400 KiB (scale 1).
SMALL = LaunchParams(scale=1, min_free_kbytes=40, watermark_scale_factor=1000, swap_cluster_max=4,
                     swappiness=100, zram_disksize_fraction=0.5, fault_us=0.0, file_readaround_kib=4)
COSTS = "lz4=10/2"


class FakeSwap:
    """Writes cost 1 µs, reads 0.5 µs; compressed pages take no RAM."""

    def __init__(self) -> None:
        self.slots: dict[int, bytes] = {}
        self.discarded = 0

    def write(self, slot: int, page: bytes, now_ns: int, hot: bool = False) -> int:
        self.slots[slot] = page
        return now_ns + 1000

    def compressed_by(self, now_ns: int) -> int:
        return now_ns

    def read(self, slot: int, now_ns: int) -> tuple[bytes, int]:
        return self.slots[slot], now_ns + 500

    def discard(self, slot: int, now_ns: int) -> None:
        if self.slots.pop(slot, None) is not None:
            self.discarded += 1

    def mem_pages(self) -> int:
        return 0


class FakeFiles:
    def __init__(self) -> None:
        self.commands: list[tuple[int, int]] = []

    def read(self, page: int, now_ns: int, pages: int = 1) -> int:
        self.commands.append((page, pages))
        return now_ns + 60_000


def page(tag: int) -> bytes:
    return (b"app page %06d " % tag) * (PAGE // 16)


def small_memory(anon_per_app: list[int], params: LaunchParams = SMALL, ram_pages: int = 100,
                 files_per_app: list[int] | None = None) -> tuple[PhoneMemory, FakeSwap]:
    files_per_app = files_per_app or [0] * len(anon_per_app)
    apps = []
    swap_base = file_base = 0
    for index, (n_anon, n_file) in enumerate(zip(anon_per_app, files_per_app, strict=True)):
        apps.append(App(index, [page(index * 1000 + i) for i in range(n_anon)],
                        [page(500_000 + index * 1000 + i) for i in range(n_file)], [], [], swap_base, file_base))
        swap_base += n_anon
        file_base += n_file
    swap = FakeSwap()
    memory = PhoneMemory(params, ram_pages, apps, swap, FakeFiles(), Cpus(UnitTimeline(2)))
    return memory, swap


# ---------------------------------------------------------------- watermarks
def test_watermarks_follow_the_kernel_formulas() -> None:
    # 1 GiB: min_free_kbytes = int_sqrt(1048576 * 16) = 4096 KiB = 1024 pages;
    # low - min = max(4096 / 4, 1048576 * 10 / 10000 = 1048) KiB = 262 pages.
    params = LaunchParams(scale=1)
    assert watermarks(params, 262144) == (1024, 1286, 1548)
    # watermark_scale_factor 100: the gap is 10485 KiB = 2621 pages.
    assert watermarks(replace(params, watermark_scale_factor=100), 262144) == (1024, 3645, 6266)
    # The same phone at scale 64 keeps the same shares of RAM.
    assert watermarks(LaunchParams(scale=64), 262144 // 64) == (16, 20, 24)
    assert watermarks(SMALL, 100) == (10, 20, 30)


def test_no_reclaim_while_free_memory_stays_at_or_above_low() -> None:
    memory, _ = small_memory([100])
    app = memory.apps[0]
    for i in range(81):
        memory.touch_anon(app, i, 0)
    assert memory.free_pages() == 19
    assert memory.counters.kswapd_wakeups == 0
    assert memory.counters.swap_outs == 0


def test_kswapd_wakes_below_low_and_reclaims_to_high_in_the_background() -> None:
    memory, swap = small_memory([100])
    app = memory.apps[0]
    t = 0
    for i in range(82):
        t = memory.touch_anon(app, i, 0)
    # The 82nd allocation found 19 free: kswapd woke and ran one pass of 4
    # pages (anonymous only: no file pages), written at 1 µs each.
    assert t == 0  # the allocating thread did not wait
    counters = memory.counters
    assert (counters.kswapd_wakeups, counters.kswapd_passes, counters.kswapd_pages) == (1, 1, 4)
    assert memory.in_flight == 4  # freed when the pass ends, at 4 µs
    assert [app.anon_state[i] for i in range(5)] == [SWAPPED] * 4 + [RESIDENT]
    # Later, kswapd goes on until free + in-flight reaches high (30): two more passes.
    memory.advance(1_000_000)
    assert (counters.kswapd_passes, counters.kswapd_pages, counters.swap_outs) == (3, 12, 12)
    assert memory.free_pages() == 30 and not memory.kswapd_awake
    assert counters.direct_passes == 0
    assert sorted(swap.slots) == list(range(12))


def test_direct_reclaim_when_allocations_outrun_kswapd() -> None:
    memory, _ = small_memory([100])
    app = memory.apps[0]
    # Every touch at time 0: kswapd's first pass ends at 4 µs, so it cannot help again.
    stalls = []
    for i in range(100):
        stalls.append(memory.touch_anon(app, i, 0))
    counters = memory.counters
    # Touches 92 and 100 (i = 91, 99) found 9 free (< min): one direct pass
    # of 4 pages each, 4 µs on the allocating thread; kswapd's 4 pages in
    # flight at the first do not spare the thread its own pass.
    assert counters.throttle_waits == 0
    assert (counters.direct_passes, counters.direct_pages) == (2, 8)
    assert [i for i, t in enumerate(stalls) if t] == [91, 99]
    assert counters.direct_stall_ns == 2 * 4000
    assert counters.swap_outs == 12 and memory.swap_used == 12


def test_swap_in_reads_zram_frees_the_slot_and_refaults_count() -> None:
    memory, swap = small_memory([100])
    app = memory.apps[0]
    for i in range(82):
        memory.touch_anon(app, i, 0)
    memory.advance(1_000_000)
    t = memory.touch_anon(app, 0, 2_000_000)  # swapped out by kswapd's first pass
    assert t == 2_000_500
    assert memory.counters.swap_ins == 1 and 0 not in swap.slots and swap.discarded == 1
    assert memory.swap_used == 11


# ------------------------------------------------------------------- lmkd
def test_lmkd_kills_the_least_recently_used_background_app() -> None:
    memory, swap = small_memory([10, 10, 10])
    for app in memory.apps:
        for i in range(10):
            memory.touch_anon(app, i, 0)
        app.alive = True
    memory.apps[0].last_used_ns, memory.apps[1].last_used_ns, memory.apps[2].last_used_ns = 5, 3, 1
    # App 1 has two pages in zram.
    memory.apps[1].anon_state[0] = memory.apps[1].anon_state[1] = SWAPPED
    swap.slots[10] = swap.slots[11] = b""
    memory.swap_used = 2
    del memory.anon_lru[(1, 0)], memory.anon_lru[(1, 1)]
    memory.resident -= 2
    assert memory.kill_one(0, foreground=2, swap_low=False)
    victim = memory.apps[1]  # not app 2, the foreground, though it was used least recently
    assert not victim.alive and set(victim.anon_state) == {ABSENT}
    assert memory.resident == 20 and memory.swap_used == 0 and swap.discarded == 2
    assert (memory.counters.kills, memory.counters.kills_no_progress) == (1, 1)
    assert memory.kill_one(0, foreground=2, swap_low=True)  # then app 0
    assert not memory.apps[0].alive and memory.counters.kills_swap_low == 1
    assert not memory.kill_one(0, foreground=2, swap_low=False)  # only the foreground is left


def test_lmkd_kills_when_direct_reclaim_cannot_make_progress() -> None:
    # No swap at all: anonymous memory cannot be reclaimed.
    memory, _ = small_memory([60, 60], replace(SMALL, zram_disksize_fraction=0.0))
    background, foreground = memory.apps
    background.alive = foreground.alive = True
    background.last_used_ns = 0
    for i in range(60):
        memory.touch_anon(background, i, 0)
    foreground.last_used_ns = 1
    for i in range(40):
        memory.touch_anon(foreground, i, 0)
    counters = memory.counters
    # The 31st foreground page found 9 free, nothing to reclaim, nothing in flight.
    assert (counters.kills, counters.kills_no_progress, counters.direct_pages) == (1, 1, 0)
    assert not background.alive and foreground.alive
    assert memory.resident == 40
    assert counters.kswapd_pages == 0


def test_file_pages_survive_a_kill_and_are_dropped_by_reclaim() -> None:
    memory, _ = small_memory([0], files_per_app=[100])
    app = memory.apps[0]
    for i in range(100):
        memory.touch_file(app, i, 0)
    # Reclaim dropped file pages (no ZCACHE): a refault reads UFS.
    assert memory.counters.file_drops == 12 and memory.counters.file_reads_ufs == 100
    assert memory.touch_file(app, 0, 10**9) == 10**9 + 60_000
    # A killed app's file pages stay in the page cache: touching one costs nothing.
    other = App(1, [], [], [], [], 100, 100)
    memory.apps.append(other)
    app.alive = other.alive = True
    resident = memory.resident
    assert memory.kill_one(10**9, foreground=1, swap_low=False)
    assert memory.resident == resident
    assert memory.touch_file(app, 50, 2 * 10**9) == 2 * 10**9


# ------------------------------------------------ sync vs async compression
def _zram_swap(asynchronous: bool) -> ZramSwap:
    settings = {"policy": "single", "comp_algorithm": "lz4", "async_workers": 1 if asynchronous else 0,
                "staging_pages": 64}
    return ZramSwap(build_zram(64, 2, settings, COSTS))


def test_sync_zram_compresses_on_the_reclaiming_thread() -> None:
    swap = _zram_swap(asynchronous=False)
    t = 0
    for slot in range(4):
        t = swap.write(slot, page(slot), t)
    # 1 µs request overhead + 10 µs lz4 per page, one after the other.
    assert t == 44_000
    assert swap.compressed_by(t) == t
    assert swap.read(2, t) == (page(2), t + 1000 + 2000)


def test_async_zram_returns_early_and_frees_when_the_pool_is_done() -> None:
    swap = _zram_swap(asynchronous=True)
    t = 0
    for slot in range(4):
        t = swap.write(slot, page(slot), t)
    # Each write: 1 µs overhead + 0.5 µs copy into staging.
    assert t == 6_000
    # One worker compresses them one after another from each ack: done at
    # 1.5 + 4 × 10 = 41.5 µs; flush adds the request overhead.
    assert swap.compressed_by(t) == 42_500
    assert swap.device.mm_stat_values()[0] == 4 * PAGE  # the batches have run
    assert swap.read(3, t) == (page(3), t + 3000)


def _zcache(mode: str, allocator: ZbudAllocator | ZsmallocAllocator | None = None, max_pages: int = 100) -> ZCache:
    costs = CostModel(parse_cost_overrides(COSTS))
    codec = Codec("lz4")
    costs.add(codec)
    accelerator = Accelerator(20.0, 8.0, 4.0) if mode == "offload" else None
    return ZCache(codec, costs, allocator or ZsmallocAllocator(), mode, Cpus(UnitTimeline(2)), max_pages,
                  3072, 2, accelerator)


def test_zcache_sync_compression_holds_the_reclaiming_thread() -> None:
    cache = _zcache("sync")
    thread, frees = cache.store([((0, i), page(i)) for i in range(4)], 0)
    assert thread == 40_000
    assert frees == [(10_000, 1), (20_000, 1), (30_000, 1), (40_000, 1)]
    assert cache.cpus.spent_ns["zcache_compress"] == 40_000


def test_zcache_async_compression_runs_on_the_pool_and_drops_beyond_its_queue() -> None:
    cache = _zcache("async")  # queue of 2 pages
    thread, frees = cache.store([((0, i), page(i)) for i in range(4)], 0)
    assert thread == 0
    # Two pages queued (one per core), two dropped at once (queue full).
    assert frees == [(10_000, 1), (10_000, 1), (0, 2)]
    assert cache.stats.queue_full == 2 and (0, 2) not in cache and (0, 1) in cache
    assert cache.cpus.spent_ns["zcache_compress"] == 20_000
    # Once those are done, the queue has room again.
    _, frees = cache.store([((0, 9), page(9))], 10_000)
    assert frees == [(20_000, 1)]


def test_zcache_offload_uses_no_core() -> None:
    cache = _zcache("offload")
    compressed = sum(len(Codec("lz4").compress(page(i))) for i in range(4))
    thread, frees = cache.store([((0, i), page(i)) for i in range(4)], 0)
    # 20 µs setup + (16384 in + compressed out) bytes at 8 B/ns + 16384 bytes at 4 B/ns.
    done = 20_000 + int((4 * PAGE + compressed) / 8.0) + int(4 * PAGE / 4.0)
    assert thread == 0 and frees == [(done, 4)]
    assert cache.cpus.spent_ns["zcache_compress"] == 0


def test_zcache_hit_miss_and_rejects() -> None:
    cache = _zcache("sync")
    noise = os.urandom(PAGE)
    cache.store([((0, 0), page(0)), ((0, 1), noise)], 0)
    assert cache.stats.rejected == 1 and (0, 1) not in cache
    hit = cache.load((0, 0), 100_000)
    assert hit == (page(0), 102_000)
    assert cache.load((0, 0), 200_000) is None  # exclusive: the page went back to the page cache
    assert cache.load((0, 1), 200_000) is None
    assert (cache.stats.hits, cache.stats.misses) == (1, 2)
    assert cache.pool_pages == 0


def test_zcache_evicts_the_oldest_objects_when_full() -> None:
    cache = _zcache("sync", ZbudAllocator(), max_pages=2)
    cache.store([((0, i), page(i)) for i in range(5)], 0)
    # zbud: two objects per page.  The fifth needs a third page; evicting the
    # oldest object frees no page while its buddy stays, so both of page 1 go.
    assert cache.stats.evicted == 2 and (0, 0) not in cache and (0, 1) not in cache and (0, 2) in cache
    assert cache.pool_pages == 2


def test_zbud_pairs_at_most_two_objects_per_page() -> None:
    zbud = ZbudAllocator()
    handles = [zbud.malloc(900) for _ in range(5)]
    assert zbud.pages == 3
    zbud.free(handles[0])
    zbud.free(handles[1])
    assert zbud.pages == 2
    assert zbud.malloc(3000) and zbud.pages == 2  # 47 chunks fit beside the 15-chunk object left alone in a page
    with pytest.raises(ValueError):
        zbud.malloc(PAGE)


def test_memory_counts_zcache_hits_and_ufs_misses() -> None:
    memory, _ = small_memory([0], files_per_app=[100])
    memory.zcache = _zcache("sync")
    app = memory.apps[0]
    for i in range(100):
        memory.touch_file(app, i, 0)
    # 12 file pages were reclaimed into ZCACHE (none dropped): 3 passes of 4.
    assert memory.counters.file_drops == 0 and len(memory.zcache.objects) == 12
    t = memory.touch_file(app, 0, 10**9)
    assert memory.counters.zcache_hits == 1 and t == 10**9 + 2000
    assert memory.counters.file_reads_ufs == 100


# ----------------------------------------------------------- the study
def test_policy_names() -> None:
    policy = parse_policy("multi_async+zc_async_zsmalloc")
    assert (policy.zram, policy.zram_async, policy.zcache_mode, policy.zcache_allocator) == (
        "multi", True, "async", "zsmalloc")
    with pytest.raises(PolicyError, match="zram part"):
        parse_policy("lzo")
    with pytest.raises(PolicyError, match="ZCACHE part"):
        parse_policy("lz4+zc_fast_zbud")


def test_overrides_are_checked() -> None:
    assert apply_overrides(SMALL, ["apps=3", "ram_fractions=0.5,0.6"]).apps == 3
    with pytest.raises(ParamError, match="NAME=VALUE"):
        apply_overrides(SMALL, ["nonsense=1"])
    with pytest.raises(ParamError, match="swappiness"):
        apply_overrides(SMALL, ["swappiness=300"])
    with pytest.raises(ParamError, match="apps must be int"):
        apply_overrides(SMALL, ["apps=many"])


def test_switching_sequence_visits_every_app_first_and_never_repeats() -> None:
    params = LaunchParams(apps=5, launches=30)
    sequence = switching_sequence(params)
    assert sorted(sequence[:5]) == list(range(5)) and len(sequence) == 35
    assert all(a != b for a, b in itertools.pairwise(sequence))
    assert sequence == switching_sequence(params)


def test_a_run_is_deterministic_and_counts_cold_launches() -> None:
    params = LaunchParams(apps=4, launches=12, scale=512, use_s=2.0)
    sizes = app_sizes(params)
    anon = [[page(a * 10_000 + i) for i in range(n)] for a, n in enumerate(sizes.anon_pages)]
    files = [[page(900_000 + a * 10_000 + i) for i in range(n)] for a, n in enumerate(sizes.file_pages)]
    policy = parse_policy("lz4+zc_sync_zbud")
    first, records = run_policy(policy, params, 0.4, sizes, anon, files, COSTS)
    second, _ = run_policy(policy, params, 0.4, sizes, anon, files, COSTS)
    assert first == second
    assert len(records) == 12
    assert first["cold_fraction"] == round(sum(r.cold for r in records) / 12, 4)
    # With room for everything, nothing is reclaimed, killed or cold after the warm-up.
    roomy, records = run_policy(policy, params, 1.5, sizes, anon, files, COSTS)
    assert (roomy["lmk_kills"], roomy["cold_fraction"], roomy["swap_outs"], roomy["kswapd_pages"]) == (0, 0.0, 0, 0)
    assert roomy["launch_stall_ms"] == 0.0


def test_bad_input_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: object) -> None:
    from blockemu.cli import main

    for argv, expected in ((["--set", "swappiness=900"], "swappiness must be between 0 and 200"),
                           (["--policies", "lz4,zip"], "policy 'zip'"),
                           (["--cost-us", "lz4=fast"], "lz4=fast")):
        assert main(["experiment", "launch", "--quick", "--out", str(tmp_path), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err and "Traceback" not in err


def test_findings_compare_multi_with_the_best_single_and_async_with_sync() -> None:
    from blockemu.experiments.launch.study import findings

    def row(policy: str, mean: float, stall: float = 1.0) -> dict[str, object]:
        return {"policy": policy, "ram_fraction": 0.5, "launch_mean_ms": mean, "launch_stall_ms": stall,
                "lmk_kills": 0, "cold_fraction": 0.0, "swap_ins": 0, "file_reads_ufs": 0, "zram_mean_mib": 0.0,
                "launches": 10, "zcache_hits": 0,
                "zram_ratio": 2.0, "cpu_decompress_s": 0.0}

    rows = [row("lz4", 10.0), row("zstd", 9.0), row("multi", 8.9), row("heuristic", 8.0),
            row("lz4+zc_sync_zbud", 10.0, stall=0.0), row("lz4+zc_async_zbud", 8.0), row("lz4_async", 9.5)]
    lines = [line.splitlines()[0] for line in findings(rows)]
    assert lines == [
        "[no] ram 0.5: multi 8.900 ms vs best single zstd 9.000 ms: +1.1% (>= 2.0% wanted)",
        "[YES] ram 0.5: heuristic 8.000 ms vs best single zstd 9.000 ms: +11.1% (>= 2.0% wanted)",
        "[YES] ram 0.5: lz4+zc_async_zbud 8.000 ms vs lz4+zc_sync_zbud 10.000 ms: +20.0% "
        "(>= 10.0% wanted; reclaim never stalled a launch here)",
        "[no] ram 0.5: lz4_async 9.500 ms vs lz4 10.000 ms: +5.0% (>= 10.0% wanted)",
    ]


def test_ariadne_keeps_hot_pages_on_lz4_and_cold_pages_on_zstd() -> None:
    from blockemu.experiments.launch.ariadne import COLD_SETTINGS, HOT_SETTINGS, HotColdSwap

    swap = HotColdSwap(build_zram(64, 2, HOT_SETTINGS, "lz4=10/2, zstd=30/6"),
                       build_zram(64, 2, COLD_SETTINGS, "lz4=10/2, zstd=30/6"))
    assert swap.write(0, page(0), 0, hot=True) == 11_000  # 1 µs overhead + lz4
    assert swap.write(1, page(1), 0, hot=False) == 31_000  # on the other core: zstd
    assert swap.read(0, 100_000) == (page(0), 103_000)
    assert swap.read(1, 100_000) == (page(1), 107_000)
    cold, hot = swap.devices
    assert (hot.pages_by_algorithm(), cold.pages_by_algorithm()) == ({"lz4:1": 1}, {"zstd:3": 1})
    # Rewritten as hot, a cold page moves zones; the cold copy is discarded.
    swap.write(1, page(1), 200_000, hot=True)
    assert (hot.pages_by_algorithm(), cold.pages_by_algorithm()) == ({"lz4:1": 2}, {})


def test_prefetch_swaps_in_ahead_and_the_launch_waits_only_for_unfinished_pages() -> None:
    memory, _ = small_memory([100])
    app = memory.apps[0]
    for i in range(82):
        memory.touch_anon(app, i, 0)
    memory.advance(1_000_000)  # pages 0-11 are in zram
    t = memory.prefetch_anon(app, 0, 2_000_000)
    assert t == 2_000_500 and memory.counters.prefetched == 1 and memory.counters.swap_ins == 1
    assert memory.prefetch_anon(app, 20, t) == t  # resident: nothing to do
    # The launching thread touches page 0 before the helper finished it: it waits.
    assert memory.touch_anon(app, 0, 2_000_100) == 2_000_500
    assert memory.counters.prefetch_waits == 1
    assert memory.touch_anon(app, 0, 2_000_100) == 2_000_100  # resident and ready now


def test_file_faults_read_their_read_around_window_in_one_command() -> None:
    memory, _ = small_memory([0], replace(SMALL, file_readaround_kib=16), files_per_app=[10])
    app = memory.apps[0]
    files = memory.files
    assert isinstance(files, FakeFiles)
    memory.touch_file(app, 5, 0)  # window 4-7
    memory.touch_file(app, 6, 0)  # already read around: no I/O
    memory.touch_file(app, 9, 0)  # window 8-9 (the file ends)
    assert files.commands == [(4, 4), (8, 2)]
    assert memory.counters.readaround_pages == 4 and memory.resident == 6


def test_a_fragmented_ufs_makes_read_around_slower() -> None:
    from blockemu.experiments.launch.storage import build_ufs

    straight, scattered = build_ufs(4096, 0, seed=1), build_ufs(4096, 100, seed=1)
    assert straight.read(0, 0, 32) < scattered.read(0, 0, 32)
    assert straight.read(100, 10**9, 1) == scattered.read(100, 10**9, 1)


def test_direct_reclaim_waits_for_its_pages_while_they_are_compressed_asynchronously() -> None:
    class AsyncFakeSwap(FakeSwap):
        def compressed_by(self, now_ns: int) -> int:
            return now_ns + 10_000  # the pool finishes 10 µs after the last hand-over

    memory, _ = small_memory([100])
    memory.swap = AsyncFakeSwap()
    app = memory.apps[0]
    stalls = [memory.touch_anon(app, i, 0) for i in range(100)]
    counters = memory.counters
    # As in the synchronous case two direct passes (i = 91, 99), but each
    # thread then waits for its pages' compression: 4 µs hand-over + 10 µs.
    assert (counters.direct_passes, counters.direct_pages, counters.throttle_waits) == (2, 8, 2)
    assert [t for t in stalls if t] == [14_000, 14_000]
    assert counters.direct_stall_ns == 2 * 14_000


def test_the_study_writes_its_csv_plot_and_findings(tmp_path: Path) -> None:
    from blockemu.experiments.launch.study import run_experiment

    params = LaunchParams(apps=3, launches=6, scale=512, use_s=1.0, ram_fractions="0.4,1.0")
    sizes = app_sizes(params)
    anon = [[page(a * 10_000 + i) for i in range(n)] for a, n in enumerate(sizes.anon_pages)]
    files = [[page(900_000 + a * 10_000 + i) for i in range(n)] for a, n in enumerate(sizes.file_pages)]
    rows = run_experiment(tmp_path, params, ["lz4", "lz4_async", "multi"], "lz4=10/2, zstd=30/6",
                          corpus=(anon, files))
    assert [(r["policy"], r["ram_fraction"]) for r in rows] == [
        (p, f) for f in (0.4, 1.0) for p in ("lz4", "lz4_async", "multi")]
    for name in ("launch_results.csv", "launch_launches.csv", "launch_params.txt", "launch_findings.txt",
                 "launch.png"):
        assert (tmp_path / name).stat().st_size > 0
    findings = (tmp_path / "launch_findings.txt").read_text()
    assert "multi" in findings and "lz4_async" in findings
    assert "swappiness = 100    # vm.swappiness" in (tmp_path / "launch_params.txt").read_text()
