"""Run commands against blockemu devices inside a real Linux kernel.

The host kernel may lack nbd/f2fs, so we boot Debian's Linux 6.12 (fetched by
``scripts/fetch_kernel.sh`` into ``.cache/kernel/``) under qemu with
virtme-ng (``vng``).  The guest sees the host's root filesystem read-only, so
it has the same venv, nbdkit, nbd-client, fio and f2fs-tools; a results
folder is shared read-write with ``--rwdir``.

Inside the guest this same module runs again (``python -m blockemu.vm
_guest SPEC``): it loads modules, starts one device server per config on a
unix socket, attaches each with ``nbd-client`` as ``/dev/nbdN``, runs the
user's command, then saves metrics and dmesg into the results folder and
tears everything down.  The command's exit code comes back through a file
in the results folder, because vng's own exit status is not reliable (with
the serial-console fallback it is always 255).

Only the standard library is imported here so the module can be imported
(and the guest side can run) without the rest of the package's dependencies.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

# The package lives in <repo>/blockemu/, so the repo root (and its .cache/) is
# two levels up from this file.
PACKAGE_PARENT = Path(__file__).resolve().parent.parent
REPO_ROOT = PACKAGE_PARENT

DEFAULT_MEM = "2G"
DEFAULT_TIMEOUT_S = 600.0
# Device i serves HTTP on 127.0.0.1:(HTTP_BASE_PORT + i) inside the guest.
HTTP_BASE_PORT = 9250
# Seconds a single NBD request may take before the kernel fails it: a hung
# server must turn into I/O errors, not a hung guest.  Generous, because a
# Python server under software emulation is slow; BLOCKEMU_NBD_TIMEOUT
# overrides it (a realtime model slowed down a lot may need more).
NBD_TIMEOUT_S = 60
# nbd's default nbds_max is 16; we never ask for fewer.
MIN_NBDS = 16
# How long a device server may take to create its socket.  Under TCG,
# starting Python + nbdkit + imports takes several seconds.
SERVER_START_TIMEOUT_S = 120.0

# Exit codes the harness itself produces (mirroring timeout(1)'s 124).
EXIT_TIMEOUT = 124
EXIT_HARNESS_ERROR = 125
EXIT_COMMAND_NOT_FOUND = 127

# Lines the in-guest runner prints start with this; the first one tells the
# host that boot is over (everything before is the kernel boot log, which is
# only shown in verbose mode).
GUEST_TAG = "blockemu-vm:"
GUEST_UP_MARK = "] guest up ("
# The runner's last line; what follows is the guest powering off.
GUEST_DONE_MARK = "] done (exit code "

# A guest kernel that panics before the in-guest runner reports in ran
# nothing of ours, so booting again is safe.  Under TCG an early-boot oops
# (an int3 left by the kernel's text patching, seen once in sched_clock_cpu)
# happens now and then; one more boot is what a person would do.
BOOT_ATTEMPTS = 2
EARLY_PANIC_MARK = "Kernel panic - not syncing"

# Files in the results folder.
SPEC_FILE = "vm-spec.json"
EXIT_CODE_FILE = "exit_code"
CONSOLE_LOG = "console.log"
COMMAND_LOG = "command.log"
DMESG_FILE = "dmesg.txt"
GUEST_ERROR_FILE = "guest_error.txt"
SHELL_WRAPPER = "guest-shell.sh"

# What a run writes into the results folder, removed before a new run there.
STALE_PATTERNS = (
    EXIT_CODE_FILE, GUEST_ERROR_FILE, COMMAND_LOG, DMESG_FILE, CONSOLE_LOG,
    "metrics-*.prom*", "device-*.json*", "server-*.log",
)

SETUP_KERNEL_HINT = "run `make kernel` (scripts/fetch_kernel.sh)"
# How a device reaches the guest kernel: NBD (nbdkit + nbd-client, /dev/nbdN)
# or ublk (`blockemu serve --ublk`, /dev/ublkbN).  "auto" picks ublk for zoned
# models, since NBD cannot carry zones, and NBD for the rest.
TRANSPORTS = ("auto", "nbd", "ublk")
ZONED_DEVICE_TYPES = ("zns",)
CONSOLE_TAIL_LINES = 60


class VmError(RuntimeError):
    """The VM could not be started (missing kernel, qemu, vng, ...)."""


@dataclasses.dataclass
class VmResult:
    """Outcome of one :func:`run`."""

    exit_code: int
    results_dir: Path
    console_tail: str
    timed_out: bool = False
    # Seconds from launching vng until the in-guest runner reported in
    # (None if it never did).
    boot_s: float | None = None
    elapsed_s: float = 0.0


# ---------------------------------------------------------------------------
# Host side: finding the pieces
# ---------------------------------------------------------------------------


def cache_dir() -> Path:
    """The project cache folder (same rule as scripts/fetch_kernel.sh)."""
    env = os.environ.get("BLOCKEMU_CACHE_DIR")
    return Path(env) if env else REPO_ROOT / ".cache"


def find_kernel() -> Path:
    """Path of the vmlinuz to boot; its modules must be in ../lib/modules/.

    virtme-ng walks up from the image to the first folder holding
    lib/modules/<release> and symlinks that into the guest's /lib/modules,
    so the cache layout (boot/ next to lib/) is all the guest needs.
    """
    env = os.environ.get("BLOCKEMU_KERNEL")
    if env:
        image = Path(env)
        if not image.is_file():
            raise VmError(f"BLOCKEMU_KERNEL={env} does not exist; {SETUP_KERNEL_HINT}")
        return image
    kernel_dir = cache_dir() / "kernel"
    release_file = kernel_dir / "release"
    release = release_file.read_text().strip() if release_file.is_file() else ""
    image = kernel_dir / "boot" / f"vmlinuz-{release}"
    if not release or not image.is_file():
        raise VmError(f"no Linux kernel in {kernel_dir}; {SETUP_KERNEL_HINT}")
    if not (kernel_dir / "lib" / "modules" / release / "modules.dep").is_file():
        raise VmError(
            f"kernel modules for {release} missing in {kernel_dir}; {SETUP_KERNEL_HINT}"
        )
    return image


def find_vng() -> Path:
    """vng from the running venv first (it is a pip dependency), then PATH."""
    beside = Path(sys.executable).parent / "vng"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("vng")
    if found:
        return Path(found)
    raise VmError("vng (virtme-ng) not found; run `make venv` (pip install 'virtme-ng>=1.42')")


def _which_admin(tool: str) -> str | None:
    # nbd-client and depmod live in sbin, which a normal user's PATH lacks.
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which(tool, path=path)


def check_host_tools(need_devices: bool) -> None:
    """One-line errors naming the package that provides each missing tool."""
    if not shutil.which("qemu-system-x86_64"):
        raise VmError("qemu-system-x86_64 not found; apt-get install qemu-system-x86")
    if need_devices:
        if not shutil.which("nbdkit"):
            raise VmError("nbdkit not found; apt-get install nbdkit nbdkit-plugin-python")
        if not _which_admin("nbd-client"):
            raise VmError("nbd-client not found; apt-get install nbd-client")


# ---------------------------------------------------------------------------
# The device server launcher (the one place that knows how to serve a config)
# ---------------------------------------------------------------------------


def device_transport(config: Path, transport: str) -> str:
    """"nbd" or "ublk" for CONFIG; ``auto``: ublk for zoned device types."""
    if transport not in TRANSPORTS:
        raise VmError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
    if transport != "auto":
        return transport
    try:
        with open(config, "rb") as f:
            device_type = tomllib.load(f).get("device", {}).get("type")
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise VmError(f"config {config}: {exc}") from None
    return "ublk" if device_type in ZONED_DEVICE_TYPES else "nbd"


def _per_device(transport: str, configs: Sequence[Path]) -> list[str]:
    """"ublk" applies to every device; "nbd,ublk" names one transport per config."""
    choices = transport.split(",")
    if len(choices) == 1:
        return choices * len(configs)
    if len(choices) != len(configs):
        raise VmError(f"--transport {transport}: {len(choices)} transports for {len(configs)} configs")
    return choices


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


# ---------------------------------------------------------------------------
# Host side: running the VM
# ---------------------------------------------------------------------------


def default_results_dir() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path.cwd() / "results" / f"vm-{stamp}-{os.getpid()}"


def _check_shareable(path: Path) -> None:
    # vng passes the folder on the kernel command line and to qemu's -fsdev,
    # neither of which can quote these characters.
    bad = [c for c in " \t\n,=\"'`" if c in str(path)]
    if bad:
        raise VmError(f"results folder {path} must not contain any of {bad!r}")


def _prepare(
    configs: Sequence[Path],
    command: Sequence[str],
    results_dir: Path | None,
    interactive: bool,
    extra_serve_args: Sequence[str],
    transport: str = "auto",
) -> tuple[Path, Path, Path]:
    """Common checks and spec writing; returns (vng, kernel, results_dir)."""
    kernel = find_kernel()
    vng = find_vng()
    check_host_tools(need_devices=bool(configs))
    config_paths = [Path(c).resolve() for c in configs]
    for config in config_paths:
        if not config.is_file():
            raise VmError(f"config {config} not found")
    results = (results_dir or default_results_dir()).resolve()
    _check_shareable(results)
    results.mkdir(parents=True, exist_ok=True)
    # Files from an earlier run into the same folder would be mistaken for
    # this run's (a stale exit code above all).
    for pattern in STALE_PATTERNS:
        for stale in results.glob(pattern):
            stale.unlink(missing_ok=True)
    spec = {
        "python": sys.executable,
        "configs": [str(c) for c in config_paths],
        "command": list(command),
        "cwd": str(Path.cwd()),
        "results_dir": str(results),
        "interactive": interactive,
        "extra_serve_args": list(extra_serve_args),
        "transports": [device_transport(c, t) for c, t in zip(config_paths, _per_device(transport, config_paths),
                                                                  strict=True)],
        "nbd_timeout_s": int(os.environ.get("BLOCKEMU_NBD_TIMEOUT", NBD_TIMEOUT_S)),
    }
    (results / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
    return vng, kernel, results


def _guest_entry_argv(results: Path) -> list[str]:
    """How the guest starts this module's guest side."""
    return [
        "env",
        f"PYTHONPATH={PACKAGE_PARENT}",
        sys.executable,
        "-m",
        "blockemu.vm",
        "_guest",
        str(results / SPEC_FILE),
    ]


def _vng_argv(vng: Path, kernel: Path, results: Path, mem: str, cpus: int | None) -> list[str]:
    argv = [
        str(vng),
        "--run",
        str(kernel),
        # The guest must be root to load modules and attach nbd devices,
        # whoever runs the host side.
        "--user",
        "root",
        # virtiofsd is tried first otherwise; where it cannot start, that
        # costs ~3 s of waiting before vng falls back to 9p anyway.
        "--force-9p",
        "--memory",
        mem,
        "--cpus",
        str(cpus or min(2, os.cpu_count() or 1)),
        "--rwdir",
        str(results),
    ]
    # KVM only on request: the /dev/kvm of some hosts (PVM) cannot run a
    # stock kernel, and software emulation works everywhere.
    if os.environ.get("BLOCKEMU_VM_KVM") != "1":
        argv.append("--disable-kvm")
    return argv


def _vng_env(vng: Path) -> dict[str, str]:
    # vng starts virtme-run through PATH, which must then find the one next
    # to it in the venv.
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(vng.parent), env.get("PATH", "")])
    return env


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill, every process in PROC's group (vng, qemu, ...)."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            # Reap the leader: as a zombie it would keep the group "alive".
            proc.poll()
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def run(
    configs: Sequence[Path],
    command: Sequence[str],
    *,
    mem: str = DEFAULT_MEM,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    results_dir: Path | None = None,
    stream: bool = True,
    extra_serve_args: Sequence[str] = (),
    cpus: int | None = None,
    verbose: bool = False,
    transport: str = "auto",
) -> VmResult:
    """Boot the VM, attach one device per config (NBD or ublk: ``transport``), run COMMAND in it.

    The guest sees /dev/nbdN or /dev/ublkbN in $BLOCKEMU_DEVn, the device's HTTP API in
    $BLOCKEMU_HTTPn, and the results folder in $BLOCKEMU_RESULTS.  With
    ``stream``, the command's output (and, with ``verbose``, the boot log)
    is copied to our stdout as it arrives.  The VM is killed after
    ``timeout_s`` seconds; no qemu process outlives this call.
    """
    if not command:
        raise VmError("no command to run in the VM")
    vng, kernel, results = _prepare(configs, command, results_dir, False, extra_serve_args, transport)
    guest_cmd = shlex.join(_guest_entry_argv(results))
    # -v: without it vng's serial-console fallback (used when the guest has
    # no udev to name the virtio ports) swallows the command's output.
    argv = [*_vng_argv(vng, kernel, results, mem, cpus), "--verbose", "--", guest_cmd]

    out = _stdout_writer() if stream else None
    with _sigterm_raises():
        result = _run_vm(argv, vng, results, timeout_s, out, verbose)
        attempt = 1
        while attempt < BOOT_ATTEMPTS and panicked_before_guest_up(result):
            kept = results / f"console.attempt{attempt}.log"
            (results / CONSOLE_LOG).rename(kept)
            attempt += 1
            print(f"blockemu vm: the guest kernel panicked before the harness started (console in {kept}); "
                  f"booting again, attempt {attempt} of {BOOT_ATTEMPTS}", file=sys.stderr)
            result = _run_vm(argv, vng, results, timeout_s, out, verbose)
        return result


def panicked_before_guest_up(result: VmResult) -> bool:
    """True when the guest kernel died before the in-guest runner reported in: nothing of ours ran."""
    return result.boot_s is None and not result.timed_out and EARLY_PANIC_MARK in result.console_tail


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into SystemExit while the VM runs.

    The VM runs in its own session, so nothing else would stop it if we died
    of SIGTERM (CI cancelling a job, `timeout`); as an exception, it unwinds
    through the code that kills the VM.  Only the main thread can do this.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        # None: a handler installed from C, which cannot be put back.
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _run_vm(
    argv: list[str],
    vng: Path,
    results: Path,
    timeout_s: float,
    out: Callable[[bytes], None] | None,
    verbose: bool,
) -> VmResult:
    tail: collections.deque[str] = collections.deque(maxlen=CONSOLE_TAIL_LINES)
    started = time.monotonic()
    boot_s: float | None = None
    timed_out = False
    showing = verbose
    with open(results / CONSOLE_LOG, "wb") as console:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=_vng_env(vng),
            # Own process group, so the whole tree (vng, virtme-run, qemu)
            # can be killed at once.
            start_new_session=True,
        )
        assert proc.stdout is not None
        try:
            selector = selectors.DefaultSelector()
            selector.register(proc.stdout, selectors.EVENT_READ)
            pending = b""
            while True:
                remaining = started + timeout_s - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                if not selector.select(timeout=min(remaining, 1.0)):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                console.write(chunk)
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace").rstrip("\r")
                    tail.append(line)
                    if boot_s is None and GUEST_TAG in line and GUEST_UP_MARK in line:
                        boot_s = time.monotonic() - started
                        showing = True
                    if showing and out is not None:
                        out(raw.rstrip(b"\r") + b"\n")
                    if GUEST_TAG in line and GUEST_DONE_MARK in line:
                        # The power-off messages are only in console.log.
                        showing = verbose
            if pending:
                tail.append(pending.decode("utf-8", "replace").rstrip("\r"))
                if showing and out is not None:
                    out(pending)
            selector.close()
        finally:
            # Normal exit: vng is done, but make sure nothing it started
            # lingers.  Timeout or Ctrl-C: this is what kills the guest.
            _kill_tree(proc)
            proc.wait()
            proc.stdout.close()

    elapsed = time.monotonic() - started
    console_tail = "\n".join(tail)
    exit_code = _read_exit_code(results)
    if timed_out:
        exit_code = EXIT_TIMEOUT
        print(
            f"blockemu vm: guest timed out after {timeout_s:g} s and was killed; "
            f"console tail:\n{console_tail}",
            file=sys.stderr,
        )
    elif exit_code is None:
        exit_code = EXIT_HARNESS_ERROR
        print(
            f"blockemu vm: guest ended without reporting an exit code "
            f"(vng exit {proc.returncode}); console tail:\n{console_tail}",
            file=sys.stderr,
        )
    boot = f"booted in {boot_s:.1f} s, " if boot_s is not None else ""
    print(
        f"blockemu vm: exit code {exit_code} ({boot}{elapsed:.1f} s in all); results in {results}",
        file=sys.stderr,
    )
    return VmResult(
        exit_code=exit_code,
        results_dir=results,
        console_tail=console_tail,
        timed_out=timed_out,
        boot_s=boot_s,
        elapsed_s=elapsed,
    )


def _stdout_writer() -> Callable[[bytes], None]:
    """Write bytes to our stdout as they come.

    Raw bytes where possible (the command's output need not be UTF-8); a
    text-only stdout (e.g. replaced by a StringIO) gets decoded text.
    """
    binary: IO[bytes] | None = getattr(sys.stdout, "buffer", None)

    def write(data: bytes) -> None:
        if binary is not None:
            binary.write(data)
            binary.flush()
        else:
            sys.stdout.write(data.decode("utf-8", "replace"))
            sys.stdout.flush()

    return write


def _read_exit_code(results: Path) -> int | None:
    try:
        return int((results / EXIT_CODE_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def shell(
    configs: Sequence[Path],
    *,
    mem: str = DEFAULT_MEM,
    results_dir: Path | None = None,
    extra_serve_args: Sequence[str] = (),
    cpus: int | None = None,
) -> int:
    """Interactive root shell in the VM with the devices attached.

    Returns the shell's exit code.  The devices are detached and metrics
    saved when the shell exits.
    """
    vng, kernel, results = _prepare(configs, [], results_dir, True, extra_serve_args)
    # vng's interactive mode runs `su -s SHELL`; our "shell" is a wrapper
    # that sets the devices up, runs a real shell, then tears down.
    wrapper = results / SHELL_WRAPPER
    wrapper.write_text("#!/bin/sh\nexec " + shlex.join(_guest_entry_argv(results)) + "\n")
    wrapper.chmod(0o755)
    argv = [*_vng_argv(vng, kernel, results, mem, cpus), "--shell", str(wrapper)]
    # Stays in our process group: qemu reads the terminal, which only the
    # foreground group may do.
    completed = subprocess.run(argv, env=_vng_env(vng), check=False)
    exit_code = _read_exit_code(results)
    if exit_code is None:
        exit_code = completed.returncode or EXIT_HARNESS_ERROR
    print(f"blockemu vm: results in {results}", file=sys.stderr)
    return exit_code


# ---------------------------------------------------------------------------
# Guest side (runs inside the VM, as root)
# ---------------------------------------------------------------------------

GUEST_SOCKET_DIR = Path("/run/blockemu")


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


def _guest_main(spec_path: Path) -> int:
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


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def _add_vm_commands(vm_subparsers: argparse._SubParsersAction) -> None:
    run_parser = vm_subparsers.add_parser(
        "run",
        help="boot Linux in a VM with the devices attached and run a command",
        usage="%(prog)s [--mem 2G] [--timeout S] CONFIG [CONFIG ...] -- COMMAND [ARGS...]",
    )
    run_parser.add_argument("--mem", default=DEFAULT_MEM, help="guest memory (default %(default)s)")
    run_parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
        help="kill the VM after S seconds (default %(default)g)",
    )
    run_parser.add_argument("--results", type=Path, help="results folder (default ./results/vm-*)")
    run_parser.add_argument("--verbose", "-v", action="store_true", help="show the boot log")
    run_parser.add_argument(
        "--transport", default="auto", metavar="{auto,nbd,ublk}[,...]",
        help="how devices reach the guest: nbd, ublk, or auto (ublk for zoned models; default); "
             "one for all devices or a comma-separated list, one per config",
    )
    # argparse cannot split "CONFIG... -- COMMAND..." itself (the command
    # would be taken as more configs), so take everything and split on "--".
    run_parser.add_argument("items", nargs=argparse.REMAINDER, metavar="CONFIG ... -- COMMAND")
    run_parser.set_defaults(func=_cli_run)

    shell_parser = vm_subparsers.add_parser(
        "shell", help="interactive shell in a VM with the devices attached"
    )
    shell_parser.add_argument("--mem", default=DEFAULT_MEM, help="guest memory (default %(default)s)")
    shell_parser.add_argument("--results", type=Path, help="results folder (default ./results/vm-*)")
    shell_parser.add_argument("configs", nargs="*", type=Path, metavar="CONFIG")
    shell_parser.set_defaults(func=_cli_shell)


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register `vm run` and `vm shell` on a top-level subparsers object.

    Each leaf parser sets ``func``: call ``args.func(args)`` and use its
    return value as the process exit code.
    """
    vm_parser = subparsers.add_parser("vm", help="run commands against devices in a Linux VM")
    vm_subparsers = vm_parser.add_subparsers(dest="vm_command", metavar="{run,shell}")
    vm_subparsers.required = True
    _add_vm_commands(vm_subparsers)


def _cli_run(args: argparse.Namespace) -> int:
    items: list[str] = list(args.items)
    if "--" not in items:
        print("blockemu vm run: expected CONFIG [CONFIG ...] -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    split = items.index("--")
    configs, command = items[:split], items[split + 1:]
    if not command:
        print("blockemu vm run: no COMMAND after --", file=sys.stderr)
        return 2
    try:
        result = run(
            [Path(c) for c in configs], command,
            mem=args.mem, timeout_s=args.timeout, results_dir=args.results, verbose=args.verbose,
            transport=args.transport,
        )
    except VmError as exc:
        print(f"blockemu vm: {exc}", file=sys.stderr)
        return EXIT_HARNESS_ERROR
    except KeyboardInterrupt:
        # run() has already killed the VM on its way out.
        print("blockemu vm: interrupted; the VM was stopped", file=sys.stderr)
        return 130
    return result.exit_code


def _cli_shell(args: argparse.Namespace) -> int:
    try:
        return shell(args.configs, mem=args.mem, results_dir=args.results)
    except VmError as exc:
        print(f"blockemu vm: {exc}", file=sys.stderr)
        return EXIT_HARNESS_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m blockemu.vm run|shell ...` (and the hidden guest entry)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_guest"] and len(argv) == 2:
        return _guest_main(Path(argv[1]))
    parser = argparse.ArgumentParser(prog="python -m blockemu.vm")
    subparsers = parser.add_subparsers(dest="vm_command", metavar="{run,shell}")
    subparsers.required = True
    _add_vm_commands(subparsers)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
