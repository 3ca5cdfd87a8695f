import sys

from blockemu.cli import main

sys.exit(main())
