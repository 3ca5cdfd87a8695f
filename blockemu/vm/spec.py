"""What the host side and the in-guest runner of the VM harness agree on.

The host writes a run spec into the results folder and boots the guest; the
guest reads it, serves the devices, runs the command and leaves its exit code
and logs in the same folder.  The names of those files, the lines the runner
prints and the exit codes the harness itself produces are defined here, once.
"""

from __future__ import annotations

from pathlib import Path

# The package lives in <repo>/blockemu/, so the repo root (and its .cache/) is
# two levels up from the vm package.
PACKAGE_PARENT = Path(__file__).resolve().parents[2]
REPO_ROOT = PACKAGE_PARENT

# Device i serves HTTP on 127.0.0.1:(HTTP_BASE_PORT + i) inside the guest.
HTTP_BASE_PORT = 9250

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

# Files in the results folder.
SPEC_FILE = "vm-spec.json"
EXIT_CODE_FILE = "exit_code"
CONSOLE_LOG = "console.log"
COMMAND_LOG = "command.log"
DMESG_FILE = "dmesg.txt"
GUEST_ERROR_FILE = "guest_error.txt"
SHELL_WRAPPER = "guest-shell.sh"
