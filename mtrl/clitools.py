"""What every command line shares: one-line errors and their exit status. A module of its own
so that a command (``mtrl-report``) can use it without importing the training command."""

from __future__ import annotations

import argparse
from typing import NoReturn

USAGE_ERROR = 2
"""Exit status of a bad command line, config or input: one line on stderr, nothing written."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports errors in one line (no usage dump) with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")
