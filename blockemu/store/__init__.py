"""Byte stores behind devices, chosen by ``[store] backend``."""

from __future__ import annotations

from blockemu.store.base import Store
from blockemu.store.memory import MemoryStore


def open_store(backend: str, size_bytes: int, path: str = "") -> Store:
    if backend == "memory":
        return MemoryStore(size_bytes)
    raise ValueError(f"unknown store backend {backend!r}; allowed: memory")


__all__ = ["MemoryStore", "Store", "open_store"]
