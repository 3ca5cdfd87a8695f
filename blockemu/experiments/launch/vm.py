"""``blockemu experiment launch --vm``: the same policies under a real kernel's reclaim, in one VM boot.

The model half (study.py) answers "do apps launch faster?" on a modeled
phone.  This half runs the question through Linux 6.12's own reclaim: one
blockemu zram device per policy is attached to the guest; for each in turn
the guest

1. makes it the only swap device (``swapon``);
2. starts the apps — one process in a memory cgroup (vm_apps.py), each app
   an anonymous mapping filled with its pages of the captured corpus (the
   zram study's: real process heaps and library pages);
3. drops the page cache (the corpus files just read), then lowers the
   cgroup's ``memory.high`` to ``--vm-ram-fraction`` of the apps' working set
   plus 2 MiB for the interpreter's hot pages, so the kernel swaps the rest
   out to the device (``memory.high`` throttles and reclaims; ``memory.max``
   would OOM-kill the apps whenever swap-out to a user-space device lags);
4. launches the apps in a seeded switching order (popularity 1/rank, never
   the same app twice in a row), after one warm-up launch of each: a launch
   touches every page of the app, so what reclaim swapped out faults back in
   from the device, and the launch is timed;
5. reads the kernel's counters around the timed launches: the cgroup's
   ``memory.stat`` (``pgmajfault``, ``workingset_refault_anon``, direct and
   kswapd scans and steals), its PSI ``memory.pressure`` (stall time), and
   ``/proc/vmstat``'s ``pswpin``/``pswpout``; and blockemu's ``mm_stat``.

What it measures and what it cannot: a launch's time is the guest's real
time to fault its pages back, through the kernel's swap path (readahead
included, ``vm.page-cluster`` as the guest has it) to the blockemu server
and its real codecs; so the codecs' decompression speed, the async pool
taking compression off swap-out, and the kernel's reclaim all act for real.
The compressed pool lives in the server, outside the cgroup, so a better
ratio does not keep more apps resident here (on a phone zram's memory is the
phone's): the ratio shows in ``mm_stat`` only.  There is no lmkd.  Under
software emulation (TCG) every instruction is slow, so absolute times are
far from a phone's; the policies' ratios are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from blockemu.experiments import report

REPO = Path(__file__).resolve().parents[3]
APPS_SCRIPT = Path(__file__).with_name("vm_apps.py")
MANIFEST = "launch-vm.json"
GUEST_RESULTS = "launch-vm-guest.json"
PAGE = 4096

# Each policy as zram settings of the served device (configs/zram.toml's keys); the names are the model's.
VM_POLICIES: dict[str, dict[str, Any]] = {
    "lz4": {"comp_algorithm": "lz4", "policy": "single", "recomp_algorithms": "", "async_workers": 0},
    "lz4hc": {"comp_algorithm": "lz4hc", "policy": "single", "recomp_algorithms": "", "async_workers": 0},
    "zstd": {"comp_algorithm": "zstd", "policy": "single", "recomp_algorithms": "", "async_workers": 0},
    "multi": {"comp_algorithm": "lz4", "policy": "multi", "recomp_algorithms": "zstd", "async_workers": 0},
    "lz4_async": {"comp_algorithm": "lz4", "policy": "single", "recomp_algorithms": "", "async_workers": 2},
    "zstd_async": {"comp_algorithm": "zstd", "policy": "single", "recomp_algorithms": "", "async_workers": 2},
    "multi_async": {"comp_algorithm": "lz4", "policy": "multi", "recomp_algorithms": "zstd", "async_workers": 2},
}
DEFAULT_VM_POLICIES = "lz4,zstd,multi,zstd_async"
# cgroup v2 memory.stat fields and /proc/vmstat fields read around the timed launches.
MEMCG_FIELDS = ("pgmajfault", "workingset_refault_anon", "pgscan_direct", "pgsteal_direct", "pgscan_kswapd",
                "pgsteal_kswapd")
VMSTAT_FIELDS = ("pswpin", "pswpout")
# What the apps' cgroup may hold beyond ram_fraction of their working set: the interpreter's hot pages
# (the loop that touches the apps, its stacks and page tables).  The rest of its heap is cold, and reclaim
# swaps it out before the apps' pages, which would otherwise keep every app resident.
HOT_ALLOWANCE = 2 << 20


def _say(message: str) -> None:
    print(f"[launch --vm] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------- sizes
def sizes(quick: bool) -> dict[str, int]:
    """Apps, pages per app and timed launches: small enough for a software-emulated guest."""
    return {"apps": 4, "pages_per_app": 1024, "launches": 12} if quick else \
        {"apps": 6, "pages_per_app": 2048, "launches": 30}


def switching_sequence(apps: int, launches: int, seed: int) -> list[int]:
    """A seeded app-switching order: popularity 1/rank (a Zipf law), never the same app twice in a row."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, apps + 1)
    sequence: list[int] = []
    while len(sequence) < launches:
        app = int(rng.choice(apps, p=weights / weights.sum()))
        if not sequence or app != sequence[-1]:
            sequence.append(app)
    return sequence


def parse_policies(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [n for n in names if n not in VM_POLICIES]
    if unknown or not names:
        raise ValueError(f"--vm-policies: {unknown[0] if unknown else text!r} is not one of "
                         f"{', '.join(VM_POLICIES)}")
    return names


def policy_config(name: str, capacity_mib: int) -> str:
    """The TOML of policy ``name``'s device."""
    zram = {**VM_POLICIES[name], "lock_memory": True}  # the server is swap: never swapped itself
    lines = ["[device]", 'type = "zram"', f'name = "zram_{name}"', f"capacity_mib = {capacity_mib}", "",
             "[timing]", 'mode = "virtual"', "", "[zram]"]
    for key, value in zram.items():
        lines.append(f"{key} = {json.dumps(value) if not isinstance(value, bool) else str(value).lower()}")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------- guest
def _read_fields(path: Path, fields: tuple[str, ...]) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in path.read_text().splitlines():
        name, _, rest = line.partition(" ")
        if name in fields:
            values[name] = int(rest.split()[0])
    return {f: values.get(f, 0) for f in fields}


def _psi_totals(path: Path) -> dict[str, int]:
    """PSI's cumulative stall (µs): ``some`` (at least one task stalled) and ``full`` (all were)."""
    totals = {"some": 0, "full": 0}
    try:
        text = path.read_text()
    except OSError:  # a kernel booted without PSI: no stall time to report
        return totals
    for line in text.splitlines():
        kind, *parts = line.split()
        for part in parts:
            if part.startswith("total="):
                totals[kind] = int(part[len("total="):])
    return totals


def counters(group: Path) -> dict[str, int]:
    memcg = _read_fields(group / "memory.stat", MEMCG_FIELDS)
    vmstat = _read_fields(Path("/proc/vmstat"), VMSTAT_FIELDS)
    psi = _psi_totals(group / "memory.pressure")
    events = _read_fields(group / "memory.events", ("high", "oom_kill"))
    return {**memcg, **vmstat, "psi_some_us": psi["some"], "psi_full_us": psi["full"],
            "high_events": events["high"], "oom_kill": events["oom_kill"]}


def _ask(apps: subprocess.Popen[str], command: str, name: str) -> dict[str, Any]:
    """Send the apps process a phase command; its JSON answer, or a one-line error if it died."""
    assert apps.stdin is not None and apps.stdout is not None
    try:
        apps.stdin.write(command + "\n")
        apps.stdin.flush()
    except BrokenPipeError:
        pass  # reported below, with its exit status
    line = apps.stdout.readline()
    if not line:
        raise RuntimeError(f"{name}: the apps process exited ({apps.wait(timeout=30)}) during {command!r}; "
                           "the guest's dmesg (console.log) says why")
    answer: dict[str, Any] = json.loads(line)
    return answer


def _run_policy(index: int, name: str, manifest: dict[str, Any], results: Path) -> dict[str, Any]:
    from blockemu.control.client import ControlClient

    device = os.environ[f"BLOCKEMU_DEV{index}"]
    control = ControlClient(os.environ[f"BLOCKEMU_HTTP{index}"])
    subprocess.run(["mkswap", device], check=True, capture_output=True)
    # --discard: freed swap slots reach the device as discards, as swap_slot_free_notify frees zram's.
    subprocess.run(["swapon", "--discard=pages", "-p", "100", device], check=True)
    root = Path("/sys/fs/cgroup")
    if not (root / "cgroup.controllers").exists():
        subprocess.run(["mount", "-t", "cgroup2", "none", str(root)], check=True)
    (root / "cgroup.subtree_control").write_text("+memory")
    group = root / f"launch-{name}"
    group.mkdir(exist_ok=True)
    spec = results / f"spec-{name}.json"
    spec.write_text(json.dumps({"corpus": [str(results / f) for f in manifest["corpus"]],
                                "warmup": list(range(manifest["apps"])), "sequence": manifest["sequence"]}))
    apps = subprocess.Popen(["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$0" "$1" "$2"',
                             sys.executable, str(APPS_SCRIPT), str(spec)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert apps.stdin is not None and apps.stdout is not None
    try:
        ready = json.loads(apps.stdout.readline())
        working_set = manifest["apps"] * manifest["pages_per_app"] * PAGE
        # Reading the corpus left its files in the page cache, charged to the cgroup: clean pages that
        # reclaim would drop instead of swapping.  The interpreter's own heap is mostly cold and is
        # swapped out like any page; only its hot part stays (HOT_ALLOWANCE).
        Path("/proc/sys/vm/drop_caches").write_text("1")
        current = int((group / "memory.current").read_text())
        limit = int(working_set * manifest["ram_fraction"]) + HOT_ALLOWANCE
        started = time.monotonic()
        # memory.high, not memory.max: over it the kernel reclaims and throttles the allocating task,
        # where memory.max would OOM-kill it whenever swap-out to a user-space device lags behind.
        (group / "memory.high").write_text(str(limit))  # the kernel reclaims down to it now
        _say(f"{name}: apps in memory ({ready['rss_kib']} KiB resident, cgroup {current >> 10} KiB), "
             f"memory.high {limit >> 10} KiB, reclaimed to {int((group / 'memory.current').read_text()) >> 10} KiB "
             f"in {time.monotonic() - started:.1f} s")
        warm = _ask(apps, "warm", name)
        before = counters(group)
        timed = _ask(apps, "go", name)
        after = counters(group)
        mm_stat = [int(v) for v in str(control.get("zram/mm_stat")).split()]  # the kernel's format
    finally:
        apps.kill()
        apps.wait(timeout=60)
    subprocess.run(["swapoff", device], check=True)
    group.rmdir()
    return {"policy": name, "warmup_ns": warm["launch_ns"], "launch_ns": timed["launch_ns"],
            "apps": timed["apps"], "counters": {k: after[k] - before[k] for k in after},
            "mm_stat": mm_stat, "memory_high": limit}


def guest_main(args: argparse.Namespace) -> int:
    results = Path(os.environ["BLOCKEMU_RESULTS"])
    manifest = json.loads((results / MANIFEST).read_text())
    rows = []
    for index, name in enumerate(manifest["policies"]):
        started = time.monotonic()
        rows.append(_run_policy(index, name, manifest, results))
        _say(f"{name}: {len(rows[-1]['launch_ns'])} timed launches in {time.monotonic() - started:.1f} s")
    (results / GUEST_RESULTS).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


# --------------------------------------------------------------------- host
def summarize(guest_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per policy: launch times and the kernel's and blockemu's counters."""
    rows = []
    for row in guest_rows:
        launch_ms = np.array(row["launch_ns"], dtype=float) / 1e6
        c = row["counters"]
        orig, compr = row["mm_stat"][0], row["mm_stat"][1]  # orig_data_size, compr_data_size
        rows.append({
            "policy": row["policy"],
            "launches": len(launch_ms),
            "mean_ms": round(float(launch_ms.mean()), 1),
            "p95_ms": round(float(np.percentile(launch_ms, 95)), 1),
            "pswpin": c["pswpin"],
            "pswpout": c["pswpout"],
            "refault_anon": c["workingset_refault_anon"],
            "pgmajfault": c["pgmajfault"],
            "direct_scan": c["pgscan_direct"],
            "kswapd_scan": c["pgscan_kswapd"],
            "psi_some_ms": round(c["psi_some_us"] / 1000, 1),
            "psi_full_ms": round(c["psi_full_us"] / 1000, 1),
            "high_events": c.get("high_events", 0),
            "zram_ratio": round(orig / compr, 2) if compr else 0.0,
        })
    base = next((r for r in rows if r["policy"] == "lz4"), rows[0] if rows else None)
    for r in rows:
        r["vs_" + (base["policy"] if base else "first")] = (
            f"{(base['mean_ms'] / r['mean_ms'] - 1) * 100:+.1f}%" if base and r["mean_ms"] else "")
    return rows


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["mean_ms"] for r in rows], 0.4, label="mean")
    ax.bar(x + 0.2, [r["p95_ms"] for r in rows], 0.4, label="p95")
    ax.set_xticks(x, [r["policy"] for r in rows])
    ax.set_ylabel("launch time in the guest (ms)")
    ax.set_title("App launches under Linux 6.12 reclaim, swap on blockemu zram")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


TABLE = ("policy", "launches", "mean_ms", "p95_ms", "pswpin", "pswpout", "refault_anon", "pgmajfault",
         "direct_scan", "kswapd_scan", "psi_some_ms", "psi_full_ms", "high_events", "zram_ratio")


def host_main(args: argparse.Namespace) -> int:
    from blockemu import vm
    from blockemu.experiments import zram

    try:
        policies = parse_policies(args.vm_policies)
    except ValueError as err:
        print(f"blockemu experiment launch: {err}", file=sys.stderr)
        return 2
    if not 0.05 <= args.vm_ram_fraction <= 1.0:
        print(f"blockemu experiment launch: --vm-ram-fraction must be in 0.05..1, got {args.vm_ram_fraction}",
              file=sys.stderr)
        return 2
    seed = 7 if args.seed is None else args.seed
    size = sizes(args.quick)
    out = report.results_dir("launch-vm", args.out).resolve()
    shared = out / "vm"
    shared.mkdir(parents=True, exist_ok=True)
    _say(f"capturing the corpus: {size['apps']} apps × {size['pages_per_app']} pages (seed {seed})")
    corpus = zram.capture_corpus(zram.Params(seed=seed, apps=size["apps"], pages_per_app=size["pages_per_app"]),
                                 progress=_say)
    files = []
    for app, pages in enumerate(corpus):
        (shared / f"app-{app}.bin").write_bytes(b"".join(pages))
        files.append(f"app-{app}.bin")
    sequence = switching_sequence(size["apps"], size["launches"], seed)
    manifest = {"policies": policies, "corpus": files, "sequence": sequence, "ram_fraction": args.vm_ram_fraction,
                **size}
    (shared / MANIFEST).write_text(json.dumps(manifest) + "\n")
    working_set_mib = size["apps"] * size["pages_per_app"] * PAGE >> 20
    configs = []
    for name in policies:
        path = shared / f"zram-{name}.toml"
        path.write_text(policy_config(name, capacity_mib=2 * working_set_mib + 16))
        configs.append(path)
    print(f"Assumptions: {size['apps']} apps of {size['pages_per_app']} pages ({working_set_mib} MiB in all), "
          f"memory.high {args.vm_ram_fraction:.2f} of it + {HOT_ALLOWANCE >> 20} MiB, {size['launches']} timed "
          f"launches after one warm-up launch of each, order {sequence}; zram served with virtual timing (real "
          "codecs, no modeled delay); "
          "the guest's own swap readahead (vm.page-cluster) and reclaim; no lmkd")
    command = [sys.executable, "-m", "blockemu", "experiment", "launch", "--vm", "--guest"]
    _say(f"booting Linux 6.12 with {len(policies)} zram devices: {', '.join(policies)}")
    result = vm.run(configs, command, mem=args.mem, timeout_s=args.timeout, results_dir=shared)
    guest_report = shared / GUEST_RESULTS
    if result.exit_code != 0 or not guest_report.exists():
        _say(f"the guest part failed (exit {result.exit_code}); see {shared}")
        return result.exit_code or 1
    guest_rows = json.loads(guest_report.read_text())
    for name in files:
        (shared / name).unlink()
    rows = summarize(guest_rows)
    report.write_csv(out / "launch_vm.csv", rows)
    report.write_csv(out / "launch_vm_launches.csv",
                     [{"policy": r["policy"], "launch": i, "app": app, "launch_ms": round(ns / 1e6, 3)}
                      for r in guest_rows for i, (app, ns) in enumerate(zip(r["apps"], r["launch_ns"], strict=True))])
    _plot(rows, out / "launch_vm.png")
    print(report.format_table(rows, (*TABLE, next(k for k in rows[0] if k.startswith("vs_")))))
    print(f"\nwrote {out}/launch_vm.csv, launch_vm_launches.csv, launch_vm.png")
    return 0
