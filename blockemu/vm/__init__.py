"""Run commands against blockemu devices inside a real Linux kernel.

The host kernel may lack nbd/f2fs, so we boot Debian's Linux 6.12 (fetched by
``scripts/fetch_kernel.sh`` into ``.cache/kernel/``) under qemu with
virtme-ng (``vng``).  The guest sees the host's root filesystem read-only, so
it has the same venv, nbdkit, nbd-client, fio and f2fs-tools; a results
folder is shared read-write with ``--rwdir``.

- :mod:`~blockemu.vm.host`: finds the kernel and tools, writes the run spec,
  boots the VM and watches its console (:func:`run`, :func:`shell`);
- :mod:`~blockemu.vm.guest`: the runner the guest starts (``python -m
  blockemu.vm _guest SPEC``): it loads modules, starts one device server per
  config, attaches each as ``/dev/nbdN`` (or lets ublk make ``/dev/ublkbN``),
  runs the user's command, then saves metrics and dmesg into the results
  folder and tears everything down;
- :mod:`~blockemu.vm.spec`: the files and console lines both sides agree on.

The command's exit code comes back through a file in the results folder,
because vng's own exit status is not reliable (with the serial-console
fallback it is always 255).  ``blockemu vm run|shell`` is the command line
(its parser lives with the other commands).

Only the standard library is imported here so the package can be imported
(and the guest side can run) without the rest of the package's dependencies.
"""

from blockemu.vm.guest import GuestDevice, server_argv
from blockemu.vm.host import (
    DEFAULT_MEM,
    DEFAULT_TIMEOUT_S,
    TRANSPORTS,
    VmError,
    VmResult,
    check_host_tools,
    device_transport,
    find_kernel,
    find_vng,
    panicked_before_guest_up,
    run,
    shell,
)
from blockemu.vm.spec import (
    COMMAND_LOG,
    CONSOLE_LOG,
    DMESG_FILE,
    EXIT_CODE_FILE,
    EXIT_COMMAND_NOT_FOUND,
    EXIT_HARNESS_ERROR,
    EXIT_TIMEOUT,
    GUEST_ERROR_FILE,
)

__all__ = [
    "COMMAND_LOG",
    "CONSOLE_LOG",
    "DEFAULT_MEM",
    "DEFAULT_TIMEOUT_S",
    "DMESG_FILE",
    "EXIT_CODE_FILE",
    "EXIT_COMMAND_NOT_FOUND",
    "EXIT_HARNESS_ERROR",
    "EXIT_TIMEOUT",
    "GUEST_ERROR_FILE",
    "TRANSPORTS",
    "GuestDevice",
    "VmError",
    "VmResult",
    "check_host_tools",
    "device_transport",
    "find_kernel",
    "find_vng",
    "panicked_before_guest_up",
    "run",
    "server_argv",
    "shell",
]
