"""The HID study: copy a file on fragmented UFS under a real kernel, before and after HID.

``blockemu experiment hid [--quick]`` (also ``scripts/hid_experiment.py``):

1. Boots Linux 6.12 (``blockemu.vm``) with one UFS device on NBD, makes F2FS
   on it and writes the source file.  Then it fragments the device the way
   phones do: app files grow interleaved with fsyncs, some are deleted, and
   random 4 KiB pieces of the source are rewritten in place (F2FS's
   ``ipu_policy`` is set to force in-place updates where the kernel has it,
   as SQLite-heavy phones end up doing).  Device aging (``POST /api/v1/age``)
   then sets each stated fragmentation level exactly.
2. For each level: drop caches, switch the device to ``realtime`` timing,
   trace and time ``cp`` of the file (plus ``sync``), switch back.
3. Run HID with the kernel's attribute names (``analysis_trigger``,
   ``defrag_trigger``, wait for ``defrag_completed``), then time the same
   copy again.  Every copy is checked against the source's SHA-256.
4. On the host, both traces are replayed closed-loop in ``virtual`` time: the
   device time the copy needs when the host is infinitely fast.  The wall
   time in the VM is reported too; it includes software emulation overhead,
   which dilutes the device's share.

Outputs: ``hid.csv``, ``hid.png``, the traces and the VM's results folder,
under ``--out`` (default ``results/hid-<timestamp>``); a table on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockemu.experiments import report

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "configs" / "ufs41.toml"
GUEST_RESULTS = "hid-guest.json"
MIB = 1024 * 1024

@dataclass(frozen=True)
class StudyDefaults:
    size_mib: int
    levels: str
    time_scale: float


FULL = StudyDefaults(size_mib=2048, levels="0,50,100", time_scale=25.0)
QUICK = StudyDefaults(size_mib=48, levels="0,100", time_scale=25.0)


def _say(message: str) -> None:
    print(f"hid: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------- guest
def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


def _drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def _write_source(path: Path, size_mib: int, seed: int) -> str:
    import numpy as np

    rng = np.random.default_rng(seed)
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(size_mib):
            chunk = rng.integers(0, 256, MIB, dtype=np.uint8).tobytes()
            digest.update(chunk)
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    return digest.hexdigest()


def _phone_churn(mnt: Path, source: Path, seed: int, rewrite_fraction: float) -> dict[str, Any]:
    """Interleaved app-file growth with fsyncs, deletes, and in-place rewrites of the source."""
    import random

    rng = random.Random(seed)
    # Force in-place updates, as F2FS does for fsync-heavy random writers.
    for ipu in Path("/sys/fs/f2fs").glob("*/ipu_policy"):
        ipu.write_text("1\n")
    apps = [mnt / f"app{i}.db" for i in range(4)]
    handles = [p.open("wb") for p in apps]
    for step in range(256):
        for handle in handles:
            handle.write(rng.randbytes(16 * 1024))
            if step % 8 == 0:
                handle.flush()
                os.fsync(handle.fileno())
    for handle in handles:
        handle.close()
    apps[1].unlink()
    apps[3].unlink()
    size = source.stat().st_size
    blocks = size // 4096
    rewritten = 0
    with source.open("r+b") as f:
        for block in rng.sample(range(blocks), int(blocks * rewrite_fraction)):
            f.seek(block * 4096)
            data = f.read(4096)
            f.seek(block * 4096)
            f.write(data)  # same bytes: the checksum stays, the placement changes
            rewritten += 1
            if rewritten % 16 == 0:
                f.flush()
                os.fsync(f.fileno())
        f.flush()
        os.fsync(f.fileno())
    os.sync()
    return {"rewritten_blocks": rewritten, "app_files_kept": 2}


def _timed_copy(control: Any, source: Path, dest: Path, trace: Path, time_scale: float) -> float:
    _drop_caches()
    control.put("timing", json.dumps({"mode": "realtime", "time_scale": time_scale}))
    control.post("trace/start", {"path": str(trace)})
    started = time.monotonic()
    _sh("cp", str(source), str(dest))
    os.sync()
    elapsed = time.monotonic() - started
    control.post("trace/stop")
    control.put("timing", json.dumps({"mode": "virtual"}))
    return elapsed


def guest_main(args: argparse.Namespace) -> int:
    from blockemu.control.client import ControlClient

    device = os.environ["BLOCKEMU_DEV0"]
    control = ControlClient(os.environ["BLOCKEMU_HTTP0"])
    results = Path(os.environ["BLOCKEMU_RESULTS"])
    levels = [float(v) for v in args.levels.split(",")]
    mnt = Path(tempfile.mkdtemp(prefix="hid-mnt-"))
    _say(f"mkfs.f2fs {device}")
    _sh("mkfs.f2fs", "-f", "-q", device)
    _sh("mount", "-t", "f2fs", device, str(mnt))
    rows: list[dict[str, Any]] = []
    try:
        source = mnt / "source.bin"
        _say(f"writing the {args.size_mib} MiB source file")
        expected = _write_source(source, args.size_mib, args.seed)
        _say("phone-like churn: interleaved app files, deletes, in-place rewrites")
        churn = _phone_churn(mnt, source, args.seed, args.rewrite_fraction)
        natural = control.get("fragmentation")
        # One untimed copy first: F2FS's first allocations in a fresh area and
        # its checkpoint after the churn would otherwise land on the first
        # timed copy only.
        _sh("cp", str(source), str(mnt / "copy.bin"))
        (mnt / "copy.bin").unlink()
        os.sync()
        for level in levels:
            _say(f"level {level:g}%: aging the device to it")
            control.post("age", {"fragmentation_percent": level, "fragment_kib": args.fragment_kib,
                                 "seed": args.seed})
            before = control.get("fragmentation")
            trace_before = results / f"level{level:g}-before.trace"
            wall_before = _timed_copy(control, source, mnt / "copy.bin", trace_before, args.time_scale)
            ok_before = _sha256(mnt / "copy.bin") == expected
            (mnt / "copy.bin").unlink()
            os.sync()
            _say(f"level {level:g}%: copy took {wall_before:.2f} s; running HID")
            modeled_start = control.get("timing")["modeled_now_s"]
            control.put("hid/analysis_trigger", "enable")
            analysed = control.wait_hid("defrag_required", "defrag_not_required", timeout_s=3600)
            fragmented_size = int(control.get("hid/fragmented_size"))
            if analysed == "defrag_required":
                control.put("hid/defrag_trigger", "enable")
                control.wait_hid("defrag_completed", "defrag_not_required", timeout_s=3600)
            hid_modeled_s = control.get("timing")["modeled_now_s"] - modeled_start
            progress = int(control.get("hid/progress_ratio"))
            after = control.get("fragmentation")
            trace_after = results / f"level{level:g}-after.trace"
            wall_after = _timed_copy(control, source, mnt / "copy.bin", trace_after, args.time_scale)
            ok_after = _sha256(mnt / "copy.bin") == expected and _sha256(source) == expected
            (mnt / "copy.bin").unlink()
            os.sync()
            _say(f"level {level:g}%: after HID the copy took {wall_after:.2f} s")
            rows.append({
                "level_percent": level,
                "fragmented_percent_before": before["fragmented_percent"],
                "fragmented_percent_after": after["fragmented_percent"],
                "hid_state_after_analysis": analysed,
                "hid_fragmented_size": fragmented_size,
                "hid_progress_ratio": progress,
                "hid_modeled_s": round(hid_modeled_s, 6),
                "wall_before_s": round(wall_before, 3),
                "wall_after_s": round(wall_after, 3),
                "checksums_ok": ok_before and ok_after,
                "trace_before": trace_before.name,
                "trace_after": trace_after.name,
            })
        guest_report = {"size_mib": args.size_mib, "time_scale": args.time_scale, "churn": churn,
                  "natural_fragmentation": natural, "rows": rows}
        (results / GUEST_RESULTS).write_text(json.dumps(guest_report, indent=1) + "\n")
    finally:
        _sh("umount", str(mnt))
    return 0 if rows and all(r["checksums_ok"] for r in rows) else 1


# ---------------------------------------------------------------------- host
def _copy_metrics(config_path: Path, overrides: list[str], trace_path: Path) -> dict[str, float]:
    """Closed-loop replay of a copy's trace: device time with an infinitely fast host."""
    import numpy as np

    from blockemu.config import load_config
    from blockemu.replay import replay
    from blockemu.trace import OP_CODES, read_trace

    config = load_config(config_path, overrides)
    result = replay(config, read_trace(trace_path), closed_loop=True)
    reads = result.ops == OP_CODES["read"]
    read_time_ns = float(result.latencies_ns[reads].sum())
    read_bytes = float(result.lengths[reads].sum())
    return {
        "modeled_s": result.makespan_ns / 1e9,
        "read_mbps": read_bytes / read_time_ns * 1e3 if read_time_ns else float("nan"),
        "read_mib": read_bytes / MIB,
        "mean_read_us": float(np.mean(result.latencies_ns[reads])) / 1e3 if reads.any() else float("nan"),
    }


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [r["level_percent"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.38
    xs = range(len(levels))
    left.bar([x - width / 2 for x in xs], [r["modeled_before_s"] for r in rows], width, label="before HID")
    left.bar([x + width / 2 for x in xs], [r["modeled_after_s"] for r in rows], width, label="after HID")
    left.set_xticks(list(xs), [f"{lv:g}%" for lv in levels])
    left.set_xlabel("stated fragmentation level")
    left.set_ylabel("modeled device time of the copy (s)")
    left.legend()
    right.plot(levels, [r["modeled_speedup"] for r in rows], "o-", label="modeled device time")
    right.plot(levels, [r["wall_speedup"] for r in rows], "s--", label="wall time in the VM")
    right.axhline(1.0, color="grey", linewidth=0.8)
    right.set_xlabel("stated fragmentation level (%)")
    right.set_ylabel("copy speedup after HID (×)")
    right.legend()
    fig.suptitle("UFS 4.1 Host-Initiated Defragmentation: copy of a file on F2FS, Linux 6.12")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


COLUMNS = [
    ("level_percent", "level%", "{:g}"),
    ("fragmented_percent_before", "frag% before", "{:.1f}"),
    ("fragmented_percent_after", "frag% after", "{:.1f}"),
    ("wall_before_s", "wall before s", "{:.2f}"),
    ("wall_after_s", "wall after s", "{:.2f}"),
    ("wall_speedup", "wall x", "{:.2f}"),
    ("modeled_before_s", "model before s", "{:.4f}"),
    ("modeled_after_s", "model after s", "{:.4f}"),
    ("modeled_speedup", "model x", "{:.2f}"),
    ("read_mbps_before", "read MB/s before", "{:.0f}"),
    ("read_mbps_after", "read MB/s after", "{:.0f}"),
    ("checksums_ok", "sha256 ok", "{}"),
]


def format_table(rows: list[dict[str, Any]]) -> str:
    header = "".join(f"{title:>17s}" for _, title, _ in COLUMNS)
    lines = [header]
    for row in rows:
        lines.append("".join(f"{fmt.format(row[key]):>17s}" for key, _, fmt in COLUMNS))
    return "\n".join(lines)


def capacity_for(size_mib: int) -> int:
    """Device size for a study: the file, one copy and F2FS's own space, in 512 MiB steps."""
    return max(1024, -(-int(size_mib * 3) // 512) * 512)


def host_main(args: argparse.Namespace) -> int:
    from blockemu import vm

    defaults = QUICK if args.quick else FULL
    size_mib = args.size_mib or defaults.size_mib
    levels = args.levels or defaults.levels
    time_scale = args.time_scale or defaults.time_scale
    out = report.results_dir("hid", args.out).resolve()
    # Room for the file, one copy and F2FS's own space; the data lives in the
    # server's memory inside the guest, so the guest needs that much too.
    capacity_mib = capacity_for(size_mib)
    mem_mib = args.mem_mib or max(2048, capacity_mib + 1536)
    overrides = [f"device.capacity_mib={capacity_mib}"]
    serve_args = [arg for item in overrides for arg in ("--set", item)]
    command = [sys.executable, "-m", "blockemu", "experiment", "hid", "--guest", "--size-mib", str(size_mib),
               "--levels", levels, "--time-scale", str(time_scale), "--seed", str(args.seed),
               "--fragment-kib", str(args.fragment_kib), "--rewrite-fraction", str(args.rewrite_fraction)]
    _say(f"{size_mib} MiB file, levels {levels}, time_scale {time_scale}, device {capacity_mib} MiB, "
         f"guest {mem_mib} MiB; output in {out}")
    report_path = out / "vm" / GUEST_RESULTS
    if args.analyse_only:
        if not report_path.exists():
            _say(f"--analyse-only: no {report_path} from an earlier run")
            return 2
    else:
        result = vm.run([Path(args.config)], command, mem=f"{mem_mib}M", timeout_s=args.timeout,
                        results_dir=out / "vm", extra_serve_args=serve_args)
        if result.exit_code != 0 or not report_path.exists():
            _say(f"the guest part failed (exit {result.exit_code}); see {out / 'vm'}")
            return result.exit_code or 1
    guest_report = json.loads(report_path.read_text())
    size_mib, time_scale = guest_report["size_mib"], guest_report["time_scale"]
    rows = []
    overrides = [f"device.capacity_mib={capacity_for(size_mib)}"]
    for row in guest_report["rows"]:
        _say(f"replaying the level {row['level_percent']:g}% traces in virtual time")
        before = _copy_metrics(Path(args.config), overrides, out / "vm" / row["trace_before"])
        after = _copy_metrics(Path(args.config), overrides, out / "vm" / row["trace_after"])
        row.update({
            "modeled_before_s": before["modeled_s"],
            "modeled_after_s": after["modeled_s"],
            "modeled_speedup": before["modeled_s"] / after["modeled_s"],
            "read_mbps_before": before["read_mbps"],
            "read_mbps_after": after["read_mbps"],
            "wall_speedup": row["wall_before_s"] / row["wall_after_s"],
        })
        rows.append(row)
    report.write_csv(out / "hid.csv", rows)
    _plot(rows, out / "hid.png")
    (out / "hid.json").write_text(json.dumps({**guest_report, "rows": rows}, indent=1) + "\n")
    print(f"HID study: {size_mib} MiB file on F2FS, Linux 6.12 in a VM, realtime time_scale {time_scale}")
    print(format_table(rows))
    print(f"results: {out / 'hid.csv'}, {out / 'hid.png'}")
    return 0 if all(r["checksums_ok"] for r in rows) else 1
