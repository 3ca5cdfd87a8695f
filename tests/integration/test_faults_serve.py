"""Injected faults seen by a real NBD client: errno over the wire, metrics, the ctl command."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from blockemu.control.client import ControlClientError, ServedDevice, http_request

pytestmark = pytest.mark.integration
SECTOR = 4096


def ctl(served: ServedDevice, *words: str) -> Any:
    done = subprocess.run([sys.executable, "-m", "blockemu", "ctl", "--url", served.control.url, "faults", *words],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_faults_reach_the_client_with_their_errno(served: ServedDevice) -> None:
    import nbd as libnbd

    nbd = served.connect()
    nbd.pwrite(b"k" * SECTOR, 16 * SECTOR)
    status = ctl(served, "set", "--bad-range", f"{16 * SECTOR}:{SECTOR}:read:EIO", "--read-only", "on")
    assert status["read_only"] is True and status["bad_ranges"][0]["offset"] == 16 * SECTOR
    with pytest.raises(libnbd.Error) as bad_read:
        nbd.pread(SECTOR, 16 * SECTOR)
    assert bad_read.value.errno == "EIO"  # libnbd names the errno
    with pytest.raises(libnbd.Error) as refused_write:
        nbd.pwrite(b"x" * SECTOR, 0)
    assert refused_write.value.errno == "EPERM"  # libnbd names the errno
    assert nbd.pread(SECTOR, 15 * SECTOR) == bytes(SECTOR)  # outside the bad range
    ctl(served, "set", "--offline", "on")
    with pytest.raises(libnbd.Error):
        nbd.flush()
    ctl(served, "clear")
    assert nbd.pread(SECTOR, 16 * SECTOR) == b"k" * SECTOR  # the failed write changed nothing
    nbd.shutdown()
    control = served.control
    assert control.metric("blockemu_faults_injected_total", op="read", kind="bad_range") == 1
    assert control.metric("blockemu_faults_injected_total", op="write", kind="read_only") == 1
    assert control.metric("blockemu_faults_injected_total", op="flush", kind="offline") == 1
    assert control.metric("blockemu_request_errors_total", op="read") == 1


# What libnbd reads for each errno a fault may carry: the configured one where
# NBD has it; EOVERFLOW goes as EIO (the plugin, blockemu/frontends/nbdkit/plugin.py),
# ENOTSUP as EINVAL (nbdkit answers ENOTSUP to a fast zero only).
NBD_DELIVERY = {"EIO": "EIO", "EPERM": "EPERM", "ENOMEM": "ENOMEM", "EINVAL": "EINVAL", "ENOSPC": "ENOSPC",
                "EOVERFLOW": "EIO", "ENOTSUP": "EINVAL", "ESHUTDOWN": "ESHUTDOWN"}


def test_each_fault_errno_as_the_nbd_client_reads_it(served: ServedDevice) -> None:
    import nbd as libnbd

    from blockemu.layers.faults import FAULT_ERRNOS

    nbd = served.connect()
    seen = {}
    for name in FAULT_ERRNOS:
        ctl(served, "set", "--error-rate", f"write=1:{name}")
        with pytest.raises(libnbd.Error) as info:
            nbd.pwrite(b"e" * SECTOR, 0)
        seen[name] = info.value.errno
    nbd.shutdown()
    assert seen == NBD_DELIVERY


def test_seeded_error_rate_repeats_over_nbd(served: ServedDevice) -> None:
    import nbd as libnbd

    def run() -> list[bool]:
        ctl(served, "set", "--seed", "9", "--error-rate", "read=0.25:ENOSPC")
        nbd = served.connect()
        outcomes = []
        for i in range(100):
            try:
                nbd.pread(SECTOR, i * SECTOR)
                outcomes.append(True)
            except libnbd.Error as err:
                assert err.errno == "ENOSPC"  # libnbd names the errno
                outcomes.append(False)
        nbd.shutdown()
        return outcomes

    first = run()
    assert 10 < first.count(False) < 45
    assert run() == first


def test_bad_fault_settings_are_400_and_change_nothing(served: ServedDevice) -> None:
    url = served.control.url + "/api/v1/faults"
    before = http_request(url)
    for body in (b'{"ops": {"read": {"error_rate": 2}}}', b"not json", b'{"offline": "yes"}'):
        with pytest.raises(ControlClientError, match="400"):
            http_request(url, "PUT", body)
    assert http_request(url) == before
    bad_cli = subprocess.run([sys.executable, "-m", "blockemu", "ctl", "--url", served.control.url, "faults", "set",
                              "--error-rate", "read=lots"], capture_output=True, text=True, timeout=60)
    assert bad_cli.returncode == 2 and "expected OP=RATE[:ERRNO]" in bad_cli.stderr


def test_each_injected_fault_is_one_line_of_the_serve_log(served: ServedDevice) -> None:
    import nbd as libnbd

    http_request(served.control.url + "/api/v1/faults", "PUT",
                 json.dumps({"ops": {"write": {"error_rate": 1.0}, "read": {"error_rate": 1.0}}}).encode())
    handle = served.connect()
    for attempt in range(3):
        with pytest.raises(libnbd.Error):
            handle.pwrite(b"x" * 4096, attempt * 4096)
    with pytest.raises(libnbd.Error):
        handle.pread(4096, 0)
    handle.shutdown()
    served.stop()
    log = list(served.output)
    assert not any("Traceback" in line for line in log), "\n".join(log)
    faults = [line for line in log if "injected fault" in line]
    assert len(faults) == 4, "\n".join(log)
    assert sum("pwrite" in line for line in faults) == 3 and sum("pread" in line for line in faults) == 1


def test_a_bug_in_a_data_callback_still_logs_its_traceback(capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import types

    from blockemu.devices.base import DeviceError
    from blockemu.frontends.nbdkit import plugin

    errors: list[int] = []
    monkeypatch.setattr(plugin, "_nbdkit_module", types.SimpleNamespace(set_error=errors.append))
    try:
        raise DeviceError(errno.EIO, "refused")
    except DeviceError as err:
        plugin._fail(err)
    try:
        raise KeyError("a bug")
    except KeyError as err:
        plugin._fail(err)
    assert errors == [errno.EIO, errno.EIO]
    printed = capsys.readouterr().err
    assert printed.startswith("Traceback") and "KeyError: 'a bug'" in printed and "refused" not in printed
