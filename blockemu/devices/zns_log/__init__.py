"""A host-side zoned log (FTL) over a ZNS device: the log and its GC (log), served as a block device (device).

Its GC victim policies are in :mod:`blockemu.policies.gc`, where config validation can reach them.
"""
