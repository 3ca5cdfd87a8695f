"""Device configuration: TOML files → one frozen dataclass per section.

Every key a user can set lives in exactly one section dataclass, with its
unit in its name and a comment saying where its default comes from.  The same
``section.key`` names are used by TOML files, ``--set`` overrides, the control
API and the docs.  Validation happens once, in :func:`load_config`; a bad
value raises :class:`ConfigError` whose message is a single line naming the
file, the key and what is allowed.

The ground floor: it imports nothing else from blockemu, except that [zns_ftl]
asks blockemu.policies.gc how many zones a GC policy keeps open.  The modules:

- ``base``: ConfigError, the per-key checks, reading one value (``--set``, TOML types);
- ``device``: [device], [store], [timing], [write_cache], [precondition];
- ``ufs``: [ufs], [hid], [aging];
- ``zns``: [zns], [zns_ftl];
- ``zram``: [zram];
- ``power``: [power] and the governor tunables (``Tunable``, ``GOVERNOR_TUNABLES``);
- ``load``: ``Config`` (all sections) and loading it from a file or a mapping.
"""

from blockemu.config.base import ConfigError, parse_http_address, parse_override
from blockemu.config.device import (
    DEVICE_TYPES,
    MAX_CAPACITY_MIB,
    PRECONDITION_MODES,
    STORE_BACKENDS,
    TIMING_MODES,
    DeviceSection,
    PreconditionSection,
    StoreSection,
    TimingSection,
    WriteCacheSection,
)
from blockemu.config.load import SECTION_NAMES, Config, config_from_mapping, load_config
from blockemu.config.power import GOVERNOR_TUNABLES, POWER_GOVERNORS, PowerSection, Tunable
from blockemu.config.ufs import AgingSection, HidSection, UfsSection
from blockemu.config.zns import COPY_METHODS, GC_POLICIES, GC_POLICY_STREAMS, ZnsFtlSection, ZnsSection
from blockemu.config.zram import ZRAM_ALGORITHMS, ZRAM_LEVELS, ZRAM_POLICIES, ZramSection

__all__ = [
    "COPY_METHODS",
    "DEVICE_TYPES",
    "GC_POLICIES",
    "GC_POLICY_STREAMS",
    "GOVERNOR_TUNABLES",
    "MAX_CAPACITY_MIB",
    "POWER_GOVERNORS",
    "PRECONDITION_MODES",
    "SECTION_NAMES",
    "STORE_BACKENDS",
    "TIMING_MODES",
    "ZRAM_ALGORITHMS",
    "ZRAM_LEVELS",
    "ZRAM_POLICIES",
    "AgingSection",
    "Config",
    "ConfigError",
    "DeviceSection",
    "HidSection",
    "PowerSection",
    "PreconditionSection",
    "StoreSection",
    "TimingSection",
    "Tunable",
    "UfsSection",
    "WriteCacheSection",
    "ZnsFtlSection",
    "ZnsSection",
    "ZramSection",
    "config_from_mapping",
    "load_config",
    "parse_http_address",
    "parse_override",
]
