#!/usr/bin/env python3
"""Replay throughput: requests per wall-clock second, vector engine vs scalar engine, and end to end.

Generates a seeded trace of 4 KiB requests (70% random reads, 30% random
writes, open-loop arrivals at 200 K requests per modeled second) over an
aged UFS device, replays it with both engines on the same config, checks that
both computed the same completion times, and prints the rates and their ratio.

The text case (``--text-requests``, 0 to skip) writes the same kind of
trace as a fio v2 iolog and measures, in this one invocation:

* parsing it with the line-by-line parser (the only one before
  blockemu/traceio, "before") and with the numpy tokeniser ("after"),
  checking both give the same records;
* ``blockemu replay CONFIG FILE`` end to end (process start to summary, a
  subprocess timed from spawn to exit, wall and CPU time) on the iolog, and
  on the same trace converted to blockemu's binary format (``blockemu trace
  convert``), with Python's compiled modules cached as on a user's machine;
* with ``--before REV`` (default: the commit before blockemu/traceio), the
  same iolog end to end through that commit's ``blockemu replay`` too,
  extracted with ``git archive`` into a temporary folder, alternating with
  today's for ``--rounds`` rounds.

The vector engine prices the plain UFS model (no L2P cache limit, no
WriteBooster: docs/ufs.md), so every run here sets ``ufs.l2p_cache_kib=0``
and ``ufs.wb_enabled=false`` on ``--config``.

    .venv/bin/python scripts/bench_replay.py [--requests 2000000] [--text-requests 1000000] [--before REV]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from blockemu.config import load_config  # noqa: E402
from blockemu.replay import replay  # noqa: E402
from blockemu.trace import OP_CODES, TRACE_DTYPE, Trace  # noqa: E402
from blockemu.traceio import fio, read_any  # noqa: E402


def random_4k_trace(count: int, span_bytes: int, seed: int) -> Trace:
    rng = np.random.default_rng(seed)
    records = np.zeros(count, dtype=TRACE_DTYPE)
    records["t_ns"] = np.cumsum(rng.exponential(5_000, size=count)).astype(np.int64)
    records["op"] = np.where(rng.random(count) < 0.7, OP_CODES["read"], OP_CODES["write"])
    records["offset"] = rng.integers(0, span_bytes // 4096, size=count) * 4096
    records["length"] = 4096
    records["qd"] = 1
    return Trace(records, {}, {})


def write_fio_iolog(path: Path, trace: Trace) -> None:
    names = np.array(["read", "write"])[(trace.records["op"] == OP_CODES["write"]).astype(int)]
    lines = [f"/dev/x {a} {o} {n}\n" for a, o, n in zip(names.tolist(), trace.records["offset"].tolist(),
                                                      trace.records["length"].tolist(), strict=True)]
    path.write_text("fio version 2 iolog\n/dev/x add\n/dev/x open\n" + "".join(lines) + "/dev/x close\n")


def bytecode_env(folder: Path) -> dict[str, str]:
    """The environment for the timed runs: compiled modules cached (in ``folder``), as on a user's machine.

    With PYTHONDONTWRITEBYTECODE set (as in some sandboxes) every run compiles
    blockemu's modules again, about 0.7 s of CPU here; a user's Python caches them.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
    return env


# What the vector engine prices (see the module docstring).
PLAIN_UFS = ["ufs.l2p_cache_kib=0", "ufs.wb_enabled=false"]
# The last commit before blockemu/traceio: fio iologs parsed line by line, every CLI module imported at start.
BEFORE_TRACEIO = "db75e0e"


def end_to_end(config: str, trace_path: Path, env: dict[str, str], root: Path = REPO,
               extra: tuple[str, ...] | None = None) -> tuple[float, float, str]:
    """Wall and CPU (user + system) seconds of ``blockemu replay`` from spawn to exit, and its summary's first line.

    The CPU time is what the run costs however busy the machine is; on a shared
    machine the wall time also holds the time other processes had the cores.
    ``root`` is the checkout whose blockemu runs; ``extra`` its options (today's by default).
    """
    if extra is None:
        extra = ("--precondition", "none", *(word for item in PLAIN_UFS for word in ("--set", item)))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "blockemu", "replay", config, str(trace_path), *extra],
                            capture_output=True, text=True, check=True, cwd=root,
                            env={**env, "PYTHONPATH": str(root)})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result.stdout.splitlines()[0]


def checkout(rev: str, folder: Path) -> Path:
    """Commit ``rev`` of this repository, extracted into ``folder`` (no worktree, no change to the repository)."""
    archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=REPO, capture_output=True, check=True)
    folder.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def text_case(count: int, config_path: str, seed: int, before_rev: str, rounds: int) -> bool:
    config = load_config(config_path, PLAIN_UFS)
    trace = random_4k_trace(count, config.capacity_bytes, seed)
    with tempfile.TemporaryDirectory() as folder:
        iolog = Path(folder) / "job.iolog"
        write_fio_iolog(iolog, trace)
        block = iolog.read_bytes().split(b"\n", 1)[1]
        started = time.process_time()
        before = fio._parse_lines(iolog, block, 2, 2)
        before_s = time.process_time() - started
        started = time.process_time()
        after = read_any(iolog).records
        after_s = time.process_time() - started
        same = np.array_equal(before, after)
        native = Path(folder) / "job.trace"
        env = bytecode_env(Path(folder))
        # Also the warm-up that caches the compiled modules.
        subprocess.run([sys.executable, "-m", "blockemu", "trace", "convert", str(iolog), str(native)],
                       check=True, capture_output=True, cwd=REPO, env=env)
        tiny = Path(folder) / "tiny.iolog"
        tiny.write_text("fio version 2 iolog\n/dev/x read 0 4096\n")
        end_to_end(config_path, tiny, env)
        old_root = None
        if before_rev:
            old_root = checkout(before_rev, Path(folder) / "before")
            # Its own config of the same name: it knows no L2P cache or WriteBooster keys.
            old_config = str(old_root / Path(config_path).resolve().relative_to(REPO))
            end_to_end(old_config, tiny, env, old_root, ())
        runs: dict[str, list[tuple[float, float, str]]] = {"fio iolog": [], "blockemu binary": [], "before": []}
        for _ in range(rounds):  # alternated, so that a busy spell of the machine hits all alike
            if old_root is not None:
                runs["before"].append(end_to_end(old_config, iolog, env, old_root, ()))
            runs["fio iolog"].append(end_to_end(config_path, iolog, env))
            runs["blockemu binary"].append(end_to_end(config_path, native, env))
    print(f"\nfio v2 iolog, {count} lines ({iolog.name}):")
    print(f"{'parse (CPU time)':28s}{'cpu s':>10s}{'requests/s':>14s}")
    print(f"{'before: line by line':28s}{before_s:10.2f}{count / before_s:14.0f}")
    print(f"{'after: numpy tokeniser':28s}{after_s:10.2f}{count / after_s:14.0f}")
    print(f"parse after/before: {before_s / after_s:.1f}x; identical records: {same}")
    print(f"end to end (replay CLI), best of {rounds} alternated rounds:")
    print(f"{'':28s}{'wall s':>10s}{'requests/s':>14s}{'cpu s':>10s}{'requests/cpu s':>16s}")
    labels = {"before": f"fio iolog, before ({before_rev})", "fio iolog": "fio iolog",
              "blockemu binary": "blockemu binary"}
    best: dict[str, tuple[float, float, str]] = {}
    for name, results in runs.items():
        if not results:
            continue
        wall, cpu = min(r[0] for r in results), min(r[1] for r in results)
        best[name] = (wall, cpu, results[-1][2])
        print(f"{labels[name]:28s}{wall:10.2f}{count / wall:14.0f}{cpu:10.2f}{count / cpu:16.0f}")
    if "before" in best:
        print(f"fio iolog after/before: {best['before'][0] / best['fio iolog'][0]:.2f}x wall, "
              f"{best['before'][1] / best['fio iolog'][1]:.2f}x CPU")
    for name, (_, _, line) in best.items():
        print(f"  {labels[name]}: {line}")
    return same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2_000_000)
    parser.add_argument("--scalar-requests", type=int, default=200_000, help="the scalar engine replays a prefix")
    parser.add_argument("--config", default=str(REPO / "configs" / "ufs41.toml"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--text-requests", type=int, default=1_000_000,
                        help="lines of the fio iolog for the text case; 0 skips it")
    parser.add_argument("--before", default=BEFORE_TRACEIO, metavar="REV",
                        help=f"also time this commit's replay CLI on the iolog (default {BEFORE_TRACEIO}; '' skips)")
    parser.add_argument("--rounds", type=int, default=3, help="end-to-end rounds, alternated; the best is shown")
    args = parser.parse_args()
    config = load_config(args.config, ["aging.fragmentation_percent=50", *PLAIN_UFS])
    trace = random_4k_trace(args.requests, config.capacity_bytes, args.seed)
    vector = replay(config, trace, engine="vector")
    prefix = Trace(trace.records[: args.scalar_requests], {}, {})
    scalar = replay(config, prefix, engine="scalar")
    same = np.array_equal(scalar.completions_ns, vector.completions_ns[: args.scalar_requests])
    v_rate = len(trace) / vector.wall_s
    s_rate = len(prefix) / scalar.wall_s
    print(f"{'engine':8s}{'requests':>12s}{'wall s':>10s}{'requests/s':>14s}")
    print(f"{'vector':8s}{len(trace):12d}{vector.wall_s:10.2f}{v_rate:14.0f}")
    print(f"{'scalar':8s}{len(prefix):12d}{scalar.wall_s:10.2f}{s_rate:14.0f}")
    print(f"vector/scalar: {v_rate / s_rate:.1f}x; identical completions on the common prefix: {same}")
    if args.text_requests:
        same = text_case(args.text_requests, args.config, args.seed, args.before, args.rounds) and same
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
