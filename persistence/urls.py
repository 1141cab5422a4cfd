"""Database URLs: the default, the psycopg spelling of PostgreSQL URLs, SQLite file paths."""

from __future__ import annotations

__all__ = ["DEFAULT_URL", "is_private_memory", "normalise_url", "sqlite_file"]

DEFAULT_URL = "sqlite:///carepath.db"


def normalise_url(url: str) -> str:
    """Accept plain postgresql:// URLs and point them at psycopg 3."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def is_private_memory(url: str) -> bool:
    """An in-memory SQLite database: no other process can open it."""
    return url.startswith("sqlite") and (":memory:" in url or url.rstrip("/") in ("sqlite:", "sqlite+pysqlite:"))


def sqlite_file(url: str) -> str | None:
    """The file path of a plain `sqlite:///path` URL; None for anything else (memory, options)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or "?" in url:
        return None
    path = url[len(prefix) :]
    return path if path and path != ":memory:" else None
