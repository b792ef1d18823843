"""The one way CLI commands make a rich Console."""

from __future__ import annotations

import sys


def make_console(width: int = 200):
    """A rich Console: the terminal's own width on a terminal; `width` columns when the output goes
    to a file or a pipe (rich would otherwise wrap tables in logs at 80 columns)."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=width)
