"""Trace import: every format ``blockemu replay`` and ``blockemu trace convert`` read.

========  =====================================================  =======================
format    what                                                   recognised by
========  =====================================================  =======================
native    blockemu's own (``serve --trace``; blockemu.trace)     magic ``BLKEMUTR``
fio       fio iolog v2/v3 (:mod:`.fio`)                          ``fio version N iolog``
blktrace  binary per-CPU ``NAME.blktrace.N`` (:mod:`.blktrace`)  blk_io_trace magic
blkparse  blkparse's default text (:mod:`.blktrace`)             ``MAJ,MIN CPU SEQ ...``
csv       CSV with ``--csv-columns`` (:mod:`.csvtrace`)          only by ``--format csv``
disksim   DiskSim/MQSim ASCII ``TIME DEV SECTOR SECTORS FLAGS``  five integers, flags 0/1
========  =====================================================  =======================

Each reader yields blocks of records (blockemu.trace.TRACE_DTYPE), so a
conversion holds one block at a time (for blktrace, one per CPU file: they
are merged in time order block by block).  Bad input raises TraceError
naming the file, line and field; nothing is replayed or left half-written.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from blockemu.trace import MAGIC, TRACE_DTYPE, Trace, TraceError, read_trace, write_native
from blockemu.traceio import blktrace, csvtrace, fio

FORMATS = ("auto", "native", "fio", "blktrace", "blkparse", "csv", "disksim")
_DISKSIM_LINE = re.compile(rb"\s*\d+(\.\d+)?[ \t]+\d+[ \t]+\d+[ \t]+\d+[ \t]+[01][ \t]*\r?\n")


@dataclass(frozen=True)
class ImportOptions:
    format: str = "auto"
    blktrace_event: str = "D"  # Q (queued) or D (issued): blktrace and blkparse
    csv_columns: str = ""
    csv_delimiter: str = ","
    csv_ops: str = ""  # e.g. "1=read,0=write" for traces that code ops as numbers


def detect_format(path: Path) -> str:
    try:
        with path.open("rb") as f:
            head = f.read(256)
    except OSError as err:
        raise TraceError(f"{path}: cannot read: {err.strerror}") from None
    if head.startswith(MAGIC):
        return "native"
    if fio.version_of(head) is not None:
        return "fio"
    if blktrace.looks_binary(head):
        return "blktrace"
    if re.match(rb"\s*\d+,\d+\s+\d+\s+\d+\s+\d+\.\d+\s", head):
        return "blkparse"
    if _DISKSIM_LINE.match(head):
        return "disksim"
    raise TraceError(f"{path}: format not recognised (blockemu trace, fio iolog, blktrace, blkparse, disksim); "
                     "name it with --format, and for CSV give --csv-columns")


def open_chunks(path: str | Path,
                options: ImportOptions = ImportOptions()) -> tuple[dict[str, Any], Iterator[np.ndarray]]:
    """(header, record blocks) of a trace in any format; the header says ``has_times``."""
    path = Path(path)
    if options.format not in FORMATS:
        raise TraceError(f"--format must be one of {', '.join(FORMATS)}, got {options.format!r}")
    fmt = options.format
    if fmt == "auto":
        fmt = "csv" if options.csv_columns else detect_format(path)
    if not path.exists():
        raise TraceError(f"{path}: no such file")
    header: dict[str, Any] = {"source": fmt, "imported_from": path.name}
    if fmt == "native":
        trace = read_trace(path)
        return {**trace.header, "has_times": trace.has_times}, iter([trace.records])
    if fmt == "fio":
        has_times, chunks = fio.read_chunks(path)
    elif fmt == "blktrace":
        has_times, chunks = True, blktrace.read_binary_blocks(path, options.blktrace_event)
    elif fmt == "blkparse":
        has_times, chunks = True, blktrace.read_blkparse(path, options.blktrace_event)
    elif fmt == "disksim":
        # DiskSim's fixed map; --csv-columns may restate a field (e.g. time=1:ms), --csv-ops the flags.
        try:
            columns = {**csvtrace.parse_columns(csvtrace.DISKSIM_COLUMNS),
                       **(csvtrace.parse_columns(options.csv_columns, partial=True) if options.csv_columns else {})}
            ops: dict[str, str] | None = (csvtrace.parse_ops(options.csv_ops) if options.csv_ops
                                          else csvtrace.DISKSIM_OPS)
        except ValueError as err:
            raise TraceError(str(err)) from None
        has_times, chunks = csvtrace.read_csv(path, columns, csvtrace.WHITESPACE, ops)
    else:
        if not options.csv_columns:
            raise TraceError("--format csv needs --csv-columns op=COL,offset=COL,size=COL[,time=COL]")
        try:
            columns = csvtrace.parse_columns(options.csv_columns)
            ops = csvtrace.parse_ops(options.csv_ops) if options.csv_ops else None
        except ValueError as err:
            raise TraceError(str(err)) from None
        has_times, chunks = csvtrace.read_csv(path, columns, options.csv_delimiter, ops)
    return {**header, "has_times": has_times}, chunks


def read_any(path: str | Path, options: ImportOptions = ImportOptions()) -> Trace:
    """The whole trace in memory, for replay; records sorted by time when the source was not."""
    path = Path(path)
    fmt = options.format
    if fmt == "auto" and not options.csv_columns:
        fmt = detect_format(path)
    if fmt == "native":
        return read_trace(path)
    header, chunks = open_chunks(path, options)
    blocks = list(chunks)
    records = np.concatenate(blocks) if blocks else np.zeros(0, dtype=TRACE_DTYPE)
    if header["has_times"] and len(records) > 1 and (np.diff(records["t_ns"].astype(np.int64)) < 0).any():
        records = records[np.argsort(records["t_ns"], kind="stable")]
    return Trace(records, header, {}, has_times=header["has_times"])


def convert(source: str | Path, dest: str | Path, options: ImportOptions = ImportOptions()) -> int:
    """``source`` (any format) to a blockemu trace at ``dest``, block by block; returns the record count."""
    dest = Path(dest)
    if dest.exists():
        raise TraceError(f"{dest} exists; conversion never overwrites files")
    header, chunks = open_chunks(source, options)
    try:
        return write_native(dest, header, chunks)
    except BaseException:
        dest.unlink(missing_ok=True)  # never leave half a trace behind
        raise
