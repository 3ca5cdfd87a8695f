"""Variants chosen by name in config: GC victims of the zoned log (gc) and power governors (governors).

zram's per-page compression policies live with zram, in blockemu/devices/zram/policy.py.
"""
