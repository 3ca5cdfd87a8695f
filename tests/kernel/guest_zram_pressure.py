"""Inside the VM: allocate more anonymous memory than the cgroup allows, then verify it.

Pages are filled like real anonymous memory (part random, part repeated
structure), so they compress as such memory does and zram stores them
compressed.  Every chunk's SHA-256 is recorded when written and checked after
everything was allocated: pages that went to swap on the zram device must come
back intact.
"""

from __future__ import annotations

import argparse
import hashlib
import sys

import numpy as np

CHUNK = 32 * 1024 * 1024
PAGE = 4096


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bytes", type=int, required=True, help="how much to allocate")
    args = parser.parse_args()
    total = args.bytes
    rng = np.random.default_rng(7)
    chunks: list[np.ndarray] = []
    digests: list[str] = []
    while len(chunks) * CHUNK < total:
        pages = np.zeros((CHUNK // PAGE, PAGE), dtype=np.uint8)
        pages[:, :1024] = rng.integers(0, 256, (CHUNK // PAGE, 1024), dtype=np.uint8)
        pages[:, 1024:] = np.arange(PAGE - 1024, dtype=np.uint8) % 61
        chunks.append(pages)
        digests.append(hashlib.sha256(pages.tobytes()).hexdigest())
        print(f"pressure: {len(chunks) * CHUNK >> 20} MiB allocated", flush=True)
    # How much of it the kernel swapped out to the device, while it is still held.
    swapped_kib = sum(int(line.split()[3]) for line in open("/proc/swaps").readlines()[1:])
    print(f"pressure: {swapped_kib} KiB in swap", flush=True)
    bad = [i for i, (chunk, digest) in enumerate(zip(chunks, digests, strict=True))
           if hashlib.sha256(chunk.tobytes()).hexdigest() != digest]
    print(f"pressure: {len(chunks) * CHUNK >> 20} MiB verified, {len(bad)} chunks differ", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
