"""The durability setting README "Guarantees" promises for the embedded database."""

from __future__ import annotations

from pathway import Engine


def test_sqlite_commits_are_synchronous_full_in_wal_mode(sqlite_engine: Engine) -> None:
    """Every commit is on disk before `send` returns: WAL with synchronous=FULL on every connection."""
    store = sqlite_engine.store
    store.ensure_schema()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
