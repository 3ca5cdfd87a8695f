"""scripts/mkzonefs.py writes the super block the kernel's zonefs_read_super accepts."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "mkzonefs", Path(__file__).resolve().parents[2] / "scripts" / "mkzonefs.py")
assert _SPEC is not None and _SPEC.loader is not None
mkzonefs = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(mkzonefs)


def crc32_le(crc: int, data: bytes) -> int:
    """The kernel's lib/crc32.c crc32_le, bit by bit (polynomial 0xedb88320, no final inversion)."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc


def test_the_block_matches_the_kernel_layout_and_checksum() -> None:
    volume = bytes(range(16))
    block = mkzonefs.super_block("blockemu", volume)
    assert len(block) == 4096
    magic, crc = struct.unpack_from("<II", block, 0)
    assert magic == 0x5A4F4653
    assert block[8:16] == b"blockemu" and block[16:72] == bytes(56)
    assert block[72:88] == volume
    assert struct.unpack_from("<QIII", block, 88) == (0, 0, 0, 0)  # no features, uid, gid, perm
    assert block[108:] == bytes(3988)  # s_reserved must be zeros
    unsummed = block[:4] + bytes(4) + block[8:]
    assert crc == crc32_le(0xFFFFFFFF, unsummed)


def test_a_label_too_long_is_refused() -> None:
    mkzonefs.super_block("x" * 64)
    with pytest.raises(ValueError, match="at most 64"):
        mkzonefs.super_block("x" * 65)
