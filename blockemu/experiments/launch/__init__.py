"""``blockemu experiment launch``: app launches on a phone-like memory model (zram, ZCACHE, UFS, lmkd)."""
