"""The NVMe ZNS device: zones and their state machine (zones), the block-device model (device), zone errors (errors)."""
