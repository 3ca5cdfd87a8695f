#!/usr/bin/env python3
"""What one open live page costs: QD16 4 KiB random-read IOPS with and without it, in one run.

One ``blockemu serve`` (configs/ufs41.toml at 1 GiB, virtual timing, 16
nbdkit threads, the control API on a free loopback port) is filled once,
untimed; then fio's nbd engine runs bench_nbd.py's ``rand-read-4K-qd16``
workload in three modes, round after round: without a browser; with only
the page's requests (a thread fetching /api/v1/live/sample every second,
as the page does: the server's share of the cost); and with headless
Chromium showing the live page (http://HOST:PORT/, which polls the sample
every second and fetches the fragmentation map again when the mapping has
changed).  Rounds alternate so that a change in the machine's load falls on
every mode alike; medians are printed with their ratios and the server's CPU
per request.  The browser runs on the same machine, so its own CPU use is
part of the cost measured.  Usage:

    .venv/bin/python scripts/bench_live_page.py [--runtime 10] [--rounds 3] [--config configs/ufs41.toml]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_nbd import run_fio, server_cpu_s  # noqa: E402

from blockemu.experiments.report import format_table  # noqa: E402
from blockemu.frontends.nbdkit.launcher import plugin_environment  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def browser() -> Any:
    try:
        from selenium import webdriver
    except ImportError:
        sys.exit("bench: selenium not installed; run 'make setup'")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        sys.exit("bench: chromium and chromedriver are needed (Debian's chromium, chromium-driver); run 'make setup'")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1600"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of ``root`` and every process below it, found by parent ids in /proc
    (Chromium's processes are started by chromedriver's threads, which bench_nbd's walk does not see)."""
    stats: dict[int, tuple[int, int]] = {}  # pid: (parent, ticks)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    below = {root}
    grew = True
    while grew:
        grew = False
        for pid, (parent, _) in stats.items():
            if parent in below and pid not in below:
                below.add(pid)
                grew = True
    return sum(stats[pid][1] for pid in below if pid in stats) / os.sysconf("SC_CLK_TCK")


class Poller:
    """The page's requests without the page: GET /api/v1/live/sample every second, in a thread."""

    def __init__(self, base: str) -> None:
        self.base, self.stop, self.samples = base, threading.Event(), 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            with urllib.request.urlopen(f"{self.base}/api/v1/live/sample", timeout=10) as answer:
                answer.read()
            self.samples += 1

    def __enter__(self) -> Poller:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", type=int, default=10, help="seconds per fio job (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each one run without and one with the page")
    parser.add_argument("--config", default=str(REPO / "configs" / "ufs41.toml"))
    args = parser.parse_args()
    if shutil.which("fio") is None:
        sys.exit("bench: fio not found; run 'make setup'")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="blockemu-bench-live-") as tmp:
        sock = Path(tmp) / "nbd.sock"
        argv = [sys.executable, "-m", "blockemu", "serve", args.config, "--unix", str(sock),
                "--http", f"127.0.0.1:{port}", "--set", "device.capacity_mib=1024", "--set", "timing.mode=virtual",
                "--threads", "16"]
        server = subprocess.Popen(argv, env=plugin_environment(), stdout=subprocess.DEVNULL)
        driver = None
        try:
            deadline = time.monotonic() + 60
            while not sock.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit("bench: the server did not start")
                time.sleep(0.05)
            print("bench: fill (untimed) ...", file=sys.stderr, flush=True)
            subprocess.run(["fio", "--name=fill", "--ioengine=nbd", f"--uri=nbd+unix:///?socket={sock}",
                            "--rw=write", "--bs=1M", "--iodepth=4", "--size=1G"], check=True, stdout=subprocess.DEVNULL)
            driver = browser()
            modes = ("without page", "page's requests only", "with page")
            runs: dict[str, list[tuple[float, float, float]]] = {mode: [] for mode in modes}
            page_samples: list[float] = []
            browser_share: list[float] = []  # the browser's CPU-seconds per second while it shows the page
            for round_number in range(1, args.rounds + 1):
                for mode in runs:
                    if mode == "with page":
                        driver.get(f"http://127.0.0.1:{port}/")
                        time.sleep(2)  # the page has loaded and polls
                        before = driver.execute_script("return window.blockemuLive.samples")
                        browser_cpu = tree_cpu_s(driver.service.process.pid)  # chromedriver and Chromium
                    else:
                        driver.get("about:blank")
                    print(f"bench: round {round_number} {mode} ...", file=sys.stderr, flush=True)
                    if mode == "page's requests only":
                        with Poller(f"http://127.0.0.1:{port}") as poller:
                            runs[mode].append(run_fio(sock, "randread", "4k", 16, args.runtime, server.pid))
                        if poller.samples < args.runtime - 1:
                            sys.exit(f"bench: the poller fetched only {poller.samples} samples")
                    else:
                        runs[mode].append(run_fio(sock, "randread", "4k", 16, args.runtime, server.pid))
                    if mode == "with page":
                        after = driver.execute_script("return window.blockemuLive.samples")
                        errors = driver.execute_script("return window.blockemuLive.errors")
                        if errors or after <= before:
                            sys.exit(f"bench: the page did not poll during the run ({after - before} samples, "
                                     f"{errors} errors)")
                        page_samples.append((after - before) / args.runtime)
                        browser_share.append((tree_cpu_s(driver.service.process.pid) - browser_cpu) / args.runtime)
            # The server's side alone, in CPU time rather than wall time (which this machine's other
            # work blurs): what serving the page's requests costs, measured with the device idle.
            url = f"http://127.0.0.1:{port}"
            per_request_us = {}
            for path, count in (("/api/v1/live/sample", 300), ("/api/v1/live/fragmentation-map", 30), ("/", 100)):
                before_cpu = server_cpu_s(server.pid)
                for _ in range(count):
                    with urllib.request.urlopen(url + path, timeout=10) as answer:
                        answer.read()
                per_request_us[path] = (server_cpu_s(server.pid) - before_cpu) / count * 1e6
        finally:
            if driver is not None:
                driver.quit()
            server.terminate()
            server.wait(timeout=30)
    medians = {mode: [statistics.median(r[i] for r in results) for i in range(3)] for mode, results in runs.items()}
    rows = [{"mode": mode, "iops": round(m[0]), "server_cpu_us_per_request": f"{m[2]:.1f}",
             "rounds": " ".join(str(round(r[0])) for r in runs[mode])} for mode, m in medians.items()]
    print(format_table(rows, list(rows[0])))
    base = medians["without page"][0]
    for mode in modes[1:]:
        ratio = medians[mode][0] / base
        print(f"{mode} / without page, IOPS: {ratio:.3f} (cost {100 * (1 - ratio):.1f}%)")
    rate = statistics.median(page_samples)
    print(f"the page took {rate:.2f} samples/s; Chromium used {statistics.median(browser_share):.3f} "
          "CPU-seconds per second showing it")
    for path, us in per_request_us.items():
        print(f"server CPU per GET {path}: {us:.0f} µs")
    busy = medians["without page"][0] * medians["without page"][2]  # server CPU µs per second under fio
    page_us = rate * per_request_us["/api/v1/live/sample"]
    print(f"the page's polling costs the server {page_us:.0f} µs of CPU per second, "
          f"{100 * page_us / busy:.2f}% of the {busy / 1e6:.2f} CPU-seconds per second it spends on fio's reads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
