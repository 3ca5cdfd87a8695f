"""``python -m blockemu.vm _guest SPEC``: how the guest starts the in-guest runner (blockemu/vm/guest.py).

The host side builds this command line (``host._guest_entry_argv``); people
use ``blockemu vm run|shell``.
"""

import sys
from pathlib import Path

from blockemu.vm.guest import main

if sys.argv[1:2] == ["_guest"] and len(sys.argv) == 3:
    sys.exit(main(Path(sys.argv[2])))
print("usage: python -m blockemu.vm _guest SPEC (the in-guest runner); use 'blockemu vm run|shell'",
      file=sys.stderr)
sys.exit(2)
