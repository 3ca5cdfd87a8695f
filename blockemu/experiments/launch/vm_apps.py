"""The apps of ``blockemu experiment launch --vm``: one process in the guest, inside a memory cgroup.

Run by path (``python3 vm_apps.py SPEC``, standard library only), so that it
holds little memory of its own: the cgroup's limit is meant for the apps.
Each app is an anonymous mapping filled with its pages of the captured
corpus (real process heaps and library pages, blockemu/experiments/zram.py).
A *launch* of an app touches every page of its mapping, reading one byte a
page, and is timed: pages the kernel swapped out to the blockemu zram device
fault back in (swap-in, with the kernel's readahead), so a launch takes as
long as the device takes to hand back what reclaim pushed out, and the
reclaim the launch itself causes.

SPEC is a JSON file: ``{"corpus": [FILE, ...], "warmup": [APP, ...], "sequence": [APP, ...]}``.
It prints a JSON line when the apps are in memory, then for each of the two
phases, on a line from stdin, ``{"launch_ns": [...], "apps": [...]}``.
"""

from __future__ import annotations

import json
import mmap
import sys
import time

PAGE = 4096


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def touch(mapping: mmap.mmap, pages: int) -> int:
    """Read one byte of every page; the sum keeps the reads from being skipped."""
    total = 0
    for page in range(pages):
        total += mapping[page * PAGE]
    return total


def main(spec_path: str) -> int:
    with open(spec_path) as f:
        spec = json.load(f)
    rss_before = rss_kib()
    apps: list[tuple[mmap.mmap, int]] = []
    for path in spec["corpus"]:
        with open(path, "rb") as f:
            data = f.read()
        pages = len(data) // PAGE
        mapping = mmap.mmap(-1, pages * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        mapping[:] = data[: pages * PAGE]
        del data
        apps.append((mapping, pages))
    # The controller lowers memory.max once the apps are in memory, then asks for the warm-up
    # launches (one of each app, untimed by the study) and the timed ones, reading the kernel's
    # counters in between.
    print(json.dumps({"ready": True, "rss_kib": rss_kib(), "rss_before_kib": rss_before}), flush=True)
    for phase in ("warmup", "sequence"):
        sys.stdin.readline()
        launches: list[int] = []
        for app in spec[phase]:
            mapping, pages = apps[app]
            started = time.perf_counter_ns()
            touch(mapping, pages)
            launches.append(time.perf_counter_ns() - started)
        print(json.dumps({"launch_ns": launches, "apps": spec[phase]}), flush=True)
    return 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
