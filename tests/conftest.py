"""Shared fixtures: a fake clock, and one database per test on every backend.

`db_url` is parametrized over SQLite (a file in tmp_path) and PostgreSQL (a throw-away schema
on the server named by CAREPATH_TEST_PG_URL). Without that server the PostgreSQL cases skip
with the reason shown in the test summary.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

from pathway import Engine, FakeClock
from tests import second_pathway  # noqa: F401  # registers the test-only second pathway

if TYPE_CHECKING:
    import httpx

    from tests.server_helpers import Running

# Events in the tests happen in January-May 2026; the clock reads a moment after them.
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)

# The server CI and the machines of this project run; a newcomer's `make test` finds it too.
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_URL = os.environ.get("CAREPATH_TEST_PG_URL", DEFAULT_PG_URL)
_pg_problem: str | None = None


def postgres_problem() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when the server answers."""
    global _pg_problem
    if not PG_URL:
        return "CAREPATH_TEST_PG_URL is not set (no PostgreSQL server configured)"
    if _pg_problem is None:
        try:
            import psycopg

            with psycopg.connect(libpq(PG_URL), connect_timeout=3):
                pass
            _pg_problem = ""
        except Exception as err:  # any failure means: skip, and say why
            _pg_problem = f"PostgreSQL at {PG_URL} is unreachable: {err}".splitlines()[0]
    return _pg_problem or None


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A URL whose connections use a fresh schema, dropped after the test."""
    problem = postgres_problem()
    if problem:
        pytest.skip(problem)
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq(PG_URL), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(libpq(PG_URL), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'carepath.db'}"
    url: str = request.getfixturevalue("pg_schema_url")
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file, for tests about the embedded default only."""
    return f"sqlite:///{tmp_path / 'carepath.db'}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def engine(db_url: str, clock: FakeClock) -> Iterator[Engine]:
    """An engine on a fresh database of each backend, with a fake clock."""
    eng = Engine(db_url, clock)
    yield eng
    eng.store.dispose()


@pytest.fixture
def server(engine: Engine) -> Iterator[Running]:
    """`carepath serve` on the engine's database, on a free port (tests/server_helpers.py)."""
    from tests.server_helpers import serving  # the server extra: only the HTTP tests import it

    with serving(engine) as running:
        yield running


@pytest.fixture
def client(server: Running) -> Iterator[httpx.Client]:
    """An HTTP client of that server."""
    import httpx

    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        yield http


@pytest.fixture
def sqlite_engine(sqlite_url: str, clock: FakeClock) -> Iterator[Engine]:
    """An engine on a fresh SQLite file, for tests that need no backend matrix."""
    eng = Engine(sqlite_url, clock)
    yield eng
    eng.store.dispose()
