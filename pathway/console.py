"""The `carepath` console script: the command line, or one line saying how to install it.

The command line needs the `cli` extra (typer, rich); the library does not, so a core install has
the script but not its packages.
"""

from __future__ import annotations

import sys
from importlib.util import find_spec

__all__ = ["CLI_MISSING", "run"]

CLI_MISSING = "carepath: the command line needs typer and rich, which are not installed: pip install 'carepath[cli]'"
_CLI_PACKAGES = ("typer", "rich")


def run() -> None:
    """Console-script entry point."""
    # rich is imported only by the commands that print tables: look for it (without importing it) up front.
    if not all(_installed(name) for name in _CLI_PACKAGES):
        sys.stderr.write(CLI_MISSING + "\n")
        sys.exit(2)
    from .cli import run as run_cli

    run_cli()


def _installed(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is not None
    return find_spec(name) is not None
