"""nbdkit python-plugin callbacks, adapting a :class:`DeviceRuntime`.

Loaded inside nbdkit's embedded interpreter by ``plugins/blockemu.py``; the
``nbdkit`` module only exists there, so it is imported lazily.  Plugin keys:

  config=PATH            device configuration (TOML), required
  set=SECTION.KEY=VALUE  override, repeatable
  http=HOST:PORT         control API and /metrics; empty to disable.  Off
                         loopback it needs a bearer token in $BLOCKEMU_HTTP_TOKEN
                         (blockemu/control/auth.py), which then guards every change
  trace=PATH             record every request from the start (blockemu.trace)

The lifecycle follows nbdkit's: configuration is read and validated in
``config_complete``, the HTTP socket is bound in ``get_ready`` (so a busy port
stops nbdkit before it serves), threads start in ``after_fork``.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import Any

from blockemu.config import Config, ConfigError, load_config, parse_http_address
from blockemu.control.auth import TOKEN_ENV, check_binding, validate_token
from blockemu.devices.base import DeviceError
from blockemu.frontends.nbdkit.threads import keep_thread_state
from blockemu.frontends.serve import ServedRuntime, bring_up
from blockemu.runtime import DeviceRuntime

API_VERSION = 2

_config_path: str | None = None
_overrides: list[str] = []
_http: str = ""
_token: str | None = None
_trace: str = ""
_config: Config | None = None
_served: ServedRuntime | None = None
# _served.runtime, kept in a global of its own: every request reads it.
_runtime: DeviceRuntime | None = None


_nbdkit_module: Any = None
# nbdkit.FLAG_FUA, set in get_ready: pwrite, which runs for every write, then reads a global.
_flag_fua = 0


def _nbdkit() -> Any:
    """nbdkit's own module; looked up once (an import per request costs tens of µs in nbdkit)."""
    global _nbdkit_module
    if _nbdkit_module is None:
        import nbdkit  # only exists inside nbdkit

        _nbdkit_module = nbdkit
    return _nbdkit_module


def config(key: str, value: str) -> None:
    global _config_path, _http, _trace
    if key == "config":
        _config_path = value
    elif key == "set":
        _overrides.append(value)
    elif key == "http":
        _http = value
    elif key == "trace":
        _trace = value
    else:
        raise ValueError(f"unknown plugin key {key!r}; allowed: config, set, http, trace")


def config_complete() -> None:
    global _config, _token
    if _config_path is None:
        raise ValueError("config=PATH is required")
    try:
        _config = load_config(_config_path, _overrides)
    except ConfigError as err:
        raise ValueError(str(err)) from None
    # blockemu serve hands the token over in the environment; nbdkit users set it themselves.
    _token = os.environ.pop(TOKEN_ENV, "") or None
    if _http:
        try:
            if _token is not None:
                validate_token(_token, f"${TOKEN_ENV}")
            check_binding(parse_http_address(_http)[0], allow_remote=True, token=_token)
        except ValueError as err:
            raise ValueError(f"http={_http}: {err}") from None


def thread_model() -> int:
    return int(_nbdkit().THREAD_MODEL_PARALLEL)


def get_ready() -> None:
    global _served, _runtime, _flag_fua
    assert _config is not None
    _flag_fua = int(_nbdkit().FLAG_FUA)
    # nbdkit logs a failed callback's exception with traceback.format_exception,
    # which honours this limit: a refused request or an injected fault (a
    # DeviceError, the device's answer, not a crash) is then one line of the
    # serve log.  _fail prints the whole traceback of anything else itself.
    sys.tracebacklimit = 0
    _served = bring_up(_config, parse_http_address(_http) if _http else None, _token, _trace or None)
    _runtime = _served.runtime


def after_fork() -> None:
    assert _served is not None
    _served.start()


def cleanup() -> None:
    if _served is not None:
        _served.close()


def open(readonly: bool) -> int:  # noqa: A001 - the name nbdkit calls
    return 1


def get_size(h: int) -> int:
    assert _runtime is not None
    return _runtime.device.size_bytes


def block_size(h: int) -> tuple[int, int, int]:
    assert _runtime is not None
    return _runtime.device.capabilities.block_size


def is_rotational(h: int) -> bool:
    assert _runtime is not None
    return _runtime.device.capabilities.rotational


def can_multi_conn(h: int) -> bool:
    # One model behind every connection, and flush is device-wide.
    return True


def can_write(h: int) -> bool:
    return True


def can_flush(h: int) -> bool:
    assert _runtime is not None
    return _runtime.device.capabilities.flush


def can_trim(h: int) -> bool:
    assert _runtime is not None
    return _runtime.device.capabilities.trim


def can_zero(h: int) -> bool:
    assert _runtime is not None
    return _runtime.device.capabilities.zero


def can_fast_zero(h: int) -> bool:
    assert _runtime is not None
    return _runtime.device.capabilities.zero


def can_fua(h: int) -> int:
    assert _runtime is not None
    nbdkit = _nbdkit()
    return int(nbdkit.FUA_NATIVE if _runtime.device.capabilities.fua else nbdkit.FUA_EMULATE)


# The errnos nbdkit 1.32 sends as themselves (nbd_errno() in server/protocol.c).
# EOPNOTSUPP goes as ENOTSUP to a fast zero and as EINVAL otherwise, nbdkit's
# own answer to a command the export does not support.  EOVERFLOW goes only
# to a read with NBD_CMD_FLAG_DF (NBD's "too large to send unfragmented"),
# and every other errno as EINVAL, which tells the client its request was
# malformed: a refusal NBD cannot name (a zone's EOVERFLOW or ETOOMANYREFS)
# is sent as EIO instead, as a Linux NBD client reports every error anyway.
NBD_ERRNOS = frozenset({
    errno.EPERM, errno.EROFS, errno.EIO, errno.ENOMEM, errno.ENOSPC, errno.EFBIG, errno.EDQUOT,
    errno.ESHUTDOWN, errno.EINVAL, errno.EOPNOTSUPP,
})


def nbd_errno(err: Exception) -> int:
    """The errno handed to nbdkit for a failed request: the device's where NBD has it, else EIO."""
    code = err.errno if isinstance(err, DeviceError) else errno.EIO
    return code if code in NBD_ERRNOS else errno.EIO


def _fail(err: Exception) -> None:
    nbdkit = _nbdkit()
    nbdkit.set_error(nbd_errno(err))
    if not isinstance(err, DeviceError):
        # A bug, not a refusal: its whole traceback (an explicit limit overrides sys.tracebacklimit).
        sys.stderr.write("".join(traceback.format_exception(err, limit=1000)))


# Every data callback starts with keep_thread_state(): without it each request
# pays for a new Python thread state (blockemu/frontends/nbdkit/threads.py).


def pread(h: int, buf: bytearray, offset: int, flags: int) -> None:
    keep_thread_state()
    assert _runtime is not None
    try:
        _runtime.read(offset, memoryview(buf))
    except Exception as err:
        _fail(err)
        raise


def pwrite(h: int, buf: bytes, offset: int, flags: int) -> None:
    keep_thread_state()
    assert _runtime is not None
    try:
        _runtime.write(offset, memoryview(buf), bool(flags & _flag_fua))
    except Exception as err:
        _fail(err)
        raise


def flush(h: int, flags: int) -> None:
    keep_thread_state()
    assert _runtime is not None
    try:
        _runtime.flush()
    except Exception as err:
        _fail(err)
        raise


def trim(h: int, count: int, offset: int, flags: int) -> None:
    keep_thread_state()
    assert _runtime is not None
    try:
        _runtime.trim(offset, count)
        if flags & _nbdkit().FLAG_FUA:
            _runtime.flush()
    except Exception as err:
        _fail(err)
        raise


def zero(h: int, count: int, offset: int, flags: int) -> None:
    keep_thread_state()
    assert _runtime is not None
    try:
        _runtime.write_zeroes(offset, count, bool(flags & _nbdkit().FLAG_FUA))
    except Exception as err:
        _fail(err)
        raise


__all__ = [
    "API_VERSION",
    "after_fork",
    "block_size",
    "can_fast_zero",
    "can_flush",
    "can_fua",
    "can_multi_conn",
    "can_trim",
    "can_write",
    "can_zero",
    "cleanup",
    "config",
    "config_complete",
    "flush",
    "get_ready",
    "get_size",
    "is_rotational",
    "open",
    "pread",
    "pwrite",
    "thread_model",
    "trim",
    "zero",
]
