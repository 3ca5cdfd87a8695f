"""``blockemu trace convert IN OUT``: any trace format to blockemu's binary one, block by block."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from blockemu.cli.common import fail

if TYPE_CHECKING:
    from blockemu.traceio import ImportOptions

FORMATS = ("auto", "native", "fio", "blktrace", "blkparse", "csv", "disksim")  # blockemu.traceio.FORMATS, without numpy


def add_import_options(parser: argparse.ArgumentParser) -> None:
    """The options that say how to read a trace (blockemu.traceio); shared with ``replay``."""
    parser.add_argument("--format", choices=FORMATS, default="auto",
                        help="trace format; auto recognises all but csv by content (default auto)")
    parser.add_argument("--blktrace-event", choices=("Q", "D"), default="D",
                        help="blktrace/blkparse: replay queue (Q) or driver issue (D) events (default D)")
    parser.add_argument("--csv-columns", default="", metavar="op=COL,offset=COL[:UNIT],size=COL[:UNIT],time=COL[:UNIT]",
                        help="CSV column map: COL a 1-based number or header name; offset/size in bytes or "
                             "sectors, time in s, ms, us or ns (implies --format csv)")
    parser.add_argument("--csv-delimiter", default=",",
                        help="CSV field separator: one character, or 'whitespace' for runs of blanks (default ',')")
    parser.add_argument("--csv-ops", default="", metavar="VALUE=OP,...",
                        help="CSV/disksim: op cells coded as numbers, e.g. 1=read,0=write (OP: read, write, trim, "
                             "flush)")


def import_options(args: argparse.Namespace) -> ImportOptions:
    from blockemu.traceio import ImportOptions

    return ImportOptions(args.format, args.blktrace_event, args.csv_columns, args.csv_delimiter,
                         args.csv_ops)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="trace_command", required=True)
    convert = sub.add_parser("convert",
                             help="convert a trace (fio, blktrace, blkparse, csv, disksim) to blockemu's format")
    convert.add_argument("source", help="the trace to read")
    convert.add_argument("dest", help="the blockemu trace to write (must not exist)")
    add_import_options(convert)
    convert.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    # Imported here: numpy is not needed to build the parser.
    from blockemu.trace import TraceError
    from blockemu.traceio import convert

    options = import_options(args)
    started = time.perf_counter()
    try:
        count = convert(args.source, args.dest, options)
    except (TraceError, OSError) as err:
        return fail(str(err))
    print(f"{args.dest}: {count} records in {time.perf_counter() - started:.2f} s")
    return 0
