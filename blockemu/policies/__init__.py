"""Variants chosen by name in config: compression (zram), and later GC and governors."""
