"""The zram device: the model (device, core, offload), its attributes (sysfs), persistence, and what it is built from:
page codecs (codecs), the zsmalloc allocator's accounting (zsmalloc) and per-page compression policies (policy)."""
