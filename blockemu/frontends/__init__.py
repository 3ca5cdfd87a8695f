"""Frontends: the data paths that put a device model in front of a kernel.

- :mod:`~blockemu.frontends.nbdkit`: nbdkit's python plugin and the launcher that runs nbdkit;
- :mod:`~blockemu.frontends.ublk`: Linux's ublk driver, served in-process over io_uring;
- :mod:`~blockemu.frontends.serve`: what both bring up: runtime, trace, control API.
"""


class ServeError(Exception):
    """A device cannot be served: a one-line message and the exit status ``blockemu serve`` gives."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code

