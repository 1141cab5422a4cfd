"""SQLite's read-first commands (`send`, `enroll`: decided before the write lock is taken) never
decide on a state that has changed: a write by another connection, another process, or this store
on another path (correct, tick, ingest, migrate) is seen by the next command, and a status a
command returned shares nothing with what the next one decides on.

The engines under test take no retries, so a command decided on a stale snapshot would fail with
ConcurrentUpdate instead of being retried quietly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from pathway import Engine, FakeClock
from states import EventNotAllowed
from tests.conftest import NOW, T0
from tests.helpers import assess_data, reassess_data
from tests.test_versions import DRAFT  # registers the draft version the migration moves to

WEEK = timedelta(weeks=1)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def strict(sqlite_url: str) -> Iterator[Engine]:
    """An engine that retries nothing: a stale decision surfaces as ConcurrentUpdate."""
    eng = Engine(sqlite_url, FakeClock(NOW), retries=0)
    yield eng
    eng.store.dispose()


def _first_line(engine: Engine, patient: str = "p") -> None:
    """Enrolled and assessed, then one reassessment that keeps the line."""
    engine.enroll(patient, T0, version=1)
    engine.send(patient, "assess", T0, assess_data(pain=8))
    engine.send(patient, "reassess", T0 + WEEK, reassess_data(pain=6))


def _resolve(engine: Engine, patient: str = "p") -> None:
    engine.send(patient, "reassess", T0 + 2 * WEEK, reassess_data(pain=2, fasciculations="improving"))


def _resolve_elsewhere(sqlite_url: str) -> None:
    """Resolve patient "p" through another engine on the same file (another connection)."""
    other = Engine(sqlite_url, FakeClock(NOW))
    try:
        _resolve(other)
    finally:
        other.store.dispose()


def _refused_as_resolved(engine: Engine, patient: str = "p") -> None:
    with pytest.raises(EventNotAllowed) as refused:
        engine.send(patient, "reassess", T0 + 3 * WEEK, reassess_data(pain=6))
    assert refused.value.configuration == ("resolved",)


def test_another_engine_on_the_same_file_is_seen(strict: Engine, sqlite_url: str) -> None:
    """Resolved by another engine (another connection) between two commands: the next one is refused."""
    _first_line(strict)
    _resolve_elsewhere(sqlite_url)
    _refused_as_resolved(strict)
    assert strict.status("p").state == "resolved"


def test_another_process_is_seen(strict: Engine, sqlite_url: str) -> None:
    """Resolved by another process between two commands: the next one is refused."""
    _first_line(strict)
    script = (
        "from datetime import datetime, timedelta\n"
        "from pathway import Engine, FakeClock\n"
        f"now = datetime.fromisoformat({NOW.isoformat()!r})\n"
        f"t0 = datetime.fromisoformat({T0.isoformat()!r})\n"
        f"engine = Engine({sqlite_url!r}, FakeClock(now))\n"
        "data = {'pain': 2, 'fasciculations': 'improving', 'red_flags': []}\n"
        "print(engine.send('p', 'reassess', t0 + timedelta(weeks=2), data).status.state)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "resolved"
    _refused_as_resolved(strict)


def test_a_correction_is_seen(strict: Engine) -> None:
    """Corrected on this store (another write path) to a pain that resolves: the next event is refused."""
    _first_line(strict)
    strict.correct("p", 3, "pain was 2, typed 6", reassess_data(pain=2, fasciculations="improving"))
    assert strict.status("p").state == "resolved"
    _refused_as_resolved(strict)


def test_an_enrolment_in_between_hides_no_other_write(strict: Engine, sqlite_url: str) -> None:
    """An enrolment between another engine's write and the next command hides nothing from it."""
    _first_line(strict)
    _resolve_elsewhere(sqlite_url)
    strict.enroll("q", T0, version=1)
    _refused_as_resolved(strict)


def test_an_enrolment_after_an_own_write_on_another_path_hides_nothing(strict: Engine) -> None:
    """A sweep, then an enrolment, then a send: the send builds on what the sweep wrote."""
    _first_line(strict)
    _tick(strict)
    strict.enroll("q", T0, version=1)
    stored = strict.status("p")
    result = strict.send("p", "reassess", T0 + 7 * WEEK, reassess_data(pain=7))
    assert result.status.revision == stored.revision + 1


def _tick(engine: Engine) -> None:
    assert engine.tick(T0 + 6 * WEEK).advanced == 1


def _ingest(engine: Engine) -> None:
    line = {"patient": "p", "event": "reassess", "at": (T0 + 2 * WEEK).isoformat(), "data": reassess_data(pain=6)}
    assert engine.ingest([json.dumps(line)]).accepted == 1


def _migrate(engine: Engine) -> None:
    assert [change.patient_id for change in engine.migrate_patients("piriformis", 1, DRAFT)] == ["p"]


@pytest.mark.parametrize("write", [_tick, _ingest, _migrate], ids=["tick", "ingest", "migrate"])
def test_own_writes_on_other_paths_are_seen(strict: Engine, write: Callable[[Engine], None]) -> None:
    """A write by this store outside `send` (a sweep, an import, a migration) is what the next send builds on."""
    _first_line(strict)
    write(strict)
    stored = strict.status("p")
    result = strict.send("p", "reassess", T0 + 7 * WEEK, reassess_data(pain=7))
    assert result.entry is not None
    assert result.entry.seq == len(strict.history("p")) == stored.revision + 1
    assert result.status.revision == stored.revision + 1
    assert result.status.version == stored.version
    assert strict.status("p").snapshot == result.status.snapshot


def test_a_returned_status_shares_nothing_with_the_next_command(strict: Engine) -> None:
    """Changing a status a command returned changes nothing the next command decides on or returns."""
    _first_line(strict)
    first = strict.send("p", "reassess", T0 + 2 * WEEK, reassess_data(pain=6), idempotency_key="k")
    first.status.context.clear()
    first.status.snapshot.configuration.append("mangled")
    expected = strict.status("p")  # read from the database
    again = strict.send("p", "reassess", T0 + 2 * WEEK, reassess_data(pain=6), idempotency_key="k")
    assert again.duplicate
    assert again.status.snapshot == expected.snapshot
    again.status.context.clear()
    third = strict.send("p", "reassess", T0 + 3 * WEEK, reassess_data(pain=6))
    assert third.changed
    assert third.status.context["line_baseline"] == expected.context["line_baseline"] == 8
