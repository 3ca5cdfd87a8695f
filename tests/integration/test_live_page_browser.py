"""The live page in a real browser: Debian's Chromium, headless, driven by Selenium.

For UFS, ZNS and zram in turn a real ``blockemu serve`` runs while libnbd
writes to it; the page must draw new points, a zone finished and reset
through the API must change that zone's cell, and a HID defrag must move
the progress the page shows.  One screenshot per device goes to
``results/live-page/<kind>.png`` (ignored by git; README's pictures in
docs/img/ were taken this way).  Under CI=true a missing Chromium,
chromedriver or Selenium is a failure.
"""

from __future__ import annotations

import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from blockemu.control.client import ServedDevice
from tests.conftest import SMALL_UFS, require, require_tool, toml_text

REPO_ROOT = Path(__file__).parents[2]
SCREENSHOTS = REPO_ROOT / "results" / "live-page"
MIB = 1024 * 1024

SMALL_ZNS: dict[str, dict[str, Any]] = {
    "device": {"type": "zns", "name": "zns_live", "capacity_mib": 256},
    "zns": {"zone_size_mib": 8, "zone_capacity_mib": 6, "conventional_zones": 2},
}
SMALL_ZRAM: dict[str, dict[str, Any]] = {
    "device": {"type": "zram", "name": "zram_live", "capacity_mib": 64},
}


def _selenium() -> Any:
    try:
        from selenium import webdriver
    except ImportError:
        return None
    return webdriver


@pytest.fixture(scope="module")
def browser(real_components: None) -> Iterator[Any]:
    webdriver = _selenium()
    require(webdriver is not None, "selenium (pip, pyproject's test extra)")
    chromium = require_tool("chromium")
    driver_path = require_tool("chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,2000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()


def _served(tmp_path: Path, raw: dict[str, dict[str, Any]], name: str) -> ServedDevice:
    path = tmp_path / f"{name}.toml"
    path.write_text(toml_text(raw))
    return ServedDevice(path)


def wait_for(what: str, condition: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"the page never showed {what} within {timeout_s} s")


def js(browser: Any, expression: str) -> Any:
    return browser.execute_script(f"return {expression};")


class Writer:
    """libnbd writes (and reads back) one 4 KiB page after another at ``offsets(n)``, in a background thread."""

    def __init__(self, served: ServedDevice, offsets: Callable[[int], int], limit: int | None = None,
                 data: Callable[[int], bytes] | None = None) -> None:
        self.served, self.offsets, self.limit = served, offsets, limit
        page = b"\x5a" * 2048 + bytes(range(256)) * 8
        self.data = data or (lambda n: page)
        self.stop = threading.Event()
        self.written = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        nbd = self.served.connect()
        try:
            while not self.stop.is_set() and self.written != self.limit:
                nbd.pwrite(self.data(self.written), self.offsets(self.written))
                nbd.pread(4096, self.offsets(self.written))
                self.written += 1
                if self.written % 64 == 0:
                    time.sleep(0.02)  # leave the control API and the page some room
        finally:
            nbd.shutdown()

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def open_page(browser: Any, served: ServedDevice) -> None:
    browser.get(f"http://{served.http}/")
    wait_for("its device", lambda: js(browser, "window.blockemuLive && window.blockemuLive.info !== null"))


def assert_charts_grow(browser: Any, chart: str = "iops") -> None:
    """New points arrive, and while libnbd writes some of them are non-zero."""
    first = wait_for(f"points on {chart}", lambda: js(browser, f"blockemuLive.charts['{chart}'].data[0].length"))
    wait_for(f"new points on {chart}",
             lambda: js(browser, f"blockemuLive.charts['{chart}'].data[0].length") >= first + 2)
    wait_for("non-zero write IOPS", lambda: js(
        browser, "Math.max(...blockemuLive.charts.iops.data[2].filter(v => v !== null), 0)") > 0)
    assert js(browser, "blockemuLive.errors") == 0


def screenshot(browser: Any, kind: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / f"{kind}.png"))


def test_ufs_page_shows_io_power_and_hid_defrag_progress(browser: Any, tmp_path: Path) -> None:
    # 8 files of 256 KiB written interleaved, as HID's own end-to-end test does: fragmented for HID.
    files = 8
    # A one-map-page L2P cache (4 KiB, page mode: 4 MiB of logical space) misses as the writer moves
    # between the first and the second four files; a WriteBooster buffer takes the writes at SLC speed.
    ufs = {**SMALL_UFS["ufs"], "l2p_cache_kib": 4, "l2p_mode": "page", "wb_enabled": True, "wb_buffer_mib": 16}
    with _served(tmp_path, {**SMALL_UFS, "ufs": ufs, "power": {"enabled": True}}, "ufs") as served:
        with Writer(served, lambda n: (n % files) * MIB + (n // files % 64) * 4096):
            open_page(browser, served)
            assert_charts_grow(browser)
            assert_charts_grow(browser, "power")
            wait_for("the fragmentation map", lambda: js(browser, "blockemuLive.mapUpdates") >= 1)
            assert js(browser, "document.getElementById('l2p-mode').dataset.mode") == "page"
            wait_for("L2P misses", lambda: int(js(
                browser, "document.getElementById('l2p-counts').dataset.misses")) > 0)
            wait_for("points on the L2P chart", lambda: js(
                browser, "Math.max(...blockemuLive.charts.l2p.data[1].filter(v => v !== null), 0)") > 0)
            wait_for("SLC-buffered writes", lambda: int(js(
                browser, "document.getElementById('wb-bytes').dataset.slc")) > 0)
            assert js(browser, "document.getElementById('wb-on').dataset.wbOn") == "1"
        assert js(browser, "document.getElementById('hid-progress').dataset.progress") == "0"
        control = served.control
        control.put("hid/analysis_trigger", "enable")
        assert control.wait_hid("defrag_required") == "defrag_required"
        wait_for("HID's defrag_required", lambda: js(
            browser, "document.getElementById('hid-state').dataset.state") == "defrag_required")
        assert js(browser, "Math.max(...blockemuLive.fragmentationMap.run)") == 1  # every run one sector long
        screenshot(browser, "ufs-fragmented")
        control.put("hid/defrag_trigger", "enable")
        control.wait_hid("defrag_completed")
        wait_for("defrag progress 100", lambda: js(
            browser, "document.getElementById('hid-progress').dataset.progress") == "100")
        assert js(browser, "document.getElementById('hid-state').dataset.state") == "defrag_completed"
        # The map is redrawn from the defragmented layout: one run per file's window now.
        wait_for("a redrawn map", lambda: js(
            browser, "Math.min(...blockemuLive.fragmentationMap.run.filter(r => r > 0))") >= 64)
        screenshot(browser, "ufs")


def test_zns_page_zone_cells_follow_finish_and_reset(browser: Any, tmp_path: Path) -> None:
    zone_bytes, zone_pages, first_sequential = 8 * MIB, 6 * 256, 2
    with _served(tmp_path, SMALL_ZNS, "zns") as served:
        # Sequential writes through zones 2..21, each up to its capacity; zone 31 is left alone.
        def offset(n: int) -> int:
            return (first_sequential + n // zone_pages) * zone_bytes + n % zone_pages * 4096

        with Writer(served, offset, limit=20 * zone_pages):
            open_page(browser, served)
            wait_for("zone cells", lambda: js(browser, "Object.keys(blockemuLive.zoneCells).length") == 32)
            assert_charts_grow(browser)
            wait_for("a written zone", lambda: js(browser, "blockemuLive.zoneCells[2].dataset.condition") != "empty")
        target = 31
        nbd = served.connect()
        nbd.pwrite(b"\x11" * 65536, target * zone_bytes)
        nbd.shutdown()
        cell = f"blockemuLive.zoneCells[{target}].dataset.condition"
        wait_for("an open zone", lambda: js(browser, cell) == "implicitly_open")
        height = f"parseFloat(blockemuLive.zoneCells[{target}].firstChild.style.height)"
        assert 0 < js(browser, height) < 100  # 64 KiB of 6 MiB written
        served.control.post(f"zones/{target}/finish")
        wait_for("the finished zone's cell", lambda: js(browser, cell) == "full")
        screenshot(browser, "zns")
        served.control.post(f"zones/{target}/reset")
        wait_for("the reset zone's cell", lambda: js(browser, cell) == "empty")
        assert js(browser, height) == 0


def test_zram_page_shows_pages_per_algorithm(browser: Any, tmp_path: Path) -> None:
    rng = random.Random(1)

    def data(n: int) -> bytes:  # same-filled, incompressible (huge) and compressible pages
        if n % 5 == 0:
            return bytes(4096)
        if n % 7 == 0:
            return rng.randbytes(4096)
        return bytes([n % 251]) * 1024 + rng.randbytes(512) * 6

    with _served(tmp_path, SMALL_ZRAM, "zram") as served, Writer(served, lambda n: (n % 4096) * 4096, data=data):
        open_page(browser, served)
        assert_charts_grow(browser)
        assert_charts_grow(browser, "mmstat")
        wait_for("compressed pages in the census", lambda: js(
            browser, "blockemuLive.census && Object.keys(blockemuLive.census.pages).some(k => k.includes(':'))"))
        rows = wait_for("same, huge and compressed pages in the table", lambda: js(
            browser, "document.querySelectorAll('#zram-table tbody tr').length") >= 3)
        assert rows
        screenshot(browser, "zram")


def test_the_page_needs_no_token_and_only_reads(browser: Any, tmp_path: Path) -> None:
    """With a token set, the page still loads: it only sends GET."""
    token_file = tmp_path / "token"
    token_file.write_text("t" * 32 + "\n")
    path = tmp_path / "ufs.toml"
    path.write_text(toml_text(SMALL_UFS))
    with ServedDevice(path, extra_args=["--http-token-file", str(token_file)]) as served:
        open_page(browser, served)
        wait_for("a sample", lambda: js(browser, "blockemuLive.samples") >= 2)
        assert js(browser, "blockemuLive.errors") == 0
    assert shutil.which("chromium")
