"""`carepath serve`: the engine over HTTP (FastAPI), with bearer tokens, problem details,
an outbox of transitions for webhooks and polling, and a read-only web view.

Needs the `server` extra: pip install 'carepath[server]'.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["DB_ENV", "IN_FLIGHT_ENV", "TOKENS_FILE_ENV", "app_from_environment"]

# How `carepath serve` hands its options to server processes it starts (--workers N).
DB_ENV = "CAREPATH_DB"
TOKENS_FILE_ENV = "CAREPATH_TOKENS_FILE"
IN_FLIGHT_ENV = "CAREPATH_MAX_IN_FLIGHT"


def app_from_environment() -> FastAPI:
    """The application configured from the environment (the factory each server process calls)."""
    from persistence.urls import DEFAULT_URL

    from ..engine import Engine
    from .app import DEFAULT_IN_FLIGHT, create_app
    from .auth import load_tokens

    tokens_file = os.environ.get(TOKENS_FILE_ENV)
    tokens = load_tokens(Path(tokens_file) if tokens_file else None)
    engine = Engine(os.environ.get(DB_ENV) or DEFAULT_URL)
    return create_app(engine, tokens, max_in_flight=int(os.environ.get(IN_FLIGHT_ENV) or DEFAULT_IN_FLIGHT))
