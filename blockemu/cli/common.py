"""What every command module shares: the table entry's shape, error exits, default addresses."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_HTTP = "127.0.0.1:9250"
DEFAULT_URL = "http://" + DEFAULT_HTTP


@dataclass(frozen=True)
class Command:
    """One row of the command table: ``blockemu.cli.MODULE``'s ``configure`` adds the arguments and sets ``func``.

    The module is imported only when its command is built, so ``blockemu
    replay`` does not pay for the control client's HTTP stack, nor ``ctl``
    for numpy.
    """

    help: str
    module: str

    @property
    def configure(self) -> Callable[[argparse.ArgumentParser], None]:
        configure: Callable[[argparse.ArgumentParser], None] = importlib.import_module(
            f"blockemu.cli.{self.module}").configure
        return configure


def fail(message: str, code: int = 2) -> int:
    """Print ``blockemu: MESSAGE`` on stderr; returns ``code`` (2: usage or configuration, 1: it failed)."""
    print(f"blockemu: {message}", file=sys.stderr)
    return code
