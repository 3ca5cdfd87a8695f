"""``python -m blockemu.frontends.ublk delete N``: free a ublk id a killed server left behind.

A server killed with SIGKILL cannot issue DEL_DEV; the kernel has already
removed /dev/ublkbN and failed its I/O, but /dev/ublkcN and the id N remain
until this (as ublksrv's ``ublk del -n N``).
"""

from __future__ import annotations

import argparse
import sys

from blockemu.frontends.ublk.server import ControlDevice, UblkError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blockemu.frontends.ublk")
    sub = parser.add_subparsers(dest="command", required=True)
    delete = sub.add_parser("delete", help="DEL_DEV: delete ublk device N (stopping it first)")
    delete.add_argument("dev_id", type=int)
    args = parser.parse_args(argv)
    try:
        control = ControlDevice()
    except UblkError as err:
        print(f"blockemu: {err}", file=sys.stderr)
        return 1
    try:
        control.stop_and_delete(args.dev_id)
    except OSError as err:
        print(f"blockemu: ublk device {args.dev_id}: {err}", file=sys.stderr)
        return 1
    finally:
        control.close()
    print(f"deleted ublk device {args.dev_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
