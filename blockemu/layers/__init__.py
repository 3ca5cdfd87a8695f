"""Layers around a device model, like nbdkit filters: each changes only what it declares (blockemu/layers/base.py).

blockemu/stack.py composes them: faults → power → write_cache | checkpoint → model.
"""
