"""nbdkit entry point: ``nbdkit python plugins/blockemu.py config=DEVICE.toml``.

All logic lives in blockemu.frontends.nbdkit.plugin.  ``blockemu serve`` sets
PYTHONPATH so that nbdkit's embedded interpreter finds the package and the
.venv's packages; run by hand (any nbdkit option: TLS, filters, ...), the
plugin puts this checkout and its .venv (scripts/setup.sh made it from the
interpreter nbdkit embeds) on sys.path itself, in the same order.
"""

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
_VENV_SITE = _ROOT / ".venv" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
for _path in reversed([p for p in (_ROOT, _VENV_SITE) if p.is_dir()]):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from blockemu.frontends.nbdkit.plugin import *  # noqa: E402, F403
