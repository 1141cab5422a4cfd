"""Optional features and the extras that install them (`pip install 'carepath[EXTRA]'`).

The core (the engine, the store on SQLite, replay and verify) needs none of them; a feature whose
package is missing raises MissingExtra, naming the extra, when it is used.
"""

from __future__ import annotations

import importlib

from carepath.errors import Category

from ._errors import CarepathError

__all__ = ["EXTRAS", "MissingExtra", "require"]

EXTRAS = {
    "typer": "cli",
    "rich": "cli",
    "matplotlib": "plots",
    "graphviz": "diagrams",
    "psycopg": "postgres",
    "cryptography": "crypto",
    "fastapi": "server",
    "uvicorn": "server",
    "jinja2": "server",
}
"""The extra that installs each optional package."""


class MissingExtra(CarepathError):
    """Raised when a feature is used whose optional package is not installed."""

    code = "missing_extra"
    category = Category.INTERNAL

    def __init__(self, feature: str, package: str) -> None:
        self.feature = feature
        self.package = package
        self.extra = EXTRAS.get(package, "all")
        super().__init__(
            f"{feature} needs the {package} package, which is not installed: pip install 'carepath[{self.extra}]'"
        )


def require(package: str, feature: str) -> None:
    """Raise MissingExtra, naming `feature`, unless the optional `package` can be imported."""
    try:
        importlib.import_module(package)
    except ModuleNotFoundError as err:
        if err.name != package:  # the package is there but broken: its own error says more
            raise
        raise MissingExtra(feature, package) from None
