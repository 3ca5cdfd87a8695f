"""The live page's JSON views (blockemu/control/live.py) and how the control server serves the page."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from blockemu.config import config_from_mapping
from blockemu.control.live import LIVE, LiveViews, run_lengths
from blockemu.control.server import ControlServer
from blockemu.control.web import STATIC_TYPES
from blockemu.runtime import DeviceRuntime
from tests.conftest import pattern, small_ufs_config

SMALL_ZNS = {"device": {"type": "zns", "name": "zns_t", "capacity_mib": 64},
             "zns": {"zone_size_mib": 4, "zone_capacity_mib": 3, "conventional_zones": 1}}
SMALL_ZRAM = {"device": {"type": "zram", "name": "zram_t", "capacity_mib": 16}}


def write(runtime: DeviceRuntime, offset: int, data: bytes) -> None:
    runtime.write(offset, memoryview(bytearray(data)))


@pytest.fixture
def served_ufs() -> Iterator[ControlServer]:
    runtime = DeviceRuntime(small_ufs_config())
    control = ControlServer(runtime, "127.0.0.1", 0, token="t" * 32)
    control.start()
    yield control
    control.stop()
    runtime.close()


def request(control: ControlServer, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(*control.address, timeout=10)
    try:
        connection.request(method, path)
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


def test_run_lengths_are_physically_contiguous_pieces() -> None:
    ppn = np.array([10, 11, 12, -1, 5, 7, 8, -1, -1, 3], dtype=np.int64)
    assert run_lengths(ppn).tolist() == [3, 3, 3, 0, 1, 2, 2, 0, 0, 1]
    assert run_lengths(np.zeros(0, dtype=np.int64)).tolist() == []
    assert run_lengths(np.full(4, -1, dtype=np.int64)).tolist() == [0, 0, 0, 0]


def test_sample_counts_requests_and_latency_buckets() -> None:
    runtime = DeviceRuntime(small_ufs_config())
    views = LiveViews(runtime, clock=lambda: 1234.5)
    for i in range(10):
        write(runtime, i * 4096, pattern(i))
    buf = bytearray(4096)
    runtime.read(0, memoryview(buf))
    sample = views.sample()
    assert sample["wall_s"] == 1234.5
    assert sample["ops"]["write"]["requests"] == 10
    assert sample["ops"]["write"]["bytes"] == 40960
    assert sum(sample["ops"]["write"]["latency_counts"]) == 10
    assert sample["ops"]["read"]["requests"] == 1
    assert sample["queue_depth"] == 0 and sample["queue_depth_peak"] == 1
    assert sample["ufs"]["hid"]["state"] == "idle"
    assert sample["ufs"]["fragmentation"]["mapped_bytes"] == 40960
    assert "zns" not in sample and "zram" not in sample and "power" not in sample
    runtime.close()


def test_ufs_sample_has_the_l2p_cache_and_writebooster() -> None:
    # One 4 KiB map page covers 1024 logical pages (4 MiB): a 4 KiB cache holds one unit, so writes
    # 8 MiB apart miss, evict and write back every time.
    runtime = DeviceRuntime(small_ufs_config(ufs={"l2p_cache_kib": 4, "l2p_mode": "page",
                                                   "wb_enabled": True, "wb_buffer_mib": 8}))
    views = LiveViews(runtime)
    for i in range(4):
        write(runtime, (i % 2) * 8 * 1024 * 1024, pattern(i))
    ufs = views.sample()["ufs"]
    l2p, wb = ufs["l2p"], ufs["writebooster"]
    assert l2p["mode"] == "page" and l2p["capacity_bytes"] == 4096
    assert l2p["misses"] == 4 and l2p["hits"] == 0 and l2p["evictions"] == 3
    assert l2p["cached_units"] == 1
    assert wb["wb_on"] == 1 and wb["slc_written_bytes"] == 4 * 4096
    assert wb["buffer_used_bytes"] == 4 * 4096
    runtime.close()

    plain = DeviceRuntime(small_ufs_config())
    ufs = LiveViews(plain).sample()["ufs"]
    assert ufs["l2p"]["mode"] == "unlimited" and ufs["writebooster"] == {"present": False}
    plain.close()


def test_fragmentation_map_shows_runs_before_and_after_defrag() -> None:
    runtime = DeviceRuntime(small_ufs_config())
    views = LiveViews(runtime)
    files, pages = 4, 64
    for i in range(pages):  # files written interleaved: every run one sector long
        for f in range(files):
            write(runtime, f * 1024 * 1024 + i * 4096, pattern(i + f))
    fragmented = views.fragmentation_map()
    assert fragmented["first_sector"] == 0
    runs = [r for r in fragmented["run"] if r]
    assert len(runs) == files * pages and set(runs) == {1}
    mapped = [p for p in fragmented["ppn"] if p >= 0]
    assert len(mapped) == files * pages
    for attribute in ("analysis_trigger", "defrag_trigger"):
        views_api = runtime.routes()
        put = next(r for r in views_api if r.method == "PUT" and r.path.endswith("{attribute}"))
        put.handler(attribute=attribute, text="enable")
        runtime.run_background_until_idle()
    after = views.fragmentation_map()
    assert after["hid"]["state"] == "defrag_completed"
    assert {r for r in after["run"] if r} == {pages}  # each file one physical run now
    # The page fetches the map again only when the sample's generation differs from the map's.
    assert after["layout_generation"] > fragmented["layout_generation"]
    assert views.sample()["ufs"]["layout_generation"] == after["layout_generation"]
    runtime.close()


def test_zns_sample_and_kind_specific_routes() -> None:
    runtime = DeviceRuntime(config_from_mapping(SMALL_ZNS, "<test>"))
    views = LiveViews(runtime)
    write(runtime, 4 * 1024 * 1024, pattern(1))
    sample = views.sample()
    assert sample["zns"]["open_zones"] == 1
    assert sample["zns"]["conditions"]["implicitly_open"] == 1
    assert views.views == ["io", "zones"]
    assert {r.path for r in views.routes()} == {LIVE, f"{LIVE}/sample"}
    runtime.close()


def test_zram_census_matches_mm_stat() -> None:
    runtime = DeviceRuntime(config_from_mapping(SMALL_ZRAM, "<test>"))
    views = LiveViews(runtime)
    rng = np.random.default_rng(1)
    for i in range(64):
        page = bytes(4096) if i % 4 == 0 else (b"abcd" * 512 + rng.bytes(512) * 4)
        if i % 8 == 1:
            page = rng.bytes(4096)  # incompressible: a huge page
        write(runtime, i * 4096, page)
    runtime.run_background_until_idle()
    census = views.zram_census()
    mm_stat = views.sample()["zram"]["mm_stat"]
    assert census["stored_pages"] == 64
    assert census["same_pages"] == mm_stat["same_pages"] == 16
    assert census["huge_pages"] == mm_stat["huge_pages"] == 8
    assert sum(census["bytes"].values()) == mm_stat["compr_data_size"]
    assert views.zram is not None
    assert census["pages"] == views.zram.pages_by_algorithm()
    assert census["priorities"]["lz4:1"] == 0
    assert {r.path for r in views.routes()} == {LIVE, f"{LIVE}/sample", f"{LIVE}/zram"}
    runtime.close()


def test_power_sample_has_frequency_decisions_and_energy() -> None:
    runtime = DeviceRuntime(small_ufs_config(power={"enabled": True}))
    views = LiveViews(runtime)
    write(runtime, 0, pattern(1))
    power: dict[str, Any] = views.sample()["power"]
    assert power["cur_freq"] in runtime.config.power.opp_freq_hz
    assert power["decisions"][0][1] == power["cur_freq"]
    assert power["energy_joules"] > 0
    assert "power" in views.views
    runtime.close()


def test_the_page_and_its_files_are_served_with_their_types(served_ufs: ControlServer) -> None:
    status, headers, body = request(served_ufs, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    # Every file the page loads is served here: nothing from another host.
    for name in ("uPlot.iife.min.js", "uPlot.min.css", "live.js", "live.css"):
        assert f'"/static/{name}"' in body.decode()
    assert re.search(r'(src|href)="(?!/)', body.decode()) is None
    for name, content_type in STATIC_TYPES.items():
        status, headers, body = request(served_ufs, "GET", f"/static/{name}")
        assert status == 200 and headers["Content-Type"] == content_type and body
    status, _, body = request(served_ufs, "GET", "/static/../server.py")
    assert status == 404 and json.loads(body)["error"]
    status, _, body = request(served_ufs, "GET", "/static/nothing.js")
    assert status == 404 and "allowed" in json.loads(body)["error"]


def test_the_page_reads_without_the_token_and_changes_nothing(served_ufs: ControlServer) -> None:
    for path in ("/", f"{LIVE}", f"{LIVE}/sample", f"{LIVE}/fragmentation-map"):
        status, _, _ = request(served_ufs, "GET", path)
        assert status == 200, path
    status, _, _ = request(served_ufs, "POST", "/")
    assert status == 401  # a change needs the token; the page sends none
    status, _, _ = request(served_ufs, "DELETE", f"{LIVE}/sample")
    assert status == 401


def test_live_views_are_compact_json(served_ufs: ControlServer) -> None:
    _, headers, body = request(served_ufs, "GET", f"{LIVE}/fragmentation-map")
    assert headers["Content-Type"] == "application/json"
    assert b"\n " not in body  # one line: 8192 numbers indented would be ten times longer
    assert len(json.loads(body)["ppn"]) == 8192


def test_zoned_log_sample_has_its_gc() -> None:
    raw = {"device": {"type": "zns_ftl", "name": "log_t", "capacity_mib": 32},
           "zns": {"zone_size_mib": 1, "max_open_zones": 6, "max_active_zones": 8},
           "zns_ftl": {"overprovision_percent": 25.0, "gc_start_free_zones": 3}}
    runtime = DeviceRuntime(config_from_mapping(raw, "<test>"))
    views = LiveViews(runtime)
    for i in range(16):
        write(runtime, i * 4096, pattern(i))
    sample = views.sample()
    assert views.views == ["io", "zones", "gc"]
    assert sample["gc"]["host_bytes_written"] == 16 * 4096
    assert sample["zns"]["host_write_bytes"] >= 16 * 4096
    runtime.close()
