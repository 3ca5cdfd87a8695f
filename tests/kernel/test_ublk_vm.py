"""blockemu's ublk server under Linux 6.12 (tests/kernel/guest_ublk.sh does the work in the guest).

One boot runs every phase; this side checks what the guest saved: fio's
reports, `blkzone report` against the zones the config defines, and the
device's metrics and control API around refused writes, F2FS's garbage
collection and btrfs's zone appends.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from blockemu import vm
from blockemu.frontends.ublk.server import DEFAULT_MAX_IO_BUF_BYTES
from tests.conftest import require_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
GUEST_SCRIPT = Path(__file__).resolve().parent / "guest_ublk.sh"
MIB = 1024 * 1024
# The guest's ZNS device: configs/zns.toml with capacity_mib=2048.
ZONE_SECTORS = 64 * MIB // 512
ZONE_CAPACITY_SECTORS = 48 * MIB // 512
ZONES = 32
CONVENTIONAL_ZONES = 4

pytestmark = pytest.mark.kernel

# blkzone report (util-linux 2.38), one zone per line, wptr relative to start:
#   start: 0x0000a0000, len 0x020000, cap 0x018000, wptr 0x000800 reset:0 non-seq:0,
#   zcond: 4(cl) [type: 2(SEQ_WRITE_REQUIRED)]
ZONE_LINE = re.compile(r"start: (0x[0-9a-f]+), len (0x[0-9a-f]+), cap (0x[0-9a-f]+), wptr (0x[0-9a-f]+)"
                       r".*zcond:\s*\d+\((\w+)\) \[type: (\d+)")


def parse_report(text: str) -> list[dict[str, int | str]]:
    zones: list[dict[str, int | str]] = []
    for line in text.splitlines():
        match = ZONE_LINE.search(line)
        if match:
            start, length, cap, wptr, cond_name, kind = match.groups()
            zones.append({"start": int(start, 16), "len": int(length, 16), "cap": int(cap, 16),
                          "wptr": int(wptr, 16), "cond": cond_name, "type": int(kind)})
    return zones


class Metrics:
    """One /metrics scrape the guest saved; ``value`` sums the samples whose labels match."""

    def __init__(self, path: Path) -> None:
        self.samples = [sample for family in text_string_to_metric_families(path.read_text())
                        for sample in family.samples]

    def value(self, name: str, **labels: str) -> float:
        return sum(sample.value for sample in self.samples
                   if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


def _delta(before: Metrics, after: Metrics, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


def _fio_ok(path: Path) -> dict:
    report = json.loads(path.read_text())
    for job in report["jobs"]:
        assert job["error"] == 0, (path.name, job["jobname"])
    return report


@pytest.mark.timeout(1800)  # the VM's own timeout (1200 s) fires first
def test_ublk_conventional_zoned_and_kill(vm_ready: None, tmp_path: Path) -> None:
    require_tool("mkfs.btrfs")  # btrfs-progs: the guest's only producer of zone appends
    results = tmp_path / "results"
    result = vm.run([], ["sh", str(GUEST_SCRIPT)], results_dir=results, timeout_s=1200)
    log = (results / vm.COMMAND_LOG).read_text(errors="replace")
    assert result.exit_code == 0, f"guest failed ({result.exit_code}):\n{log[-4000:]}\n{result.console_tail}"
    for phase in ("conventional", "kill9", "zoned", "f2fs", "f2fs_zcap", "btrfs", "zonefs"):
        assert f"{phase}: PASS" in log
    # zonefs: seq/0 appended 8 MiB (the write pointer), then truncated to 0 (reset); seq/1 truncated to
    # its capacity (finish).
    assert parse_report((results / "zonefs-seq0.txt").read_text())[0]["wptr"] == (8 << 20) // 512
    zonefs_after = parse_report((results / "zonefs-after.txt").read_text())
    assert [zone["cond"] for zone in zonefs_after] == ["em", "fu"]

    _fio_ok(results / "fio-ublk-ufs-raw.json")
    _fio_ok(results / "fio-ublk-zbd.json")
    _fio_ok(results / "fio-ublk-zbd-rand.json")
    _fio_ok(results / "fio-ublk-f2fs.json")
    _fio_ok(results / "fio-ublk-f2fs-zcap.json")

    sysfs = dict(line.split("=", 1) for line in (results / "zoned-sysfs.txt").read_text().split())
    assert sysfs["zoned"] == "host-managed"
    assert int(sysfs["nr_zones"]) == ZONES
    assert int(sysfs["chunk_sectors"]) == ZONE_SECTORS
    assert int(sysfs["max_open_zones"]) == 14 and int(sysfs["max_active_zones"]) == 14
    assert int(sysfs["zone_append_max_bytes"]) == 512 * 1024
    # ... and enforced: 14 explicit opens, then a 15th open and a write to a 15th zone refused,
    # both read as EOVERFLOW (BLK_STS_ZONE_ACTIVE_RESOURCE) by the guest.
    assert ("zone limits: 14 opens, the 15th open and a 15th zone's write refused with EOVERFLOW "
            "(14 reported open)") in log
    limits = parse_report((results / "blkzone-limits.txt").read_text())
    assert [zone["cond"] for zone in limits[4:18]] == ["oe"] * 14
    assert limits[18]["cond"] == limits[19]["cond"] == "em"

    before = parse_report((results / "blkzone-before.txt").read_text())
    assert len(before) == ZONES
    for index, zone in enumerate(before):
        assert zone["start"] == index * ZONE_SECTORS and zone["len"] == ZONE_SECTORS
        if index < CONVENTIONAL_ZONES:
            assert (zone["type"], zone["cap"]) == (1, ZONE_SECTORS)
        else:
            assert (zone["type"], zone["cap"], zone["wptr"], zone["cond"]) == (2, ZONE_CAPACITY_SECTORS, 0, "em")

    # After 1 MiB at zone 5, open 6, close 5, finish 7 (wptr is relative to the zone start).
    after = parse_report((results / "blkzone-after-ops.txt").read_text())
    assert (after[5]["cond"], after[5]["wptr"]) == ("cl", MIB // 512)
    assert (after[6]["cond"], after[6]["wptr"]) == ("oe", 0)
    assert (after[7]["cond"], after[7]["wptr"]) == ("fu", ZONE_CAPACITY_SECTORS)
    reset = parse_report((results / "blkzone-after-reset.txt").read_text())
    assert all(zone["cond"] == "em" and zone["wptr"] == 0 for zone in reset[CONVENTIONAL_ZONES:])

    _check_refused_writes(results)
    _check_f2fs_gc(results)
    _check_btrfs_zone_appends(results)


def _check_refused_writes(results: Path) -> None:
    """The two writes the zone rules forbid (EIO in the guest) left the device as it was."""
    before, after = Metrics(results / "refused-metrics-before.prom"), Metrics(results / "refused-metrics-after.prom")
    for name, labels in (("blockemu_requests_total", {"op": "write"}), ("blockemu_bytes_total", {"op": "write"}),
                         ("blockemu_zns_host_bytes_total", {"direction": "write"}),
                         ("blockemu_zns_appends_total", {})):
        assert _delta(before, after, name, **labels) == 0, (name, labels)
    # The write into full zone 7 reached the device, which refused it; Linux
    # refused the one into zone 5 itself (guest_ublk.sh explains why).
    assert _delta(before, after, "blockemu_zns_refusals_total", error="ZoneFullError") == 1
    assert _delta(before, after, "blockemu_request_errors_total", op="write") == 1
    zones_before = json.loads((results / "refused-zones-before.json").read_text())
    assert zones_before == json.loads((results / "refused-zones-after.json").read_text())
    assert (zones_before[5]["condition"], zones_before[5]["wp"]) == ("closed", 5 * 64 * MIB + MIB)
    assert zones_before[7]["condition"] == "full"


def _check_f2fs_gc(results: Path) -> None:
    """F2FS's garbage collector moved the half-valid sections: device reads, writes, then zone resets."""
    match = re.search(r"(\d+) sections collected", (results / "f2fs-gc.txt").read_text())
    assert match is not None and int(match[1]) >= 1
    before, after = Metrics(results / "f2fs-gc-before.prom"), Metrics(results / "f2fs-gc-after.prom")
    umounted = Metrics(results / "f2fs-gc-umount.prom")
    # Half of each churned section stays valid (fio's file has some too); GC reads what it moves.
    assert _delta(before, after, "blockemu_bytes_total", op="read") >= 16 * MIB
    assert _delta(before, after, "blockemu_bytes_total", op="write") >= 16 * MIB
    assert _delta(before, umounted, "blockemu_zns_zone_resets_total") >= 1


def _check_btrfs_zone_appends(results: Path) -> None:
    """btrfs wrote its 64 MiB of file data as zone appends (the guest reread and scrubbed it)."""
    before, after = Metrics(results / "btrfs-before.prom"), Metrics(results / "btrfs-after.prom")
    assert _delta(before, after, "blockemu_zns_appends_total") >= 64 * MIB // DEFAULT_MAX_IO_BUF_BYTES
    assert _delta(before, after, "blockemu_zns_append_bytes_total") >= 64 * MIB
    assert "no errors found" in (results / "btrfs-scrub.log").read_text()


@pytest.mark.timeout(900)
def test_vm_run_attaches_zns_over_ublk_and_ufs_over_nbd(vm_ready: None, tmp_path: Path) -> None:
    """`blockemu vm run` with the default transport: ZNS becomes /dev/ublkbN (host-managed), UFS /dev/nbdN."""
    results = tmp_path / "results"
    script = ('for i in 0 1; do eval dev=\\$BLOCKEMU_DEV$i; '
              'echo "$dev $(cat /sys/block/${dev#/dev/}/queue/zoned)"; done > "$BLOCKEMU_RESULTS/devices.txt"')
    result = vm.run([REPO_ROOT / "configs" / "zns.toml", REPO_ROOT / "configs" / "ufs41.toml"],
                    ["sh", "-c", script], results_dir=results, timeout_s=600)
    assert result.exit_code == 0, result.console_tail
    zns, ufs = (results / "devices.txt").read_text().splitlines()
    assert re.fullmatch(r"/dev/ublkb\d+ host-managed", zns)
    assert ufs == "/dev/nbd1 none"
    # The ublk server's control API and metrics came back like NBD's.
    assert "blockemu_zns" in (results / "metrics-0.prom").read_text()
