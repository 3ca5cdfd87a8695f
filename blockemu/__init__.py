"""blockemu: emulated UFS, ZNS and zram devices for real Linux kernels."""

__version__ = "0.1.0"
