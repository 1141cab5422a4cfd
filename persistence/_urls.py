"""Database URLs: the default, the psycopg spelling of PostgreSQL URLs, SQLite file paths."""

from __future__ import annotations

__all__ = [
    "DEFAULT_URL",
    "SQLITE_SYNCHRONOUS_LEVELS",
    "is_private_memory",
    "normalise_url",
    "sqlite_file",
    "split_synchronous",
]

DEFAULT_URL = "sqlite:///carepath.db"

# SQLite durability, chosen with `?synchronous=` in the URL (FULL when not given): with FULL every
# commit is on disk before `send` returns; NORMAL (in WAL mode) stays consistent but may lose the
# last commits on power loss; OFF may corrupt the file on power loss; EXTRA also syncs the folder.
SQLITE_SYNCHRONOUS_LEVELS = ("off", "normal", "full", "extra")


def normalise_url(url: str) -> str:
    """Accept plain postgresql:// URLs and point them at psycopg 3."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def split_synchronous(url: str, default: str) -> tuple[str, str]:
    """A SQLite URL without its `synchronous` option, and that option's level (`default` when
    absent), upper case. Raises ValueError naming the accepted levels for any other value."""
    head, sep, query = url.partition("?")
    if not sep or not url.startswith("sqlite"):
        return url, default
    level, kept = default, []
    for option in query.split("&"):
        name, _, value = option.partition("=")
        if name != "synchronous":
            kept.append(option)
        elif value.lower() in SQLITE_SYNCHRONOUS_LEVELS:
            level = value.upper()
        else:
            accepted = ", ".join(SQLITE_SYNCHRONOUS_LEVELS)
            raise ValueError(f"synchronous={value!r} is not a SQLite durability level (accepted: {accepted})")
    return (f"{head}?{'&'.join(kept)}" if kept else head), level


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
