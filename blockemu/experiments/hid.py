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
   trace and time ``cp`` of the file (plus ``sync``), switch back.  Each
   phase times ``--repeats`` copies (default 2) and reports the last: the
   first copy after a change pays one-off costs HID has nothing to do with
   (the server's first touch of memory for blocks never written before, in a
   software-emulated guest); the first copy's time and the server's page
   faults per copy are kept as columns to show it.
3. Run HID with the kernel's attribute names (``analysis_trigger``,
   ``defrag_trigger``, wait for ``defrag_completed``), then time the same
   copy again.  Every copy is checked against the source's SHA-256.
4. On the host, both traces are replayed closed-loop in ``virtual`` time: the
   device time the copy needs when the host is infinitely fast, with the
   counters that explain it (NAND tRs, L2P misses, commands).  The traces of
   the highest level are replayed again for each L2P cache size of the SRAM
   sweep.  The wall time in the VM is reported too; it includes software
   emulation overhead, which dilutes the device's share.

``--model-only`` skips the VM and drives the model in-process instead
(blockemu/experiments/hid_model.py): the same columns and sweep in seconds.

Outputs: ``hid.csv``, ``hid-sweep.csv``, ``hid.png``, the traces and the VM's
results folder, under ``--out`` (default ``results/hid-<timestamp>``); tables
on stdout.
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

from blockemu.experiments import hid_model, report

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


def _server_faults() -> int:
    """Minor page faults of the guest's nbdkit processes (the served model and its memory store)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if b"nbdkit" not in (stat.parent / "cmdline").read_bytes():
                continue
            total += int(stat.read_text().rsplit(")", 1)[1].split()[7])  # minflt, proc(5) field 10
        except (OSError, IndexError, ValueError):
            continue
    return total


def _timed_copy(control: Any, source: Path, dest: Path, trace: Path, time_scale: float) -> tuple[float, int]:
    """Wall seconds of one traced ``cp`` + ``sync`` in realtime, and the server's page faults meanwhile."""
    _drop_caches()
    control.put("timing", json.dumps({"mode": "realtime", "time_scale": time_scale}))
    control.post("trace/start", {"path": str(trace)})
    faults = _server_faults()
    started = time.monotonic()
    _sh("cp", str(source), str(dest))
    os.sync()
    elapsed = time.monotonic() - started
    faults = _server_faults() - faults
    control.post("trace/stop")
    control.put("timing", json.dumps({"mode": "virtual"}))
    return elapsed, faults


def _timed_copies(control: Any, source: Path, mnt: Path, name: str, results: Path, args: argparse.Namespace,
                  expected: str) -> dict[str, Any]:
    """``args.repeats`` timed copies; the last one's trace and time are the phase's."""
    walls, faults, ok = [], [], True
    for repeat in range(args.repeats):
        trace = results / f"{name}.trace" if repeat == args.repeats - 1 else results / f"{name}-r{repeat}.trace"
        wall, fault = _timed_copy(control, source, mnt / "copy.bin", trace, args.time_scale)
        walls.append(wall)
        faults.append(fault)
        ok = ok and _sha256(mnt / "copy.bin") == expected
        (mnt / "copy.bin").unlink()
        os.sync()
    return {"wall": walls[-1], "wall_first": walls[0], "faults": faults[-1], "faults_first": faults[0],
            "trace": f"{name}.trace", "ok": ok}


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
            copy_before = _timed_copies(control, source, mnt, f"level{level:g}-before", results, args, expected)
            _say(f"level {level:g}%: copy took {copy_before['wall']:.2f} s; running HID")
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
            copy_after = _timed_copies(control, source, mnt, f"level{level:g}-after", results, args, expected)
            ok_after = copy_after["ok"] and _sha256(source) == expected
            _say(f"level {level:g}%: after HID the copy took {copy_after['wall']:.2f} s")
            rows.append({
                "level_percent": level,
                "fragmented_percent_before": before["fragmented_percent"],
                "fragmented_percent_after": after["fragmented_percent"],
                "hid_state_after_analysis": analysed,
                "hid_fragmented_size": fragmented_size,
                "hid_progress_ratio": progress,
                "hid_modeled_s": round(hid_modeled_s, 6),
                "wall_before_s": round(copy_before["wall"], 3),
                "wall_after_s": round(copy_after["wall"], 3),
                "wall_before_first_s": round(copy_before["wall_first"], 3),
                "wall_after_first_s": round(copy_after["wall_first"], 3),
                "server_faults_before": copy_before["faults"],
                "server_faults_after": copy_after["faults"],
                "server_faults_before_first": copy_before["faults_first"],
                "server_faults_after_first": copy_after["faults_first"],
                "checksums_ok": copy_before["ok"] and ok_after,
                "trace_before": copy_before["trace"],
                "trace_after": copy_after["trace"],
            })
        guest_report = {"size_mib": args.size_mib, "time_scale": args.time_scale, "churn": churn,
                        "natural_fragmentation": natural, "repeats": args.repeats, "rows": rows}
        (results / GUEST_RESULTS).write_text(json.dumps(guest_report, indent=1) + "\n")
    finally:
        _sh("umount", str(mnt))
    return 0 if rows and all(r["checksums_ok"] for r in rows) else 1


# ---------------------------------------------------------------------- host
def _copy_metrics(config_path: Path, overrides: list[str], trace_path: Path) -> dict[str, float]:
    """Closed-loop replay of a copy's trace: device time with an infinitely fast host."""
    import numpy as np

    from blockemu.config import load_config
    from blockemu.devices.ufs.device import UfsDevice
    from blockemu.replay import replay
    from blockemu.trace import OP_CODES, read_trace

    config = load_config(config_path, overrides)
    result = replay(config, read_trace(trace_path), closed_loop=True)
    assert isinstance(result.device, UfsDevice)
    # A fresh device from the trace's saved state (cache contents and SLC fill included): its counters are the copy's.
    counts = hid_model.copy_counters(result.device)
    reads = result.ops == OP_CODES["read"]
    read_time_ns = float(result.latencies_ns[reads].sum())
    read_bytes = float(result.lengths[reads].sum())
    return {
        "modeled_s": result.makespan_ns / 1e9,
        "read_mbps": read_bytes / read_time_ns * 1e3 if read_time_ns else float("nan"),
        "read_mib": read_bytes / MIB,
        "mean_read_us": float(np.mean(result.latencies_ns[reads])) / 1e3 if reads.any() else float("nan"),
        "commands": len(result.ops), **counts, "miss_rate": hid_model.miss_rate(counts),
    }


def _plot(rows: list[dict[str, Any]], sweep: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [r["level_percent"] for r in rows]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.2))
    width = 0.38
    xs = range(len(levels))
    left.bar([x - width / 2 for x in xs], [r["modeled_before_s"] for r in rows], width, label="before HID")
    left.bar([x + width / 2 for x in xs], [r["modeled_after_s"] for r in rows], width, label="after HID")
    left.set_xticks(list(xs), [f"{lv:g}%" for lv in levels])
    left.set_xlabel("stated fragmentation level")
    left.set_ylabel("modeled device time of the copy (s)")
    left.legend()
    middle.plot(levels, [r["modeled_speedup"] for r in rows], "o-", label="modeled device time")
    middle.plot(levels, [r["wall_speedup"] for r in rows], "s--", label="wall time in the VM")
    middle.axhline(1.0, color="grey", linewidth=0.8)
    middle.set_xlabel("stated fragmentation level (%)")
    middle.set_ylabel("copy speedup after HID (×)")
    middle.legend()
    if sweep:
        labels = [f"{r['l2p_cache_kib']}" if r["l2p_cache_kib"] else "unl." for r in sweep]
        right.plot(range(len(sweep)), [r["modeled_speedup"] for r in sweep], "o-", label="speedup")
        right.set_xticks(range(len(sweep)), labels)
        right.set_xlabel(f"L2P cache SRAM (KiB) at {sweep[0]['level_percent']:g}%")
        right.set_ylabel("modeled copy speedup after HID (×)")
        twin = right.twinx()
        twin.plot(range(len(sweep)), [100 * r["miss_rate_before"] for r in sweep], "s--", color="tab:red",
                  label="L2P miss rate before HID")
        twin.set_ylabel("L2P miss rate before HID (%)")
        right.legend(loc="upper left")
        twin.legend(loc="upper right")
    fig.suptitle("UFS 4.1 Host-Initiated Defragmentation: copy of a file on F2FS, Linux 6.12")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


COLUMNS = [
    ("level_percent", "level%", "{:g}"),
    ("fragmented_percent_before", "frag% bef", "{:.1f}"),
    ("fragmented_percent_after", "frag% aft", "{:.1f}"),
    ("wall_before_s", "wall bef s", "{:.2f}"),
    ("wall_after_s", "wall aft s", "{:.2f}"),
    ("wall_speedup", "wall x", "{:.2f}"),
    ("modeled_before_s", "model bef s", "{:.4f}"),
    ("modeled_after_s", "model aft s", "{:.4f}"),
    ("modeled_speedup", "model x", "{:.2f}"),
    ("read_mbps_before", "rd MB/s bef", "{:.0f}"),
    ("read_mbps_after", "rd MB/s aft", "{:.0f}"),
    ("miss_rate_before", "L2P miss% bef", "{:.2%}"),
    ("miss_rate_after", "L2P miss% aft", "{:.2%}"),
    ("checksums_ok", "sha256 ok", "{}"),
]
# The mechanism split: what the device did for each copy.
MECHANISM_COLUMNS = [
    ("level_percent", "level%", "{:g}"),
    ("nand_reads_before", "NAND tR bef", "{}"),
    ("nand_reads_after", "NAND tR aft", "{}"),
    ("map_misses_before", "map miss bef", "{}"),
    ("map_misses_after", "map miss aft", "{}"),
    ("map_writes_before", "map wb bef", "{}"),
    ("commands_before", "cmds bef", "{}"),
    ("commands_after", "cmds aft", "{}"),
    ("tlc_direct_sectors_before", "TLC-direct bef", "{}"),
    ("wall_before_first_s", "1st wall bef s", "{:.2f}"),
    ("wall_after_first_s", "1st wall aft s", "{:.2f}"),
    ("server_faults_before", "faults bef", "{}"),
    ("server_faults_after", "faults aft", "{}"),
]
SWEEP_COLUMNS = [
    ("l2p_cache_kib", "SRAM KiB", "{}"),
    ("l2p_mode", "mode", "{}"),
    ("modeled_before_s", "model bef s", "{:.4f}"),
    ("modeled_after_s", "model aft s", "{:.4f}"),
    ("modeled_speedup", "model x", "{:.3f}"),
    ("miss_rate_before", "L2P miss% bef", "{:.2%}"),
    ("miss_rate_after", "L2P miss% aft", "{:.2%}"),
    ("map_misses_before", "map miss bef", "{}"),
    ("map_writes_before", "map wb bef", "{}"),
]


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]] = COLUMNS) -> str:
    width = max(len(title) for _, title, _ in columns) + 2
    lines = ["".join(f"{title:>{width}s}" for _, title, _ in columns)]
    for row in rows:
        cells = [fmt.format(row[key]) if key in row and row[key] is not None else "-" for key, _, fmt in columns]
        lines.append("".join(f"{cell:>{width}s}" for cell in cells))
    return "\n".join(lines)


def mechanism_split(row: dict[str, Any], unlimited: dict[str, Any] | None) -> str:
    """One paragraph: the speedup at a level, split into NAND page reads, map misses and commands."""
    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "n/a"

    text = (f"mechanism at {row['level_percent']:g}%: modeled speedup {row['modeled_speedup']:.2f}x; "
            f"NAND page reads (tR) {row['nand_reads_before']} -> {row['nand_reads_after']} "
            f"({ratio(row['nand_reads_before'], row['nand_reads_after'])} fewer); "
            f"L2P map misses {row['map_misses_before']} -> {row['map_misses_after']} "
            f"(miss rate {row['miss_rate_before']:.2%} -> {row['miss_rate_after']:.2%}); "
            f"commands {row['commands_before']} -> {row['commands_after']} "
            f"({ratio(row['commands_before'], row['commands_after'])})")
    if unlimited is not None:
        text += (f"; with the whole map in SRAM the speedup is {unlimited['modeled_speedup']:.2f}x, so map misses "
                 f"add {row['modeled_speedup'] - unlimited['modeled_speedup']:+.3f}x")
    return text


def capacity_for(size_mib: int) -> int:
    """Device size for a study: the file, one copy and F2FS's own space, in 512 MiB steps."""
    return max(1024, -(-int(size_mib * 3) // 512) * 512)


def _report(out: Path, rows: list[dict[str, Any]], sweep: list[dict[str, Any]], header: str,
            extra: dict[str, Any]) -> int:
    report.write_csv(out / "hid.csv", rows)
    if sweep:
        report.write_csv(out / "hid-sweep.csv", sweep)
    _plot(rows, sweep, out / "hid.png")
    (out / "hid.json").write_text(json.dumps({**extra, "rows": rows, "sweep": sweep}, indent=1) + "\n")
    print(header)
    print(format_table(rows))
    print()
    print(format_table(rows, MECHANISM_COLUMNS))
    if sweep:
        print()
        print(f"L2P cache SRAM sweep at {sweep[0]['level_percent']:g}% (mode {sweep[0]['l2p_mode']}; 0 = unlimited):")
        print(format_table(sweep, SWEEP_COLUMNS))
    # The split compares like with like: the sweep's rows at the configured
    # cache size and unlimited ran under the same conditions.
    top = max(rows, key=lambda r: r["level_percent"])
    configured = next((r for r in sweep if r["l2p_cache_kib"] == extra.get("l2p_cache_kib")), top)
    unlimited = next((r for r in sweep if r["l2p_cache_kib"] == 0), None)
    print()
    print(mechanism_split({**configured, "level_percent": top["level_percent"]}, unlimited))
    print(f"results: {out / 'hid.csv'}, {out / 'hid-sweep.csv'}, {out / 'hid.png'}")
    return 0 if all(r["checksums_ok"] for r in rows) else 1


def _model_only(args: argparse.Namespace, size_mib: int, levels: list[float], out: Path) -> int:
    from blockemu.config import load_config

    config = load_config(Path(args.config), [f"device.capacity_mib={capacity_for(size_mib)}"])
    rows = hid_model.model_levels(config, size_mib, levels, args.fragment_kib, args.seed, _say)
    for row in rows:
        _rename_model_row(row)
        row.update({"wall_before_s": None, "wall_after_s": None, "wall_speedup": float("nan"),
                    "checksums_ok": True})
    sweep = hid_model.sram_sweep(config, size_mib, max(levels), args.fragment_kib, args.seed, say=_say)
    for row in sweep:
        _rename_model_row(row)
    header = (f"HID study, model only: {size_mib} MiB copied in {hid_model.COPY_REQUEST_KIB} KiB requests, "
              f"closed loop in virtual time ({args.config})")
    return _report(out, rows, sweep, header, {"size_mib": size_mib, "model_only": True,
                                              "l2p_cache_kib": config.ufs.l2p_cache_kib})


def _rename_model_row(row: dict[str, Any]) -> None:
    row["modeled_before_s"] = row.pop("modeled_s_before")
    row["modeled_after_s"] = row.pop("modeled_s_after")
    row["read_mbps_before"] = row.pop("read_mbps_before", float("nan"))


def _replay_pair(config: Path, overrides: list[str], vm_dir: Path, row: dict[str, Any]) -> dict[str, Any]:
    before = _copy_metrics(config, overrides, vm_dir / row["trace_before"])
    after = _copy_metrics(config, overrides, vm_dir / row["trace_after"])
    pair: dict[str, Any] = {
        "modeled_before_s": before["modeled_s"], "modeled_after_s": after["modeled_s"],
        "modeled_speedup": before["modeled_s"] / after["modeled_s"],
        "read_mbps_before": before["read_mbps"], "read_mbps_after": after["read_mbps"],
    }
    for key in ("commands", "nand_reads", "map_misses", "map_hits", "map_reads", "map_writes",
                "tlc_direct_sectors", "miss_rate"):
        pair[f"{key}_before"], pair[f"{key}_after"] = before[key], after[key]
    return pair


def host_main(args: argparse.Namespace) -> int:
    from blockemu import vm

    defaults = QUICK if args.quick else FULL
    size_mib = args.size_mib or defaults.size_mib
    levels = args.levels or defaults.levels
    time_scale = args.time_scale or defaults.time_scale
    out = report.results_dir("hid", args.out).resolve()
    if args.model_only:
        return _model_only(args, size_mib, [float(v) for v in levels.split(",")], out)
    # Room for the file, one copy and F2FS's own space; the data lives in the
    # server's memory inside the guest, so the guest needs that much too.
    capacity_mib = capacity_for(size_mib)
    mem_mib = args.mem_mib or max(2048, capacity_mib + 1536)
    overrides = [f"device.capacity_mib={capacity_mib}"]
    serve_args = [arg for item in overrides for arg in ("--set", item)]
    command = [sys.executable, "-m", "blockemu", "experiment", "hid", "--guest", "--size-mib", str(size_mib),
               "--levels", levels, "--time-scale", str(time_scale), "--seed", str(args.seed),
               "--fragment-kib", str(args.fragment_kib), "--rewrite-fraction", str(args.rewrite_fraction),
               "--repeats", str(args.repeats)]
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
        row.update(_replay_pair(Path(args.config), overrides, out / "vm", row))
        row["wall_speedup"] = row["wall_before_s"] / row["wall_after_s"]
        rows.append(row)
    top = max(rows, key=lambda r: r["level_percent"])
    sweep = []
    for kib in hid_model.SWEEP_SRAM_KIB:
        _say(f"SRAM sweep: replaying the level {top['level_percent']:g}% traces, "
             f"L2P cache {f'{kib} KiB' if kib else 'unlimited'}")
        pair = _replay_pair(Path(args.config), [*overrides, f"ufs.l2p_cache_kib={kib}"], out / "vm", top)
        sweep.append({"l2p_cache_kib": kib, "level_percent": top["level_percent"], **pair})
    from blockemu.config import load_config

    ufs = load_config(Path(args.config), overrides).ufs
    mode = ufs.l2p_mode
    guest_report["l2p_cache_kib"] = ufs.l2p_cache_kib
    for row in sweep:
        row["l2p_mode"] = mode if row["l2p_cache_kib"] else "unlimited"
    header = (f"HID study: {size_mib} MiB file on F2FS, Linux 6.12 in a VM, realtime time_scale {time_scale}, "
              f"the last of {guest_report.get('repeats', 1)} timed copies per phase")
    return _report(out, rows, sweep, header, guest_report)
