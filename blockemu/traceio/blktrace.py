"""blktrace's binary per-CPU files and blkparse's default text output.

Binary: ``NAME.blktrace.N`` holds ``struct blk_io_trace`` records
(include/uapi/linux/blktrace_api.h), 48 bytes in the tracing machine's byte
order, each followed by ``pdu_len`` bytes of payload:

    u32 magic (0x65617400 | version 7), u32 sequence, u64 time (ns),
    u64 sector, u32 bytes, u32 action, u32 pid, u32 device, u32 cpu,
    u16 error, u16 pdu_len

``action`` is ``category << 16 | event``: the event (low byte) is Q = 1
(queued) or D = 7 (issued to the driver); the categories say READ (1 << 0),
WRITE (1 << 1), FLUSH (1 << 2), DISCARD (1 << 13), FUA (1 << 15) and NOTIFY
(1 << 10, messages, skipped).  One event kind is kept (D by default: what
the device saw); the files of all CPUs are merged in time order.

Text: blkparse's default line is ``MAJ,MIN CPU SEQ SEC.NSEC PID EVENT RWBS
SECTOR + COUNT [PROCESS]``; RWBS starts with F for a preflush, then R, W, D
(discard) or N, then F for FUA.  Lines after the events (blkparse's per-CPU
and total summaries) end the events.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from blockemu.trace import OP_CODES, TRACE_DTYPE, TraceError

MAGIC = 0x65617400
VERSION = 0x07
SECTOR = 512
EVENTS = {"Q": 1, "D": 7}
TC_READ, TC_WRITE, TC_FLUSH, TC_NOTIFY, TC_DISCARD, TC_FUA = (1 << 0, 1 << 1, 1 << 2, 1 << 10, 1 << 13, 1 << 15)


def blk_io_trace_dtype(order: str) -> np.dtype:
    return np.dtype([("magic", order + "u4"), ("sequence", order + "u4"), ("time", order + "u8"),
                     ("sector", order + "u8"), ("bytes", order + "u4"), ("action", order + "u4"),
                     ("pid", order + "u4"), ("device", order + "u4"), ("cpu", order + "u4"),
                     ("error", order + "u2"), ("pdu_len", order + "u2")])


RECORD_BYTES = 48
assert blk_io_trace_dtype("<").itemsize == RECORD_BYTES


def per_cpu_files(path: Path) -> list[Path]:
    """``NAME.blktrace.N`` names all CPUs' files NAME.blktrace.*; any other name is one file."""
    match = re.fullmatch(r"(.*\.blktrace)\.\d+", path.name)
    if not match:
        return [path]
    siblings = [p for p in path.parent.glob(match.group(1) + ".*") if re.fullmatch(r".*\.blktrace\.\d+", p.name)]
    return sorted(siblings, key=lambda p: int(p.name.rsplit(".", 1)[1]))


def looks_binary(head: bytes) -> bool:
    if len(head) < 4:
        return False
    return any(int.from_bytes(head[:4], order) & 0xFFFFFF00 == MAGIC
               for order in ("little", "big"))


_BLOCK_RECORDS = 1 << 18  # records read at a time: 12 MiB of a file


def _file_blocks(path: Path, event: str) -> Iterator[np.ndarray]:
    """One file's records of ``event``, converted, block by block (payloads skipped)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(4)
        order = "<" if int.from_bytes(head, "little") & 0xFFFFFF00 == MAGIC else ">"
        dtype = blk_io_trace_dtype(order)
        position = 0
        # Runs of records without payload are read as one numpy array; a
        # record with a payload ends a run and the next starts after it.
        while position + RECORD_BYTES <= size:
            count = min((size - position) // RECORD_BYTES, _BLOCK_RECORDS)
            f.seek(position)
            run = np.frombuffer(f.read(count * RECORD_BYTES), dtype=dtype)
            bad_magic = (run["magic"] & 0xFFFFFF00) != MAGIC
            stop = np.flatnonzero((run["pdu_len"] != 0) | bad_magic)
            take, advance = run, count * RECORD_BYTES
            if len(stop):
                cut = int(stop[0])
                if bad_magic[cut]:
                    raise TraceError(f"{path}: record at byte {position + cut * RECORD_BYTES}: field magic: "
                                     f"{int(run['magic'][cut]):#010x} is not blktrace's {MAGIC:#010x} | version")
                take, advance = run[: cut + 1], (cut + 1) * RECORD_BYTES + int(run["pdu_len"][cut])
            versions = take["magic"] & 0xFF
            if (versions != VERSION).any():
                first = int(np.flatnonzero(versions != VERSION)[0])
                raise TraceError(f"{path}: record at byte {position + first * RECORD_BYTES}: field magic: version "
                                 f"{int(versions[first])}; this reader knows version {VERSION}")
            yield _convert(take, event)
            position += advance
    if position != size:  # a partial record, or a payload running past the end
        raise TraceError(f"{path}: record at byte {position - (position > size) * RECORD_BYTES}: truncated "
                         f"(the file ends at byte {size})")


def _convert(raw: np.ndarray, event: str) -> np.ndarray:
    """blk_io_trace records → trace records, keeping ``event`` and dropping messages."""
    category = raw["action"] >> 16
    chosen = ((raw["action"] & 0xFF) == EVENTS[event]) & ((category & TC_NOTIFY) == 0)
    raw = raw[chosen]
    category = category[chosen]
    records = np.zeros(len(raw), dtype=TRACE_DTYPE)
    records["t_ns"] = raw["time"]
    records["offset"] = raw["sector"] * SECTOR
    records["length"] = raw["bytes"]
    op = np.full(len(raw), OP_CODES["read"], dtype=np.uint8)
    op[(category & TC_WRITE) != 0] = OP_CODES["write"]
    op[(category & TC_DISCARD) != 0] = OP_CODES["trim"]
    op[((category & TC_FLUSH) != 0) & (raw["bytes"] == 0)] = OP_CODES["flush"]
    records["op"] = op
    records["offset"][op == OP_CODES["flush"]] = 0
    records["flags"] = np.where((category & TC_FUA) != 0, 1, 0)
    records["qd"] = 1
    return records


def read_binary_blocks(path: Path, event: str = "D") -> Iterator[np.ndarray]:
    """Records of ``event`` (Q or D) from ``path``'s per-CPU files, merged in time order, block by block.

    Each CPU's file is in time order; a block holds every buffered record up
    to the earliest of the streams' latest buffered times, so memory holds
    one block per CPU, whatever the trace's length.
    """
    if event not in EVENTS:
        raise TraceError(f"blktrace event must be one of {', '.join(EVENTS)}, got {event!r}")
    streams = [_file_blocks(file, event) for file in per_cpu_files(path)]
    buffers = [np.zeros(0, dtype=TRACE_DTYPE) for _ in streams]
    live = [True] * len(streams)
    while True:
        for i, stream in enumerate(streams):
            while live[i] and not len(buffers[i]):
                block = next(stream, None)
                if block is None:
                    live[i] = False
                else:
                    buffers[i] = block
        waiting = [i for i in range(len(streams)) if live[i]]
        if not any(len(b) for b in buffers):
            return
        limit = min(waiting, key=lambda i: int(buffers[i]["t_ns"][-1])) if waiting else None
        bound = int(buffers[limit]["t_ns"][-1]) if limit is not None else 0
        parts = []
        for i, buffer in enumerate(buffers):
            if limit is None or i == limit:
                take = len(buffer)  # the stream that sets the bound gives all it has: progress
            else:
                take = int(np.searchsorted(buffer["t_ns"], bound, side="right"))
            parts.append(buffer[:take])
            buffers[i] = buffer[take:]
        merged = np.concatenate(parts)
        yield merged[np.argsort(merged["t_ns"], kind="stable")]


def read_binary(path: Path, event: str = "D") -> np.ndarray:
    """All records of ``event`` from ``path``'s per-CPU files, in time order."""
    blocks = list(read_binary_blocks(path, event))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=TRACE_DTYPE)


_TEXT_EVENT = re.compile(r"\s*\d+,\d+\s")


def read_blkparse(path: Path, event: str = "D") -> Iterator[np.ndarray]:
    """Record blocks from blkparse's default text output."""
    if event not in EVENTS:
        raise TraceError(f"blktrace event must be one of {', '.join(EVENTS)}, got {event!r}")
    rows: list[tuple[int, int, int, int, int, int]] = []
    with path.open("r", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not _TEXT_EVENT.match(line):
                if rows or number > 1:
                    break  # the summaries after the events
                raise TraceError(f"{path}:{number}: field device: expected MAJ,MIN, got {line.strip()[:40]!r}")
            fields = line.split()
            if len(fields) < 7:
                raise TraceError(f"{path}:{number}: expected 'MAJ,MIN CPU SEQ TIME PID EVENT RWBS ...', "
                                 f"got {line.strip()!r}")
            if fields[5] != event:
                continue
            rwbs = fields[6]
            t_ns = _seconds_ns(path, number, fields[3])
            fua = 1 if "F" in rwbs[1:] else 0
            kind = rwbs.lstrip("F")[:1]
            if kind == "N" or not kind:
                if rwbs.startswith("F"):
                    rows.append((t_ns, 0, 0, OP_CODES["flush"], 0, 1))
                continue
            op = {"R": "read", "W": "write", "D": "trim"}.get(kind)
            if op is None:
                raise TraceError(f"{path}:{number}: field rwbs: {rwbs!r} is not R, W, D or N with flags")
            if len(fields) < 10 or fields[8] != "+":
                if rwbs.startswith("F"):  # a bare preflush
                    rows.append((t_ns, 0, 0, OP_CODES["flush"], 0, 1))
                    continue
                raise TraceError(f"{path}:{number}: expected 'SECTOR + COUNT' after {rwbs!r}")
            sector = _integer(path, number, "sector", fields[7])
            count = _integer(path, number, "count", fields[9])
            if rwbs.startswith("F"):
                rows.append((t_ns, 0, 0, OP_CODES["flush"], 0, 1))
            rows.append((t_ns, sector * SECTOR, count * SECTOR, OP_CODES[op], fua, 1))
            if len(rows) >= 1 << 20:
                yield np.array(rows, dtype=TRACE_DTYPE)
                rows.clear()
    if rows:
        yield np.array(rows, dtype=TRACE_DTYPE)


def _integer(path: Path, number: int, name: str, text: str) -> int:
    if not text.isdigit() or int(text) >= 2**54:
        raise TraceError(f"{path}:{number}: field {name}: expected a sector number, got {text!r}")
    return int(text)


def _seconds_ns(path: Path, number: int, text: str) -> int:
    whole, _, fraction = text.partition(".")
    if not whole.isdigit() or (fraction and not fraction.isdigit()) or len(fraction) > 9:
        raise TraceError(f"{path}:{number}: field time: expected SECONDS.NANOSECONDS, got {text!r}")
    return int(whole) * 1_000_000_000 + int(fraction.ljust(9, "0") or 0)
