from __future__ import annotations

import os
from pathlib import Path

import pytest

from blockemu.config import Config, ConfigError, config_from_mapping, load_config

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


def test_store_settings_are_validated_one_line_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    cases = [
        ({"backend": "tape"}, "[store] backend = 'tape': must be one of memory, file"),
        ({"backend": "file"}, "[store] path = '': is required when backend = \"file\": it must be an existing, "
                              "writable directory"),
        ({"backend": "file", "path": str(tmp_path / "nowhere")},
         f"[store] path = '{tmp_path / 'nowhere'}': does not exist; it must be an existing, writable directory "
         "(create it first)"),
        ({"backend": "file", "path": str(tmp_path / "a_file")},
         f"[store] path = '{tmp_path / 'a_file'}': is not a directory; it must be an existing, writable directory"),
        ({"path": str(tmp_path)}, f"[store] path = '{tmp_path}': is only used with backend = \"file\"; remove it "
                                  "or set backend = \"file\""),
        ({"backend": "file", "path": str(tmp_path), "fsync": "yes"}, "[store] fsync: expected bool, got str 'yes'"),
    ]
    for store, expected in cases:
        with pytest.raises(ConfigError) as info:
            config_from_mapping({"store": store}, "cfg.toml")
        assert str(info.value) == f"cfg.toml: {expected}"
    # zram persists too: its compressed pages go into the checkpoint.
    zram = config_from_mapping({"device": {"type": "zram"}, "store": {"backend": "file", "path": str(tmp_path)}}, "z")
    assert zram.store.backend == "file"
    config = config_from_mapping({"store": {"backend": "file", "path": str(tmp_path)}}, "ok")
    assert config.store.fsync is True
    assert config.with_overrides(["store.fsync=false"]).store.fsync is False


def test_an_unwritable_store_directory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:
        # Root may write anywhere, so mode 0500 refuses nothing: ask the check as a user would be answered.
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == locked else real_access(path, mode))
    with pytest.raises(ConfigError, match=r"\[store\] path = .*: is not writable by this user"):
        config_from_mapping({"store": {"backend": "file", "path": str(locked)}}, "cfg")


def test_a_set_for_a_section_the_device_does_not_use_is_refused_naming_the_type() -> None:
    from blockemu.config.device import DEVICE_TYPES
    from blockemu.config.load import DEVICE_SECTIONS

    assert set(DEVICE_SECTIONS) == set(DEVICE_TYPES)
    ufs = Config()
    with pytest.raises(ConfigError, match=r"zram\.policy=heuristic: a ufs device does not use \[zram\]"):
        ufs.with_overrides(["zram.policy=heuristic"])
    with pytest.raises(ConfigError, match=r"a ufs device does not use \[zns_ftl\]"):
        ufs.with_overrides(["zns_ftl.gc_policy=greedy"])
    # The sections every device reads, and the final type's own, are fine.
    assert ufs.with_overrides(["power.enabled=true", "hid.min_run_kib=64"]).power.enabled
    assert ufs.with_overrides(["device.type=zram", "zram.policy=heuristic"]).zram.policy == "heuristic"
