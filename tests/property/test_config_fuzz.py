"""Config fuzz: malformed TOML and values always give a one-line ConfigError that names what was wrong."""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from blockemu.config import Config, ConfigError, load_config

SECTIONS = {f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config) if f.name != "source"}
KEYS = [(section, f.name) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(repr(value), repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + "".join(c if c.isalnum() or c in " _-./" else f"\\U{ord(c):08x}" for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + "}"
    raise TypeError(value)


scalars = st.one_of(st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text("abcxyz", min_size=1, max_size=4),
                                                                       inner, max_size=3)), max_leaves=6)


def check_message(err: ConfigError, path: Path) -> str:
    message = str(err)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"{path}: "), message
    return message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(assignments=st.lists(st.tuples(st.sampled_from(KEYS), values), min_size=1, max_size=3))
@example(assignments=[(("timing", "time_scale"), float("inf"))])
@example(assignments=[(("ufs", "overprovision_percent"), float("nan"))])
@example(assignments=[(("device", "capacity_mib"), 2**60)])
def test_bad_values_name_a_key(tmp_path: Path, assignments: list[tuple[tuple[str, str], Any]]) -> None:
    tables: dict[str, dict[str, Any]] = {}
    for (section, key), value in assignments:
        tables.setdefault(section, {})[key] = value
    path = tmp_path / "fuzz.toml"
    path.write_text("".join(f"[{section}]\n" + "".join(f"{key} = {toml_value(v)}\n" for key, v in table.items())
                            for section, table in tables.items()))
    try:
        config = load_config(path)
    except ConfigError as err:
        message = check_message(err, path)
        # Either the key itself, or (a cross-section check) the key it conflicts with.
        assert re.search(r"\[\w+\] \w+", message), message
        return
    for section, table in tables.items():  # accepted: every value really is in the config, and finite
        for key, value in table.items():
            got = getattr(getattr(config, section), key)
            assert got == (tuple(value) if isinstance(value, list) else value)
            assert not (isinstance(got, float) and not math.isfinite(got)), (section, key, got)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200),
    st.lists(st.sampled_from(["[device]", "[ufs]", "[[device]]", '["a\\nb"]', "type = ", '"ufs"', "=", "[",
                              "capacity_mib = 64", "x = 1", "name = 'a'", "\n", "#", "{", "}", "1e400",
                              "inf", "[device.sub]", "a.b = 1", '"\\u0000"', "\x00", "\r"]),
             max_size=20).map("".join),
))
@example(text='["a\\nb"]\nx = 1\n')
@example(text="[device]\ncapacity_mib = {a = 1}\n")
def test_malformed_files_give_one_line_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_text(text)
    try:
        load_config(path)
    except ConfigError as err:
        check_message(err, path)


def test_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe[device]\n")
    with pytest.raises(ConfigError, match="not valid TOML: not UTF-8 text"):
        load_config(path)


@pytest.mark.parametrize(("text", "message"), [
    ("[timing]\ntime_scale = inf\n", r"\[timing\] time_scale: expected a finite number, got inf"),
    ("[ufs]\noverprovision_percent = nan\n", r"\[ufs\] overprovision_percent: expected a finite number"),
    ("[power]\nopp_busy_mw = []\n", r"\[power\] opp_busy_mw = \(\): must have 3 entries"),
    ("[device]\ncapacity_mib = 1152921504606846976\n", r"\[device\] capacity_mib = \d+: must be <= 134217728"),
    ('["a\\nb"]\nx = 1\n', r"unknown section \[a\\nb\]"),
])
def test_values_the_fuzzer_found(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "found.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as refused:
        load_config(path)
    assert "\n" not in str(refused.value)
