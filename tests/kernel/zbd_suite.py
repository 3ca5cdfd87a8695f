"""fio's own zoned test suite (t/zbd/test-zbd-support) on blockemu and on null_blk, in one VM boot.

scripts/fetch_fio.sh puts two fio source trees in .cache/fio: ``installed``
(the version of the installed fio, run with /usr/bin/fio) and ``newest`` (the
newest Debian has, built with --disable-native).  tests/kernel/guest_zbd.sh
runs the suite in the guest against the ZNS model over ublk and against
null_blk configured with the same geometry and limits; this module writes the
device configs, boots the VM, parses the results and compares the two
devices.  The verdict: blockemu must pass every test null_blk passes.

``python -m tests.kernel.zbd_suite`` (``make conformance``) runs the whole
suite for both fio versions, with and without zone limits (limits only for a
fio that reads max_active_zones), and prints the table docs/zns.md shows;
tests/kernel/test_zbd_vm.py runs a subset.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from pathlib import Path

from blockemu import vm
from blockemu.config.base import ConfigError
from blockemu.config.load import load_config
from blockemu.vm.host import cache_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
GUEST_SCRIPT = Path(__file__).resolve().parent / "guest_zbd.sh"
FIO_CACHE = cache_dir() / "fio"
TARGETS = ("blockemu", "nullb")
MODES = ("limits", "nolimits")
TREES = ("newest", "installed")  # the links scripts/fetch_fio.sh makes in .cache/fio


@dataclasses.dataclass(frozen=True)
class Geometry:
    """One zoned disk, as both blockemu's ZNS model and null_blk take it.

    The issue's geometry (#23) was 2304 MiB, 16 MiB zones with 12 MiB
    capacity, 8 conventional zones, 14 open / 14 active: 144 zones.  The zone
    count stays (tests 03 and 04 need 130 sequential zones); the zones shrink
    to 4 MiB with 3 MiB capacity, so the suite's per-zone writes take a
    quarter of the time under software emulation.  The limits stay the WD
    ZN540's 14 / 14 (configs/zns.toml).
    """

    size_mib: int = 576
    zone_mib: int = 4
    cap_mib: int = 3
    conv: int = 8
    max_open: int = 14
    lba_bytes: int = 4096

    def guest_args(self) -> list[str]:
        return [f"size_mib={self.size_mib}", f"zone_mib={self.zone_mib}", f"cap_mib={self.cap_mib}",
                f"conv={self.conv}", f"open={self.max_open}", f"bs={self.lba_bytes}"]

    def config(self, mode: str) -> str:
        """blockemu's config for MODE: "limits" (max_open = max_active) or "nolimits" (0: unlimited)."""
        limit = self.max_open if mode == "limits" else 0
        return (f'[device]\ntype = "zns"\nname = "zbd_{mode}"\ncapacity_mib = {self.size_mib}\n\n'
                f'[store]\nbackend = "memory"\n\n[timing]\nmode = "virtual"\n\n'
                f"[zns]\nzone_size_mib = {self.zone_mib}\nzone_capacity_mib = {self.cap_mib}\n"
                f"conventional_zones = {self.conv}\nmax_open_zones = {limit}\nmax_active_zones = {limit}\n"
                f"lba_bytes = {self.lba_bytes}\n")


@dataclasses.dataclass(frozen=True)
class SuiteRun:
    """One run of test-zbd-support on both targets: a fio tree, a mode, the tests ("all" or numbers)."""

    tree: str  # "installed" or "newest" (links in .cache/fio)
    mode: str
    tests: tuple[int, ...] = ()  # empty: all

    def guest_arg(self) -> str:
        tests = ",".join(str(n) for n in self.tests) or "all"
        return f"run={fio_tree(self.tree)}:{self.mode}:{tests}"


# Subset for `make test` (about 4 minutes with the boot): the cases about zone
# limits (12, 13, 29, 65, 67, 70), errors fio must see (1: buffered writes
# refused; 2: block size over zone size; 67: EOVERFLOW at max_active_zones),
# zone resets (26, 27 overwrite a zone four times; 52 resets by threshold),
# and writes that cross zone capacity (33, 64).  Left out: 66 needs 16 x
# max_open sequential zones and 71 a device without max_active_zones, so
# both skip here.  t/zbd issues no zone appends; tests/kernel/guest_ublk.sh
# covers them with btrfs.
SUBSET = (1, 2, 12, 13, 26, 27, 29, 33, 52, 64, 65, 67, 70)

RESULT_LINE = re.compile(r"Running test (\d+) \.\.\. (PASS|FAIL|SKIP)\b(.*)")


def fio_tree(name: str) -> Path:
    """The fio source tree scripts/fetch_fio.sh linked as NAME, resolved (the guest follows no relative links)."""
    link = FIO_CACHE / name
    if not (link / "t" / "zbd" / "test-zbd-support").is_file() or not (link / "fio").exists():
        raise vm.VmError(f"no fio tree {link}; run `make kernel` (scripts/fetch_fio.sh)")
    return link.resolve()


def fio_version(name: str) -> str:
    return fio_tree(name).name.removeprefix("fio-")


@dataclasses.dataclass
class CaseResult:
    status: str  # PASS, FAIL or SKIP
    seconds: int
    reason: str = ""


def parse(text: str) -> dict[int, CaseResult]:
    """Test number -> result from guest_zbd.sh's copy of the suite's output (lines stamped with seconds)."""
    results: dict[int, CaseResult] = {}
    previous = 0
    for line in text.splitlines():
        stamp, _, rest = line.partition(" ")
        match = RESULT_LINE.search(rest)
        if match and stamp.isdigit():
            number, status, reason = int(match[1]), match[2], match[3].strip()
            results[number] = CaseResult(status, int(stamp) - previous, reason)
            previous = int(stamp)
    return results


def blockemu_only_failures(blockemu: dict[int, CaseResult], nullb: dict[int, CaseResult]) -> list[int]:
    """Tests null_blk passes and blockemu does not pass or skip: the conformance gaps.

    A test blockemu skips is a gap too when null_blk ran it, unless the suite
    skips it for a reason only null_blk meets (its bad-block injection).
    """
    gaps = []
    for number, result in sorted(nullb.items()):
        if result.status != "PASS":
            continue
        ours = blockemu.get(number)
        if ours is None or ours.status == "FAIL":
            gaps.append(number)
        elif ours.status == "SKIP" and "not null_blk" not in ours.reason and "badblock" not in ours.reason:
            gaps.append(number)
    return gaps


def counts(results: dict[int, CaseResult]) -> str:
    tally = {status: sum(r.status == status for r in results.values()) for status in ("PASS", "FAIL", "SKIP")}
    return f"{tally['PASS']} pass / {tally['FAIL']} fail / {tally['SKIP']} skip"


def result_file(results_dir: Path, version: str, mode: str, target: str) -> Path:
    return results_dir / f"zbd-{version}-{mode}-{target}.txt"


def case_log(results_dir: Path, version: str, mode: str, target: str, number: int) -> str:
    """The suite's own log of one test (fio's commands and output), or "" if it wrote none."""
    log = results_dir / f"zbd-{version}-{mode}-{target}.logs" / f"test-zbd-support.log.{number}"
    return log.read_text(errors="replace") if log.is_file() else ""


def run(runs: list[SuiteRun], results_dir: Path, geometry: Geometry = Geometry(),
        timeout_s: float = 1200, stream: bool = False) -> vm.VmResult:
    """Boot once: serve one ZNS device per mode the runs use, run each suite on it and on null_blk."""
    modes = [mode for mode in MODES if any(r.mode == mode for r in runs)]
    results_dir.mkdir(parents=True, exist_ok=True)
    configs = []
    for mode in modes:
        # In the results folder: the guest sees it (the host's /tmp it does not).
        config = results_dir / f"zbd-{mode}.toml"
        config.write_text(geometry.config(mode))
        load_config(config)  # a ConfigError here beats a server dying in the guest
        configs.append(config)
    command = ["bash", str(GUEST_SCRIPT), *geometry.guest_args(), f"modes={','.join(modes)}",
               *(r.guest_arg() for r in runs)]
    # The guest holds each device's data twice at most (blockemu's store, null_blk's pages), plus the
    # servers and fio: 1 GiB above that.
    mem_mib = 2 * len(modes) * geometry.size_mib + 1024
    return vm.run(configs, command, mem=f"{mem_mib}M", results_dir=results_dir, timeout_s=timeout_s,
                  stream=stream, transport="ublk")


def table(runs: list[SuiteRun], results_dir: Path) -> tuple[list[str], dict[str, list[int]]]:
    """Markdown rows (one per run) and the blockemu-only failures per run."""
    rows = ["| fio | device limits | blockemu | null_blk | blockemu-only failures | null_blk's failures |",
            "|---|---|---|---|---|---|"]
    gaps: dict[str, list[int]] = {}
    for suite in runs:
        version = fio_version(suite.tree)
        parsed = {target: parse(result_file(results_dir, version, suite.mode, target).read_text(errors="replace"))
                  for target in TARGETS}
        key = f"{version}-{suite.mode}"
        gaps[key] = blockemu_only_failures(parsed["blockemu"], parsed["nullb"])
        nullb_fails = [n for n, r in sorted(parsed["nullb"].items()) if r.status == "FAIL"]
        limits = "14 open / 14 active" if suite.mode == "limits" else "none"
        rows.append(f"| {version} | {limits} | {counts(parsed['blockemu'])} | {counts(parsed['nullb'])} | "
                    f"{', '.join(map(str, gaps[key])) or '–'} | {', '.join(map(str, nullb_fails)) or '–'} |")
    return rows, gaps


# fio reads a device's max_active_zones from 3.36 on (zbd.c, "zbd: get
# max_active_zones limit value from zoned devices", July 2023).  An older fio
# opens zones past that limit; which of its writes the device then refuses
# depends on what the suite's time-based cases (32, 58) left open, so on how
# fast the device is, not on its zone rules.
FIO_READS_MAX_ACTIVE = (3, 36)


def reads_max_active(version: str) -> bool:
    return tuple(int(part) for part in version.split(".")[:2]) >= FIO_READS_MAX_ACTIVE


def full_runs(trees: list[str] | None = None, modes: list[str] | None = None) -> list[SuiteRun]:
    """The runs to make: TREES x MODES (default: both of each, less "limits" for a fio that ignores them)."""
    return [SuiteRun(tree, mode) for tree in (trees or TREES) for mode in (modes or MODES)
            if modes or mode == "nolimits" or reads_max_active(fio_version(tree))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kernel.zbd_suite", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results") / f"zbd-{time.strftime('%Y%m%d-%H%M%S')}",
                        help="results folder (default: results/zbd-STAMP)")
    parser.add_argument("--subset", action="store_true", help="only the tests `make test` runs (newest fio, limits)")
    parser.add_argument("--tree", choices=TREES, action="append",
                        help="fio tree(s) to run (default: both)")
    parser.add_argument("--mode", choices=MODES, action="append",
                        help="device limits (default: both, but only nolimits for a fio older than 3.36, "
                             "which does not read max_active_zones)")
    parser.add_argument("--tests", type=lambda text: tuple(int(n) for n in text.split(",")), default=(),
                        help="only these test numbers, comma-separated (default: all)")
    parser.add_argument("--timeout", type=float, default=10800, help="seconds before the VM is killed")
    args = parser.parse_args(argv)
    try:
        if args.subset:
            runs = [SuiteRun("newest", "limits", SUBSET)]
        else:
            runs = [dataclasses.replace(r, tests=args.tests) for r in full_runs(args.tree, args.mode)]
            for tree in [] if args.mode else args.tree or TREES:
                version = fio_version(tree)
                if not reads_max_active(version):
                    print(f"zbd_suite: fio {version} ({tree}) does not read max_active_zones (3.36 and later "
                          "do): its run with limits is left out; --mode limits runs it", file=sys.stderr)
        for suite in runs:
            fio_tree(suite.tree)
        start = time.monotonic()
        result = run(runs, args.out.resolve(), timeout_s=args.timeout, stream=True)
    except (vm.VmError, ConfigError) as err:
        print(f"zbd_suite: {err}", file=sys.stderr)
        return 2
    if result.exit_code != 0:
        print(f"zbd_suite: the guest failed (exit {result.exit_code}); see {args.out}", file=sys.stderr)
        return 1
    rows, gaps = table(runs, args.out)
    print(f"\nt/zbd/test-zbd-support, {Geometry()}, {time.monotonic() - start:.0f} s; results in {args.out}")
    print("\n".join(rows))
    return 1 if any(gaps.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
