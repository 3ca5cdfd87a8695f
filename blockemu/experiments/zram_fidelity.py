"""zram model against Linux's own zram: the same pages, side by side, every ``mm_stat`` field compared.

``blockemu experiment zram-fidelity [--quick]`` boots Linux 6.12 once
(:mod:`blockemu.vm`) with a blockemu zram device attached, loads the kernel's
own zram (``modprobe zram``), and for each algorithm and corpus runs the same
sequence on both:

1. ``reset``; ``comp_algorithm``; ``algorithm_params level=`` (lz4hc and
   zstd at a stated level); ``disksize``.
2. The corpus, written with ``dd oflag=direct`` (1 MiB requests, pages in
   order): ``mm_stat`` ("written").
3. The multi-algorithm case only (``recomp_algorithm algo=zstd``, ``idle
   all``, ``recompress type=idle``): ``mm_stat`` ("recompressed").  It needs a
   kernel built with ``CONFIG_ZRAM_MULTI_COMP``; without it the kernel column
   is empty and the row says why.
4. Every other 64 KiB discarded (BLKDISCARD), then ``compact``: ``mm_stat``
   ("discarded+compacted"), which checks frees, zspage fullness and
   compaction.

The corpora are made on the host from real data and written to the results
folder, so both sides read the same bytes:

* ``swap-mix``: the codecs' calibration pages (text, small integers,
  pointers, noise), 10% zero pages and 2% pages of one repeated non-zero word;
* ``process``: resident anonymous pages of live processes (the zram study's
  app-like children, read through /proc/PID/pagemap and /proc/PID/mem);
* ``files``: pages of the shared libraries under /usr/lib;
* ``random``: incompressible pages (every one a huge page).

Output: ``zram-fidelity.csv`` (one row per algorithm, corpus, phase and
field: kernel value, model value, gap), ``zram-fidelity.png`` and a table
of the gap of each field in percent.  A field is within tolerance when
``|model - kernel| <= 1%`` of the kernel's value.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from blockemu.experiments import report

REPO = Path(__file__).resolve().parents[2]
PAGE = 4096
MM_STAT_FIELDS = ("orig_data_size", "compr_data_size", "mem_used_total", "mem_limit", "mem_used_max", "same_pages",
                  "pages_compacted", "huge_pages", "huge_pages_since")
# Cases: name → sysfs writes before disksize.  Levels are stated: lz4 at its
# default acceleration 1, lz4hc at LZ4HC_DEFAULT_CLEVEL 9, zstd at its default
# level 3 (the kernel backends' defaults), written explicitly on both sides.
CASES: dict[str, list[tuple[str, str]]] = {
    "lz4": [("comp_algorithm", "lz4")],
    "lz4hc:9": [("comp_algorithm", "lz4hc"), ("algorithm_params", "algo=lz4hc level=9")],
    "zstd:3": [("comp_algorithm", "zstd"), ("algorithm_params", "algo=zstd level=3")],
    "lz4+zstd": [("comp_algorithm", "lz4"), ("recomp_algorithm", "algo=zstd priority=1")],
}
MULTI_CASES = {"lz4+zstd"}
CORPORA = ("swap-mix", "process", "files", "random")
TOLERANCE = 0.01
DISCARD_STRIDE = 64 * 1024
BLKDISCARD = 0x1277  # _IO(0x12, 119), linux/fs.h
GUEST_RESULTS = "zram-fidelity-guest.json"
QUICK_PAGES = 1024  # 4 MiB per corpus
FULL_PAGES = 4096  # 16 MiB per corpus


def _say(message: str) -> None:
    print(f"zram-fidelity: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ corpora
def make_corpora(pages: int, seed: int, progress: Callable[[str], None] = _say) -> dict[str, bytes]:
    """The four corpora, ``pages`` pages each, from real data on this host (see the module docstring)."""
    from blockemu.devices.zram.codecs import calibration_pages
    from blockemu.experiments import zram

    rng = np.random.default_rng(seed)
    zero, word = bytes(PAGE), b"\xa5\x5a\x00\xff\x01\x02\x03\x04" * (PAGE // 8)
    mix = calibration_pages(pages, seed)
    order = rng.permutation(pages)
    for index in order[: pages // 10]:
        mix[int(index)] = zero
    for index in order[pages // 10 : pages // 10 + pages // 50]:
        mix[int(index)] = word
    params = replace(zram.Params(), seed=seed, apps=1, pages_per_app=pages, library_share=0.0, child_processes=2)
    process = zram.capture_corpus(params, progress)[0]
    files = zram._library_pages(rng, pages)
    if len(files) < pages:
        raise RuntimeError(f"only {len(files)} library pages under /usr/lib, need {pages}")
    corpora = {"swap-mix": b"".join(mix), "process": b"".join(process), "files": b"".join(files),
               "random": rng.bytes(pages * PAGE)}
    for name, data in corpora.items():
        zeros = sum(1 for i in range(0, len(data), PAGE) if not any(data[i : i + PAGE]))
        progress(f"corpus {name}: {len(data) // PAGE} pages, {zeros} of them zero")
    return corpora


# -------------------------------------------------------------------- guest
class _Side:
    """One zram: the kernel's (sysfs files) or blockemu's (the control API), driven the same way."""

    def __init__(self, name: str, device: str, write: Callable[[str, str], None], read: Callable[[str], str]):
        self.name, self.device, self.write, self.read = name, device, write, read

    def mm_stat(self) -> list[int]:
        return [int(v) for v in self.read("mm_stat").split()]


def _kernel_side(module: str | None) -> _Side:
    """The guest kernel's zram0; from ``module`` (a zram.ko built with CONFIG_ZRAM_MULTI_COMP) if given."""
    subprocess.run(["modprobe", "zram", "num_devices=1"], check=True)  # loads zram's dependencies too
    if module:
        subprocess.run(["rmmod", "zram"], check=True)
        subprocess.run(["insmod", module, "num_devices=1"], check=True)
    sysfs = Path("/sys/block/zram0")

    def write(attribute: str, value: str) -> None:
        # reset_store() refuses while anyone holds the disk open (EBUSY): udev
        # probes a new or resized zram0 for a moment, so retry as zramctl does.
        for attempt in range(100):
            try:
                (sysfs / attribute).write_text(value + "\n")
                return
            except OSError as err:
                if err.errno != errno.EBUSY or attribute != "reset" or attempt == 99:
                    raise
                time.sleep(0.1)

    return _Side("kernel", "/dev/zram0", write, lambda attribute: (sysfs / attribute).read_text())


def _model_side() -> _Side:
    from blockemu.control.client import ControlClient

    control = ControlClient(os.environ["BLOCKEMU_HTTP0"])
    return _Side("model", os.environ["BLOCKEMU_DEV0"], lambda a, v: control.put(f"zram/{a}", v),
                 lambda attribute: str(control.get(f"zram/{attribute}")))


def _discard_every_other(device: str, length: int) -> None:
    fd = os.open(device, os.O_RDWR)
    try:
        for offset in range(0, length, 2 * DISCARD_STRIDE):
            fcntl.ioctl(fd, BLKDISCARD, struct.pack("QQ", offset, min(DISCARD_STRIDE, length - offset)))
    finally:
        os.close(fd)


def run_case(side: _Side, case: str, corpus: Path, disksize: int) -> dict[str, list[int]]:
    """The sequence of the module docstring on one side; ``mm_stat`` after each phase."""
    side.write("reset", "1")
    for attribute, value in CASES[case]:
        side.write(attribute, value)
    side.write("disksize", str(disksize))
    subprocess.run(["dd", f"if={corpus}", f"of={side.device}", "bs=1M", "oflag=direct", "status=none"], check=True)
    phases = {"written": side.mm_stat()}
    if case in MULTI_CASES:
        side.write("idle", "all")
        side.write("recompress", "type=idle")
        phases["recompressed"] = side.mm_stat()
    _discard_every_other(side.device, corpus.stat().st_size)
    side.write("compact", "1")
    phases["discarded+compacted"] = side.mm_stat()
    return phases


def kernel_page_sizes(side: _Side, case: str, corpus: Path, disksize: int) -> list[int]:
    """What the kernel stored for each page, written one at a time: its compr_data_size step, -1 for a same page.

    A huge page reads as 4096 (zram counts it so), whatever its compressed size was.
    """
    import mmap

    side.write("reset", "1")
    for attribute, value in CASES[case]:
        side.write(attribute, value)
    side.write("disksize", str(disksize))
    buffer = mmap.mmap(-1, PAGE)  # page-aligned, as O_DIRECT wants
    sizes = []
    fd = os.open(side.device, os.O_WRONLY | os.O_DIRECT)
    try:
        with corpus.open("rb") as source:
            before = side.mm_stat()
            for index in range(corpus.stat().st_size // PAGE):
                buffer[:] = source.read(PAGE)
                os.pwrite(fd, buffer, index * PAGE)
                after = side.mm_stat()
                same = after[5] - before[5]
                sizes.append(-1 if same else after[1] - before[1])
                before = after
    finally:
        os.close(fd)
    return sizes


def guest_main(args: argparse.Namespace) -> int:
    results = Path(os.environ["BLOCKEMU_RESULTS"])
    manifest = json.loads((results / "corpora.json").read_text())
    kernel, model = _kernel_side(manifest.get("zram_module")), _model_side()
    kernel_multi = Path("/sys/block/zram0/recomp_algorithm").exists()
    rows = []
    for case in args.cases.split(","):
        for corpus in manifest["corpora"]:
            path = results / f"corpus-{corpus}.bin"
            row: dict[str, Any] = {"case": case, "corpus": corpus}
            started = time.monotonic()
            if case in MULTI_CASES and not kernel_multi:
                row["kernel"] = None
                row["kernel_missing"] = "this kernel is built without CONFIG_ZRAM_MULTI_COMP (no recomp_algorithm)"
            else:
                row["kernel"] = run_case(kernel, case, path, manifest["disksize"])
                if case not in MULTI_CASES:
                    row["kernel_page_sizes"] = kernel_page_sizes(kernel, case, path, manifest["disksize"])
            row["model"] = run_case(model, case, path, manifest["disksize"])
            _say(f"{case} × {corpus}: done in {time.monotonic() - started:.1f} s")
            rows.append(row)
    kernel.write("reset", "1")
    (results / GUEST_RESULTS).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


# --------------------------------------------------------------------- host
def _codec(case: str) -> Any:
    from blockemu.devices.zram.codecs import parse_codec

    return parse_codec(case.split("+")[0])


def replay_kernel_sizes(case: str, data: bytes, sizes: list[int]) -> dict[str, list[int]]:
    """The model's own zram device, fed the kernel's compressed size for each page: ``mm_stat`` per phase.

    The device runs its whole write path (same-page check on the real bytes,
    the huge rule, zsmalloc, discard, compaction); only the codec is replaced
    by one that returns, for each page, as many bytes as the kernel stored.
    This separates the model's accounting from the codec library's output.
    """
    from blockemu.config import config_from_mapping
    from blockemu.devices.zram.codecs import Codec
    from blockemu.devices.zram.device import ZramDevice
    from blockemu.store import MemoryStore

    by_content = {data[i * PAGE : (i + 1) * PAGE]: size for i, size in enumerate(sizes) if size >= 0}
    base = _codec(case)

    class KernelSized(Codec):
        def compress(self, page: bytes | memoryview) -> bytes:
            size = by_content.get(bytes(page))  # other pages: the cost model's calibration
            return super().compress(page) if size is None else bytes(size)

    capacity_mib = -(-len(data) // (1 << 20))
    config = config_from_mapping({"device": {"type": "zram", "name": "replay", "capacity_mib": capacity_mib},
                                  "zram": {"policy": "single", "recomp_algorithms": "", "cost_us": "lz4=1/1"}},
                                 "<replay>")
    device = ZramDevice(config, MemoryStore(config.capacity_bytes))
    device.algorithms[0] = KernelSized(base.name, base.level)
    for offset in range(0, len(data), 1 << 20):
        device.write(offset, memoryview(data)[offset : offset + (1 << 20)], False, 0)
    phases = {"written": device.mm_stat_values()}
    for offset in range(0, len(data), 2 * DISCARD_STRIDE):
        device.trim(offset, min(DISCARD_STRIDE, len(data) - offset), 0)
    device.write_attribute("compact", "1")
    phases["discarded+compacted"] = device.mm_stat_values()
    return phases


def codec_residual(case: str, data: bytes, sizes: list[int]) -> dict[str, float]:
    """The model's codec library against the kernel's, on the pages the kernel compressed (not same, not huge)."""
    codec = _codec(case)
    ours, theirs = [], []
    for index, size in enumerate(sizes):
        if 0 <= size < PAGE:
            ours.append(len(codec.compress(data[index * PAGE : (index + 1) * PAGE])))
            theirs.append(size)
    differing = sum(1 for a, b in zip(ours, theirs, strict=True) if a != b)
    return {"pages": len(theirs), "pages_differing": differing,
            "bytes_gap": (sum(ours) - sum(theirs)) / sum(theirs) if theirs else 0.0}


def _gap(kernel: int | None, model: int) -> float | None:
    if kernel is None:
        return None
    if kernel == model:
        return 0.0
    return (model - kernel) / kernel if kernel else float("inf")


def compare(guest_rows: list[dict[str, Any]], corpora: dict[str, bytes]) -> list[dict[str, Any]]:
    """One row per case, corpus, phase and mm_stat field: kernel, model, gap (model/kernel - 1).

    ``replay`` is the model's accounting fed the kernel's per-page sizes
    (:func:`replay_kernel_sizes`), ``codec_gap`` the codec library's residual
    on this corpus (:func:`codec_residual`).
    """
    out = []
    for row in guest_rows:
        sizes = row.get("kernel_page_sizes")
        data = corpora[row["corpus"]]
        replay = replay_kernel_sizes(row["case"], data, sizes) if sizes else {}
        residual = codec_residual(row["case"], data, sizes) if sizes else {}
        for phase, model_values in row["model"].items():
            kernel_values = row["kernel"][phase] if row["kernel"] else [None] * len(MM_STAT_FIELDS)
            replay_values = replay.get(phase, [None] * len(MM_STAT_FIELDS))
            for field, kernel, model, replayed in zip(MM_STAT_FIELDS, kernel_values, model_values, replay_values,
                                                      strict=True):
                gap = _gap(kernel, model)
                out.append({"case": row["case"], "corpus": row["corpus"], "phase": phase, "field": field,
                            "kernel": kernel, "model": model, "gap": gap,
                            "within_1pct": None if gap is None else abs(gap) <= TOLERANCE,
                            "replay": replayed, "replay_gap": None if replayed is None else _gap(kernel, replayed),
                            "codec_pages": residual.get("pages"),
                            "codec_pages_differing": residual.get("pages_differing"),
                            "codec_gap": residual.get("bytes_gap"), "note": row.get("kernel_missing", "")})
    return out


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compared = [r for r in rows if r["gap"] is not None]
    fields = [f for f in MM_STAT_FIELDS if any(r["field"] == f and r["kernel"] for r in compared)]
    groups = sorted({(r["case"], r["corpus"], r["phase"]) for r in compared})
    fig, ax = plt.subplots(figsize=(max(8, len(groups) * 0.55), 4.5))
    width = 0.8 / max(1, len(fields))
    for i, field in enumerate(fields):
        gaps = [next((100 * r["gap"] for r in compared if (r["case"], r["corpus"], r["phase"]) == g
                      and r["field"] == field and np.isfinite(r["gap"])), 0.0) for g in groups]
        ax.bar([x + i * width for x in range(len(groups))], gaps, width, label=field)
    ax.axhspan(-100 * TOLERANCE, 100 * TOLERANCE, color="0.9", zorder=0, label="±1%")
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(groups))],
                  [f"{c}\n{k}\n{p.split('+')[0]}" for c, k, p in groups], fontsize=7)
    ax.set_ylabel("model vs kernel (%)")
    ax.set_title("blockemu zram vs Linux 6.12 zram: mm_stat, same pages, one boot")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary(rows: list[dict[str, Any]]) -> str:
    """The table: per case, corpus and phase, each compared field's gap in percent."""
    shown = ("orig_data_size", "compr_data_size", "mem_used_total", "mem_used_max", "same_pages", "pages_compacted",
             "huge_pages", "huge_pages_since")
    table = []
    for key in dict.fromkeys((r["case"], r["corpus"], r["phase"]) for r in rows):
        line: dict[str, Any] = {"case": key[0], "corpus": key[1], "phase": key[2]}
        cells = {r["field"]: r for r in rows if (r["case"], r["corpus"], r["phase"]) == key}
        for field in shown:
            cell = cells[field]
            line[field] = ("n/a" if cell["gap"] is None else
                           f"{100 * cell['gap']:+.2f}%" if np.isfinite(cell["gap"]) else f"{cell['model']}/0")
        line["ok"] = ("kernel n/a" if any(c["gap"] is None for c in cells.values())
                      else "yes" if all(c["within_1pct"] for c in cells.values()) else "NO")
        replays = [abs(c["replay_gap"]) for c in cells.values() if c["replay_gap"] is not None]
        line["accounting"] = f"{100 * max(replays):.2f}%" if replays else "n/a"
        codec = cells["orig_data_size"]
        line["codec"] = ("n/a" if codec["codec_gap"] is None else
                         f"{100 * codec['codec_gap']:+.2f}% ({codec['codec_pages_differing']}/{codec['codec_pages']})")
        table.append(line)
    return report.format_table(table, ["case", "corpus", "phase", *shown, "ok", "accounting", "codec"])


def host_main(args: argparse.Namespace) -> int:
    from blockemu import vm
    from blockemu.vm import host as vm_host

    pages = args.pages or (QUICK_PAGES if args.quick else FULL_PAGES)
    out = report.results_dir("zram-fidelity", args.out).resolve()
    shared = out / "vm"
    shared.mkdir(parents=True, exist_ok=True)
    _say(f"making {len(CORPORA)} corpora of {pages} pages (seed {args.seed})")
    corpora = make_corpora(pages, args.seed)
    for name, data in corpora.items():
        (shared / f"corpus-{name}.bin").write_bytes(data)
    disksize = pages * PAGE
    module = vm_host.cache_dir() / "zram-multi" / "zram.ko"  # scripts/build_zram_multi.sh (make kernel)
    if module.exists():
        _say(f"kernel side: Linux's zram rebuilt with CONFIG_ZRAM_MULTI_COMP ({module})")
    else:
        _say(f"kernel side: the guest's own zram module (no {module}: recompression is compared on the model only)")
    (shared / "corpora.json").write_text(json.dumps({"corpora": list(corpora), "disksize": disksize,
                                                     "zram_module": str(module) if module.exists() else None})
                                         + "\n")
    capacity_mib = -(-disksize // (1 << 20)) + 1
    overrides = [f"device.capacity_mib={capacity_mib}", "zram.policy=single", "zram.recomp_algorithms=",
                 "zram.async_workers=0", "zram.mem_limit_mib=0"]
    command = [sys.executable, "-m", "blockemu", "experiment", "zram-fidelity", "--guest", "--cases", args.cases]
    _say(f"booting Linux 6.12: {len(args.cases.split(','))} cases × {len(corpora)} corpora on kernel zram and model")
    result = vm.run([REPO / "configs" / "zram.toml"], command, mem=args.mem, timeout_s=args.timeout,
                    results_dir=shared, extra_serve_args=[a for item in overrides for a in ("--set", item)])
    guest_report = shared / GUEST_RESULTS
    if result.exit_code != 0 or not guest_report.exists():
        _say(f"the guest part failed (exit {result.exit_code}); see {shared}")
        return result.exit_code or 1
    rows = compare(json.loads(guest_report.read_text()), corpora)
    for corpus in corpora:
        (shared / f"corpus-{corpus}.bin").unlink()
    report.write_csv(out / "zram-fidelity.csv", rows)
    _plot(rows, out / "zram-fidelity.png")
    print(f"zram model vs Linux 6.12 zram, {pages} pages per corpus, seed {args.seed}; gap = model/kernel - 1")
    print(summary(rows))
    print("accounting: the largest gap of any field when the model is fed the kernel's own per-page compressed")
    print("sizes; codec: the model's codec library against the kernel's on the pages the kernel compressed")
    print("(bytes, and pages whose size differs)")
    compared = [r for r in rows if r["gap"] is not None]
    worst = max(compared, key=lambda r: abs(r["gap"]), default=None)
    if worst is not None:
        print(f"largest gap: {100 * worst['gap']:+.3f}% ({worst['field']}, {worst['case']} × {worst['corpus']}, "
              f"{worst['phase']}); {sum(1 for r in compared if r['within_1pct'])}/{len(compared)} fields within 1%")
    print(f"results: {out / 'zram-fidelity.csv'}, {out / 'zram-fidelity.png'}")
    return 0
