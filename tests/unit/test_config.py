from __future__ import annotations

from pathlib import Path

import pytest

from blockemu.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def test_shipped_ufs_config_loads_with_documented_defaults() -> None:
    config = load_config(REPO / "configs" / "ufs41.toml")
    assert config.device.type == "ufs"
    assert config.ufs.seq_read_mbps == 4200.0
    assert config.timing.mode == "virtual"
    assert config.capacity_bytes == 8 * 2**30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[ufs]\ndiez = 4\n", "[ufs] unknown key 'diez'"),
        ("[ufs]\ndies = 'four'\n", "[ufs] dies: expected int, got str"),
        ("[ufs]\ndies = 0\n", "[ufs] dies = 0: must be > 0"),
        ("[timing]\nmode = 'fast'\n", "[timing] mode = 'fast': must be one of virtual, realtime"),
        ("[nope]\nx = 1\n", "unknown section [nope]"),
        ("[ufs\n", "not valid TOML"),
        ("[ufs]\nread_setup_us = 500.0\n", "[ufs] seq_read_mbps = 4200.0: unreachable"),
        ("[timing]\ntime_scale = true\n", "[timing] time_scale: expected float, got a boolean"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert expected in message


def test_overrides_apply_and_validate(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text("[device]\ncapacity_mib = 1024\n")
    config = load_config(path, ["timing.mode=realtime", "timing.time_scale=10", "hid.defrag_size=4096"])
    assert config.timing.mode == "realtime"
    assert config.timing.time_scale == 10.0
    assert config.hid.defrag_size == 4096
    assert config.device.capacity_mib == 1024
    with pytest.raises(ConfigError, match=r"\[timing\] mode = 'slow'"):
        load_config(path, ["timing.mode=slow"])
    with pytest.raises(ConfigError, match=r"expected section\.key=value"):
        load_config(path, ["mode=slow"])


def test_defaults_are_a_valid_config() -> None:
    assert Config().with_overrides([]).device.capacity_mib == 8192
