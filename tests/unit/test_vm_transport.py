"""blockemu.vm picks NBD or ublk per device: zoned models go over ublk unless told otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockemu import vm
from blockemu.vm import host

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("config", "transport", "expected"), [
    ("zns.toml", "auto", "ublk"),
    ("ufs41.toml", "auto", "nbd"),
    ("zram.toml", "auto", "nbd"),
    ("zns.toml", "nbd", "nbd"),
    ("ufs41.toml", "ublk", "ublk"),
])
def test_device_transport(config: str, transport: str, expected: str) -> None:
    assert vm.device_transport(REPO / "configs" / config, transport) == expected


def test_unknown_transport_is_refused() -> None:
    with pytest.raises(vm.VmError, match="transport must be one of"):
        vm.device_transport(REPO / "configs" / "zns.toml", "iscsi")


def test_one_transport_per_config() -> None:
    configs = [REPO / "configs" / "ufs41.toml"] * 2
    assert host._per_device("ublk", configs) == ["ublk", "ublk"]
    assert host._per_device("nbd,ublk", configs) == ["nbd", "ublk"]
    with pytest.raises(vm.VmError, match="3 transports for 2 configs"):
        host._per_device("nbd,ublk,nbd", configs)


def test_server_argv_per_transport() -> None:
    nbd = vm.server_argv("py", "c.toml", "/run/s.sock", 9250, ["--set", "a.b=1"])
    assert nbd[:6] == ["py", "-m", "blockemu", "serve", "c.toml", "--unix"]
    ublk = vm.server_argv("py", "c.toml", "/run/s.sock", 9251, ["--set", "a.b=1"], "ublk")
    assert ublk == ["py", "-m", "blockemu", "serve", "c.toml", "--ublk", "--http", "127.0.0.1:9251",
                    "--set", "a.b=1"]


def test_guest_device_for_ublk_takes_its_path_from_the_server(tmp_path: Path) -> None:
    spec = {"python": "py", "extra_serve_args": [], "nbd_timeout_s": 60, "transports": ["nbd", "ublk"]}
    nbd, ublk = (vm.GuestDevice(i, "c.toml", spec, tmp_path) for i in range(2))
    assert (nbd.transport, nbd.path) == ("nbd", "/dev/nbd0")
    assert (ublk.transport, ublk.path) == ("ublk", "")
    (tmp_path / "server-1.log").write_text("blockemu: serving zns0\n  ublk:    /dev/null\n")
    assert ublk._ready() and ublk.path == "/dev/null"
    ublk.attach()  # nothing to attach: no nbd-client runs
    assert not ublk.attached


def _result(results: Path, boot_s: float | None, tail: str, exit_code: int = 0) -> vm.VmResult:
    return vm.VmResult(exit_code=exit_code, results_dir=results, console_tail=tail, boot_s=boot_s)


def _run_with_boots(outcomes: list[vm.VmResult], tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> tuple[vm.VmResult, int]:
    """vm.run with each boot replaced by the next of ``outcomes``; its result and how many boots it made."""
    boots = 0

    def fake_run_vm(*args: object) -> vm.VmResult:
        nonlocal boots
        (tmp_path / vm.CONSOLE_LOG).write_text(f"boot {boots}\n")
        boots += 1
        return outcomes[boots - 1]

    monkeypatch.setattr(host, "_prepare", lambda *args: (Path("vng"), Path("vmlinuz"), tmp_path))
    monkeypatch.setattr(host, "_run_vm", fake_run_vm)
    return vm.run([REPO / "configs" / "ufs41.toml"], ["true"], stream=False), boots


def test_a_guest_that_panics_before_the_harness_is_booted_once_more(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    panic = "[    1.59] Kernel panic - not syncing: Fatal exception in interrupt"
    outcomes = [_result(tmp_path, None, panic, vm.EXIT_HARNESS_ERROR), _result(tmp_path, 9.5, "ok")]
    result, boots = _run_with_boots(outcomes, tmp_path, monkeypatch)
    assert boots == 2 and result.exit_code == 0
    assert (tmp_path / "console.attempt1.log").read_text() == "boot 0\n"


@pytest.mark.parametrize(("boot_s", "tail"), [
    (None, "qemu: could not open kernel"),  # no panic: a harness error, not retried
    (3.0, "Kernel panic - not syncing"),  # the command ran: never repeated
])
def test_other_failures_are_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, boot_s: float | None,
                                        tail: str) -> None:
    failed = _result(tmp_path, boot_s, tail, vm.EXIT_HARNESS_ERROR)
    result, boots = _run_with_boots([failed, failed], tmp_path, monkeypatch)
    assert boots == 1 and result.exit_code == vm.EXIT_HARNESS_ERROR
