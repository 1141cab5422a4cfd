"""Verifying every patient across several processes gives the same report as one pass."""

from __future__ import annotations

from datetime import timedelta

from pathway import Engine, verify
from tests.conftest import T0
from tests.helpers import assess_data, reassess_data


def _cohort(engine: Engine, size: int) -> None:
    for i in range(size):
        pid = f"p{i:03d}"
        engine.enroll(pid, T0, version=1)
        engine.send(pid, "assess", T0, assess_data(pain=8))
        engine.send(pid, "reassess", T0 + timedelta(weeks=2), reassess_data(pain=6 + i % 3))


def test_parallel_verify_counts_every_patient_and_event(engine: Engine) -> None:
    """Two worker processes over patient ranges check all 30 patients and 90 entries, and find them sound."""
    _cohort(engine, 30)
    report = verify(engine.store, workers=2)
    assert (report.ok, report.patients, report.events) == (True, 30, 90)


def test_parallel_verify_reports_the_same_first_problem_as_one_pass(engine: Engine) -> None:
    """A tampered entry is named with the same patient, seq and reason whether one or two processes verify."""
    _cohort(engine, 30)
    engine.store.execute_raw(
        "UPDATE carepath_audit SET payload = :payload WHERE patient_id = 'p017' AND seq = 3",
        {"payload": '{"pain": 1.0, "fasciculations": "stable", "red_flags": []}'},
    )
    single = verify(engine.store, workers=1)
    parallel = verify(engine.store, workers=2)
    assert not parallel.ok
    assert parallel.to_json() == single.to_json()
    assert (parallel.problems[0].patient_id, parallel.problems[0].first_bad_seq) == ("p017", 3)


def test_progress_adds_up_to_every_entry(sqlite_engine: Engine) -> None:
    """The progress callback of a parallel verify is told about every entry exactly once."""
    _cohort(sqlite_engine, 12)
    seen: list[int] = []
    verify(sqlite_engine.store, workers=2, progress=seen.append)
    assert sum(seen) == 36


def test_verify_works_on_an_in_memory_database(clock: object) -> None:
    """An in-memory SQLite engine (one connection) verifies in one process without nesting transactions."""
    from pathway import FakeClock

    assert isinstance(clock, FakeClock)
    engine = Engine("sqlite://", clock)
    _cohort(engine, 3)
    report = verify(engine.store)
    assert (report.ok, report.patients, report.events) == (True, 3, 9)
