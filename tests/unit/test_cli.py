"""The command line: one table of command groups, light to start, a client that agrees with the server."""

from __future__ import annotations

import subprocess
import sys

import pytest

from blockemu.cli import COMMANDS, build_parser, ctl


def test_every_group_is_in_the_table_in_order() -> None:
    assert list(COMMANDS) == ["serve", "replay", "trace", "ctl", "experiment", "vm"]
    parser = build_parser()
    for words in (["serve", "c.toml"], ["replay", "c.toml", "t.trace"], ["trace", "convert", "a", "b"],
                  ["ctl", "device"],
                  ["experiment", "gc", "--quick"], ["vm", "shell"]):
        assert callable(parser.parse_args(words).func)


def assert_builds_without(command: str, modules: tuple[str, ...]) -> None:
    """Building ``command``'s parser in a fresh interpreter imports none of ``modules``."""
    code = (f"import sys; from blockemu.cli import build_parser; build_parser({command!r}); "
            f"heavy = [m for m in {modules!r} if m in sys.modules]; print(heavy); sys.exit(bool(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("command", ["replay", "trace", "serve"])
def test_a_command_builds_without_the_control_client(command: str) -> None:
    # The table imports a command's module only when that command is built: `replay` of a million
    # requests should not pay for ctl's HTTP stack before it starts.
    assert_builds_without(command, ("blockemu.cli.ctl", "blockemu.cli.experiment", "blockemu.control.client",
                                    "urllib.request"))


@pytest.mark.parametrize("command", ["serve", "ctl", "vm", "replay", "trace"])
def test_a_command_but_experiment_starts_without_the_models(command: str) -> None:
    # `serve` starts inside slow VMs, `ctl` is the guest's client: neither may pay for numpy and the models.
    assert_builds_without(command, ("numpy", "blockemu.devices", "blockemu.runtime", "prometheus_client"))


def test_the_vm_studies_run_their_guest_half_as_the_same_command(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser("experiment")
    args = parser.parse_args(["experiment", "hid", "--guest", "--size-mib", "48", "--levels", "0,100",
                              "--time-scale", "25"])
    assert args.guest and args.size_mib == 48 and args.levels == "0,100"
    assert not parser.parse_args(["experiment", "pmqos-vm", "--quick"]).guest
    with pytest.raises(SystemExit):
        parser.parse_args(["experiment", "hid", "--help"])
    assert "--guest" not in capsys.readouterr().out  # the flag is for the host half, not for people


def test_the_ctl_client_knows_the_servers_vocabularies() -> None:
    """The client imports no model; its argparse choices are pinned to the server's lists here."""
    from blockemu.devices.zns.device import FAULT_CONDITIONS
    from blockemu.layers.faults import FAULT_OPS
    from blockemu.layers.power import POWER_ATTRIBUTES
    from blockemu.layers.write_cache import POWERCUT_MODES

    assert ctl.POWER_ATTRIBUTES == POWER_ATTRIBUTES
    assert ctl.POWERCUT_MODES == POWERCUT_MODES
    assert ctl.FAULT_OPS == FAULT_OPS
    assert ctl.ZONE_FAULT_CONDITIONS == FAULT_CONDITIONS
    from blockemu.devices.ufs.writebooster import WB_ATTRIBUTES

    assert ctl.WB_ATTRIBUTES == WB_ATTRIBUTES


def test_the_hid_state_lists_match_the_model() -> None:
    from blockemu.control.client import HID_FINAL_STATES, HID_STATES
    from blockemu.devices.ufs.hid import FINAL_STATES, HidState

    assert HID_STATES == tuple(s.value for s in HidState)
    assert set(HID_FINAL_STATES) == {s.value for s in FINAL_STATES}


def _blockemu(*words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "blockemu", *words], capture_output=True, text=True, timeout=60)


def test_version() -> None:
    import blockemu

    result = _blockemu("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"blockemu {blockemu.__version__}"


def test_ctl_without_a_server_says_where_it_looked_and_how_to_start_one() -> None:
    from blockemu.control.client import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    result = _blockemu("ctl", "--url", url, "device")
    assert result.returncode == 1 and result.stdout == ""
    line = result.stderr
    assert line.count("\n") == 1, line
    assert url in line and "blockemu serve" in line and "--url" in line and "BLOCKEMU_URL" in line


def test_a_stray_word_gets_the_subcommands_usage() -> None:
    result = _blockemu("ctl", "timing", "realtime")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: blockemu ctl timing"), result.stderr
    assert "unrecognized arguments: realtime" in result.stderr


def test_hid_wait_accepts_only_hid_states(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser("ctl").parse_args(["ctl", "hid", "wait", "defrag_done"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'defrag_done'" in capsys.readouterr().err
    assert build_parser("ctl").parse_args(["ctl", "hid", "wait", "defrag_completed"]).states == ["defrag_completed"]
