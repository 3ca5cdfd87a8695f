"""fio's t/zbd suite (a subset) on blockemu's ZNS model over ublk and on null_blk, in one boot.

The subset (zbd_suite.SUBSET: zone limits, errors, resets) runs with the
newest fio scripts/fetch_fio.sh built; `make conformance` runs all of it, for
both fio versions, with and without limits.  blockemu fails this test when
it fails a case null_blk passes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require
from tests.kernel import zbd_suite

pytestmark = pytest.mark.kernel


def _fio_problem() -> str | None:
    try:
        zbd_suite.fio_tree("newest")
    except zbd_suite.vm.VmError as err:
        return str(err)
    return None


@pytest.mark.timeout(1500)  # the VM's own timeout (1200 s) fires first
def test_zbd_subset_matches_null_blk(vm_ready: None, tmp_path: Path) -> None:
    problem = _fio_problem()
    require(problem is None, problem or "")
    runs = [zbd_suite.SuiteRun("newest", "limits", zbd_suite.SUBSET)]
    results = tmp_path / "results"
    result = zbd_suite.run(runs, results, timeout_s=1200)
    log = (results / zbd_suite.vm.COMMAND_LOG).read_text(errors="replace")
    assert result.exit_code == 0, f"guest failed ({result.exit_code}):\n{log[-4000:]}\n{result.console_tail}"

    version = zbd_suite.fio_version("newest")
    parsed = {target: zbd_suite.parse(zbd_suite.result_file(results, version, "limits", target).read_text())
              for target in zbd_suite.TARGETS}
    for target, tests in parsed.items():
        assert sorted(tests) == sorted(zbd_suite.SUBSET), (target, log[-2000:])
        # Every case of the subset applies to this geometry: a skip would hide what it tests.
        assert [n for n, r in tests.items() if r.status == "SKIP"] == [], (target, tests)
    # Both devices really had the limits the subset is about.
    assert log.count("max_open=14 max_active=14") == 2, log
    # null_blk is the reference: it must have passed the limit cases for the comparison to mean anything.
    assert parsed["nullb"][67].status == "PASS", (results / f"zbd-{version}-limits-nullb.txt").read_text()
    gaps = zbd_suite.blockemu_only_failures(parsed["blockemu"], parsed["nullb"])
    details = "\n".join(f"test {n}:\n{zbd_suite.case_log(results, version, 'limits', 'blockemu', n)[-1500:]}"
                        for n in gaps)
    assert gaps == [], f"blockemu fails what null_blk passes: {gaps}\n{details}"
