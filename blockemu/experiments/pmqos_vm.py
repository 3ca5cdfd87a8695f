"""PM-QoS on a real kernel: intermittent fio on F2FS, per governor, in realtime mode.

``blockemu experiment pmqos-vm [--quick]``: boots Linux 6.12 (``blockemu.vm``)
with the UFS device and its ``[power]`` layer on, in ``realtime`` timing
slowed by ``--time-scale`` (so the modeled device, not the emulated CPU,
dominates each request), makes F2FS, lays out a file, then for each governor
(``simple_ondemand``, ``pmqos_qd``, ``performance``, switched through
``PUT /api/v1/power/governor``) runs fio's intermittent job: bursts of
``--burst`` 4 KiB O_DIRECT random reads at QD1 separated by think time.
It reports fio's completion latency (mean, p50, p99), in real time as fio saw
it and divided by the time scale (modeled units, host overhead included),
the device's energy per GiB read, and the ratios to ``simple_ondemand``;
CSV, PNG and a table under ``--out`` (default ``results/pmqos-vm-<timestamp>``).
Host overhead under software emulation is part of every latency and dilutes
the differences; the virtual-time experiment (``blockemu experiment pmqos``)
shows the device alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from blockemu.experiments import report

REPO = Path(__file__).resolve().parents[2]
GOVERNORS = ("simple_ondemand", "pmqos_qd", "performance")
GUEST_RESULTS = "pmqos-vm-guest.json"


def _say(message: str) -> None:
    print(f"pmqos-vm: {message}", file=sys.stderr, flush=True)


def guest_main(args: argparse.Namespace) -> int:
    from blockemu.control.client import ControlClient

    device = os.environ["BLOCKEMU_DEV0"]
    control = ControlClient(os.environ["BLOCKEMU_HTTP0"])
    results = Path(os.environ["BLOCKEMU_RESULTS"])
    mnt = Path(tempfile.mkdtemp(prefix="pmqos-mnt-"))
    subprocess.run(["mkfs.f2fs", "-f", "-q", device], check=True)
    subprocess.run(["mount", "-t", "f2fs", device, str(mnt)], check=True)
    rows = []
    try:
        data = mnt / "data.bin"
        subprocess.run(["fio", "--name=layout", f"--filename={data}", "--size=64M", "--rw=write", "--bs=1M",
                        "--direct=1", "--output=/dev/null"], check=True)
        for governor in GOVERNORS:
            control.put("power/governor", governor)
            energy_before = float(control.get("power/energy_joules"))
            device_before = _device_read_latency(control)
            _say(f"{governor}: {args.bursts} bursts of {args.burst} reads, think {args.think_ms} ms")
            fio_report = results / f"fio-{governor}.json"
            subprocess.run(
                ["fio", "--name=intermittent", f"--filename={data}", "--size=64M", "--rw=randread", "--bs=4k",
                 "--direct=1", "--ioengine=psync", f"--thinktime={int(args.think_ms * 1000)}",
                 f"--thinktime_blocks={args.burst}", f"--number_ios={args.bursts * args.burst}",
                 "--randrepeat=1", "--output-format=json", f"--output={fio_report}"],
                check=True,
            )
            energy = float(control.get("power/energy_joules")) - energy_before
            device_after = _device_read_latency(control)
            device_reads = device_after[1] - device_before[1]
            job = json.loads(fio_report.read_text())["jobs"][0]["read"]
            clat = job["clat_ns"]
            rows.append({
                "governor": governor,
                "requests": job["total_ios"],
                "clat_mean_us": clat["mean"] / 1e3,
                "clat_p50_us": clat["percentile"]["50.000000"] / 1e3,
                "clat_p99_us": clat["percentile"]["99.000000"] / 1e3,
                "energy_j_per_gib": energy / (job["io_bytes"] / 2**30) if job["io_bytes"] else float("nan"),
                # What the device itself took for the reads the kernel sent
                # (modeled, so free of the emulated CPU's overhead).
                "device_reads": int(device_reads),
                "device_read_mean_us": (device_after[0] - device_before[0]) / device_reads * 1e6
                if device_reads else float("nan"),
            })
        (results / GUEST_RESULTS).write_text(json.dumps(rows, indent=1) + "\n")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    return 0


def _device_read_latency(control: Any) -> tuple[float, float]:
    """(sum of modeled read latencies in seconds, number of reads) so far."""
    name = "blockemu_request_modeled_latency_seconds"
    return control.metric(f"{name}_sum", op="read"), control.metric(f"{name}_count", op="read")


def _plot(rows: list[dict[str, Any]], path: Path, time_scale: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["governor"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    xs = range(len(rows))
    for offset, key, label in ((-0.27, "clat_mean_us", "mean"), (0, "clat_p50_us", "p50"),
                               (0.27, "clat_p99_us", "p99")):
        left.bar([x + offset for x in xs], [r[key] / time_scale for r in rows], 0.27, label=label)
    left.set_xticks(list(xs), names)
    left.set_ylabel("completion latency / time_scale (µs)")
    left.legend()
    right.bar(list(xs), [r["energy_j_per_gib"] for r in rows], 0.5)
    right.set_xticks(list(xs), names)
    right.set_ylabel("device energy per GiB read (J)")
    fig.suptitle("Intermittent 4 KiB reads on F2FS, Linux 6.12 in a VM, realtime")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def host_main(args: argparse.Namespace) -> int:
    from blockemu import vm

    bursts = args.bursts or (12 if args.quick else 60)
    out = report.results_dir("pmqos-vm", args.out).resolve()
    overrides = ["device.capacity_mib=1024", "power.enabled=true", "timing.mode=realtime",
                 f"timing.time_scale={args.time_scale}"]
    command = [sys.executable, "-m", "blockemu", "experiment", "pmqos-vm", "--guest", "--bursts", str(bursts),
               "--burst", str(args.burst), "--think-ms", str(args.think_ms)]
    result = vm.run([REPO / "configs" / "ufs41.toml"], command, timeout_s=args.timeout, results_dir=out / "vm",
                    extra_serve_args=[a for item in overrides for a in ("--set", item)])
    guest_report = out / "vm" / GUEST_RESULTS
    if result.exit_code != 0 or not guest_report.exists():
        _say(f"the guest part failed (exit {result.exit_code}); see {out / 'vm'}")
        return result.exit_code or 1
    rows: list[dict[str, Any]] = json.loads(guest_report.read_text())
    base = rows[0]
    for row in rows:
        row["modeled_mean_us"] = row["clat_mean_us"] / args.time_scale
        row["mean_vs_ondemand"] = row["clat_mean_us"] / base["clat_mean_us"]
        row["device_mean_vs_ondemand"] = row["device_read_mean_us"] / base["device_read_mean_us"]
        row["p99_vs_ondemand"] = row["clat_p99_us"] / base["clat_p99_us"]
        row["energy_vs_ondemand"] = row["energy_j_per_gib"] / base["energy_j_per_gib"]
    report.write_csv(out / "pmqos-vm.csv", rows)
    _plot(rows, out / "pmqos-vm.png", args.time_scale)
    print(f"PM-QoS in the VM: intermittent 4 KiB reads on F2FS, realtime, time_scale {args.time_scale}")
    print("fio's completion latency (real µs, emulation overhead included) and the device's own modeled")
    print("read latency for the requests the kernel sent; ratios to simple_ondemand")
    print(f"{'governor':18s}{'fio mean':>10s}{'fio p50':>10s}{'fio p99':>10s}{'dev reads':>10s}{'dev mean':>10s}"
          f"{'J/GiB':>8s}{'fio x':>8s}{'dev x':>8s}{'energy x':>10s}")
    for r in rows:
        print(f"{r['governor']:18s}{r['clat_mean_us']:10.0f}{r['clat_p50_us']:10.0f}{r['clat_p99_us']:10.0f}"
              f"{r['device_reads']:10d}{r['device_read_mean_us']:10.1f}{r['energy_j_per_gib']:8.1f}"
              f"{r['mean_vs_ondemand']:8.3f}{r['device_mean_vs_ondemand']:8.3f}{r['energy_vs_ondemand']:10.3f}")
    print(f"results: {out / 'pmqos-vm.csv'}, {out / 'pmqos-vm.png'}")
    return 0
