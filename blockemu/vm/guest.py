"""The guest side of the VM harness: the runner that ``python -m blockemu.vm _guest SPEC`` starts in the VM.

It runs as root in the guest: loads modules, starts one device server per
config (the one place that knows how to serve a config is
:func:`server_argv`), attaches each with ``nbd-client`` as ``/dev/nbdN`` or
lets ``serve --ublk`` make ``/dev/ublkbN``, runs the user's command, then
saves metrics and dmesg into the results folder and tears everything down.
Only the standard library is imported.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from blockemu.vm.spec import (
    COMMAND_LOG,
    DMESG_FILE,
    EXIT_CODE_FILE,
    EXIT_COMMAND_NOT_FOUND,
    EXIT_HARNESS_ERROR,
    GUEST_ERROR_FILE,
    GUEST_TAG,
    HTTP_BASE_PORT,
    PACKAGE_PARENT,
)

# nbd's default nbds_max is 16; we never ask for fewer.
MIN_NBDS = 16
# How long a device server may take to create its socket.  Under TCG,
# starting Python + nbdkit + imports takes several seconds.
SERVER_START_TIMEOUT_S = 120.0

GUEST_SOCKET_DIR = Path("/run/blockemu")


def server_argv(
    python: str, config: str, sock: str, http_port: int, extra: Sequence[str], transport: str = "nbd"
) -> list[str]:
    """Command that serves CONFIG on unix socket SOCK (or, for ublk, as /dev/ublkbN) in the foreground.

    `blockemu serve` runs nbdkit (or its ublk server) until SIGTERM and
    serves /metrics and /api/v1/device on the loopback HTTP port.
    """
    if transport == "ublk":
        return [python, "-m", "blockemu", "serve", config, "--ublk",
                "--http", f"127.0.0.1:{http_port}", *extra]
    return [
        python, "-m", "blockemu", "serve", config,
        "--unix", sock, "--http", f"127.0.0.1:{http_port}", *extra,
    ]


def _say(message: str) -> None:
    # Guest uptime in front, to show where a slow run spends its time.
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        uptime = 0.0
    print(f"{GUEST_TAG} [{uptime:6.1f} s] {message}", flush=True)


class GuestSetupError(RuntimeError):
    pass


def _sh(argv: Sequence[str], timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise GuestSetupError(
            f"{shlex.join(argv)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}"
        )
    return proc


def _http_get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


class GuestDevice:
    """One config served and attached as /dev/nbdN (or served as /dev/ublkbN) inside the guest."""

    def __init__(self, index: int, config: str, spec: dict, results: Path):
        self.index = index
        self.config = config
        self.sock = str(GUEST_SOCKET_DIR / f"dev{index}.sock")
        self.port = HTTP_BASE_PORT + index
        self.http = f"http://127.0.0.1:{self.port}"
        self.nbd = f"/dev/nbd{index}"
        self.transport = spec.get("transports", ["nbd"] * (index + 1))[index]
        # The block device the command gets; a ublk server prints its own.
        self.path = self.nbd if self.transport == "nbd" else ""
        self.results = results
        self.argv = server_argv(
            spec["python"], config, self.sock, self.port, spec["extra_serve_args"], self.transport
        )
        self.nbd_timeout_s = int(spec["nbd_timeout_s"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.attached = False

    def start(self, env: dict[str, str]) -> None:
        # The child keeps its own copy of the descriptor.
        with open(self.results / f"server-{self.index}.log", "wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def _ready(self) -> bool:
        if self.transport == "nbd":
            return _is_socket(self.sock)
        # `serve --ublk` prints "  ublk:    /dev/ublkbN" once the disk exists.
        for line in (self.results / f"server-{self.index}.log").read_text(errors="replace").splitlines():
            if line.startswith("  ublk:"):
                self.path = line.split(":", 1)[1].strip()
                return os.path.exists(self.path)
        return False

    def wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not self._ready():
            if self.proc.poll() is not None:
                raise GuestSetupError(
                    f"device server {self.index} exited ({self.proc.returncode}) before "
                    f"serving: {self._log_tail()}"
                )
            if time.monotonic() > deadline:
                raise GuestSetupError(
                    f"device server {self.index} made no socket in {SERVER_START_TIMEOUT_S:g} s: "
                    f"{self._log_tail()}"
                )
            time.sleep(0.1)

    def _log_tail(self) -> str:
        try:
            text = (self.results / f"server-{self.index}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-10:])

    def attach(self) -> None:
        if self.transport != "nbd":
            return  # the ublk server made the disk itself
        _sh(
            [
                "nbd-client",
                "-unix",
                self.sock,
                self.nbd,
                "-b",
                "4096",
                "-t",
                str(self.nbd_timeout_s),
            ]
        )
        self.attached = True

    def http_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                _http_get(self.http + "/metrics", timeout=5.0)
                return True
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline or (self.proc and self.proc.poll() is not None):
                    return False
                time.sleep(0.2)

    def detach(self) -> None:
        if self.attached:
            _sh(["nbd-client", "-d", self.nbd], timeout=30.0, check=False)
            self.attached = False

    def save_snapshots(self) -> None:
        for path, name in (("/metrics", f"metrics-{self.index}.prom"),
                           ("/api/v1/device", f"device-{self.index}.json")):
            try:
                body = _http_get(self.http + path)
            except (OSError, urllib.error.URLError) as exc:
                body = f"# unavailable: {exc}\n".encode()
                name += ".error"
            (self.results / name).write_bytes(body)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20.0)
        except subprocess.TimeoutExpired:
            _say(f"device server {self.index} ignored SIGTERM; killing it")
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _is_socket(path: str) -> bool:
    try:
        return os.stat(path).st_mode & 0o170000 == 0o140000
    except OSError:
        return False


def _run_streamed(argv: Sequence[str], env: dict[str, str], cwd: str, log_path: Path) -> int:
    """Run the user's command, copying its output to our stdout and a log."""
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
        )
    except FileNotFoundError as exc:
        _say(f"command not found: {exc}")
        return EXIT_COMMAND_NOT_FOUND
    assert proc.stdout is not None
    out = sys.stdout.buffer
    with open(log_path, "wb") as log:
        while chunk := os.read(proc.stdout.fileno(), 65536):
            out.write(chunk)
            out.flush()
            log.write(chunk)
            log.flush()
    return proc.wait()


def main(spec_path: Path) -> int:
    """Run the spec at ``spec_path`` (written by the host side); returns the command's exit code."""
    spec = json.loads(spec_path.read_text())
    results = Path(spec["results_dir"])
    _say(f"guest up (Linux {os.uname().release})")
    # Kernel messages share the serial console with the command's output:
    # from now on only errors and worse go to the console; all of it is in
    # dmesg.txt afterwards.
    try:
        Path("/proc/sys/kernel/printk").write_text("4\n")
    except OSError:
        pass

    python_bin = str(Path(spec["python"]).parent)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([python_bin, env.get("PATH", ""), "/usr/sbin", "/sbin"])
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PACKAGE_PARENT), env.get("PYTHONPATH", "")) if p
    )
    devices = [GuestDevice(i, c, spec, results) for i, c in enumerate(spec["configs"])]
    exit_code = EXIT_HARNESS_ERROR
    try:
        try:
            _guest_setup(devices, env)
        except (GuestSetupError, OSError, subprocess.TimeoutExpired) as exc:
            _say(f"set-up failed: {exc}")
            (results / GUEST_ERROR_FILE).write_text(f"{exc}\n")
            (results / EXIT_CODE_FILE).write_text(f"{EXIT_HARNESS_ERROR}\n")
            return EXIT_HARNESS_ERROR
        env["BLOCKEMU_RESULTS"] = str(results)
        env["BLOCKEMU_NDEVS"] = str(len(devices))
        for dev in devices:
            env[f"BLOCKEMU_DEV{dev.index}"] = dev.path
            env[f"BLOCKEMU_HTTP{dev.index}"] = dev.http
        if spec["interactive"]:
            shell_bin = shutil.which("bash") or "/bin/sh"
            _say("devices: " + ", ".join(f"$BLOCKEMU_DEV{d.index}={d.path}" for d in devices))
            _say("exit the shell to detach the devices and power off")
            exit_code = subprocess.call([shell_bin, "-i"], env=env, cwd=spec["cwd"])
        else:
            _say(f"running: {shlex.join(spec['command'])}")
            exit_code = _run_streamed(spec["command"], env, spec["cwd"], results / COMMAND_LOG)
        _say(f"command exited with {exit_code}")
        # Written before tear-down, so a hang there cannot lose it.
        (results / EXIT_CODE_FILE).write_text(f"{exit_code}\n")
        return exit_code
    finally:
        _guest_teardown(devices, results)
        _say(f"done (exit code {exit_code}); results in {results}")


def _guest_setup(devices: list[GuestDevice], env: dict[str, str]) -> None:
    if any(dev.transport == "nbd" for dev in devices):
        _sh(["modprobe", "nbd", f"nbds_max={max(MIN_NBDS, len(devices))}"])
    if any(dev.transport == "ublk" for dev in devices):
        _sh(["modprobe", "ublk_drv"])
    # F2FS is what the tests are for; load it up front so a missing module
    # is a clear set-up error rather than a mount failure later.
    _sh(["modprobe", "f2fs"])
    # Memory-backed device stores map their whole capacity up front (sparse:
    # pages appear only when written).  An 8 GiB map in a 2 GiB guest is
    # refused by the default overcommit heuristic, so always allow it.
    Path("/proc/sys/vm/overcommit_memory").write_text("1\n")
    # Unix sockets cannot live on the 9p-shared folders.
    GUEST_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
    _sh(["mount", "-t", "tmpfs", "-o", "mode=0755", "blockemu", str(GUEST_SOCKET_DIR)])
    for dev in devices:
        dev.start(env)
    for dev in devices:
        dev.wait_ready()
        dev.attach()
        http = "HTTP up" if dev.http_ready(timeout=10.0) else "no HTTP"
        _say(f"{dev.path} <- {dev.config} ({dev.transport}, {http} at {dev.http})")


def _guest_teardown(devices: list[GuestDevice], results: Path) -> None:
    # Each step is best-effort: tear-down must not hide the command's result.
    subprocess.run(["sync"], check=False)
    for dev in devices:
        try:
            dev.detach()
        except (OSError, subprocess.TimeoutExpired) as exc:
            _say(f"detaching {dev.nbd} failed: {exc}")
    # After detaching, so the snapshot includes the final flush/disconnect.
    for dev in devices:
        dev.save_snapshots()
    for dev in devices:
        try:
            dev.stop()
        except OSError as exc:
            _say(f"stopping device server {dev.index} failed: {exc}")
    try:
        dmesg = subprocess.run(["dmesg"], capture_output=True, timeout=30.0, check=False)
        (results / DMESG_FILE).write_bytes(dmesg.stdout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _say(f"saving dmesg failed: {exc}")
