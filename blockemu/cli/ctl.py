"""``blockemu ctl``: talk to a running device's control API.

Each subcommand sets ``ctl_func(args, base_url)``; :func:`cmd_ctl` runs it
and turns a refused request into one line on stderr and exit status 1.

The client side imports no device model and no layer: it only knows the
wire.  The few vocabularies argparse checks before sending (governor names
aside, which come from the light policies module) are written out below;
the server checks every value again, and tests/unit/test_cli.py pins each
list to the one the server uses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blockemu.cli.common import DEFAULT_URL, fail
from blockemu.cli.pictures import PictureError, fragmentation_png, zones_png, zram_png
from blockemu.control.auth import TOKEN_ENV, TokenError, read_token_file
from blockemu.control.client import (
    HID_FINAL_STATES,
    HID_STATES,
    ControlClientError,
    HidStateError,
    ServerUnreachableError,
    http_request,
    print_result,
)
from blockemu.policies.governors import GOVERNORS, GovernorTunables

# GET/PUT /api/v1/power/<attr>, devfreq's names first (blockemu/layers/power.py POWER_ATTRIBUTES).
POWER_ATTRIBUTES = (
    "governor", "trans_stat", "min_freq", "max_freq", "cur_freq", "target_freq", "available_frequencies",
    "available_governors", "energy_joules", "queue_depth", "controller_bound_share", "transition_latency_us",
    *GovernorTunables.WRITABLE,
)
# POST /api/v1/powercut {"mode": ...} (blockemu/layers/write_cache.py POWERCUT_MODES).
POWERCUT_MODES = ("drop", "torn")
# The operations a fault can fail (blockemu/layers/faults.py FAULT_OPS).
FAULT_OPS = ("read", "write", "flush", "trim", "zero")
# The conditions POST /api/v1/zones/N/fault can set (blockemu/devices/zns/device.py FAULT_CONDITIONS).
ZONE_FAULT_CONDITIONS = ("read_only", "offline")
# GET/PUT /api/v1/wb/<attr>: the Linux UFS driver's WriteBooster files (blockemu/devices/ufs/writebooster.py).
WB_ATTRIBUTES = ("wb_on", "enable_wb_buf_flush", "wb_flush_threshold", "wb_avail_buf", "wb_cur_buf",
                 "wb_flush_status", "wb_life_time_est")

# `ctl hid wait`'s exit status when HID stops in a final state other than the one awaited
# (1 is a refused request or a timeout, 2 a usage error).
EXIT_OTHER_FINAL_STATE = 3

CtlFunc = Callable[[argparse.Namespace, str], int]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("BLOCKEMU_URL", DEFAULT_URL),
                        help=f"control API base URL (default $BLOCKEMU_URL or {DEFAULT_URL})")
    parser.add_argument("--token-file", metavar="FILE",
                        help=f"the server's bearer token (default ${TOKEN_ENV}), sent with every request")
    parser.set_defaults(func=cmd_ctl)
    sub = parser.add_subparsers(dest="ctl", required=True)
    sub.add_parser("device", help="description and live statistics").set_defaults(
        ctl_func=_ctl_get("/api/v1/device"))
    sub.add_parser("metrics", help="Prometheus metrics text").set_defaults(ctl_func=_ctl_get("/metrics"))
    fragmentation = sub.add_parser("fragmentation", help="fragmentation summary (UFS)")
    fragmentation.add_argument("--png", metavar="FILE", help="draw the fragmentation map to FILE instead")
    fragmentation.set_defaults(ctl_func=_ctl_get_or_draw("/api/v1/fragmentation", "/api/v1/live/fragmentation-map",
                                                         fragmentation_png))
    for add in (_add_age, _add_timing, _add_trace, _add_hid, _add_wb, _add_power, _add_zram, _add_zone,
                _add_powercut, _add_faults):
        add(sub)


def cmd_ctl(args: argparse.Namespace) -> int:
    """Run the ``ctl`` subcommand chosen; each sets ``ctl_func(args, base_url)``."""
    if args.token_file:
        try:
            # Every request of this process carries it (http_request reads the variable).
            os.environ[TOKEN_ENV] = read_token_file(args.token_file)
        except TokenError as err:
            return fail(f"--token-file: {err}")
    try:
        return int(args.ctl_func(args, args.url.rstrip("/")) or 0)
    except ServerUnreachableError as err:
        return fail(f"no blockemu server answers at {args.url} ({err.reason}); start one with "
                    f"'blockemu serve configs/ufs41.toml' (it listens on {DEFAULT_URL}), or give its address "
                    "with --url or $BLOCKEMU_URL", 1)
    except (ControlClientError, PictureError) as err:
        return fail(str(err), 1)


def _ctl_get(path: str) -> CtlFunc:
    def run(args: argparse.Namespace, base: str) -> int:
        print_result(http_request(base + path))
        return 0

    return run


def _wrote(path: str) -> int:
    print(f"wrote {path}")
    return 0


def _ctl_get_or_draw(path: str, picture_path: str, draw: Callable[[Any, Any, str], None]) -> CtlFunc:
    """Print ``path``'s answer; with ``--png FILE``, draw ``picture_path``'s answer (and that one) to FILE."""
    def run(args: argparse.Namespace, base: str) -> int:
        shown = http_request(base + path)
        if not args.png:
            print_result(shown)
            return 0
        draw(http_request(base + picture_path), shown, args.png)
        return _wrote(args.png)

    return run


# ---------------------------------------------------------------- age, timing, trace
def _add_age(sub: Any) -> None:
    age = sub.add_parser("age", help="induce fragmentation (UFS)",
                         description="Scatter the physical layout of a share of the written data, as years of "
                                     "use would. A fresh device has nothing written: write data first, or "
                                     "give --all.")
    age.set_defaults(ctl_func=_ctl_age)
    age.add_argument("--fragmentation", type=float, required=True, metavar="PERCENT",
                     help="share of the data to scatter, 0-100")
    age.add_argument("--fragment-kib", type=int, default=4, help="size of the scattered pieces (default 4)")
    age.add_argument("--span-percent", type=float, default=100.0, help="aged range from LBA 0, %% of capacity")
    age.add_argument("--seed", type=int, default=1)
    age.add_argument("--all", action="store_true", help="age unwritten sectors too (as a pre-aged device)")


def _ctl_age(args: argparse.Namespace, base: str) -> int:
    body: dict[str, Any] = {"fragmentation_percent": args.fragmentation, "fragment_kib": args.fragment_kib,
                            "seed": args.seed, "span_percent": args.span_percent, "mapped_only": not args.all}
    print_result(http_request(base + "/api/v1/age", "POST", json.dumps(body).encode()))
    return 0


def _add_timing(sub: Any) -> None:
    timing = sub.add_parser("timing", help="show or switch the timing mode at run time")
    timing.add_argument("--mode", choices=("virtual", "realtime"))
    timing.add_argument("--time-scale", type=float, help="real seconds per modeled second (realtime)")
    timing.set_defaults(ctl_func=_ctl_timing)


def _ctl_timing(args: argparse.Namespace, base: str) -> int:
    change: dict[str, Any] = {}
    if args.mode is not None:
        change["mode"] = args.mode
    if args.time_scale is not None:
        change["time_scale"] = args.time_scale
    url = base + "/api/v1/timing"
    print_result(http_request(url, "PUT", json.dumps(change).encode()) if change else http_request(url))
    return 0


def _add_trace(sub: Any) -> None:
    trace = sub.add_parser("trace", help="start/stop recording requests on a running device")
    trace.set_defaults(ctl_func=_ctl_trace)
    trace_sub = trace.add_subparsers(dest="trace_action", required=True)
    trace_sub.add_parser("start", help="record to a new file").add_argument("path")
    trace_sub.add_parser("stop", help="stop recording")
    trace_sub.add_parser("status", help="where and how much is being recorded")


def _ctl_trace(args: argparse.Namespace, base: str) -> int:
    api = base + "/api/v1/trace"
    if args.trace_action == "start":
        body = json.dumps({"path": str(Path(args.path).resolve())}).encode()
        print_result(http_request(api + "/start", "POST", body))
    elif args.trace_action == "stop":
        print_result(http_request(api + "/stop", "POST", b""))
    else:
        print_result(http_request(api))
    return 0


# ---------------------------------------------------------------- attribute groups
def _add_group(sub: Any, name: str, help_text: str, run_other: CtlFunc | None = None,
               attributes: tuple[str, ...] | None = None) -> Any:
    """``ctl NAME show|get|set``: an attribute group (GET /api/v1/NAME, GET/PUT /api/v1/NAME/<attribute>).

    ``run_other`` serves the group's own extra subcommands, which the caller adds
    to the returned subparsers; ``attributes`` lets argparse check ``get``'s name.
    """
    group = sub.add_parser(name, help=help_text)
    group.set_defaults(ctl_func=_ctl_group(name, run_other), group_action=None)
    actions = group.add_subparsers(dest="group_action", required=True)
    actions.add_parser("show", help="every readable attribute and the state, as JSON")
    get = actions.add_parser("get", help="read one attribute, as its sysfs file reads")
    get.add_argument("attribute", choices=attributes)
    put = actions.add_parser("set", help="write one attribute, e.g. 'set recompress type=idle max_pages=100'")
    put.add_argument("attribute")
    put.add_argument("value", nargs="+", help="the text to write (words are joined by spaces)")
    put.add_argument("--quiet", action="store_true", help="do not print the resulting state")
    return actions


def _ctl_group(name: str, run_other: CtlFunc | None) -> CtlFunc:
    def run(args: argparse.Namespace, base: str) -> int:
        api = f"{base}/api/v1/{name}"
        if args.group_action == "show":
            print_result(http_request(api))
        elif args.group_action == "get":
            print_result(http_request(f"{api}/{args.attribute}"))
        elif args.group_action == "set":
            # The words after the attribute are one line of text, as `echo ... > attr` writes.
            result = http_request(f"{api}/{args.attribute}", "PUT", " ".join(args.value).encode())
            if not args.quiet:
                print_result(result)
        elif run_other is not None:
            return run_other(args, base)
        return 0

    return run


def _add_hid(sub: Any) -> None:
    actions = _add_group(sub, "hid", "Host-Initiated Defragmentation, with the kernel's attribute names",
                         _ctl_hid_wait)
    wait = actions.add_parser(
        "wait", help="wait until state is one of STATES",
        description="Wait until the HID state is one of STATES: exit 0 there, "
                    f"{EXIT_OTHER_FINAL_STATE} when it stops in another final state "
                    f"({', '.join(HID_FINAL_STATES)}: nothing changes until a trigger is written), "
                    "1 after --timeout.")
    wait.add_argument("states", nargs="+", metavar="STATE", choices=HID_STATES,
                      help=f"one of {', '.join(HID_STATES)}")
    wait.add_argument("--timeout", type=float, default=600.0)
    wait.add_argument("--interval", type=float, default=0.2)
    wait.add_argument("--quiet", dest="progress", action="store_false", help="do not print state changes")


def _ctl_hid_wait(args: argparse.Namespace, base: str) -> int:
    deadline = time.monotonic() + args.timeout
    last = None
    while True:
        state = http_request(f"{base}/api/v1/hid").get("state")
        if state != last and args.progress:
            print(f"hid: {state}", file=sys.stderr, flush=True)
        last = state
        if state in args.states:
            print(state)
            return 0
        if state in HID_FINAL_STATES:
            return fail(str(HidStateError(state, tuple(args.states))), EXIT_OTHER_FINAL_STATE)
        if time.monotonic() > deadline:
            return fail(f"hid state is still {state!r} after {args.timeout} s", 1)
        time.sleep(args.interval)


def _add_wb(sub: Any) -> None:
    _add_group(sub, "wb", "WriteBooster (UFS), with the Linux UFS driver's attribute names, e.g. "
                          "'wb get wb_avail_buf', 'wb set enable_wb_buf_flush 0'", None, WB_ATTRIBUTES)


def _add_power(sub: Any) -> None:
    actions = _add_group(sub, "power", "frequency governor and energy, with devfreq's attribute names",
                         _ctl_power_governor, POWER_ATTRIBUTES)
    governor = actions.add_parser("governor", help="switch governor, e.g. 'governor pmqos_qd'")
    governor.add_argument("name", choices=tuple(GOVERNORS))


def _ctl_power_governor(args: argparse.Namespace, base: str) -> int:
    result = http_request(f"{base}/api/v1/power/governor", "PUT", args.name.encode())
    print(json.dumps({"governor": result["governor"], "cur_freq": result["cur_freq"]}))
    return 0


def _add_zram(sub: Any) -> None:
    """``ctl zram show|get|set``: the zram attributes, by their kernel names.

        blockemu ctl zram get mm_stat                  one attribute, as its sysfs file reads
        blockemu ctl zram set recomp_algorithm algo=zstd priority=1
        blockemu ctl zram set recompress type=idle max_pages=1000
    """
    actions = _add_group(sub, "zram", "zram attributes, with the kernel's names and formats")
    show = actions.choices["show"]
    show.add_argument("--png", metavar="FILE", help="draw pages and bytes per algorithm to FILE instead")
    show.set_defaults(ctl_func=_ctl_get_or_draw("/api/v1/zram", "/api/v1/live/zram", zram_png))


# ---------------------------------------------------------------- zones
def _add_zone(sub: Any) -> None:
    """``ctl zone ...``: zone management through the control API."""
    zone = sub.add_parser("zone", help="ZNS zones: report, open, close, finish, reset, append, copy")
    zone.set_defaults(ctl_func=_ctl_zone)
    zone_sub = zone.add_subparsers(dest="zone", required=True)
    report = zone_sub.add_parser("report", help="list zones (like blkzone report)")
    report.add_argument("--json", action="store_true", help="print the API's JSON instead of lines")
    report.add_argument("--png", metavar="FILE", help="draw the zone map to FILE instead")
    for action, text in (("open", "explicitly open"), ("close", "close"), ("finish", "finish (make full)"),
                         ("reset", "reset (empty, data gone)"), ("offline", "take a read-only zone offline")):
        zone_sub.add_parser(action, help=f"{text} zone INDEX").add_argument("index", type=int)
    zone_sub.add_parser("reset-all", help="reset every open, closed or full zone")
    append = zone_sub.add_parser("append", help="Zone Append the bytes of FILE ('-' for stdin); prints the offset")
    append.add_argument("index", type=int)
    append.add_argument("file")
    copy = zone_sub.add_parser("copy", help="Simple Copy source ranges to a zone's write pointer")
    copy.add_argument("--dest-zone", type=int, required=True)
    copy.add_argument("--source", action="append", required=True, metavar="OFFSET:LENGTH",
                      help="source range in bytes, repeatable")
    fault = zone_sub.add_parser("fault", help="inject a media fault: make zone INDEX read_only or offline")
    fault.add_argument("index", type=int)
    fault.add_argument("condition", choices=ZONE_FAULT_CONDITIONS)


def _print_report(zones: list[dict[str, Any]]) -> None:
    """One line per zone, in the spirit of ``blkzone report``."""
    for z in zones:
        wp = "-" if z["wp"] is None else f"0x{z['wp'] - z['start']:x}"
        print(f"zone {z['index']:>5}: start 0x{z['start']:012x}, len 0x{z['length']:x}, cap 0x{z['capacity']:x}, "
              f"wptr {wp}, {z['type']}, {z['condition']}")


def _ctl_zone(args: argparse.Namespace, base: str) -> int:
    api = base + "/api/v1"
    action = args.zone
    if action == "report":
        result = http_request(api + "/zones")
        if args.png:
            zones_png(result, args.png)
            return _wrote(args.png)
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
                return fail(f"--source {text!r}: expected OFFSET:LENGTH in bytes, e.g. 0:65536")
            sources.append({"offset": int(offset), "length": int(length)})
        body = json.dumps({"sources": sources, "dest_zone": args.dest_zone}).encode()
        print_result(http_request(api + "/copy", "POST", body))
    elif action == "fault":
        print_result(http_request(f"{api}/zones/{args.index}/fault", "POST", args.condition.encode()))
    else:
        print_result(http_request(f"{api}/zones/{args.index}/{action}", "POST", b""))
    return 0


# ---------------------------------------------------------------- write cache and faults
def _add_powercut(sub: Any) -> None:
    cut = sub.add_parser("powercut", help="lose every write since the last completed flush, then serve on")
    cut.set_defaults(ctl_func=_ctl_powercut)
    cut.add_argument("--mode", choices=POWERCUT_MODES, default="drop",
                     help="drop: undo all unflushed writes; torn: keep a seeded random half of their sectors")
    cut.add_argument("--seed", type=int, default=1, help="which sectors a torn cut keeps (default 1)")
    cut.add_argument("--status", action="store_true", help="show the write cache's state instead of cutting")


def _ctl_powercut(args: argparse.Namespace, base: str) -> int:
    url = base + "/api/v1/powercut"
    if args.status:
        print_result(http_request(url))
        return 0
    body = json.dumps({"mode": args.mode, "seed": args.seed}).encode()
    print_result(http_request(url, "POST", body))
    return 0


def _add_faults(sub: Any) -> None:
    faults = sub.add_parser("faults", help="inject errors, bad ranges, latency spikes, read-only/offline")
    faults.set_defaults(ctl_func=_ctl_faults)
    faults_sub = faults.add_subparsers(dest="faults_action", required=True)
    faults_sub.add_parser("show", help="current faults and how many were injected")
    faults_sub.add_parser("clear", help="remove every fault")
    put = faults_sub.add_parser("set", help="change some faults; the others stay as they are")
    put.add_argument("--seed", type=int, help="restart the fault decisions from this seed")
    put.add_argument("--offline", type=_on_off, metavar="on|off", help="fail every request with EIO")
    put.add_argument("--read-only", dest="read_only", type=_on_off, metavar="on|off",
                     help="fail writes, trims and zeroes with EPERM")
    put.add_argument("--error-rate", action="append", type=_op_rate, metavar="OP=RATE[:ERRNO]",
                     help=f"fail a share of OP ({', '.join(FAULT_OPS)}) requests; repeatable")
    put.add_argument("--bad-range", action="append", type=_bad_range_arg, metavar="OFFSET:LENGTH[:OPS[:ERRNO]]",
                     help="fail requests touching these bytes (replaces all bad ranges; repeatable)")
    put.add_argument("--no-bad-ranges", dest="bad_range", action="store_const", const=[],
                     help="remove every bad range")
    put.add_argument("--latency-spike", dest="latency_spike", type=_spike_arg, metavar="PROBABILITY:EXTRA_US",
                     help="delay a share of requests by EXTRA_US modeled microseconds")


def _ctl_faults(args: argparse.Namespace, base: str) -> int:
    url = base + "/api/v1/faults"
    if args.faults_action == "show":
        print_result(http_request(url))
    elif args.faults_action == "clear":
        print_result(http_request(url, "DELETE", b""))
    else:
        change: dict[str, Any] = {}
        for key in ("seed", "offline", "read_only", "latency_spike"):
            if getattr(args, key) is not None:
                change[key] = getattr(args, key)
        if args.error_rate:
            change["ops"] = dict(args.error_rate)
        if args.bad_range is not None:
            change["bad_ranges"] = args.bad_range
        print_result(http_request(url, "PUT", json.dumps(change).encode()))
    return 0


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")
    return text == "on"


def _op_rate(text: str) -> tuple[str, dict[str, Any]]:
    op, sep, rest = text.partition("=")
    rate, _, name = rest.partition(":")
    try:
        value: dict[str, Any] = {"error_rate": float(rate)}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected OP=RATE[:ERRNO], e.g. read=0.01:EIO, got {text!r}") from None
    if not sep or op not in FAULT_OPS:
        raise argparse.ArgumentTypeError(f"expected OP=RATE[:ERRNO] with OP one of {', '.join(FAULT_OPS)}")
    if name:
        value["errno"] = name
    return op, value


def _bad_range_arg(text: str) -> dict[str, Any]:
    parts = text.split(":")
    try:
        entry: dict[str, Any] = {"offset": int(parts[0]), "length": int(parts[1])}
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(
            f"expected OFFSET:LENGTH[:OPS[:ERRNO]] in bytes, e.g. 0:4096:read,write:EIO, got {text!r}") from None
    if len(parts) > 2 and parts[2]:
        entry["ops"] = parts[2].split(",")
    if len(parts) > 3:
        entry["errno"] = parts[3]
    return entry


def _spike_arg(text: str) -> dict[str, float]:
    probability, _, extra = text.partition(":")
    try:
        return {"probability": float(probability), "extra_us": float(extra)}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PROBABILITY:EXTRA_US, e.g. 0.01:5000, got {text!r}") from None
