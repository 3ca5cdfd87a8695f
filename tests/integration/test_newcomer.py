"""What a new user runs first, as the pages show it, on a freshly served device (issue 24)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blockemu.control.client import ServedDevice
from tests.conftest import require_tool, toml_text

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def ctl(served: ServedDevice, *words: str, stdout: int | None = subprocess.PIPE,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "blockemu", "ctl", "--url", served.control.url, *words],
                          stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=timeout)


def test_the_hid_sequence_on_a_fresh_device(served: ServedDevice) -> None:
    """Without data: one line saying what to do, and a wait that ends; with data: the documented result."""
    aged = ctl(served, "age", "--fragmentation", "60")
    assert aged.returncode == 1 and aged.stderr.count("\n") == 1, aged.stderr
    assert "nothing to age" in aged.stderr and "--all" in aged.stderr
    assert ctl(served, "hid", "set", "defrag_trigger", "enable").returncode == 0
    started = time.monotonic()
    waited = ctl(served, "hid", "wait", "defrag_completed", "--quiet", "--timeout", "100")
    assert waited.returncode == 3, waited.stderr
    assert time.monotonic() - started < 30
    assert waited.stderr.count("\n") == 1 and "defrag_not_required" in waited.stderr

    # README's sequence, data first (nbdcopy from stdin, as the page writes it).
    nbdcopy = require_tool("nbdcopy")
    data = os.urandom(16 * 1024 * 1024)
    subprocess.run([nbdcopy, "-", served.uri], input=data, check=True, timeout=120)
    aged = ctl(served, "age", "--fragmentation", "60")
    assert aged.returncode == 0, aged.stderr
    assert json.loads(aged.stdout)["scattered_bytes"] > 0
    assert ctl(served, "hid", "set", "defrag_trigger", "enable").returncode == 0
    waited = ctl(served, "hid", "wait", "defrag_completed", "--timeout", "100")
    assert waited.returncode == 0 and waited.stdout.strip() == "defrag_completed", waited.stderr
    assert json.loads(ctl(served, "fragmentation").stdout)["fragmented_bytes"] == 0


def test_the_python_example_of_the_serving_page_runs_as_written() -> None:
    require_tool("nbdkit")
    page = (ROOT / "docs" / "serving.md").read_text()
    block = re.search(r"## Python\n\n```python\n(.*?)```", page, re.S)
    assert block is not None
    result = subprocess.run([sys.executable, "-c", block.group(1)], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.strip().splitlines()[-1]) == 0.0  # fragmented bytes after the defrag


@pytest.mark.parametrize("words", [("device",), ("metrics",), ("fragmentation",), ("hid", "show"),
                                   ("hid", "get", "state"), ("timing",), ("faults", "show"),
                                   ("powercut", "--status"), ("trace", "status")])
def test_ctl_exits_quietly_when_its_reader_is_gone(served: ServedDevice, words: tuple[str, ...]) -> None:
    """`blockemu ctl ... | head -1`: a pipe whose reader is gone, so that every write fails at once."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = ctl(served, *words, stdout=write_end)
    finally:
        os.close(write_end)
    assert result.stderr == "", result.stderr
    assert result.returncode == 141  # as a program killed by SIGPIPE


def test_ctl_zone_report_into_head(real_components: None, tmp_path: Path) -> None:
    config = tmp_path / "zns.toml"
    config.write_text(toml_text({"device": {"type": "zns", "name": "zns_pipe", "capacity_mib": 512},
                                 "zns": {"zone_size_mib": 1}}))
    with ServedDevice(config) as served:
        shell = (f"{sys.executable} -m blockemu ctl --url {served.control.url} zone report | head -1; "
                 "echo status ${PIPESTATUS[0]} >&2")
        result = subprocess.run(["bash", "-c", shell], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith("zone     0:") and result.stdout.count("\n") == 1
    assert result.stderr.strip() in ("status 0", "status 141"), result.stderr


def test_power_without_the_layer_says_how_to_turn_it_on(served: ServedDevice) -> None:
    for words in (("power", "show"), ("power", "get", "cur_freq")):
        result = ctl(served, *words)
        assert result.returncode == 1 and result.stderr.count("\n") == 1
        assert "404" in result.stderr and "--set power.enabled=true" in result.stderr


def test_set_freq_shows_the_new_frequency_in_the_reply(real_components: None, small_config: Path) -> None:
    with ServedDevice(small_config, ["power.enabled=true"]) as served:
        assert ctl(served, "power", "set", "governor", "userspace").returncode == 0
        frequencies = ctl(served, "power", "get", "available_frequencies").stdout.split()
        wanted = frequencies[0]
        reply = ctl(served, "power", "set", "set_freq", wanted)
        assert reply.returncode == 0, reply.stderr
        assert json.loads(reply.stdout)["cur_freq"] == int(wanted)


def test_trace_start_resolves_a_relative_path_against_the_callers_directory(served: ServedDevice,
                                                                            tmp_path: Path) -> None:
    started = subprocess.run([sys.executable, "-m", "blockemu", "ctl", "--url", served.control.url, "trace",
                              "start", "relative.trace"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    assert ctl(served, "trace", "stop").returncode == 0
    assert (tmp_path / "relative.trace").is_file()


def test_nbdkit_run_by_hand_with_a_filter(real_components: None, small_config: Path, tmp_path: Path) -> None:
    """README's by-hand command, from the repository root, without `blockemu serve`'s PYTHONPATH."""
    import nbd as libnbd

    from blockemu.control.client import ControlClient, free_port

    sock, stats = tmp_path / "hand.sock", tmp_path / "stats.txt"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    argv = ["nbdkit", "--foreground", "--exit-with-parent", "--unix", str(sock), "--filter=stats",
            "python", "plugins/blockemu.py", f"config={small_config}", f"http=127.0.0.1:{port}",
            f"statsfile={stats}"]
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sock.exists(), process.communicate(timeout=10)[0] if process.poll() is not None else "no socket"
        handle = libnbd.NBD()
        handle.connect_uri(f"nbd+unix:///?socket={sock}")
        handle.pwrite(b"h" * 4096, 0)
        assert handle.pread(4096, 0) == b"h" * 4096
        handle.shutdown()
        assert ControlClient(f"http://127.0.0.1:{port}").device()["name"] == "ufs_test"
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert "Error" not in output, output
    assert "write: 1 ops" in stats.read_text()
