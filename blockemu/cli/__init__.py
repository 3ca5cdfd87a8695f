"""``blockemu``: serve devices, control them, boot them under a real kernel.

The command line is the top floor: nothing else in the package imports it.
Each command group is one module, registered in :data:`COMMANDS`, the way
git's builtin table or pip's ``commands_dict`` do it.  A module's
``configure(parser)`` adds the group's arguments and sets ``func``, the
function that runs the command and returns the exit status.
"""

from __future__ import annotations

import argparse
import sys

from blockemu.cli import ctl, experiment, replay, serve, vm
from blockemu.cli.common import Command

DESCRIPTION = "``blockemu``: serve devices, control them, boot them under a real kernel."
COMMANDS: dict[str, Command] = {
    "serve": Command("serve a device over NBD (nbdkit) with a control API", serve.configure),
    "replay": Command("run a recorded trace or fio iolog through a device model in virtual time",
                      replay.configure),
    "ctl": Command("talk to a running device's control API", ctl.configure),
    "experiment": Command("run a study: seeded, writes CSV + PNG, prints a table", experiment.configure),
    "vm": Command("run commands against devices in a Linux VM", vm.configure),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only``, just that command's arguments (the others stay empty)."""
    parser = argparse.ArgumentParser(prog="blockemu", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        command_parser = sub.add_parser(name, help=command.help)
        if only is None or only == name:
            command.configure(command_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    # Only the command being run builds its parser: `serve` is started inside
    # VMs under software emulation, where importing numpy and the device
    # models just to build the experiments' parsers costs seconds.
    only = words[0] if words and words[0] in COMMANDS else None
    args = build_parser(only).parse_args(argv)
    return int(args.func(args) or 0)
