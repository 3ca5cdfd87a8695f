"""``blockemu ctl zone``: the zone-management client of the control API."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from blockemu.devices.zns.device import FAULT_CONDITIONS


def _print_report(zones: list[dict[str, Any]]) -> None:
    """One line per zone, in the spirit of ``blkzone report``."""
    for z in zones:
        wp = "-" if z["wp"] is None else f"0x{z['wp'] - z['start']:x}"
        print(f"zone {z['index']:>5}: start 0x{z['start']:012x}, len 0x{z['length']:x}, cap 0x{z['capacity']:x}, "
              f"wptr {wp}, {z['type']}, {z['condition']}")


def _ctl_zone(args: argparse.Namespace, base: str) -> int:
    from blockemu.cli import http_request, print_result

    api = base + "/api/v1"
    action = args.zone
    if action == "report":
        result = http_request(api + "/zones")
        if args.json:
            print_result(result)
        else:
            _print_report(result)
    elif action == "reset-all":
        print_result(http_request(api + "/zones/reset-all", "POST", b""))
    elif action == "append":
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        print_result(http_request(f"{api}/zones/{args.index}/append", "POST", data))
    elif action == "copy":
        sources = []
        for text in args.source:
            offset, sep, length = text.partition(":")
            if not sep or not offset.isdigit() or not length.isdigit():
                print(f"blockemu: --source {text!r}: expected OFFSET:LENGTH in bytes, e.g. 0:65536", file=sys.stderr)
                return 2
            sources.append({"offset": int(offset), "length": int(length)})
        body = json.dumps({"sources": sources, "dest_zone": args.dest_zone}).encode()
        print_result(http_request(api + "/copy", "POST", body))
    elif action == "fault":
        print_result(http_request(f"{api}/zones/{args.index}/fault", "POST", args.condition.encode()))
    else:
        print_result(http_request(f"{api}/zones/{args.index}/{action}", "POST", b""))
    return 0


def add_ctl(ctl_subparsers: Any) -> None:
    """``blockemu ctl zone ...``: zone management through the control API."""
    zone = ctl_subparsers.add_parser("zone", help="ZNS zones: report, open, close, finish, reset, append, copy")
    zone.set_defaults(ctl_func=_ctl_zone)
    sub = zone.add_subparsers(dest="zone", required=True)
    report = sub.add_parser("report", help="list zones (like blkzone report)")
    report.add_argument("--json", action="store_true", help="print the API's JSON instead of lines")
    for action, text in (("open", "explicitly open"), ("close", "close"), ("finish", "finish (make full)"),
                         ("reset", "reset (empty, data gone)"), ("offline", "take a read-only zone offline")):
        sub.add_parser(action, help=f"{text} zone INDEX").add_argument("index", type=int)
    sub.add_parser("reset-all", help="reset every open, closed or full zone")
    append = sub.add_parser("append", help="Zone Append the bytes of FILE ('-' for stdin); prints the offset")
    append.add_argument("index", type=int)
    append.add_argument("file")
    copy = sub.add_parser("copy", help="Simple Copy source ranges to a zone's write pointer")
    copy.add_argument("--dest-zone", type=int, required=True)
    copy.add_argument("--source", action="append", required=True, metavar="OFFSET:LENGTH",
                      help="source range in bytes, repeatable")
    fault = sub.add_parser("fault", help="inject a media fault: make zone INDEX read_only or offline")
    fault.add_argument("index", type=int)
    fault.add_argument("condition", choices=FAULT_CONDITIONS)
