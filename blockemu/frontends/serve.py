"""The bring-up both frontends share: a device runtime, its trace and its control API.

nbdkit's plugin (:mod:`blockemu.frontends.nbdkit.plugin`) and the ublk
server (``blockemu serve --ublk``) serve a device the same way; only the data
path differs.  Both follow nbdkit's lifecycle: everything that can fail for a
reason the user can fix (a busy HTTP port, a trace file that cannot be made)
fails in :func:`bring_up`, before a single request is served; threads start
in :meth:`ServedRuntime.start` (nbdkit: after it forks).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockemu.config import Config
from blockemu.control.server import ControlServer
from blockemu.frontends import ServeError
from blockemu.precondition import PreconditionError, precondition
from blockemu.runtime import DeviceRuntime


@dataclass
class ServedRuntime:
    """A device's runtime and, when asked for, the HTTP server of its control API and /metrics."""

    runtime: DeviceRuntime
    control: ControlServer | None

    def start(self) -> None:
        self.runtime.start()
        if self.control is not None:
            self.control.start()

    def close(self) -> None:
        if self.control is not None:
            self.control.stop()
        self.runtime.close()


def bring_up(config: Config, http: tuple[str, int] | None = None, token: str | None = None,
             trace: str | Path | None = None) -> ServedRuntime:
    """The runtime for ``config``, its control API bound to ``http`` and, with ``trace``, recording."""
    runtime = DeviceRuntime(config)
    control = None
    try:
        if config.precondition.mode != "none":
            _precondition(runtime, config)
        # The port first: a busy one must not leave a trace file behind.
        control = ControlServer(runtime, *http, token) if http is not None else None
        if trace:
            runtime.start_trace(trace)
    except BaseException:
        if control is not None:
            control.stop()
        runtime.close()
        raise
    return ServedRuntime(runtime, control)


def _precondition(runtime: DeviceRuntime, config: Config) -> None:
    """[precondition]: the device starts written (and aged, as [aging] says) before it serves."""
    try:
        report = precondition(runtime.stack.model, config, config.precondition.mode)
    except PreconditionError as err:
        raise ServeError(f"{config.source}: [precondition] mode = {config.precondition.mode!r}: {err}") from None
    print(f"blockemu: {report.line()}", file=sys.stderr, flush=True)


def serve_ublk(config: Config, http: tuple[str, int] | None, token: str | None, trace: str | Path | None,
               queue_depth: int, on_ready: Callable[[str], None]) -> int:
    """Serve ``config`` as /dev/ublkbN in this process until SIGINT or SIGTERM; returns the exit code.

    ``on_ready`` gets the block device's path once it exists.
    """
    # Here, not at the top: nbdkit's plugin imports this module and has no use for io_uring.
    from blockemu.frontends.ublk.server import UblkError, serve

    served = bring_up(config, http, token, trace)
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        served.start()
        return serve(served.runtime, on_ready, stop, queue_depth)
    except UblkError as err:
        raise ServeError(str(err), 1) from None
    finally:
        served.close()
