"""fio iologs, versions 2 and 3 (fio's HOWTO, "I/O replay"), parsed with numpy.

    fio version 2 iolog            fio version 3 iolog
    FILE add                       MS FILE add
    FILE open                      MS FILE open
    FILE ACTION OFFSET LENGTH      MS FILE ACTION OFFSET LENGTH
    FILE close                     MS FILE close

ACTION is read, write, trim, sync or datasync (both flushes), or wait
(skipped); v3's MS is the issue time in milliseconds.  Every file is taken as
the one device.  Lines are tokenised for a whole block of the file at once
(whitespace found with numpy, integers summed digit by digit); a block with
anything the fast path does not expect is parsed again line by line, which
either accepts it or names the line and field that is wrong.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from blockemu.trace import OP_CODES, TRACE_DTYPE, TraceError

HEADERS = (b"fio version 2 iolog", b"fio version 3 iolog")
ACTIONS = {"read": "read", "write": "write", "trim": "trim", "sync": "flush", "datasync": "flush"}
FILE_ACTIONS = ("add", "open", "close")
SKIPPED = ("wait",)
MAX_OFFSET = 2**63 - 1
MAX_LENGTH = 2**32 - 1
# Blocks small enough that the tokeniser's arrays stay in cache: 2 MiB parsed twice as fast as 32 MiB here.
_CHUNK_BYTES = 2 << 20
# Threads tokenising blocks at once: the cores this process may use, at most 4.
PARSE_THREADS = max(1, min(4, len(os.sched_getaffinity(0))))
_POW10 = np.array([10**k for k in range(20)], dtype=np.uint64)


def version_of(first_line: bytes) -> int | None:
    for version, header in zip((2, 3), HEADERS, strict=True):
        if first_line.startswith(header):
            return version
    return None


def iter_blocks(path: Path, chunk_bytes: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(number of the block's first line, whole lines) from ``path``, blocks of ``chunk_bytes`` (_CHUNK_BYTES)."""
    chunk_bytes = chunk_bytes or _CHUNK_BYTES
    line = 1
    rest = b""
    with path.open("rb") as f:
        while True:
            data = f.read(chunk_bytes)
            if not data:
                break
            data = rest + data
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data
                continue
            block, rest = data[:cut], data[cut:]
            yield line, block
            line += block.count(b"\n")
    if rest:
        yield line, rest + b"\n"


def read_chunks(path: Path) -> tuple[bool, Iterator[np.ndarray]]:
    """(has times, record blocks) of the iolog at ``path``."""
    with path.open("rb") as f:
        version = version_of(f.readline())
    if version is None:
        raise TraceError(f"{path}:1: not a fio iolog (first line must be 'fio version 2 iolog' or '... 3 iolog')")

    def parse(first_line: int, block: bytes) -> np.ndarray:
        if first_line == 1:  # drop the header line
            cut = block.index(b"\n") + 1
            block, first_line = block[cut:], 2
        records = _parse_fast(block, version)
        if records is None:
            records = _parse_lines(path, block, first_line, version)
        return records

    def chunks() -> Iterator[np.ndarray]:
        # Blocks are tokenised on PARSE_THREADS threads (numpy's loops release the GIL), in order,
        # with at most twice that many blocks in flight: memory stays bounded.
        with ThreadPoolExecutor(PARSE_THREADS) as pool:
            pending: deque[Future[np.ndarray]] = deque()
            for first_line, block in iter_blocks(path):
                pending.append(pool.submit(parse, first_line, block))
                if len(pending) > 2 * PARSE_THREADS:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    return version == 3, chunks()


def _action_keys(names: tuple[str, ...]) -> np.ndarray:
    return np.array([int.from_bytes(name.encode().ljust(8, b"\0"), "little") for name in names], dtype=np.uint64)


# Sorted, for searchsorted.
_ORDER = np.argsort(_action_keys(tuple(ACTIONS)))
_DATA_KEYS = _action_keys(tuple(ACTIONS))[_ORDER]
_DATA_CODES = np.array([OP_CODES[op] for op in ACTIONS.values()], dtype=np.uint8)[_ORDER]
_FILE_KEYS = _action_keys(FILE_ACTIONS)


def _parse_fast(block: bytes, version: int) -> np.ndarray | None:
    """The block's records, or None when it holds anything but plain data and file lines."""
    if not block:
        return np.zeros(0, dtype=TRACE_DTYPE)
    # Eight zero bytes after the block, for the action keys' 8-byte reads (they are not part of it).
    padded = np.frombuffer(block + bytes(8), dtype=np.uint8)
    arr = padded[:-8]
    # Whitespace and control bytes separate tokens (as str.split, which the line parser uses).
    edges = np.diff((arr <= 32).view(np.int8), prepend=np.int8(1), append=np.int8(1))
    starts = np.flatnonzero(edges == -1)
    ends = np.flatnonzero(edges == 1)
    newlines = np.flatnonzero(arr == 10)
    # Tokens before each newline, hence per line.
    before = np.searchsorted(starts, newlines)
    count = np.diff(before, prepend=0)
    if before[-1] != len(starts):
        return None  # a block always ends with a newline; anything else is left to the line parser
    first = before - count
    lead = version - 2  # v3's timestamp comes first
    data_lines = np.flatnonzero(count == 4 + lead)
    file_lines = np.flatnonzero(count == 2 + lead)
    if len(data_lines) + len(file_lines) != np.count_nonzero(count):
        return None
    file_tokens = first[file_lines] + 1 + lead
    if not np.isin(_keys(padded, starts[file_tokens], ends[file_tokens]), _FILE_KEYS).all():
        return None
    action_tokens = first[data_lines] + 1 + lead
    keys = _keys(padded, starts[action_tokens], ends[action_tokens])
    action = np.minimum(np.searchsorted(_DATA_KEYS, keys), len(_DATA_KEYS) - 1)
    if not (_DATA_KEYS[action] == keys).all():
        return None
    offsets = _integers(arr, starts[action_tokens + 1], ends[action_tokens + 1])
    lengths = _integers(arr, starts[action_tokens + 2], ends[action_tokens + 2])
    if offsets is None or lengths is None or (offsets > MAX_OFFSET).any() or (lengths > MAX_LENGTH).any():
        return None
    records = np.zeros(len(data_lines), dtype=TRACE_DTYPE)
    if lead:
        times = _integers(arr, starts[first[data_lines]], ends[first[data_lines]])
        if times is None or (times > MAX_OFFSET // 1_000_000).any():
            return None
        records["t_ns"] = times * np.uint64(1_000_000)
    records["op"] = _DATA_CODES[action]
    records["offset"] = offsets
    records["length"] = lengths
    records["qd"] = 1
    return records


_KEY_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [2**64 - 1], dtype=np.uint64)


def _keys(padded: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Each token's first 8 bytes as a little-endian integer; tokens longer than 8 get an impossible key.

    ``padded`` has 8 bytes beyond the last token."""
    length = ends - starts
    # Every byte offset's next 8 bytes, as a view (no copy): one gather of 8 bytes a token.
    windows = np.lib.stride_tricks.as_strided(padded, shape=(len(padded) - 7, 8), strides=(1, 1), writeable=False)
    keys = windows[starts].view("<u8")[:, 0] & _KEY_MASKS[np.minimum(length, 8)]
    keys[length > 8] = np.uint64(2**64 - 1)
    return keys


def _integers(arr: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
    """Unsigned decimal tokens as uint64, or None if any is not all digits or has more than 19."""
    length = ends - starts
    if not len(starts):
        return np.zeros(0, dtype=np.uint64)
    width = int(length.max())
    if width > 19:
        return None
    value = np.zeros(len(starts), dtype=np.uint64)
    ten = np.uint64(10)
    # Digit k of every token at once; tokens shorter than k + 1 keep their value.
    for k in range(width):
        live = length > k
        digit = arr[np.where(live, starts + k, 0)] - np.uint8(48)  # non-digits wrap to >= 10
        if (digit[live] > 9).any():
            return None
        value = np.where(live, value * ten + digit, value)
    return value


def _parse_lines(path: Path, block: bytes, first_line: int, version: int) -> np.ndarray:
    """The block parsed line by line: its records, or a TraceError naming the line and field."""
    rows: list[tuple[int, int, int, int, int, int]] = []
    for number, raw in enumerate(block.decode("utf-8", errors="replace").splitlines(), start=first_line):
        fields = raw.split()
        if not fields:
            continue
        t_ns = 0
        if version == 3:
            t_ns = _field(path, number, "time", fields[0], 2**63 // 1_000_000) * 1_000_000
            fields = fields[1:]
        if len(fields) < 2:
            raise TraceError(f"{path}:{number}: expected 'file action [offset length]', got {raw.strip()!r}")
        action = fields[1]
        if action in FILE_ACTIONS or action in SKIPPED:
            continue
        if action not in ACTIONS:
            raise TraceError(f"{path}:{number}: field action: unknown action {action!r}; allowed: "
                             f"{', '.join((*ACTIONS, *FILE_ACTIONS, *SKIPPED))}")
        offset = length = 0
        if len(fields) >= 4:
            offset = _field(path, number, "offset", fields[2], MAX_OFFSET)
            length = _field(path, number, "length", fields[3], MAX_LENGTH)
        elif ACTIONS[action] != "flush":
            raise TraceError(f"{path}:{number}: {action} needs an offset and a length")
        rows.append((t_ns, offset, length, OP_CODES[ACTIONS[action]], 0, 1))
    return np.array(rows, dtype=TRACE_DTYPE)


def _field(path: Path, number: int, name: str, text: str, maximum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise TraceError(f"{path}:{number}: field {name}: expected an integer, got {text!r}") from None
    if not 0 <= value <= maximum:
        raise TraceError(f"{path}:{number}: field {name}: {value} is outside 0..{maximum}")
    return value
