"""Real Linux 6.12 in a VM on blockemu devices (``blockemu.vm``).

Two boots in all: the acceptance test (F2FS and ext4 with fio verification on
the UFS model) and a short one for exit codes and output streaming; the
timeout test kills its VM during boot.  The tests of the set-up errors and
the command line start no VM and carry no ``kernel`` marker.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from blockemu import vm
from blockemu.vm import host

REPO_ROOT = Path(__file__).resolve().parents[2]
UFS_CONFIG = REPO_ROOT / "configs" / "ufs41.toml"
GUEST_SCRIPT = Path(__file__).resolve().parent / "guest_fs_verify.sh"
MIB = 1 << 20
# What guest_fs_verify.sh writes per filesystem, O_DIRECT: 4 KiB random
# writes and 1 MiB sequential writes.  Random writes dominate the run time
# under software emulation (a few hundred IOPS).
RAND_MIB = 16
SEQ_MIB = 32
FIO_WRITE_BYTES_PER_FS = (RAND_MIB + SEQ_MIB) * MIB

SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of NAME whose labels include LABELS (Prometheus text)."""
    total = 0.0
    found = False
    for line in text.splitlines():
        match = SAMPLE.match(line.strip())
        if not match or match["name"] != name:
            continue
        sample_labels = dict(LABEL.findall(match["labels"] or ""))
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            total += float(match["value"])
            found = True
    assert found, f"no sample {name}{labels} in the metrics snapshot"
    return total


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes containing TEXT (qemu names the results folder)."""
    hits = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            hits.append(f"{entry.name}: {cmdline[:200]}")
    return hits


@pytest.mark.kernel
def test_f2fs_and_ext4_verify_on_ufs(vm_ready: None, tmp_path: Path) -> None:
    results = tmp_path / "results"
    # Takes 2-3 min on 2 cores; the limit stays under pytest's own timeout
    # (pyproject) so the harness, not pytest, kills a hung guest.
    command = ["sh", str(GUEST_SCRIPT), f"{RAND_MIB}M", f"{SEQ_MIB}M"]
    # Realtime timing: each request occupies the device for its modeled
    # service time, so fio's iodepth 16 shows as queue depth.  In virtual
    # timing a request completes the moment it is served and overlaps others
    # only by accident of thread scheduling.
    result = vm.run([UFS_CONFIG], command, results_dir=results, timeout_s=600,
                    extra_serve_args=["--set", "timing.mode=realtime"])
    assert result.exit_code == 0, f"guest script failed ({result.exit_code}):\n{result.console_tail}"
    assert "FS-VERIFY: PASS" in (results / vm.COMMAND_LOG).read_text()
    assert _processes_mentioning(str(results)) == []

    # fio's own verdicts, per filesystem and phase.
    for fs in ("f2fs", "ext4"):
        for phase in ("write", "reverify"):
            report = json.loads((results / f"fio-{fs}-{phase}.json").read_text())
            assert [job["error"] for job in report["jobs"]] == [0, 0], (fs, phase)

    dmesg = (results / vm.DMESG_FILE).read_text(errors="replace")
    assert "I/O error" not in dmesg
    assert "nbd0" in dmesg or "f2fs" in dmesg.lower()

    # The kernel's I/O arrived at the device model.
    text = (results / "metrics-0.prom").read_text()
    written = metric(text, "blockemu_bytes_total", op="write")
    read = metric(text, "blockemu_bytes_total", op="read")
    # O_DIRECT: every byte fio wrote reached the device, plus metadata; and
    # each filesystem read it all back twice (verify pass, then --verify_only).
    assert written >= 2 * FIO_WRITE_BYTES_PER_FS
    assert read >= 2 * 2 * FIO_WRITE_BYTES_PER_FS
    assert metric(text, "blockemu_requests_total", op="write") >= 2 * RAND_MIB * MIB // 4096
    assert metric(text, "blockemu_requests_total", op="read") > 0
    # Journals/checkpoints flush; mkfs discards the whole device.
    assert metric(text, "blockemu_requests_total", op="flush") > 0
    assert metric(text, "blockemu_requests_total", op="trim") > 0
    # iodepth 16 with O_DIRECT, realtime: the device saw requests overlap.
    assert metric(text, "blockemu_queue_depth_peak") >= 2
    assert json.loads((results / "device-0.json").read_text())["type"] == "ufs"


@pytest.mark.kernel
def test_exit_code_and_output_come_back(
    vm_ready: None, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    script = 'test -b "$BLOCKEMU_DEV0" && echo "dev-ok $BLOCKEMU_HTTP0"; echo to-stderr >&2; exit 7'
    result = vm.run([UFS_CONFIG], ["sh", "-c", script], results_dir=results, timeout_s=600)
    assert result.exit_code == 7, result.console_tail
    assert not result.timed_out
    log = (results / vm.COMMAND_LOG).read_text()
    assert "dev-ok http://127.0.0.1:9250" in log and "to-stderr" in log
    # Streamed to the host as it ran, not only saved.
    streamed = capfd.readouterr().out
    assert "dev-ok http://127.0.0.1:9250" in streamed
    assert (results / "metrics-0.prom").is_file()
    assert (results / vm.DMESG_FILE).is_file()
    assert _processes_mentioning(str(results)) == []


@pytest.mark.kernel
def test_hung_guest_is_killed_at_timeout(vm_ready: None, tmp_path: Path) -> None:
    results = tmp_path / "results"
    # 5 s is less than a boot takes, so this kills the VM mid-boot: the same
    # path as a guest that hangs, without paying for a full boot.
    result = vm.run([], ["sleep", "3600"], results_dir=results, timeout_s=5)
    assert result.timed_out
    assert result.exit_code == vm.EXIT_TIMEOUT
    # Whatever the console showed so far is kept (it may be nothing yet).
    assert (results / vm.CONSOLE_LOG).is_file()
    assert _processes_mentioning(str(results)) == []


@pytest.mark.parametrize("missing", ["kernel", "qemu"])
def test_missing_pieces_name_their_setup_step(
    missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No VM is started: the check happens before anything is launched.
    if missing == "kernel":
        monkeypatch.delenv("BLOCKEMU_KERNEL", raising=False)
        monkeypatch.setenv("BLOCKEMU_CACHE_DIR", str(tmp_path / "empty-cache"))
        expected = "scripts/fetch_kernel.sh"
    else:
        kernel = tmp_path / "vmlinuz"
        kernel.write_bytes(b"")
        monkeypatch.setenv("BLOCKEMU_KERNEL", str(kernel))
        monkeypatch.setattr(host, "find_vng", lambda: Path("/nonexistent/vng"))
        monkeypatch.setenv("PATH", str(tmp_path))
        expected = "apt-get install qemu-system-x86"
    with pytest.raises(vm.VmError) as err:
        vm.run([], ["true"], results_dir=tmp_path / "results")
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_splits_configs_from_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from blockemu.cli import build_parser

    calls: list[tuple[list[Path], list[str], str]] = []

    def fake_run(configs: list[Path], command: list[str], **kwargs: object) -> vm.VmResult:
        calls.append((configs, command, str(kwargs["mem"])))
        return vm.VmResult(exit_code=3, results_dir=Path("."), console_tail="")

    monkeypatch.setattr(vm, "run", fake_run)
    parser = build_parser("vm")
    args = parser.parse_args(["vm", "run", "--mem", "1G", "a.toml", "b.toml", "--", "sh", "-c", "exit 3", "--x"])
    assert args.func(args) == 3
    assert calls == [([Path("a.toml"), Path("b.toml")], ["sh", "-c", "exit 3", "--x"], "1G")]
    args = parser.parse_args(["vm", "run", "a.toml", "sh"])
    assert args.func(args) == 2  # no "--": usage error, nothing run
    assert len(calls) == 1
