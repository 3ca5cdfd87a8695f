"""The host side of the VM harness: find the kernel and tools, write the run spec, boot, watch, clean up.

See :mod:`blockemu.vm` for the whole picture; the guest side is
:mod:`blockemu.vm.guest`.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

from blockemu.vm.spec import (
    COMMAND_LOG,
    CONSOLE_LOG,
    DMESG_FILE,
    EXIT_CODE_FILE,
    EXIT_HARNESS_ERROR,
    EXIT_TIMEOUT,
    GUEST_DONE_MARK,
    GUEST_ERROR_FILE,
    GUEST_TAG,
    GUEST_UP_MARK,
    PACKAGE_PARENT,
    REPO_ROOT,
    SHELL_WRAPPER,
    SPEC_FILE,
)

DEFAULT_MEM = "2G"
DEFAULT_TIMEOUT_S = 600.0
# Seconds a single NBD request may take before the kernel fails it: a hung
# server must turn into I/O errors, not a hung guest.  Generous, because a
# Python server under software emulation is slow; BLOCKEMU_NBD_TIMEOUT
# overrides it (a realtime model slowed down a lot may need more).
NBD_TIMEOUT_S = 60

# A guest kernel that panics before the in-guest runner reports in ran
# nothing of ours, so booting again is safe.  Under TCG an early-boot oops
# (an int3 left by the kernel's text patching, seen once in sched_clock_cpu)
# happens now and then; one more boot is what a person would do.
BOOT_ATTEMPTS = 2
EARLY_PANIC_MARK = "Kernel panic - not syncing"

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
# Finding the pieces
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
# Transports: how each device reaches the guest kernel
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



# What `blockemu serve` takes when a config leaves them out (DeviceSection and
# StoreSection in blockemu/config/device.py); vm/ imports nothing of blockemu.
DEFAULT_CAPACITY_MIB = 8192
DEFAULT_BACKEND = "memory"
_MEM_UNITS_MIB = {"": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


def mem_mib(mem: str) -> int | None:
    """MiB of guest memory in ``--mem``'s syntax (qemu's ``-m``: ``2G``, ``2048M``, a bare number is MiB).

    None for what this does not read; qemu judges it.
    """
    text = mem.strip().upper()
    number = text.rstrip("MGT")
    unit = text[len(number):]
    if not number.isdigit() or unit not in _MEM_UNITS_MIB:
        return None
    return int(number) * _MEM_UNITS_MIB[unit]


def memory_mib(config: Path, extra_serve_args: Sequence[str] = ()) -> int:
    """MiB of guest memory the device can fill: its capacity on the memory store, 0 on a file.

    zram keeps its (compressed) pages in the model whatever the store, up to
    ``mem_limit_mib`` when one is set.  ``--set`` overrides in
    ``extra_serve_args`` apply, as they do to the server in the guest.
    """
    try:
        with open(config, "rb") as f:
            raw = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise VmError(f"config {config}: {exc}") from None
    settings: dict[str, object] = {
        "device.type": raw.get("device", {}).get("type", "ufs"),
        "device.capacity_mib": raw.get("device", {}).get("capacity_mib", DEFAULT_CAPACITY_MIB),
        "store.backend": raw.get("store", {}).get("backend", DEFAULT_BACKEND),
        "zram.mem_limit_mib": raw.get("zram", {}).get("mem_limit_mib", 0),
    }
    overrides = [value for flag, value in itertools.pairwise(extra_serve_args) if flag == "--set"]
    overrides += [arg.removeprefix("--set=") for arg in extra_serve_args if arg.startswith("--set=")]
    for override in overrides:
        key, _, setting = override.partition("=")
        if key in settings:
            settings[key] = setting
    try:
        capacity, limit = int(str(settings["device.capacity_mib"])), int(str(settings["zram.mem_limit_mib"]))
    except ValueError:
        return 0  # the server refuses the config itself, with a better message
    if settings["device.type"] == "zram":
        return min(capacity, limit) if limit > 0 else capacity
    return capacity if settings["store.backend"] == "memory" else 0


def memory_warning(configs: Sequence[Path], mem: str, extra_serve_args: Sequence[str] = ()) -> str | None:
    """One line when the devices can hold more in memory than the guest has (the server runs in the guest)."""
    guest = mem_mib(mem)
    each = [(Path(config).name, memory_mib(Path(config), extra_serve_args)) for config in configs]
    total = sum(mib for _, mib in each)
    if guest is None or total <= guest:
        return None
    held = ", ".join(f"{name} {mib} MiB" for name, mib in each if mib)
    return (f"blockemu vm: warning: the devices can hold {total} MiB in memory ({held}), more than the guest's "
            f"{guest} MiB (--mem {mem}): filling them gets the server OOM-killed; raise --mem or use "
            f'[store] backend = "file"')


# ---------------------------------------------------------------------------
# Running the VM
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
    _warn_memory(configs, mem, extra_serve_args)
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


def _warn_memory(configs: Sequence[Path], mem: str, extra_serve_args: Sequence[str]) -> None:
    warning = memory_warning(configs, mem, extra_serve_args)
    if warning:
        print(warning, file=sys.stderr)


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
    _warn_memory(configs, mem, extra_serve_args)
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
