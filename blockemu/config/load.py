"""The whole configuration (:class:`Config`, one field per section) and reading it from TOML or a mapping."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blockemu.config.base import ConfigError, coerce, one_line, parse_override
from blockemu.config.device import (
    DeviceSection,
    PreconditionSection,
    StoreSection,
    TimingSection,
    WriteCacheSection,
)
from blockemu.config.power import PowerSection
from blockemu.config.ufs import AgingSection, HidSection, UfsSection, check_ufs_device
from blockemu.config.zns import ZnsFtlSection, ZnsSection, check_zns_device
from blockemu.config.zram import ZramSection


@dataclass(frozen=True)
class Config:
    device: DeviceSection = field(default_factory=DeviceSection)
    store: StoreSection = field(default_factory=StoreSection)
    timing: TimingSection = field(default_factory=TimingSection)
    ufs: UfsSection = field(default_factory=UfsSection)
    hid: HidSection = field(default_factory=HidSection)
    aging: AgingSection = field(default_factory=AgingSection)
    precondition: PreconditionSection = field(default_factory=PreconditionSection)
    zns: ZnsSection = field(default_factory=ZnsSection)
    zns_ftl: ZnsFtlSection = field(default_factory=ZnsFtlSection)
    power: PowerSection = field(default_factory=PowerSection)
    zram: ZramSection = field(default_factory=ZramSection)
    write_cache: WriteCacheSection = field(default_factory=WriteCacheSection)
    # Where this configuration came from, for error messages.
    source: str = "<defaults>"

    @property
    def capacity_bytes(self) -> int:
        return self.device.capacity_mib * 1024 * 1024

    def with_overrides(self, overrides: Iterable[str]) -> Config:
        """Return a copy with ``section.key=value`` strings applied and validated.

        An override of a section the (final) device type does not read is
        refused: ``--set zram.policy=heuristic`` on a UFS device would
        otherwise change nothing, silently.  A file may carry such sections
        (one file for several types); a ``--set`` is typed for this device.
        """
        raw = _config_to_raw(self)
        sections: dict[str, str] = {}
        for item in overrides:
            section, key, value = parse_override(item, self.source)
            raw.setdefault(section, {})[key] = value
            sections.setdefault(section, item)
        config = config_from_mapping(raw, self.source)
        for section, item in sections.items():
            users = [kind for kind, used in DEVICE_SECTIONS.items() if section in used]
            if users and config.device.type not in users:
                raise ConfigError(f"--set {item}: a {config.device.type} device does not use [{section}] "
                                  f"(it is for {' and '.join(users)}); nothing would change")
        return config


# The sections only some device types read; every type reads the others
# (device, store, timing, power, write_cache).
DEVICE_SECTIONS: dict[str, tuple[str, ...]] = {
    "ufs": ("ufs", "hid", "aging", "precondition"),
    "zns": ("zns",),
    "zns_ftl": ("zns", "zns_ftl"),
    "zram": ("zram",),
}

SECTION_NAMES = tuple(f.name for f in dataclasses.fields(Config) if f.name != "source")


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {name: hints[name] for name in SECTION_NAMES}


def _config_to_raw(config: Config) -> dict[str, dict[str, Any]]:
    return {name: dataclasses.asdict(getattr(config, name)) for name in SECTION_NAMES}


def config_from_mapping(raw: Mapping[str, Any], source: str = "<mapping>") -> Config:
    sections: dict[str, Any] = {}
    types = _section_types()
    for name, table in raw.items():
        if name not in types:
            raise ConfigError(f"{source}: unknown section [{one_line(name)}]; allowed: {', '.join(SECTION_NAMES)}")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{source}: [{name}] must be a table")
        cls = types[name]
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for key, value in table.items():
            where = f"{source}: [{name}] {key}"
            if key not in hints:
                raise ConfigError(f"{source}: [{name}] unknown key {key!r}; allowed: {', '.join(hints)}")
            values[key] = coerce(value, hints[key], where)
        section = cls(**values)
        for key, problem in section.check().items():
            if problem:
                raise ConfigError(f"{source}: [{name}] {key} = {getattr(section, key)!r}: {problem}")
        sections[name] = section
    config = Config(**sections, source=source)
    _check_cross_section(config)
    return config


def _check_cross_section(config: Config) -> None:
    if config.device.type == "ufs":
        check_ufs_device(config.ufs, config.device, config.source)
    if config.device.type in ("zns", "zns_ftl"):
        check_zns_device(config.zns, config.zns_ftl, config.device, config.source)


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Read, validate and return the configuration in ``path`` with overrides applied."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text (byte {err.start})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    return config_from_mapping(raw, str(path)).with_overrides(overrides)
