"""``blockemu experiment launch --vm``: app launches under Linux 6.12's reclaim, swapping to blockemu zram.

One boot, two policies, the quick sizes: the apps' memory cgroup must really
swap to the blockemu devices during the timed launches (swap-ins, swap-outs
and memory.high throttling all counted by the kernel), no app may be
OOM-killed, and every launch is timed.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest

from blockemu.experiments.launch import vm

pytestmark = pytest.mark.kernel


@pytest.mark.timeout(1500)
def test_launches_swap_to_blockemu_zram_under_the_kernels_reclaim(vm_ready: None, tmp_path: Path) -> None:
    args = argparse.Namespace(quick=True, seed=None, vm_policies="lz4,zstd", vm_ram_fraction=0.5, mem="2G",
                              timeout=1200.0, out=str(tmp_path))
    assert vm.host_main(args) == 0
    with (tmp_path / "launch_vm.csv").open() as f:
        rows = {row["policy"]: row for row in csv.DictReader(f)}
    assert list(rows) == ["lz4", "zstd"]
    launches = vm.sizes(quick=True)["launches"]
    for policy, row in rows.items():
        assert int(row["launches"]) == launches, policy
        # Half the working set does not fit: the timed launches fault pages back from the device (about
        # 7,300 swap-ins here), and push others out to it.
        assert int(row["pswpin"]) > 1000 and int(row["refault_anon"]) > 1000, row
        assert int(row["pswpout"]) > 100 and int(row["high_events"]) > 0, row
        assert float(row["mean_ms"]) > 0 and float(row["zram_ratio"]) > 1.2, row
    # zstd stores the same pages smaller than lz4 (the device's own mm_stat).
    assert float(rows["zstd"]["zram_ratio"]) > float(rows["lz4"]["zram_ratio"])
    assert (tmp_path / "launch_vm.png").stat().st_size > 0
