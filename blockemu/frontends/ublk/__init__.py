"""Serve a blockemu device through Linux's ublk driver (see :mod:`.server`)."""
