"""Prerequisites of the VM tests: fail under CI=true, skip elsewhere."""

from __future__ import annotations

import shutil

import pytest

from blockemu import vm
from tests.conftest import require


def _vm_problem() -> str | None:
    """The first missing piece, as the one-line error blockemu.vm gives."""
    try:
        vm.find_kernel()
        vm.find_vng()
        vm.check_host_tools(need_devices=True)
    except vm.VmError as err:
        return str(err)
    return None


@pytest.fixture(scope="session")
def vm_ready() -> None:
    """Kernel, vng, qemu, nbdkit, nbd-client and the in-guest tools exist."""
    problem = _vm_problem()
    require(problem is None, problem or "")
    for tool, package in (("fio", "fio"), ("mkfs.f2fs", "f2fs-tools"), ("mkfs.ext4", "e2fsprogs")):
        found = shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin") is not None
        require(found, f"{tool} (apt-get install {package})")
