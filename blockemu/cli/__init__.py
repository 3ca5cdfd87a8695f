"""``blockemu``: serve devices, control them, boot them under a real kernel.

The command line is the top floor: nothing else in the package imports it.
Each command group is one module, registered in :data:`COMMANDS`, the way
git's builtin table or pip's ``commands_dict`` do it.  A module's
``configure(parser)`` adds the group's arguments and sets ``func``, the
function that runs the command and returns the exit status.
"""

from __future__ import annotations

import argparse
import os
import sys

from blockemu import __version__
from blockemu.cli.common import Command

DESCRIPTION = "``blockemu``: serve devices, control them, boot them under a real kernel."
# Each command's module (blockemu/cli/NAME.py) is imported only when that command is built.
COMMANDS: dict[str, Command] = {
    "serve": Command("serve a device over NBD (nbdkit) with a control API", "serve"),
    "replay": Command("run a recorded trace or fio iolog through a device model in virtual time", "replay"),
    "trace": Command("convert traces (fio iolog, blktrace, blkparse, CSV, DiskSim) to blockemu's format", "trace"),
    "ctl": Command("talk to a running device's control API", "ctl"),
    "experiment": Command("run a study: seeded, writes CSV + PNG, prints a table", "experiment"),
    "vm": Command("run commands against devices in a Linux VM", "vm"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only``, just that command's arguments (the others stay empty)."""
    parser = argparse.ArgumentParser(prog="blockemu", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"blockemu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        command_parser = sub.add_parser(name, help=command.help)
        if only is None or only == name:
            command.configure(command_parser)
    _remember_parsers(parser)
    return parser


def _remember_parsers(parser: argparse.ArgumentParser) -> None:
    """Each (sub)command's parser is the ``usage_parser`` default of its own arguments.

    The deepest subcommand's defaults win, so a stray word after
    ``ctl timing`` is reported with ``ctl timing``'s usage, not the top level's.
    """
    parser.set_defaults(usage_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _remember_parsers(child)


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    # Only the command being run builds its parser: `serve` is started inside
    # VMs under software emulation, where importing numpy and the device
    # models just to build the experiments' parsers costs seconds.
    only = words[0] if words and words[0] in COMMANDS else None
    parser = build_parser(only)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        args.usage_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that left shows here, not at exit
    except BrokenPipeError:
        # `blockemu ctl zone report | head -1`: the reader has what it wanted.
        # Python's own advice: point stdout at /dev/null so that the flush at
        # exit does not fail a second time, and exit as a SIGPIPE'd program does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13
    return code
