"""What every section shares: the error, the per-key checks and the reading of one value.

A section's ``check()`` returns ``{key: problem or None}`` built from the
small checks below; :func:`blockemu.config.load.config_from_mapping` turns the
first problem into a :class:`ConfigError`.  A value reaches a section through
:func:`coerce`, from TOML or from a ``--set section.key=value`` that
:func:`parse_override` split.
"""

from __future__ import annotations

import math
import tomllib
import typing
from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """A configuration problem, formatted as one line for the user."""


def choice(value: str, allowed: Iterable[str]) -> str | None:
    allowed = tuple(allowed)
    return None if value in allowed else f"must be one of {', '.join(allowed)}"


def positive(value: float) -> str | None:
    return None if value > 0 else "must be > 0"


def non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be >= 0"


def power_of_two(value: int) -> str | None:
    return None if value > 0 and value & (value - 1) == 0 else "must be a power of two"


def parse_override(item: str, source: str = "--set") -> tuple[str, str, Any]:
    """Split ``section.key=value``; the value is read as a TOML value, else a string."""
    name, sep, text = item.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. timing.mode=realtime")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    return section, key, value


def coerce(value: Any, want: Any, where: str) -> Any:
    """``value`` as the field type ``want``, or a :class:`ConfigError` naming ``where``."""
    # Arrays (e.g. [power] opp_freq_hz) are typed tuple[item, ...]: check each item.
    if typing.get_origin(want) is tuple:
        item_type = typing.get_args(want)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected an array of {item_type.__name__}, got {type(value).__name__} "
                              f"{value!r}")
        return tuple(coerce(item, item_type, f"{where}[{i}]") for i, item in enumerate(value))
    # TOML has one integer type and one float type; accept an int for a float
    # key, but never a bool (a subclass of int) for a number.
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # TOML spells inf and nan; no setting means either (an infinite time_scale
    # or overprovision_percent would only fail later, inside the model).
    if want is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if want in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{where}: expected {want.__name__}, got a boolean")
    if not isinstance(value, want):
        raise ConfigError(f"{where}: expected {want.__name__}, got {type(value).__name__} {value!r}")
    return value


def one_line(text: str) -> str:
    """``text`` with control characters escaped: TOML's quoted names may hold newlines, our errors are one line."""
    return text.encode("unicode_escape").decode("ascii")


def parse_http_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ValueError(f"--http {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9250")
    return host.strip("[]"), int(port)
