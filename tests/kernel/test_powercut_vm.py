"""F2FS under Linux 6.12 across emulated power cuts (guest_powercut.sh), one boot.

The guest writes a fsync'd and an unflushed file, takes the device offline and
cuts its power (drop, then torn), remounts, and checks the fsync'd data and
fsck.f2fs.  Here: the guest's verdict, that each cut really lost unflushed
sectors, that F2FS rolled fsync'd data forward, and the device's counters.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blockemu import vm
from tests.kernel.test_vm import metric

REPO_ROOT = Path(__file__).resolve().parents[2]
GUEST_SCRIPT = Path(__file__).resolve().parent / "guest_powercut.sh"
UNFLUSHED_SECTORS = (4 << 20) // 4096  # the O_DIRECT file the guest leaves unflushed, per cut

pytestmark = pytest.mark.kernel


@pytest.mark.timeout(1200)  # the VM's own timeout (900 s) must fire first
def test_f2fs_keeps_fsynced_data_across_power_cuts(vm_ready: None, tmp_path: Path) -> None:
    results = tmp_path / "results"
    result = vm.run([REPO_ROOT / "configs" / "ufs41.toml"], ["sh", str(GUEST_SCRIPT)], results_dir=results,
                    timeout_s=900, extra_serve_args=["--set", "device.capacity_mib=2048"])
    log = (results / vm.COMMAND_LOG).read_text(errors="replace")
    assert result.exit_code == 0, f"guest failed ({result.exit_code}):\n{log[-3000:]}\n{result.console_tail}"
    assert "POWERCUT: PASS" in log
    assert "synced-drop.dat intact" in log and "synced-torn.dat intact" in log

    drop = json.loads((results / "powercut-drop.json").read_text())
    torn = json.loads((results / "powercut-torn.json").read_text())
    # Each cut found the unflushed file in the cache and lost it (torn: part of it).
    assert drop["mode"] == "drop" and drop["dropped_sectors"] >= UNFLUSHED_SECTORS and drop["kept_sectors"] == 0
    assert torn["mode"] == "torn" and torn["dropped_sectors"] > 0 and torn["kept_sectors"] > 0
    assert torn["pending_sectors"] >= UNFLUSHED_SECTORS

    # F2FS found its fsync'd files past the last checkpoint and rolled them forward.
    dmesg = (results / vm.DMESG_FILE).read_text(errors="replace")
    assert "recover_data: ino" in dmesg and "synced-drop.dat" in dmesg
    for mode in ("drop", "torn"):
        fsck = (results / f"fsck-f2fs-powercut-{mode}.log").read_text()
        assert "[Fail]" not in fsck and "free segment_count matched with CP" in fsck

    snapshot = next(results.glob("metrics-0.prom*")).read_text()
    assert metric(snapshot, "blockemu_powercuts_total", mode="drop") == 1
    assert metric(snapshot, "blockemu_powercuts_total", mode="torn") == 1
    dropped = metric(snapshot, "blockemu_powercut_dropped_sectors_total")
    assert dropped == drop["dropped_sectors"] + torn["dropped_sectors"]
    assert metric(snapshot, "blockemu_requests_total", op="flush") > 0
