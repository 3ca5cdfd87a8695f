#!/usr/bin/env python3
"""Soak: every device type under verified load, control-API churn and power cuts, at once.

Five servers (``blockemu serve``, real nbdkit), all running together for
--duration seconds:

  ufs       fio 4 KiB random writes, crc32c-verified, in a loop; churn: aging,
            HID defragmentation, PM-QoS/devfreq governor changes
  zns_ftl   fio as above on the zoned log (its GC moves the data); churn: timing switches
  zram      fio as above; churn: idle marking, recompression, compaction
  ufs-cut   a verifier that writes, flushes now and then, and cuts the power
            (drop and torn in turn): flushed data must survive, unflushed
            sectors read back old or new, never anything else
  zns       a zoned verifier: writes at write pointers and Zone Appends,
            flushes, finishes and resets zones, cuts the power (drop): zones
            and data must be exactly as at the last flush

Progress every 10 s; at the end a table (operations, errors, refused control
requests, verification failures per device), results/soak/soak.csv, and exit
status 1 on any verification failure, unexpected error or dead server.

    scripts/soak.sh [--duration 1800] [--seed 1] [--out results/soak]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from blockemu.control.client import ControlClientError, ServedDevice  # noqa: E402

MIB = 1024 * 1024
BLOCK = 4096


@dataclass
class Tally:
    """What one device's workers did."""

    device: str
    workload: str
    operations: int = 0
    errors: int = 0  # unexpected: a failed I/O, a 5xx, a lost connection
    refused: int = 0  # control requests the device refused with a 4xx, as it may (a defrag already running)
    verify_failures: int = 0
    notes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def note(self, text: str) -> None:
        with self.lock:
            if len(self.notes) < 20:
                self.notes.append(text)


# ------------------------------------------------------------------ servers
DEVICES: dict[str, tuple[str, list[str]]] = {
    "ufs": ("ufs41.toml", ["device.capacity_mib=512", "power.enabled=true"]),
    "zns_ftl": ("zns-ftl.toml", ["device.capacity_mib=512", "zns.zone_size_mib=8", "zns.zone_capacity_mib=8"]),
    "zram": ("zram.toml", ["device.capacity_mib=256", "zram.idle_recompress_after_s=1"]),
    "ufs-cut": ("ufs41.toml", ["device.capacity_mib=256", "device.name=ufs_cut"]),
    "zns": ("zns.toml", ["device.capacity_mib=512", "zns.zone_size_mib=16", "zns.zone_capacity_mib=12",
                         "zns.conventional_zones=2", "zns.max_open_zones=8", "zns.max_active_zones=0"]),
}


# ------------------------------------------------------------------ fio loop
def fio_loop(served: ServedDevice, tally: Tally, deadline: float, seed: int, out: Path) -> None:
    """fio randwrite + crc32c verify over 32 MiB, again and again, each pass with a new seed."""
    passes = 0
    while time.monotonic() < deadline - 5:
        passes += 1
        report_path = out / f"fio-{tally.device}-{passes}.json"
        argv = ["fio", "--name=soak", "--ioengine=nbd", f"--uri={served.uri}", "--rw=randwrite", "--bs=4k",
                "--iodepth=8", "--size=32M", f"--offset={(passes % 4) * 32}M", "--verify=crc32c",
                "--verify_fatal=1", "--verify_state_save=0", f"--randseed={seed * 1000 + passes}",
                "--output-format=json", f"--output={report_path}"]
        run = subprocess.run(argv, capture_output=True, text=True, timeout=max(60.0, deadline - time.monotonic()
                                                                               + 120))
        try:
            job = json.loads(report_path.read_text())["jobs"][0]
        except (OSError, ValueError, KeyError, IndexError):
            tally.add(errors=1)
            tally.note(f"fio pass {passes}: no report (exit {run.returncode}): {run.stderr.strip()[-300:]}")
            continue
        tally.add(operations=int(job["write"]["total_ios"]) + int(job["read"]["total_ios"]))
        if job["error"] or run.returncode:
            verify = "verify" in run.stderr.lower() or "bad magic" in run.stderr.lower()
            tally.add(verify_failures=1 if verify else 0, errors=0 if verify else 1)
            tally.note(f"fio pass {passes}: error {job['error']}: {run.stderr.strip()[-300:]}")
        report_path.unlink(missing_ok=True)  # only failures keep their report


# ------------------------------------------------------------------ churn
def churn_loop(actions: list[Callable[[random.Random], Any]], tally: Tally, deadline: float, seed: int) -> None:
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        action = rng.choice(actions)
        try:
            action(rng)
            tally.add(operations=1)
        except ControlClientError as err:
            status = str(err).split(": ", 2)[1][:3] if ": " in str(err) else ""
            if status.startswith("4"):
                tally.add(refused=1)
            else:
                tally.add(errors=1)
                tally.note(f"control: {err}")
        time.sleep(rng.uniform(0.2, 0.8))


def ufs_actions(served: ServedDevice) -> list[Callable[[random.Random], Any]]:
    control = served.control
    return [
        lambda rng: control.post("age", {"fragmentation_percent": rng.choice([20, 50]), "seed": rng.randrange(99),
                                         "mapped_only": True}),
        lambda rng: control.put("hid/defrag_trigger", "enable"),
        lambda rng: control.put("power/governor", rng.choice(["performance", "powersave", "simple_ondemand",
                                                              "pmqos_qd"])),
    ]


def zram_actions(served: ServedDevice) -> list[Callable[[random.Random], Any]]:
    control = served.control
    return [
        lambda rng: control.put("zram/idle", "all"),
        lambda rng: control.put("zram/recompress", rng.choice(["type=idle", "type=huge_idle", ""])),
        lambda rng: control.put("zram/compact", "1"),
    ]


def zns_ftl_actions(served: ServedDevice) -> list[Callable[[random.Random], Any]]:
    control = served.control
    return [lambda rng: control.put("timing", json.dumps({"mode": rng.choice(["virtual", "realtime"]),
                                                           "time_scale": 0.001}))]


# ------------------------------------------------------------------ power-cut verifier (UFS)
def cut_verifier(served: ServedDevice, tally: Tally, deadline: float, seed: int) -> None:
    """Random 4 KiB writes over 64 MiB, a flush every so often, a power cut every so often."""
    rng = random.Random(seed)
    handle = served.connect()
    blocks = 64 * MIB // BLOCK
    durable: dict[int, bytes] = {}  # block -> content as of the last flush (absent: zeros)
    pending: dict[int, bytes] = {}  # block -> content written since
    cuts = 0
    while time.monotonic() < deadline:
        for _ in range(rng.randrange(20, 200)):
            block = rng.randrange(blocks)
            data = rng.randbytes(BLOCK)
            handle.pwrite(data, block * BLOCK)
            pending[block] = data
            tally.add(operations=1)
        if rng.random() < 0.5:
            handle.flush()
            durable.update(pending)
            pending.clear()
            tally.add(operations=1)
            continue
        mode = ("drop", "torn")[cuts % 2]
        cuts += 1
        report = served.control.post("powercut", {"mode": mode, "seed": rng.randrange(1 << 30)})
        tally.add(operations=1)
        # Every block: flushed content, or (written since) old or new, whole.
        for block in set(durable) | set(pending):
            got = bytes(handle.pread(BLOCK, block * BLOCK))
            old = durable.get(block, bytes(BLOCK))
            new = pending.get(block)
            if got == old or (mode == "torn" and got == new):
                durable[block] = got
                continue
            tally.add(verify_failures=1)
            tally.note(f"cut {cuts} ({mode}): block {block} reads neither its flushed nor its new content")
        tally.add(operations=len(set(durable) | set(pending)))
        if report["pending_sectors"] != len(pending):
            tally.add(verify_failures=1)
            tally.note(f"cut {cuts}: the device had {report['pending_sectors']} unflushed sectors, "
                       f"{len(pending)} expected")
        pending.clear()
    handle.shutdown()


# ------------------------------------------------------------------ zoned verifier (ZNS)
def zns_verifier(served: ServedDevice, tally: Tally, deadline: float, seed: int) -> None:
    """Writes at write pointers, appends, finish/reset, power cuts; zones checked against a reference."""
    rng = random.Random(seed)
    control = served.control
    handle = served.connect()
    zones = [z for z in control.zones() if z["type"] != "conventional"]
    # The reference: each zone's bytes below its write pointer, and whether it is full.
    content: dict[int, bytes] = {z["index"]: b"" for z in zones}
    full: set[int] = set()
    flushed: tuple[dict[int, bytes], set[int]] = (dict(content), set())
    cuts = 0

    def check(reason: str) -> None:
        report = {z["index"]: z for z in control.zones()}
        for zone in zones:
            index, start, expected = zone["index"], zone["start"], content[zone["index"]]
            state = report[index]
            if (state["condition"] == "full") != (index in full) or (
                    index not in full and state["wp"] - start != len(expected)):
                tally.add(verify_failures=1)
                tally.note(f"{reason}: zone {index} is {state['condition']} with wp +{state['wp'] - start}; "
                           f"expected {'full' if index in full else 'not full'} with wp +{len(expected)}")
                continue
            if expected and bytes(handle.pread(len(expected), start)) != expected:
                tally.add(verify_failures=1)
                tally.note(f"{reason}: zone {index}: data below the write pointer differs from the reference")
        tally.add(operations=len(zones))

    while time.monotonic() < deadline:
        zone = rng.choice(zones)
        index, start, capacity = zone["index"], zone["start"], zone["capacity"]
        room = 0 if index in full else capacity - len(content[index])
        roll = rng.random()
        try:
            if roll < 0.5 and room:
                data = rng.randbytes(min(room, rng.choice([BLOCK, 16 * BLOCK, 64 * BLOCK])))
                handle.pwrite(data, start + len(content[index]))
                content[index] += data
            elif roll < 0.7 and room:
                data = rng.randbytes(min(room, rng.choice([BLOCK, 8 * BLOCK])))
                offset = control.zone_append(index, data)
                if offset != start + len(content[index]):
                    tally.add(verify_failures=1)
                    tally.note(f"append to zone {index} landed at +{offset - start}, "
                               f"the write pointer was +{len(content[index])}")
                content[index] += data
            elif roll < 0.85:
                handle.flush()
                flushed = (dict(content), set(full))
            elif roll < 0.9 and content[index] and index not in full:
                control.zone_action(index, "finish")
                full.add(index)
            elif roll < 0.97:
                control.zone_action(index, "reset")
                content[index] = b""
                full.discard(index)
            else:
                cuts += 1
                control.post("powercut", {"mode": "drop", "seed": cuts})
                content, full = dict(flushed[0]), set(flushed[1])
                check(f"after cut {cuts}")
            tally.add(operations=1)
        except ControlClientError as err:
            tally.add(errors=1)
            tally.note(f"zns: {err}")
    handle.flush()
    check("at the end")
    handle.shutdown()


# ------------------------------------------------------------------ main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds of load (default 1800)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "soak", help="CSV and failed fio reports")
    args = parser.parse_args()
    if args.duration < 20:
        parser.error(f"--duration must be at least 20 seconds, got {args.duration:g}")
    for tool in ("fio", "nbdkit"):
        if shutil.which(tool) is None:
            print(f"soak: {tool} not found; run 'make setup'", file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="blockemu-soak-"))
    servers: dict[str, ServedDevice] = {}
    try:
        for name, (config, overrides) in DEVICES.items():
            served = ServedDevice(REPO / "configs" / config, overrides=overrides, startup_timeout_s=180)
            print(f"soak: starting {name}", flush=True)
            try:
                servers[name] = served.start()
            except RuntimeError as err:
                print(f"soak: {name} did not start: {str(err).splitlines()[-1]}", file=sys.stderr)
                return 2
        deadline = time.monotonic() + args.duration
        tallies = {
            "ufs": Tally("ufs", "fio verify + aging, HID, governors"),
            "zns_ftl": Tally("zns_ftl", "fio verify (GC) + timing switches"),
            "zram": Tally("zram", "fio verify + idle, recompress, compact"),
            "ufs-cut": Tally("ufs-cut", "writes, flushes, drop/torn power cuts"),
            "zns": Tally("zns", "zone writes, appends, finish, reset, drop cuts"),
        }
        control = {name: Tally(name, "control churn") for name in ("ufs", "zns_ftl", "zram")}
        seed = args.seed
        jobs: list[tuple[str, Callable[..., None], tuple[Any, ...]]] = [
            *((f"fio-{n}", fio_loop, (servers[n], tallies[n], deadline, seed + i, workdir))
              for i, n in enumerate(("ufs", "zns_ftl", "zram"))),
            ("churn-ufs", churn_loop, (ufs_actions(servers["ufs"]), control["ufs"], deadline, seed)),
            ("churn-zns_ftl", churn_loop, (zns_ftl_actions(servers["zns_ftl"]), control["zns_ftl"], deadline,
                                           seed + 1)),
            ("churn-zram", churn_loop, (zram_actions(servers["zram"]), control["zram"], deadline, seed + 2)),
            ("cuts-ufs", cut_verifier, (servers["ufs-cut"], tallies["ufs-cut"], deadline, seed)),
            ("zones-zns", zns_verifier, (servers["zns"], tallies["zns"], deadline, seed)),
        ]
        everything = [*tallies.values(), *control.values()]
        crashed: list[str] = []

        def guarded(name: str, target: Callable[..., None], job_args: tuple[Any, ...]) -> None:
            try:
                target(*job_args)
            except Exception as err:  # a worker that dies is a failure of the device it drove
                crashed.append(f"{name}: {type(err).__name__}: {err}")

        workers = [threading.Thread(target=guarded, args=job, name=job[0], daemon=True) for job in jobs]
        started = time.monotonic()
        next_report = started + 10
        for worker in workers:
            worker.start()
        while any(w.is_alive() for w in workers):
            time.sleep(0.5)
            now = time.monotonic()
            if now >= next_report:
                next_report += 10
                ops = sum(t.operations for t in everything)
                bad = sum(t.errors + t.verify_failures for t in everything)
                print(f"soak: {now - started:5.0f}/{args.duration:.0f} s  {ops} operations  {bad} failures",
                      flush=True)
            if now - started > args.duration + 600:
                crashed.append("workers still running 10 min past the deadline")
                break
        dead = [name for name, served in servers.items() if served.process is None or served.process.poll() is not None]
    finally:
        for served in servers.values():
            served.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    rows = [(t.device, t.workload, t.operations, t.errors, t.refused, t.verify_failures) for t in everything]
    with (args.out / "soak.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["device", "workload", "operations", "errors", "refused", "verify_failures"])
        writer.writerows(rows)
    print(f"\n{'device':<9} {'workload':<48} {'operations':>10} {'errors':>6} {'refused':>7} {'verify failures':>15}")
    for row in rows:
        print(f"{row[0]:<9} {row[1]:<48} {row[2]:>10} {row[3]:>6} {row[4]:>7} {row[5]:>15}")
    for tally in everything:
        for text in tally.notes:
            print(f"  {tally.device}: {text}")
    for text in crashed:
        print(f"  worker died: {text}")
    for name in dead:
        print(f"  server {name} is not running")
    failed = crashed or dead or any(t.errors or t.verify_failures for t in everything)
    idle = [t.device + " " + t.workload for t in everything if t.operations == 0]
    for text in idle:
        print(f"  nothing was done: {text}")
    print(f"soak: {'FAIL' if failed or idle else 'PASS'}: {sum(r[2] for r in rows)} operations, "
          f"{sum(r[3] for r in rows)} errors, {sum(r[5] for r in rows)} verification failures "
          f"({args.out / 'soak.csv'})")
    return 1 if failed or idle else 0


if __name__ == "__main__":
    sys.exit(main())
