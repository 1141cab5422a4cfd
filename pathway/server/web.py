"""The read-only web view (filled in below)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..engine import Engine


def add_web_routes(app: FastAPI, engine: Engine) -> None:
    """Add the patient and cohort pages to `app`."""
