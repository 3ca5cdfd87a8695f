"""Byte stores behind devices, chosen by ``[store] backend``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from blockemu.store.base import Store
from blockemu.store.file import FileStore, StoreError
from blockemu.store.memory import MemoryStore

STORES = ("memory", "file")


def open_store(backend: str, size_bytes: int, path: str = "", *, geometry: Mapping[str, Any] | None = None,
               fsync: bool = True) -> Store:
    """Open the store called ``backend``.

    ``file`` needs ``geometry``: the settings that shape the saved state,
    checked against what the directory was created with.
    """
    if backend == "memory":
        return MemoryStore(size_bytes)
    if backend == "file":
        if geometry is None:
            raise ValueError("the file store needs the device's geometry (see blockemu/stack.py, persisted_geometry)")
        return FileStore(path, size_bytes, geometry, fsync)
    raise ValueError(f"unknown store backend {backend!r}; allowed: {', '.join(STORES)}")


__all__ = ["FileStore", "MemoryStore", "Store", "StoreError", "open_store"]
