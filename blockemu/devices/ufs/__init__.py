"""The UFS 4.x device: the block-device model (device), its flash translation layer (ftl) and HID (hid)."""
