"""``blockemu replay``: a recorded trace or fio iolog through a device model, in virtual time."""

from __future__ import annotations

import argparse
import json

from blockemu.cli.common import fail
from blockemu.cli.trace import add_import_options, import_options
from blockemu.config import ConfigError, load_config


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="device configuration (TOML)")
    parser.add_argument("trace", help="a 'blockemu serve --trace' file, fio iolog, blktrace, blkparse text or CSV")
    add_import_options(parser)
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value")
    parser.add_argument("--engine", choices=("auto", "scalar", "vector"), default="auto",
                        help="vector (UFS, fast) or scalar (any device, the reference); default auto")
    loop = parser.add_mutually_exclusive_group()
    loop.add_argument("--closed-loop", dest="closed_loop", action="store_true", default=None,
                      help="issue each request when the previous completes (default for fio v2 iologs)")
    loop.add_argument("--open-loop", dest="closed_loop", action="store_false",
                      help="issue requests at their recorded times (default for traces with times)")
    parser.add_argument("--precondition", choices=("auto", "none", "full", "trace"), default="auto",
                        help="write the device before timing, laid out as [aging] says: full (every sector) or "
                             "trace (what the trace reads before writing); auto: trace for imported traces on "
                             "ufs, else none (a blockemu trace carries the device's state)")
    parser.add_argument("--vary", action="append", metavar="SECTION.KEY=V1,V2",
                        help="replay against each value (repeatable: every combination); prints one table and "
                             "writes CSV + a PNG of latency CDFs to --out")
    parser.add_argument("--out", metavar="DIR", help="--vary's results folder (default results/replay-vary-TIME)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    # Imported here: the replay engines import numpy and every device model.
    from blockemu.cli.replay_vary import run_vary
    from blockemu.config import Config
    from blockemu.precondition import PreconditionError
    from blockemu.replay import ReplayResult, format_summary, print_progress, replay
    from blockemu.trace import TraceError
    from blockemu.traceio import read_any

    try:
        config = load_config(args.config, args.set or [])
        trace = read_any(args.trace, import_options(args))

        def replay_one(config: Config) -> ReplayResult:
            mode = args.precondition
            if mode == "auto":
                imported = trace.header.get("source") not in (None, "native") and "device" not in trace.header
                mode = "trace" if imported and config.device.type == "ufs" else "none"
            return replay(config, trace, engine=args.engine, closed_loop=args.closed_loop,
                          progress=print_progress, precondition=mode)

        if args.vary:
            table, folder = run_vary(args.config, args.set or [], args.vary, args.out, replay_one)
            print(table)
            print(f"wrote {folder / 'replay-vary.csv'} and {folder / 'latency-cdf.png'}")
            return 0
        result = replay_one(config)
    except (ConfigError, TraceError, PreconditionError, ValueError) as err:
        return fail(str(err))
    summary = result.summary()
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return 0
