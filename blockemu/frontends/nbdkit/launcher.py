"""Run nbdkit with blockemu's plugin and watch over it: the NBD half of ``blockemu serve``.

nbdkit runs in the foreground as our child (``--exit-with-parent``) and loads
``plugins/blockemu.py`` in its embedded Python, which finds this package
through the PYTHONPATH :func:`plugin_environment` sets.  We wait until the
NBD socket and the HTTP port answer, report the NBD URI, and pass SIGINT and
SIGTERM on as a clean stop.

Only the standard library is imported: ``blockemu serve`` starts inside slow
VMs, where importing the device models twice (here and in nbdkit) costs
seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import site
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockemu.control.auth import TOKEN_ENV
from blockemu.frontends import ServeError

# The checkout: blockemu/frontends/nbdkit/launcher.py is three folders down.
PACKAGE_ROOT = Path(__file__).resolve().parents[3]
PLUGIN = PACKAGE_ROOT / "plugins" / "blockemu.py"


@dataclass(frozen=True)
class NbdkitOptions:
    """What ``blockemu serve`` asks of nbdkit; ``port`` None serves on a unix socket."""

    config: Path
    device_name: str
    overrides: Sequence[str] = ()
    unix: Path | None = None
    port: int | None = None
    listen: str = "127.0.0.1"
    # --tls-psk: the keys file and the user name of its first key, which goes into the URI.
    tls_psk: Path | None = None
    tls_user: str | None = None
    http: str = ""
    trace: Path | None = None
    threads: int = 16
    verbose: bool = False
    ready_timeout_s: float = 120.0


def default_run_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return Path(base) / f"blockemu-{os.getuid()}"


def plugin_environment() -> dict[str, str]:
    """PYTHONPATH for nbdkit's embedded python: our site-packages and this checkout.

    ``.pth`` files (an editable install) are not processed for PYTHONPATH
    entries, so the package root is added explicitly.
    """
    paths = [str(PACKAGE_ROOT), *site.getsitepackages()]
    existing = os.environ.get("PYTHONPATH")
    if existing:
        paths.append(existing)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def find_nbdkit() -> str:
    nbdkit = shutil.which("nbdkit")
    if nbdkit is None:
        raise ServeError("nbdkit not found; run 'make setup' (installs nbdkit and nbdkit-plugin-python)")
    return nbdkit


def nbdkit_argv(nbdkit: str, options: NbdkitOptions, unix: Path | None) -> list[str]:
    argv = [nbdkit, "--foreground", "--exit-with-parent", "--threads", str(options.threads)]
    if unix is not None:
        argv += ["--unix", str(unix)]
    else:
        argv += ["--ipaddr", options.listen, "--port", str(options.port)]
    if options.tls_psk is not None:
        # nbdkit's own TLS: clients must negotiate it and know a key of the file.
        argv += ["--tls=require", f"--tls-psk={options.tls_psk.resolve()}"]
    if options.verbose:
        argv.append("--verbose")
    argv += ["python", str(PLUGIN), f"config={options.config.resolve()}"]
    argv += [f"set={item}" for item in options.overrides]
    argv.append(f"http={options.http}")
    if options.trace is not None:
        argv.append(f"trace={options.trace.resolve()}")
    return argv


def nbd_uri(options: NbdkitOptions, unix: Path | None) -> str:
    """The URI clients connect to (``nbd+unix://``, ``nbds://`` with TLS, ...)."""
    scheme, user = ("nbds", f"{options.tls_user}@") if options.tls_user else ("nbd", "")
    if unix is not None:
        uri = f"{scheme}+unix://{user}/?socket={unix}"
    else:
        host = "127.0.0.1" if options.listen in ("0.0.0.0", "::") else options.listen
        host = f"[{host}]" if ":" in host else host
        uri = f"{scheme}://{user}{host}:{options.port}"
    if options.tls_user and options.tls_psk is not None:
        uri += ("&" if unix is not None else "/?") + f"tls-psk-file={options.tls_psk.resolve()}"
    return uri


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if nbdkit has not gone within 10 s (it waits on an idle client's read)."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_nbdkit(options: NbdkitOptions, token: str | None, on_ready: Callable[[str], None],
               http: tuple[str, int] | None = None) -> int:
    """Serve until nbdkit exits or we get SIGINT/SIGTERM; returns the exit status.

    ``on_ready`` gets the NBD URI once the socket (and ``http``, the control
    API's address, when given) accepts connections.
    """
    nbdkit = find_nbdkit()
    unix: Path | None = None
    if options.port is None:
        unix = options.unix or default_run_dir() / f"{options.device_name}-{os.getpid()}.sock"
        unix.parent.mkdir(parents=True, exist_ok=True)
        if unix.exists():
            raise ServeError(f"--unix {unix}: a file is already there; is another server running?")
    env = plugin_environment()
    # The token reaches the plugin in its environment, never in argv (ps shows argv to everyone).
    env.pop(TOKEN_ENV, None)
    if token is not None:
        env[TOKEN_ENV] = token
    process = subprocess.Popen(nbdkit_argv(nbdkit, options, unix), env=env)

    def stop(signum: int, frame: Any) -> None:
        if process.poll() is None:
            process.terminate()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        tcp = (options.listen, options.port) if options.port is not None else None
        if not _wait_ready(process, unix, tcp, http, options.ready_timeout_s):
            if process.poll() is None:
                _stop(process)
                raise ServeError(
                    f"nbdkit did not become ready within {options.ready_timeout_s:g} s (--ready-timeout)", 1)
            raise ServeError(f"nbdkit exited with status {process.returncode} before serving", 1)
        on_ready(nbd_uri(options, unix))
        code = process.wait()
    finally:
        if process.poll() is None:
            _stop(process)
        if unix is not None and unix.exists():
            unix.unlink()
    # nbdkit exits 0 on SIGTERM/SIGINT; a signal-killed child is a clean stop too.
    return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code


def _wait_ready(process: subprocess.Popen[bytes], unix: Path | None, port: tuple[str, int] | None,
                http: tuple[str, int] | None, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        ready = True
        if unix is not None:
            ready &= unix.exists()
        if port is not None:
            ready &= _connects(port)
        if http is not None:
            ready &= _connects(http)
        if ready:
            return True
        time.sleep(0.05)
    return False


def _connects(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=0.5):
            return True
    except OSError:
        return False
