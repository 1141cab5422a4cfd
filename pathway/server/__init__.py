"""`carepath serve`: the engine over HTTP (FastAPI), with bearer tokens, problem details,
an outbox of transitions for webhooks and polling, and a read-only web view.

The application needs the `server` extra (pip install 'carepath[server]'); tokens and webhook
delivery do not. Names load on first use, so `carepath` starts without FastAPI.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .app import MAX_BODY_BYTES, create_app
    from .auth import ROLES, Principal, TokenStore, add_token, hash_token, load_tokens
    from .deliver import SIGNATURE_HEADER, Deliverer, sign, verify_signature
    from .problems import Problem, problem_for
    from .spec import openapi_document

__all__ = [
    "DB_ENV",
    "IN_FLIGHT_ENV",
    "MAX_BODY_BYTES",
    "ROLES",
    "SIGNATURE_HEADER",
    "TOKENS_FILE_ENV",
    "Deliverer",
    "Principal",
    "Problem",
    "TokenStore",
    "add_token",
    "app_from_environment",
    "create_app",
    "hash_token",
    "load_tokens",
    "openapi_document",
    "problem_for",
    "sign",
    "verify_signature",
]

# How `carepath serve` hands its options to server processes it starts (--workers N).
DB_ENV = "CAREPATH_DB"
TOKENS_FILE_ENV = "CAREPATH_TOKENS_FILE"
IN_FLIGHT_ENV = "CAREPATH_MAX_IN_FLIGHT"

_LAZY = {
    "MAX_BODY_BYTES": "app",
    "create_app": "app",
    "ROLES": "auth",
    "Principal": "auth",
    "TokenStore": "auth",
    "add_token": "auth",
    "hash_token": "auth",
    "load_tokens": "auth",
    "SIGNATURE_HEADER": "deliver",
    "Deliverer": "deliver",
    "sign": "deliver",
    "verify_signature": "deliver",
    "Problem": "problems",
    "problem_for": "problems",
    "openapi_document": "spec",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def app_from_environment() -> FastAPI:
    """The application configured from the environment (the factory each server process calls)."""
    from persistence import DEFAULT_URL

    from .. import Engine
    from .app import DEFAULT_IN_FLIGHT, create_app
    from .auth import load_tokens

    tokens_file = os.environ.get(TOKENS_FILE_ENV)
    tokens = load_tokens(Path(tokens_file) if tokens_file else None)
    engine = Engine(os.environ.get(DB_ENV) or DEFAULT_URL)
    return create_app(engine, tokens, max_in_flight=int(os.environ.get(IN_FLIGHT_ENV) or DEFAULT_IN_FLIGHT))
