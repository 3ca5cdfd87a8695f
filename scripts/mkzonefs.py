#!/usr/bin/env python3
"""Format a zoned block device for zonefs: write its super block into the first zone.

zonefs-tools (mkzonefs) is not packaged in Debian 12.  zonefs keeps no
metadata besides one 4 KiB super block at sector 0; everything else (one file
per zone, sizes from write pointers) comes from the zone report.  This writes
that block as the kernel reads it (fs/zonefs/zonefs.h, ``struct zonefs_super``,
and ``zonefs_read_super`` in fs/zonefs/super.c):

    offset  size  field
         0     4  s_magic     0x5a4f4653 ("ZOFS" when read as a number)
         4     4  s_crc       crc32_le(~0, the block with s_crc = 0), no final inversion
         8    64  s_label
        72    16  s_uuid
        88     8  s_features  0: no aggregated conventional zones, default uid/gid/perm
        96     4  s_uid
       100     4  s_gid
       104     4  s_perm
       108  3988  s_reserved  zeros (the kernel refuses anything else)

Reset the sequential zones first (``blkzone reset DEV``), as mkzonefs does,
so that every file starts empty.  Usage: ``python3 scripts/mkzonefs.py DEV [--label L]``.
Standard library only, so that it runs in a bare guest.
"""

from __future__ import annotations

import argparse
import mmap
import os
import struct
import sys
import uuid
import zlib
from pathlib import Path

ZONEFS_MAGIC = 0x5A4F4653
SUPER_SIZE = 4096
LABEL_LEN = 64
_HEADER = struct.Struct("<II64s16sQIII")


def super_block(label: str = "", volume_uuid: bytes | None = None) -> bytes:
    encoded = label.encode()
    if len(encoded) > LABEL_LEN:
        raise ValueError(f"label is {len(encoded)} bytes; zonefs allows at most {LABEL_LEN}")
    volume_uuid = volume_uuid if volume_uuid is not None else uuid.uuid4().bytes
    block = bytearray(SUPER_SIZE)
    _HEADER.pack_into(block, 0, ZONEFS_MAGIC, 0, encoded, volume_uuid, 0, 0, 0, 0)
    # The kernel's crc32(~0U, ...) is crc32_le without zlib's final inversion.
    crc = zlib.crc32(bytes(block)) ^ 0xFFFFFFFF
    struct.pack_into("<I", block, 4, crc)
    return bytes(block)


def main() -> int:
    parser = argparse.ArgumentParser(description="write a zonefs super block (see the module docstring)")
    parser.add_argument("device", help="a zoned block device, e.g. /dev/ublkb0")
    parser.add_argument("--label", default="", help=f"volume label (at most {LABEL_LEN} bytes)")
    args = parser.parse_args()
    name = Path(os.path.realpath(args.device)).name
    zoned = Path(f"/sys/block/{name}/queue/zoned")
    try:
        model = zoned.read_text().strip()
    except OSError:
        print(f"mkzonefs: {args.device}: not a whole block device ({zoned} is missing)", file=sys.stderr)
        return 2
    if model != "host-managed":
        print(f"mkzonefs: {args.device}: zoned is {model!r}; zonefs needs a host-managed device", file=sys.stderr)
        return 2
    try:
        block = super_block(args.label)
    except ValueError as err:
        print(f"mkzonefs: --label: {err}", file=sys.stderr)
        return 2
    # O_DIRECT: a sequential first zone takes only direct writes at its write pointer.
    fd = os.open(args.device, os.O_WRONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, SUPER_SIZE)  # page-aligned, as O_DIRECT wants
        buf.write(block)
        os.pwrite(fd, buf, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    print(f"mkzonefs: wrote the zonefs super block to {args.device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
