"""Trace import: each format from small files made here, malformed lines, and streaming conversion."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from blockemu.trace import FLAG_FUA, OP_CODES, TraceError, read_trace
from blockemu.traceio import ImportOptions, convert, detect_format, fio, read_any
from tests.conftest import require_tool

R, W, F, T = (OP_CODES[name] for name in ("read", "write", "flush", "trim"))


def rows(trace_records: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    r = trace_records
    return list(zip(r["t_ns"].tolist(), r["op"].tolist(), r["offset"].tolist(), r["length"].tolist(),
                    r["flags"].tolist(), strict=True))


# ------------------------------------------------------------------ fio
def test_fio_v2_and_v3(tmp_path: Path) -> None:
    v2 = tmp_path / "v2.iolog"
    v2.write_text("fio version 2 iolog\n/dev/x add\n/dev/x open\n/dev/x write 0 4096\n/dev/x read 4096 8192\n"
                  "/dev/x sync 0 0\n\n/dev/x trim 0 4096\n/dev/x close\n")
    trace = read_any(v2)
    assert detect_format(v2) == "fio" and not trace.has_times
    assert rows(trace.records) == [(0, W, 0, 4096, 0), (0, R, 4096, 8192, 0), (0, F, 0, 0, 0), (0, T, 0, 4096, 0)]
    v3 = tmp_path / "v3.iolog"
    v3.write_text("fio version 3 iolog\n0 /dev/x add\n0 /dev/x open\n5 /dev/x write 0 4096\n7 /dev/x datasync 0 0\n"
                  "9 /dev/x close\n")
    trace = read_any(v3)
    assert trace.has_times
    assert rows(trace.records) == [(5_000_000, W, 0, 4096, 0), (7_000_000, F, 0, 0, 0)]


def test_fio_fast_path_matches_the_line_parser(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    actions = rng.choice(["read", "write", "trim", "sync", "datasync"], size=5000)
    offsets = rng.integers(0, 2**40, size=5000)
    lengths = rng.integers(1, 2**31, size=5000)
    times = np.cumsum(rng.integers(0, 5, size=5000))
    text = "".join(f"{t} /dev/nvme0n1 {a} {o} {n}\n" for t, a, o, n in zip(times, actions, offsets, lengths,
                                                                            strict=True))
    block = ("0 /dev/nvme0n1 add\n" + text + "99999 /dev/nvme0n1 close\n").encode()
    fast = fio._parse_fast(block, 3)
    assert fast is not None
    slow = fio._parse_lines(tmp_path / "x", block, 2, 3)
    assert np.array_equal(fast, slow) and len(fast) == 5000
    path = tmp_path / "big.iolog"
    path.write_bytes(b"fio version 3 iolog\n" + block)
    _, chunks = fio.read_chunks(path)
    small_blocks = [fio._parse_fast(b, 3) for _, b in fio.iter_blocks(path, chunk_bytes=4096)]
    assert len(small_blocks) > 10  # blocks cut at line ends parse to the same records
    assert np.array_equal(np.concatenate(list(chunks)), fast)


@pytest.mark.parametrize("threads", [1, 3])
def test_fio_blocks_parsed_on_threads_come_back_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         threads: int) -> None:
    lines = [f"/dev/x {'read' if i % 3 else 'write'} {i * 4096} {4096 * (1 + i % 5)}\n" for i in range(4000)]
    lines[2500] = "/dev/x write -1 4096\n"  # an error in a late block is still reported with its line
    path = tmp_path / "job.iolog"
    path.write_text("fio version 2 iolog\n" + "".join(lines[:2500]))
    monkeypatch.setattr(fio, "_CHUNK_BYTES", 2048)  # dozens of blocks
    monkeypatch.setattr(fio, "PARSE_THREADS", threads)
    assert len(list(fio.iter_blocks(path))) > 20
    records = np.concatenate(list(fio.read_chunks(path)[1]))
    assert records["offset"].tolist() == [i * 4096 for i in range(2500)]
    assert records["length"].tolist() == [4096 * (1 + i % 5) for i in range(2500)]
    path.write_text("fio version 2 iolog\n" + "".join(lines))
    with pytest.raises(TraceError, match=r"job\.iolog:2502: field offset: -1 is outside"):
        list(fio.read_chunks(path)[1])


@pytest.mark.parametrize(("line", "message"), [
    ("/dev/x write -4096 4096", "bad.iolog:3: field offset: -4096 is outside"),
    ("/dev/x write 4096 x", "bad.iolog:3: field length: expected an integer, got 'x'"),
    ("/dev/x scribble 0 4096", "bad.iolog:3: field action: unknown action 'scribble'"),
    ("/dev/x read", "bad.iolog:3: read needs an offset and a length"),
    ("/dev/x write 0 99999999999", "bad.iolog:3: field length: 99999999999 is outside"),
])
def test_fio_malformed_lines_name_file_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.iolog"
    path.write_text(f"fio version 2 iolog\n/dev/x write 0 4096\n{line}\n/dev/x read 0 4096\n")
    with pytest.raises(TraceError, match=re.escape(message)):
        read_any(path)


def test_negative_offset_gives_one_line_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "neg.iolog"
    path.write_text("fio version 2 iolog\n/dev/x write -4096 4096\n")
    config = Path(__file__).resolve().parents[2] / "configs" / "ufs41.toml"
    result = subprocess.run([sys.executable, "-m", "blockemu", "replay", str(config), str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"blockemu: {path}:2: field offset: -4096 is outside 0..{2**63 - 1}"


# ------------------------------------------------------------- blktrace
def blk_record(time_ns: int, sector: int, nbytes: int, event: int, category: int, cpu: int,
               pdu: bytes = b"", order: str = "<") -> bytes:
    """One ``struct blk_io_trace`` (include/uapi/linux/blktrace_api.h) and its payload."""
    magic = 0x65617400 | 0x07
    return struct.pack(order + "IIQQIIIIIHH", magic, 0, time_ns, sector, nbytes, (category << 16) | event,
                       1234, (8 << 20) | 0, cpu, 0, len(pdu)) + pdu


Q, D = 1, 7
READ, WRITE, FLUSH, NOTIFY, DISCARD, FUA = 1, 2, 4, 1 << 10, 1 << 13, 1 << 15


@pytest.mark.parametrize("order", ["<", ">"])
def test_blktrace_binary_per_cpu_files(tmp_path: Path, order: str) -> None:
    cpu0 = (blk_record(100, 8, 4096, Q, WRITE, 0, order=order) + blk_record(150, 8, 4096, D, WRITE | FUA, 0,
                                                                                order=order)
            + blk_record(160, 0, 0, 0, NOTIFY, 0, b"kworker/0:1\0", order)  # a message, with a payload
            + blk_record(400, 64, 8192, D, WRITE | DISCARD, 0, order=order))
    cpu1 = (blk_record(200, 16, 512, D, READ, 1, order=order) + blk_record(300, 0, 0, D, FLUSH | WRITE, 1,
                                                                            order=order))
    (tmp_path / "sda.blktrace.0").write_bytes(cpu0)
    (tmp_path / "sda.blktrace.1").write_bytes(cpu1)
    path = tmp_path / "sda.blktrace.0"
    assert detect_format(path) == "blktrace"
    trace = read_any(path)
    assert rows(trace.records) == [(150, W, 4096, 4096, FLAG_FUA), (200, R, 8192, 512, 0), (300, F, 0, 0, 0),
                                   (400, T, 32768, 8192, 0)]
    queued = read_any(path, ImportOptions(blktrace_event="Q"))
    assert rows(queued.records) == [(100, W, 4096, 4096, 0)]


def test_blktrace_importer_agrees_with_blkparse(tmp_path: Path) -> None:
    """blkparse itself reads the packed records; its text and the binary import give the same trace."""
    blkparse = require_tool("blkparse")
    (tmp_path / "sda.blktrace.0").write_bytes(
        blk_record(1000, 8, 4096, Q, WRITE, 0) + blk_record(1050, 8, 4096, D, WRITE | FUA, 0)
        + blk_record(1400, 64, 8192, D, WRITE | DISCARD, 0))
    (tmp_path / "sda.blktrace.1").write_bytes(
        blk_record(1200, 16, 512, D, READ, 1) + blk_record(1300, 0, 0, D, FLUSH | WRITE, 1))
    text = subprocess.run([blkparse, "-i", "sda"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=True).stdout
    (tmp_path / "sda.txt").write_text(text)
    binary = read_any(tmp_path / "sda.blktrace.0").records
    parsed = read_any(tmp_path / "sda.txt").records
    assert len(binary) == 4
    # blkparse prints times from the first event on.
    binary["t_ns"] -= 1000
    assert rows(parsed) == rows(binary)


def test_blktrace_bad_and_truncated_records(tmp_path: Path) -> None:
    path = tmp_path / "x.blktrace.0"
    good = blk_record(100, 8, 4096, D, WRITE, 0)
    path.write_bytes(good + good[:20])
    with pytest.raises(TraceError, match=r"x\.blktrace\.0: record at byte 48: truncated"):
        read_any(path)
    path.write_bytes(good + b"\x00" * 48)
    with pytest.raises(TraceError, match="record at byte 48: field magic"):
        read_any(path)


# ------------------------------------------------------------- blkparse
BLKPARSE = """\
  8,0    3        1     0.000000000   697  Q   W 223490 + 8 [kjournald]
  8,0    3        2     0.000001829   697  G   W 223490 + 8 [kjournald]
  8,0    3        6     0.000027815   697  D  WS 223490 + 8 [kjournald]
  8,0    0       11     0.009507758     0  C   W 223490 + 8 [0]
  8,0    1        3     0.010000000   700  D   R 100 + 16 [cat]
  8,0    1        4     0.020000000   700  D  FWFS 200 + 8 [jbd2]
  8,0    1        5     0.030000000   700  D   D 1000 + 2048 [fstrim]
  8,0    1        6     0.040000000   700  D  FN [sync]

CPU0 (8,0):
 Reads Queued:           0,        0KiB\t Writes Queued:           1,        4KiB
"""


def test_blkparse_text(tmp_path: Path) -> None:
    path = tmp_path / "trace.txt"
    path.write_text(BLKPARSE)
    assert detect_format(path) == "blkparse"
    trace = read_any(path)
    assert rows(trace.records) == [(27_815, W, 223490 * 512, 4096, 0), (10_000_000, R, 51200, 8192, 0),
                                   (20_000_000, F, 0, 0, 0), (20_000_000, W, 102400, 4096, FLAG_FUA),
                                   (30_000_000, T, 512000, 1048576, 0), (40_000_000, F, 0, 0, 0)]
    assert len(read_any(path, ImportOptions(blktrace_event="Q"))) == 1
    path.write_text(BLKPARSE.replace("100 + 16", "1x0 + 16"))
    with pytest.raises(TraceError, match=r"trace.txt:5: field sector: expected a sector number, got '1x0'"):
        read_any(path)


# ------------------------------------------------------------------ CSV
def test_csv_with_header_names_and_units(tmp_path: Path) -> None:
    path = tmp_path / "app.csv"
    # As published phone traces: process, device, R/W, sector, size in sectors, time in seconds.
    path.write_text("process,device,rw,sector,sectors,ts\nchrome,sda,R,100,8,0.5\ncamera,sda,W,0,16,0.25\n"
                    "x,sda,flush,0,0,0.75\n")
    options = ImportOptions(csv_columns="op=rw,offset=sector:sectors,size=sectors:sectors,time=ts:s")
    trace = read_any(path, options)
    # Sorted by time on import.
    assert rows(trace.records) == [(250_000_000, W, 0, 8192, 0), (500_000_000, R, 51200, 4096, 0),
                                   (750_000_000, F, 0, 0, 0)]
    by_number = read_any(path, ImportOptions(csv_columns="op=3,offset=4:sectors,size=5:sectors,time=6:s"))
    assert np.array_equal(by_number.records, trace.records)  # the header line is recognised and skipped
    numbered = tmp_path / "plain.csv"
    numbered.write_text("Read;4096;4096\nWrite;0;512\nDiscard;8192;4096\n")
    trace = read_any(numbered, ImportOptions(csv_columns="op=1,offset=2,size=3", csv_delimiter=";"))
    assert not trace.has_times
    assert [r[1:4] for r in rows(trace.records)] == [(R, 4096, 4096), (W, 0, 512), (T, 8192, 4096)]


@pytest.mark.parametrize(("text", "columns", "message"), [
    ("R,0,4096\nQ,0,4096\n", "op=1,offset=2,size=3", r"bad.csv:2: field op: 'Q' is not R/W/D/F"),
    ("R,0,4096\nW,-8,4096\n", "op=1,offset=2,size=3", r"bad.csv:2: field offset: '-8' is negative"),
    ("R,0\n", "op=1,offset=2,size=3", r"bad.csv:1: 2 columns; the column map needs 3"),
    ("a,b,c\nR,0,1\n", "op=a,offset=b,size=d", r"bad.csv:1: no column 'd' for size"),
    ("R,0,1\n", "op=1,offset=2", r"--csv-columns needs size"),
    ("R,0,1\n", "op=1,offset=2:blocks,size=3", r"unit of offset must be one of bytes, sectors"),
])
def test_csv_errors(tmp_path: Path, text: str, columns: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(TraceError, match=message):
        read_any(path, ImportOptions(csv_columns=columns))


def test_disksim_ascii_recognised_and_read(tmp_path: Path) -> None:
    # MQSim's traces/*.trace: arrival ns, device, start sector, sectors, 1 = read / 0 = write.
    path = tmp_path / "wsrch.trace"
    path.write_text("11413000 0 657728 16 1\n11565000 1 31244784 64 1\n\n1448553000 2 6112 16 0\n")
    assert detect_format(path) == "disksim"
    trace = read_any(path)
    assert trace.has_times
    assert rows(trace.records) == [(11_413_000, R, 657728 * 512, 8192, 0), (11_565_000, R, 31244784 * 512, 32768, 0),
                                   (1_448_553_000, W, 6112 * 512, 8192, 0)]
    # DiskSim's own milliseconds, restated through --csv-columns.
    in_ms = read_any(path, ImportOptions(format="disksim", csv_columns="time=1:ms"))
    assert in_ms.records["t_ns"].tolist() == [11_413_000_000_000, 11_565_000_000_000, 1_448_553_000_000_000]
    bad = tmp_path / "bad.trace"
    bad.write_text("0 0 0 8 1\n10 0 8 8 2\n")
    with pytest.raises(TraceError, match=r"bad\.trace:2: field op: '2' is not one of --csv-ops' 0, 1"):
        read_any(bad, ImportOptions(format="disksim"))


def test_msr_cambridge_csv_with_filetime_ticks(tmp_path: Path) -> None:
    # SNIA IOTTA's MSR Cambridge layout: Timestamp (100 ns ticks),Hostname,DiskNumber,Type,Offset,Size,ResponseTime.
    path = tmp_path / "hm_0.csv"
    path.write_text("128166372003061629,hm,0,Write,7014912,4096,26\n128166372016382155,hm,0,Read,1074696192,512,113\n")
    trace = read_any(path, ImportOptions(csv_columns="time=1:100ns,op=4,offset=5,size=6"))
    assert rows(trace.records) == [(12816637200306162900, W, 7014912, 4096, 0),
                                   (12816637201638215500, R, 1074696192, 512, 0)]


def test_csv_ops_coded_as_numbers_and_whitespace_delimiter(tmp_path: Path) -> None:
    path = tmp_path / "tencent.txt"
    # Columns as Tencent's CBS traces: time, offset (sectors), size (sectors), 0 = read / 1 = write.
    path.write_text("5   100  8 0\n6\t0 16\t1\n")
    options = ImportOptions(csv_columns="time=1:s,offset=2:sectors,size=3:sectors,op=4",
                            csv_delimiter="whitespace", csv_ops="0=read,1=write")
    trace = read_any(path, options)
    assert rows(trace.records) == [(5_000_000_000, R, 51200, 4096, 0), (6_000_000_000, W, 0, 8192, 0)]
    with pytest.raises(TraceError, match=r"--csv-ops: '0=fetch' must be VALUE=OP"):
        read_any(path, ImportOptions(csv_columns="offset=2,size=3,op=4", csv_ops="0=fetch"))
    with pytest.raises(TraceError, match=r"--csv-delimiter must be one character or 'whitespace'"):
        read_any(path, ImportOptions(csv_columns="offset=2,size=3,op=4", csv_delimiter="tab"))


# -------------------------------------------------------------- convert
def test_convert_streams_to_the_native_format(tmp_path: Path) -> None:
    source = tmp_path / "job.iolog"
    source.write_text("fio version 2 iolog\n" + "".join(f"/dev/x write {i * 4096} 4096\n" for i in range(100)))
    dest = tmp_path / "job.trace"
    assert convert(source, dest) == 100
    native = read_trace(dest)
    assert np.array_equal(native.records, read_any(source).records)
    assert not native.has_times  # v2: still closed-loop after conversion
    with pytest.raises(TraceError, match="exists"):
        convert(source, dest)
    bad = tmp_path / "bad.iolog"
    bad.write_text("fio version 2 iolog\n/dev/x write 0 4096\n/dev/x write -1 4096\n")
    with pytest.raises(TraceError, match=r"bad\.iolog:3"):
        convert(bad, tmp_path / "bad.trace")
    assert not (tmp_path / "bad.trace").exists()  # nothing half-written
    cli = subprocess.run([sys.executable, "-m", "blockemu", "trace", "convert", str(source), str(tmp_path / "c.trace")],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and "100 records" in cli.stdout, cli.stderr


def test_an_unsorted_csv_converted_replays_in_time_order(tmp_path: Path) -> None:
    from blockemu.replay import replay
    from tests.conftest import small_ufs_config

    source = tmp_path / "late.csv"
    source.write_text("W,0,4096,3\nR,0,4096,1\nW,8192,4096,2\n")
    options = ImportOptions(csv_columns="op=1,offset=2,size=3,time=4:ms")
    dest = tmp_path / "late.trace"
    convert(source, dest, options)
    assert read_trace(dest).records["t_ns"].tolist() == [3_000_000, 1_000_000, 2_000_000]  # streamed as read
    direct = replay(small_ufs_config(), read_any(source, options), engine="scalar")
    converted = replay(small_ufs_config(), read_trace(dest), engine="scalar")
    assert direct.arrivals_ns.tolist() == converted.arrivals_ns.tolist() == [0, 1_000_000, 2_000_000]
    assert np.array_equal(direct.completions_ns, converted.completions_ns)


def test_blktrace_per_cpu_files_merge_block_by_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from blockemu.traceio import blktrace

    rng = np.random.default_rng(4)
    expected = []
    for cpu in range(3):
        times = np.sort(rng.integers(0, 10**9, size=500))
        data = b"".join(blk_record(int(t), int(t) % 1000 * 8, 4096, D, READ if t % 2 else WRITE, cpu,
                                   b"x" * 8 if i % 97 == 0 else b"") for i, t in enumerate(times))
        (tmp_path / f"m.blktrace.{cpu}").write_bytes(data)
        expected += times.tolist()
    monkeypatch.setattr(blktrace, "_BLOCK_RECORDS", 16)
    blocks = list(blktrace.read_binary_blocks(tmp_path / "m.blktrace.0"))
    assert len(blocks) > 20  # merged a little at a time
    merged = np.concatenate(blocks)
    assert merged["t_ns"].tolist() == sorted(expected)


def test_the_cli_offers_every_format() -> None:
    from blockemu import traceio
    from blockemu.cli import trace as cli_trace

    assert cli_trace.FORMATS == traceio.FORMATS  # kept apart so that building the parser imports no numpy
