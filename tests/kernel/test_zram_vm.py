"""The zram model under a real kernel: swap under memory pressure, then ext4."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from blockemu import vm
from tests.kernel.test_vm import metric

REPO_ROOT = Path(__file__).resolve().parents[2]
GUEST_SCRIPT = Path(__file__).resolve().parent / "guest_zram.sh"

pytestmark = pytest.mark.kernel


@pytest.mark.timeout(1500)  # the VM's own timeout (900 s) must fire first
def test_zram_swap_under_pressure_and_ext4(vm_ready: None, tmp_path: Path) -> None:
    results = tmp_path / "results"
    # The server keeps its pages in guest memory: it locks itself in memory and
    # is protected from the OOM killer (lock_memory), as the kernel's zram is
    # by being kernel memory.
    serve_args = ["--set", "device.capacity_mib=768", "--set", "zram.lock_memory=true",
                  "--set", "zram.mem_limit_mib=512"]
    result = vm.run([REPO_ROOT / "configs" / "zram.toml"], ["sh", str(GUEST_SCRIPT)], mem="1G",
                    results_dir=results, timeout_s=900, extra_serve_args=serve_args)
    log = (results / vm.COMMAND_LOG).read_text(errors="replace")
    assert result.exit_code == 0, f"guest failed ({result.exit_code}):\n{log[-3000:]}\n{result.console_tail}"
    assert "ZRAM-VM: PASS" in log
    assert "0 chunks differ" in log
    pressure = (results / "pressure.txt").read_text()
    swapped_kib = int(re.search(r"pressure: (\d+) KiB in swap", pressure).group(1))  # type: ignore[union-attr]
    assert swapped_kib > 64 * 1024, "the workload must really have been swapped out to the device"
    report = json.loads((results / "fio-zram-ext4.json").read_text())
    assert report["jobs"][0]["error"] == 0
    snapshot = next(results.glob("metrics-0.prom*")).read_text()
    assert metric(snapshot, "blockemu_bytes_total", op="write") > 64 * 1024 * 1024
    assert metric(snapshot, "blockemu_request_errors_total", op="write") == 0
