"""``blockemu vm run|shell``: boot Linux in a VM with devices attached (the harness is :mod:`blockemu.vm`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from blockemu import vm


def configure(parser: argparse.ArgumentParser) -> None:
    """``vm run`` and ``vm shell``; each sets ``func``, whose return value is the exit status."""
    subparsers = parser.add_subparsers(dest="vm_command", metavar="{run,shell}")
    subparsers.required = True
    run_parser = subparsers.add_parser(
        "run",
        help="boot Linux in a VM with the devices attached and run a command",
        usage="%(prog)s [--mem 2G] [--timeout S] CONFIG [CONFIG ...] -- COMMAND [ARGS...]",
    )
    run_parser.add_argument("--mem", default=vm.DEFAULT_MEM, help="guest memory (default %(default)s)")
    run_parser.add_argument(
        "--timeout", type=float, default=vm.DEFAULT_TIMEOUT_S, metavar="S",
        help="kill the VM after S seconds (default %(default)g)",
    )
    run_parser.add_argument("--results", type=Path, help="results folder (default ./results/vm-*)")
    run_parser.add_argument("--verbose", "-v", action="store_true", help="show the boot log")
    run_parser.add_argument(
        "--transport", default="auto", metavar="{auto,nbd,ublk}[,...]",
        help="how devices reach the guest: nbd, ublk, or auto (ublk for zoned models; default); "
             "one for all devices or a comma-separated list, one per config",
    )
    # argparse cannot split "CONFIG... -- COMMAND..." itself (the command
    # would be taken as more configs), so take everything and split on "--".
    run_parser.add_argument("items", nargs=argparse.REMAINDER, metavar="CONFIG ... -- COMMAND")
    run_parser.set_defaults(func=cmd_run)

    shell_parser = subparsers.add_parser(
        "shell", help="interactive shell in a VM with the devices attached"
    )
    shell_parser.add_argument("--mem", default=vm.DEFAULT_MEM, help="guest memory (default %(default)s)")
    shell_parser.add_argument("--results", type=Path, help="results folder (default ./results/vm-*)")
    shell_parser.add_argument("configs", nargs="*", type=Path, metavar="CONFIG")
    shell_parser.set_defaults(func=cmd_shell)


def cmd_run(args: argparse.Namespace) -> int:
    items: list[str] = list(args.items)
    if "--" not in items:
        print("blockemu vm run: expected CONFIG [CONFIG ...] -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    split = items.index("--")
    configs, command = items[:split], items[split + 1:]
    if not command:
        print("blockemu vm run: no COMMAND after --", file=sys.stderr)
        return 2
    try:
        result = vm.run(
            [Path(c) for c in configs], command,
            mem=args.mem, timeout_s=args.timeout, results_dir=args.results, verbose=args.verbose,
            transport=args.transport,
        )
    except vm.VmError as exc:
        print(f"blockemu vm: {exc}", file=sys.stderr)
        return vm.EXIT_HARNESS_ERROR
    except KeyboardInterrupt:
        # run() has already killed the VM on its way out.
        print("blockemu vm: interrupted; the VM was stopped", file=sys.stderr)
        return 130
    return result.exit_code


def cmd_shell(args: argparse.Namespace) -> int:
    try:
        return vm.shell(args.configs, mem=args.mem, results_dir=args.results)
    except vm.VmError as exc:
        print(f"blockemu vm: {exc}", file=sys.stderr)
        return vm.EXIT_HARNESS_ERROR
