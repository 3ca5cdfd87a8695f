"""CSV traces with a column map, as public block traces come (SNIA IOTTA, phone app traces).

``--csv-columns op=COL,offset=COL[:UNIT],size=COL[:UNIT][,time=COL[:UNIT]]``:
COL is a 1-based column number or a header name (the first line is then a
header; with numbers only, a first line whose offset is not a number is
one); offset and size are in ``bytes`` (default) or ``sectors`` (512 bytes);
time in ``s``, ``ms``, ``us``, ``100ns`` (Windows FILETIME ticks, as the MSR
Cambridge traces) or ``ns`` (default), integer or
decimal.  Ops are R/W/D/F or words (read, write, discard, trim, flush, sync),
any case; a column holding e.g. ``RS`` or ``WS`` (blkparse's RWBS) is read
by its first letter after an F.  Traces that code ops as numbers give
``--csv-ops 1=read,0=write``.  Without a time column the trace replays
closed-loop.  ``--csv-delimiter whitespace`` splits on runs of blanks.

The DiskSim ASCII format (``--format disksim``; MQSim, SSDsim and FEMU's
replayer read it too) is this reader with a fixed map: one request per line,
``TIME DEVICE SECTOR SECTORS FLAGS``, blank-separated, flags 1 for a read
and 0 for a write, time in nanoseconds as MQSim's ``Time_Unit`` defaults to
(``--csv-columns time=1:ms`` for DiskSim's own milliseconds).  The device
number is ignored: all devices share one LBA space.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from blockemu.trace import OP_CODES, TRACE_DTYPE, TraceError

FIELDS = ("op", "offset", "size", "time")
SIZE_UNITS = {"bytes": 1, "sectors": 512}
# 100ns: Windows FILETIME ticks, as SNIA IOTTA's MSR Cambridge traces record time.
TIME_UNITS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "100ns": 100, "ns": 1}
OP_WORDS = {"r": "read", "read": "read", "w": "write", "write": "write", "d": "trim", "discard": "trim",
            "trim": "trim", "f": "flush", "flush": "flush", "sync": "flush"}
_BLOCK_ROWS = 1 << 20
WHITESPACE = "whitespace"  # --csv-delimiter's name for runs of blanks
DISKSIM_COLUMNS = "time=1:ns,offset=3:sectors,size=4:sectors,op=5"
DISKSIM_OPS = {"1": "read", "0": "write"}


@dataclass(frozen=True)
class Column:
    ref: str  # a 1-based number or a header name
    scale: int


def parse_columns(spec: str, partial: bool = False) -> dict[str, Column]:
    """``op=3,offset=4:sectors,...`` → the column of each field; ValueError naming what is wrong.

    ``partial``: some fields only, restating a preset's (``--format disksim``).
    """
    columns: dict[str, Column] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, rest = item.partition("=")
        if not sep or name not in FIELDS:
            raise ValueError(f"--csv-columns: {item!r} must be FIELD=COLUMN[:UNIT] with FIELD one of "
                             f"{', '.join(FIELDS)}")
        ref, _, unit = rest.partition(":")
        units = TIME_UNITS if name == "time" else SIZE_UNITS if name in ("offset", "size") else {"": 1}
        default = "ns" if name == "time" else "bytes" if name != "op" else ""
        if (unit or default) not in units or not ref:
            raise ValueError(f"--csv-columns: {item!r}: unit of {name} must be one of {', '.join(filter(None, units))}")
        columns[name] = Column(ref, units[unit or default])
    missing = [f for f in ("op", "offset", "size") if f not in columns]
    if missing and not partial:
        raise ValueError(f"--csv-columns needs {', '.join(missing)} (op=COL,offset=COL,size=COL[,time=COL])")
    return columns


def parse_ops(spec: str) -> dict[str, str]:
    """``1=read,0=write`` → {cell text: op name}; ValueError naming what is wrong."""
    ops: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        value, sep, word = item.partition("=")
        name = OP_WORDS.get(word.strip().lower())
        if not sep or not value.strip() or name is None:
            raise ValueError(f"--csv-ops: {item!r} must be VALUE=OP with OP one of read, write, trim, flush")
        ops[value.strip().lower()] = name
    return ops


class _SplitReader:
    """csv.reader's interface (iteration, ``line_num``) over lines split on runs of blanks."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.line_num = 0

    def __iter__(self) -> _SplitReader:
        return self

    def __next__(self) -> list[str]:
        self.line_num += 1
        return next(self._lines).split()


def read_csv(path: Path, columns: dict[str, Column], delimiter: str = ",",
             ops: dict[str, str] | None = None) -> tuple[bool, Iterator[np.ndarray]]:
    """(has times, record blocks) of the CSV file at ``path``; ``ops`` maps op cells (e.g. ``1``) to op names."""
    named = any(not c.ref.isdigit() for c in columns.values())
    if delimiter != WHITESPACE and len(delimiter) != 1:
        raise TraceError(f"--csv-delimiter must be one character or {WHITESPACE!r}, got {delimiter!r}")

    def chunks() -> Iterator[np.ndarray]:
        rows: list[tuple[int, int, int, int, int, int]] = []
        with path.open(newline="", errors="replace") as f:
            reader: Any = _SplitReader(f) if delimiter == WHITESPACE else csv.reader(f, delimiter=delimiter)
            index: dict[str, int] = {}
            if named:
                header: list[str] = next(reader, [])
                names = [h.strip() for h in header]
                for field, column in columns.items():
                    if column.ref.isdigit():
                        index[field] = int(column.ref) - 1
                    elif column.ref in names:
                        index[field] = names.index(column.ref)
                    else:
                        raise TraceError(f"{path}:1: no column {column.ref!r} for {field}; the header has "
                                         f"{', '.join(names)}")
            else:
                index = {field: int(column.ref) - 1 for field, column in columns.items()}
            need = max(index.values()) + 1
            rows_in = iter(reader)
            first = next(rows_in, None)
            # Columns by number: a first row whose offset is not a number is a header.
            if first is not None and not (len(first) > index["offset"] and _looks_numeric(first[index["offset"]])):
                first = None
            for row in itertools.chain([first] if first is not None else [], rows_in):
                number = reader.line_num
                if not row or not any(cell.strip() for cell in row):
                    continue
                if len(row) < need:
                    raise TraceError(f"{path}:{number}: {len(row)} columns; the column map needs {need}")
                op = _op(path, number, row[index["op"]], ops)
                offset = _number(path, number, "offset", row[index["offset"]], columns["offset"].scale)
                size = _number(path, number, "size", row[index["size"]], columns["size"].scale)
                t_ns = 0
                if "time" in index:
                    t_ns = _number(path, number, "time", row[index["time"]], columns["time"].scale)
                if op == OP_CODES["flush"]:
                    offset = size = 0
                if offset >= 2**63 or size >= 2**32:
                    raise TraceError(f"{path}:{number}: field {'offset' if offset >= 2**63 else 'size'}: too large")
                rows.append((t_ns, offset, size, op, 0, 1))
                if len(rows) >= _BLOCK_ROWS:
                    yield np.array(rows, dtype=TRACE_DTYPE)
                    rows.clear()
        if rows:
            yield np.array(rows, dtype=TRACE_DTYPE)

    return "time" in columns, chunks()


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _op(path: Path, number: int, text: str, ops: dict[str, str] | None = None) -> int:
    word = text.strip().lower()
    if ops:
        if word not in ops:
            raise TraceError(f"{path}:{number}: field op: {text!r} is not one of --csv-ops' "
                             f"{', '.join(sorted(ops))}")
        return OP_CODES[ops[word]]
    name = OP_WORDS.get(word) or OP_WORDS.get(word.lstrip("f")[:1] if len(word) <= 4 else "")
    if name is None:
        raise TraceError(f"{path}:{number}: field op: {text!r} is not R/W/D/F or read/write/discard/trim/flush")
    return OP_CODES[name]


def _number(path: Path, number: int, field: str, text: str, scale: int) -> int:
    text = text.strip()
    try:
        value = int(text) * scale if text.isdigit() else round(float(text) * scale)
    except (ValueError, OverflowError):
        raise TraceError(f"{path}:{number}: field {field}: expected a number, got {text!r}") from None
    if not (value >= 0 and np.isfinite(value)):
        raise TraceError(f"{path}:{number}: field {field}: {text!r} is negative or not finite")
    return int(value)
