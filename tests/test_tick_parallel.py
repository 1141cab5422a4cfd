"""A sweep spread over processes by patient-id range advances each due patient exactly once."""

from __future__ import annotations

from datetime import timedelta

from pathway import Engine, verify
from tests.conftest import T0
from tests.helpers import assess_data


def _cohort(engine: Engine, size: int) -> None:
    for i in range(size):
        pid = f"p{i:03d}"
        engine.enroll(pid, T0, version=1)
        # Every third patient was assessed a week later, so is not yet due at T0 + 15 days.
        at = T0 + timedelta(weeks=1) if i % 3 == 0 else T0
        engine.send(pid, "assess", at, assess_data(pain=8))


def test_parallel_sweep_advances_each_due_patient_once(engine: Engine) -> None:
    """Two processes sweep 40 patients: the 26 due ones get one tick entry each, the rest none."""
    _cohort(engine, 40)
    sweep_at = T0 + timedelta(days=15)
    due = {patient for patient, _pathway in engine.store.due_ids(sweep_at)}
    report = engine.tick(sweep_at, batch=4, workers=2)
    assert (report.advanced, report.unchanged, report.skipped) == (len(due), 0, {})
    assert len(due) == 26
    for i in range(40):
        pid = f"p{i:03d}"
        ticks = [e for e in engine.history(pid) if e.event == "tick"]
        assert len(ticks) == (1 if pid in due else 0)
        assert engine.status(pid).configuration[-1] == ("due" if pid in due else "scheduled")
    assert engine.store.due_ids(sweep_at) == []
    assert verify(engine.store, workers=1).ok


def test_parallel_and_single_sweeps_write_the_same_log(engine: Engine, tmp_path: object) -> None:
    """The same cohort swept by one process and by two ends with identical audit hashes."""
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    single = Engine(f"sqlite:///{tmp_path / 'single.db'}", engine.clock)
    for target in (engine, single):
        _cohort(target, 12)
    sweep_at = T0 + timedelta(days=30)
    engine.tick(sweep_at, batch=3, workers=2)
    single.tick(sweep_at, batch=3)
    for i in range(12):
        pid = f"p{i:03d}"
        assert [e.hash for e in engine.history(pid)] == [e.hash for e in single.history(pid)]
    single.close()


def test_a_parallel_sweep_shares_out_the_due_patients(engine: Engine) -> None:
    """The ranges of a parallel sweep cut the due enrolments, not all of them, into even shares."""
    for i in range(30):
        engine.enroll(f"p{i:03d}", T0, version=1)
        # Only the last ten were assessed early enough to be due at T0 + 15 days.
        engine.send(f"p{i:03d}", "assess", T0 + timedelta(weeks=0 if i >= 20 else 1), assess_data(pain=8))
    sweep_at = T0 + timedelta(days=15)
    due = sorted(patient for patient, _pathway in engine.store.due_ids(sweep_at))
    assert due == [f"p{i:03d}" for i in range(20, 30)]
    assert engine.store.id_boundaries(2, due_at=sweep_at) == ["p025"]  # five due on each side
    assert engine.store.id_boundaries(2) == ["p015"]  # every enrolment, when no time is given
