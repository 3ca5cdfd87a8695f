#!/usr/bin/env python3
"""NBD throughput of blockemu's UFS model against three baselines, in one run.

Targets, all 1 GiB, all served by nbdkit on a unix socket with 16 threads:
  ufs        blockemu serve configs/ufs41.toml (virtual timing): the limited
             L2P cache (1 MiB, extent mode) and WriteBooster, as shipped
  ufs-unlimited
             the same with the whole map in SRAM and no WriteBooster
             (--set ufs.l2p_cache_kib=0 ufs.wb_enabled=false): the model
             before the cache, so ufs/ufs-unlimited is what the cache costs
  bytearray  the least a python plugin can do (scripts/bench_plugins/)
  bytearray-kept
             the same plugin keeping its thread states between requests
             as blockemu's does (blockemu/frontends/nbdkit/threads.py), so
             that ufs/bytearray-kept is the cost of the model alone
  memory     nbdkit's C memory plugin

Workloads (fio's nbd engine), after one untimed fill of the whole device:
1 MiB sequential write/read, 4 KiB random write/read at QD1 and QD16 over
256 MiB.  The targets take turns on every workload for --rounds rounds and
the medians are printed: IOPS and MB/s per target, the ratios of ufs to
each baseline, and each server's CPU time (all its threads, user + system)
per request.  The last lines print the ufs target's L2P cache counters.
Usage:

    .venv/bin/python scripts/bench_nbd.py [--runtime 5] [--rounds 3] [--csv results/bench.csv]
        [--targets ufs,ufs-unlimited,bytearray,bytearray-kept,memory] [--ufs-threads 16]
        [--ufs-set SECTION.KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from blockemu.experiments.report import format_table  # noqa: E402
from blockemu.frontends.nbdkit.launcher import plugin_environment  # noqa: E402

SIZE = 1024 * 1024 * 1024
TARGETS = ("ufs", "ufs-unlimited", "bytearray", "bytearray-kept", "memory")
# The model before the L2P cache and WriteBooster (docs/ufs.md).
UNLIMITED = ["--set", "ufs.l2p_cache_kib=0", "--set", "ufs.wb_enabled=false"]
WORKLOADS = [
    # name, rw, block size, iodepth
    ("seq-write-1M", "write", "1M", 4),
    ("seq-read-1M", "read", "1M", 4),
    ("rand-write-4K-qd1", "randwrite", "4k", 1),
    ("rand-write-4K-qd16", "randwrite", "4k", 16),
    ("rand-read-4K-qd1", "randread", "4k", 1),
    ("rand-read-4K-qd16", "randread", "4k", 16),
]


@contextmanager
def serve(target: str, sock: Path, ufs_threads: int = 16, http: str = "",
          ufs_set: tuple[str, ...] = ()) -> Iterator[int]:
    nbdkit = shutil.which("nbdkit")
    if nbdkit is None:
        sys.exit("bench: nbdkit not found; run 'make setup'")
    if target in ("ufs", "ufs-unlimited"):
        argv = [sys.executable, "-m", "blockemu", "serve", str(REPO / "configs" / "ufs41.toml"), "--unix", str(sock),
                "--http", http, "--set", "device.capacity_mib=1024", "--set", "timing.mode=virtual",
                "--threads", str(ufs_threads), *(word for item in ufs_set for word in ("--set", item)),
                *(UNLIMITED if target == "ufs-unlimited" else [])]
    elif target in ("bytearray", "bytearray-kept"):
        argv = [nbdkit, "--foreground", "--threads", "16", "--unix", str(sock), "python",
                str(REPO / "scripts" / "bench_plugins" / "bytearray_plugin.py"), f"size={SIZE}",
                f"keep_thread_state={int(target == 'bytearray-kept')}"]
    else:
        argv = [nbdkit, "--foreground", "--threads", "16", "--unix", str(sock), "memory", str(SIZE)]
    process = subprocess.Popen(argv, env=plugin_environment(), stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"bench: {target} server did not start")
            time.sleep(0.05)
        yield process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)
        sock.unlink(missing_ok=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cache_counters(address: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://{address}/api/v1/device", timeout=30) as answer:
        l2p = json.loads(answer.read())["l2p"]
    return {key: l2p[key] for key in ("mode", "capacity_bytes", "hits", "misses", "miss_ratio", "map_reads",
                                      "map_writes", "cached_bytes") if key in l2p}


def server_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (nbdkit under ``blockemu serve``)."""
    ticks = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except FileNotFoundError:  # exited meanwhile
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (proc(5) fields 14 and 15)
        pending.extend(int(child) for child in children)
    return ticks / os.sysconf("SC_CLK_TCK")


def run_fio(sock: Path, rw: str, bs: str, iodepth: int, runtime_s: int, server_pid: int) -> tuple[float, float, float]:
    """IOPS, MB/s and the server's CPU µs per request."""
    argv = ["fio", "--name=bench", "--ioengine=nbd", f"--uri=nbd+unix:///?socket={sock}", f"--rw={rw}",
            f"--bs={bs}", f"--iodepth={iodepth}", "--size=256M", "--time_based", f"--runtime={runtime_s}",
            "--randrepeat=1", "--norandommap", "--output-format=json"]
    if rw in ("read", "write"):
        argv[argv.index("--size=256M")] = "--size=1G"
    cpu_before = server_cpu_s(server_pid)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    cpu_s = server_cpu_s(server_pid) - cpu_before
    job = json.loads(out[out.index("{"):])["jobs"][0]
    side = job["read"] if "read" in rw else job["write"]
    return float(side["iops"]), float(side["bw_bytes"]) / 1e6, cpu_s / max(1, int(side["total_ios"])) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", type=int, default=5, help="seconds per fio job (default 5)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="each workload runs this many times per target, targets interleaved; "
                             "the median is reported (default 3)")
    parser.add_argument("--csv", type=Path, help="also write the results as CSV")
    parser.add_argument("--ufs-threads", type=int, default=16,
                        help="nbdkit worker threads for the ufs target (default 16, as every target)")
    parser.add_argument("--ufs-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value of both ufs targets (ufs-unlimited's own settings win), "
                             "e.g. ufs.l2p_mode=page ufs.l2p_cache_kib=64 for a cache smaller than the "
                             "workload's map")
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument("--workloads", default=",".join(w[0] for w in WORKLOADS),
                        help="comma-separated subset of the workloads (default all), e.g. rand-read-4K-qd16")
    args = parser.parse_args()
    if shutil.which("fio") is None:
        sys.exit("bench: fio not found; run 'make setup'")
    targets = args.targets.split(",")
    if args.ufs_threads <= 0:
        sys.exit(f"bench: --ufs-threads must be > 0, got {args.ufs_threads}")
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        sys.exit(f"bench: unknown target {unknown[0]!r} in --targets; allowed: {', '.join(TARGETS)}")
    names = [w[0] for w in WORKLOADS]
    chosen = args.workloads.split(",")
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        sys.exit(f"bench: unknown workload {unknown[0]!r} in --workloads; allowed: {', '.join(names)}")
    workloads = [w for w in WORKLOADS if w[0] in chosen]
    samples: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="blockemu-bench-") as tmp, ExitStack() as servers:
        sockets = {target: Path(tmp) / f"{target}.sock" for target in targets}
        pids = {}
        http = {"ufs": f"127.0.0.1:{free_port()}"}  # to read the cache's counters at the end
        for target, sock in sockets.items():
            pids[target] = servers.enter_context(
                serve(target, sock, args.ufs_threads, http.get(target, ""), tuple(args.ufs_set)))
            # Fill the device once, untimed: every target then measures its
            # steady state (memory allocated, FTL mapped) rather than
            # first-touch page faults, which the bytearray baseline pays at
            # start-up instead.
            print(f"bench: {target:9s} fill (untimed) ...", file=sys.stderr, flush=True)
            subprocess.run(["fio", "--name=fill", "--ioengine=nbd", f"--uri=nbd+unix:///?socket={sock}",
                            "--rw=write", "--bs=1M", "--iodepth=4", "--size=1G"],
                           check=True, stdout=subprocess.DEVNULL)
        # Targets take turns on each workload, round after round, so that a
        # change in the machine's load falls on all of them alike.
        for round_number in range(1, args.rounds + 1):
            for name, rw, bs, depth in workloads:
                for target, sock in sockets.items():
                    print(f"bench: round {round_number} {target:9s} {name} ...", file=sys.stderr, flush=True)
                    samples.setdefault((target, name), []).append(
                        run_fio(sock, rw, bs, depth, args.runtime, pids[target]))
        l2p = cache_counters(http["ufs"]) if "ufs" in targets else None
    results = {key: tuple(statistics.median(s[i] for s in runs) for i in range(3)) for key, runs in samples.items()}
    ratios = [t for t in targets if t != "ufs"] if "ufs" in targets else []
    if "ufs-unlimited" in ratios:  # the cache's cost first
        ratios.insert(0, ratios.pop(ratios.index("ufs-unlimited")))
    rows = []
    for name, *_ in workloads:
        row: dict[str, object] = {"workload": name}
        for t in targets:
            iops, mbps, _ = results[(t, name)]
            row[f"{t}_iops"], row[f"{t}_mbps"] = round(iops), round(mbps, 1)
        for t in ratios:
            row[f"ufs/{t}"] = f"{results[('ufs', name)][0] / results[(t, name)][0]:.2f}"
        rows.append(row)
    print(format_table(rows, list(rows[0])))
    # Where the time goes: server CPU (all threads, user + system) per request.
    cpu_rows = [{"workload": name, **{f"{t}_cpu_us_per_request": f"{results[(t, name)][2]:.1f}" for t in targets}}
                for name, *_ in workloads]
    print()
    print(format_table(cpu_rows, list(cpu_rows[0])))
    for row, cpu_row in zip(rows, cpu_rows, strict=True):
        row.update(cpu_row)
    if l2p is not None:
        print()
        print("ufs L2P cache over the whole run: " + ", ".join(f"{k} {v}" for k, v in l2p.items()))
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
