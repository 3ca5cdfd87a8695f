"""``blockemu ctl zram ...``: the zram attributes, by their kernel names, over the control API.

    blockemu ctl zram show                         all readable state (JSON)
    blockemu ctl zram get mm_stat                  one attribute, as its sysfs file reads
    blockemu ctl zram set recomp_algorithm algo=zstd priority=1
    blockemu ctl zram set idle all
    blockemu ctl zram set recompress type=idle max_pages=1000
"""

from __future__ import annotations

import argparse
from typing import Any

from blockemu.cli import http_request, print_result


def _ctl_zram(args: argparse.Namespace, base: str) -> int:
    api = base + "/api/v1/zram"
    if args.zram == "show":
        print_result(http_request(api))
    elif args.zram == "get":
        print_result(http_request(f"{api}/{args.attribute}"))
    else:
        # The words after the attribute are one line of text, as `echo ... > attr` writes.
        result = http_request(f"{api}/{args.attribute}", "PUT", " ".join(args.value).encode())
        if not args.quiet:
            print_result(result)
    return 0


def add_ctl(ctl_subparsers: Any) -> None:
    zram = ctl_subparsers.add_parser("zram", help="zram attributes, with the kernel's names and formats")
    zram.set_defaults(ctl_func=_ctl_zram)
    sub = zram.add_subparsers(dest="zram", required=True)
    sub.add_parser("show", help="all readable state, as JSON")
    get = sub.add_parser("get", help="read one attribute as its sysfs file, e.g. 'get mm_stat'")
    get.add_argument("attribute")
    put = sub.add_parser("set", help="write one attribute, e.g. 'set recompress type=idle max_pages=100'")
    put.add_argument("attribute")
    put.add_argument("value", nargs="+", help="the text to write (words are joined by spaces)")
    put.add_argument("--quiet", action="store_true", help="do not print the resulting state")
