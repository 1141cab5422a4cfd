"""The durability setting README "Guarantees" promises for the embedded database."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest

from pathway import Engine
from persistence import StorageUnavailable
from states import EventNotAllowed
from tests.conftest import T0
from tests.helpers import reassess_data


def test_sqlite_commits_are_synchronous_full_in_wal_mode(sqlite_engine: Engine) -> None:
    """Every commit is on disk before `send` returns: WAL with synchronous=FULL on every connection."""
    store = sqlite_engine.store
    store.ensure_schema()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_sqlite_durability_is_chosen_in_the_url(sqlite_url: str) -> None:
    """`?synchronous=normal` in the URL sets NORMAL on every connection; the URL keeps the choice."""
    engine = Engine(f"{sqlite_url}?synchronous=normal")
    try:
        engine.store.ensure_schema()
        with engine.store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert engine.store.url.endswith("?synchronous=normal")  # worker processes open the same
    finally:
        engine.close()


def test_an_unknown_durability_level_is_refused_by_name(sqlite_url: str) -> None:
    """A `synchronous` value SQLite does not know is refused, naming the accepted levels."""
    with pytest.raises(StorageUnavailable, match="off, normal, full, extra"):
        Engine(f"{sqlite_url}?synchronous=fast").store.ensure_schema()


def test_a_rejected_event_does_not_wait_for_the_write_lock(sqlite_engine: Engine, sqlite_url: str) -> None:
    """An event the state does not allow is refused while another writer holds the database."""
    sqlite_engine.enroll("p1", T0, version=1)  # in assessment: a reassessment is not allowed yet
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(EventNotAllowed):
            sqlite_engine.send("p1", "reassess", T0 + timedelta(days=1), reassess_data())
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert sqlite_engine.store.count_entries() == 1
