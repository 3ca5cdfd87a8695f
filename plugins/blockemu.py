"""nbdkit entry point: ``nbdkit python plugins/blockemu.py config=DEVICE.toml``.

All logic lives in blockemu.frontends.nbdkit.plugin; ``blockemu serve`` sets
PYTHONPATH so that nbdkit's embedded interpreter finds the package.
"""

from blockemu.frontends.nbdkit.plugin import *  # noqa: F403
