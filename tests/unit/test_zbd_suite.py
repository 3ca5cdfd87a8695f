"""The parsing and the verdict of tests/kernel/zbd_suite.py (fio's t/zbd on blockemu and null_blk)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from blockemu.config.load import load_config
from tests.kernel import zbd_suite
from tests.kernel.zbd_suite import CaseResult, Geometry, blockemu_only_failures, counts, parse

# guest_zbd.sh's copy of test-zbd-support's output: seconds since the start, then the line.
OUTPUT = """\
10 First sequential zone starts at sector 65536; zone size: 4 MB
18 Running test 01 ... PASS
23 Running test 03 ... SKIP    /dev/ublkb0 does not have 129 sequential zones
71 Running test 09 ... SKIP    /dev/ublkb0 is not a SCSI device
90 Running test 67 ... FAIL
95 Running test 75 ... SKIP    /dev/ublkb0 is not null_blk
96 1 tests passed
"""


def test_parse_reads_status_reason_and_duration() -> None:
    results = parse(OUTPUT)
    assert sorted(results) == [1, 3, 9, 67, 75]
    assert results[1] == CaseResult("PASS", 18, "")
    assert results[3] == CaseResult("SKIP", 5, "/dev/ublkb0 does not have 129 sequential zones")
    assert results[67] == CaseResult("FAIL", 19, "")
    assert counts(results) == "1 pass / 1 fail / 3 skip"


def test_a_failure_or_an_unexplained_skip_where_null_blk_passes_is_a_gap() -> None:
    blockemu = parse(OUTPUT)
    nullb = {n: CaseResult("PASS", 1) for n in (1, 3, 9, 67, 75, 80)}
    nullb[9] = CaseResult("SKIP", 1, "/dev/nullb0 is not a SCSI device")
    # 3: skipped for a geometry reason null_blk did not have; 67: failed; 75: null_blk-only; 80: never ran.
    assert blockemu_only_failures(blockemu, nullb) == [3, 67, 80]
    # What null_blk fails too is fio's, not ours.
    nullb[67] = CaseResult("FAIL", 1)
    assert blockemu_only_failures(blockemu, nullb) == [3, 80]


def test_both_modes_are_valid_blockemu_configs_with_the_geometry(tmp_path: Path) -> None:
    geometry = Geometry()
    for mode, limit in (("limits", geometry.max_open), ("nolimits", 0)):
        path = tmp_path / f"{mode}.toml"
        path.write_text(geometry.config(mode))
        raw = tomllib.loads(path.read_text())["zns"]
        assert (raw["max_open_zones"], raw["max_active_zones"]) == (limit, limit)
        load_config(path)
    zones = geometry.size_mib // geometry.zone_mib
    assert zones - geometry.conv >= 130  # tests 03 and 04 need that many sequential zones
    assert set(zbd_suite.SUBSET) <= set(range(1, 76))


def test_limits_run_only_for_a_fio_that_reads_max_active_zones(monkeypatch: pytest.MonkeyPatch) -> None:
    versions = {"newest": "3.41", "installed": "3.33"}
    monkeypatch.setattr(zbd_suite, "fio_version", versions.__getitem__)
    assert zbd_suite.reads_max_active("3.36") and zbd_suite.reads_max_active("3.41")
    assert not zbd_suite.reads_max_active("3.35") and not zbd_suite.reads_max_active("3.33")
    runs = [(r.tree, r.mode) for r in zbd_suite.full_runs()]
    assert runs == [("newest", "limits"), ("newest", "nolimits"), ("installed", "nolimits")]
    # Asked for by name, the old fio's run with limits is made.
    assert [(r.tree, r.mode) for r in zbd_suite.full_runs(["installed"], ["limits"])] == [("installed", "limits")]
    versions["installed"] = "3.36"
    assert ("installed", "limits") in [(r.tree, r.mode) for r in zbd_suite.full_runs()]
