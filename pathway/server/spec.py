"""The OpenAPI document of the API, generated from the code (checked in as openapi.json)."""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]


def openapi_document() -> dict[str, Any]:
    """The document, independent of any database or token (an app on an unopened engine)."""
    from .. import Engine
    from .app import create_app
    from .auth import TokenStore

    app = create_app(Engine("sqlite://"), TokenStore([]))
    document: dict[str, Any] = app.openapi()
    return document
