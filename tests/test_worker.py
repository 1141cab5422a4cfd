"""`carepath worker`: the scheduler that advances due patients, alone or several at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pathway import Engine, FakeClock
from pathway.cli import main
from persistence import Store
from persistence._tables import patients as patients_table
from tests.conftest import NOW, T0
from tests.helpers import assess_data

ROOT = Path(__file__).resolve().parent.parent
# Assessed at T0, so due (2 weeks) but not overdue (4 weeks): one tick advances each exactly once.
SWEEP_AT = T0 + timedelta(weeks=3)
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/test"


def _cohort(url: str, due: int) -> list[str]:
    """`due` patients due at SWEEP_AT, plus one assessed later (not yet due) and one never assessed."""
    engine = Engine(url, FakeClock(NOW))
    patients = [f"p{n:03d}" for n in range(due)]
    for patient in patients:
        engine.enroll(patient, T0, version=1)
        engine.send(patient, "assess", T0, assess_data())
    engine.enroll("later", T0, version=1)
    engine.send("later", "assess", T0 + timedelta(weeks=2), assess_data())
    engine.enroll("unassessed", T0, version=1)
    engine.store.dispose()
    return patients


def _ticks(url: str) -> Counter[str]:
    """Tick audit rows per patient."""
    store = Store(url)
    counts = Counter(entry.patient_id for entry in store.iter_entries() if entry.event == "tick")
    store.dispose()
    return counts


def _set_next_due(store: Store, patients: list[str], when: datetime | None) -> None:
    """Hide or reveal a cohort to the scheduler in one statement."""
    table = patients_table
    with store.engine.begin() as conn:
        conn.execute(table.update().where(table.c.patient_id.in_(patients)).values(next_due_at=when))


def _worker_json(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["--db", url, "worker", *args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if code == 0 else {}


def _spawn_worker(url: str, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "pathway", "--db", url, "worker", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_once_advances_every_due_patient_in_batches(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """One sweep in batches of 3 advances each due patient once and leaves the others alone."""
    patients = _cohort(db_url, 10)
    code, totals = _worker_json(capsys, db_url, "--once", "--at", SWEEP_AT.isoformat(), "--batch", "3")
    assert code == 0
    assert (totals["sweeps"], totals["advanced"], totals["skipped"]) == (1, 10, {})
    assert _ticks(db_url) == Counter(patients)
    engine = Engine(db_url, FakeClock(NOW))
    assert {engine.status(p).configuration[-1] for p in patients} == {"due"}
    assert engine.status("later").configuration[-1] == "scheduled"
    engine.store.dispose()


def test_two_worker_processes_advance_each_due_patient_exactly_once(db_url: str) -> None:
    """Two looping workers that see one due cohort appear at once: each patient is advanced by one of them, once."""
    patients = _cohort(db_url, 40)
    store = Store(db_url)
    _set_next_due(store, patients, None)  # hidden until both workers have swept once
    args = ("--at", SWEEP_AT.isoformat(), "--batch", "2", "--interval", "0.05", "--json")
    workers = [_spawn_worker(db_url, *args) for _ in range(2)]
    try:
        for worker in workers:
            assert worker.stderr is not None and "worker running" in worker.stderr.readline()
        _set_next_due(store, patients, T0 + timedelta(weeks=2))
        deadline = time.monotonic() + 60
        while sum(_ticks(db_url).values()) < len(patients) and time.monotonic() < deadline:
            time.sleep(0.1)
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        outputs = [worker.communicate(timeout=60) for worker in workers]
    finally:
        for worker in workers:  # never leave a worker behind, whatever happened
            if worker.poll() is None:
                worker.kill()
    assert [worker.returncode for worker in workers] == [0, 0], [err for _, err in outputs]
    totals = [json.loads(out) for out, _ in outputs]
    assert sum(t["advanced"] for t in totals) == len(patients)
    assert sum(t["unchanged"] for t in totals) == 0, "a patient was swept by both workers"
    assert _ticks(db_url) == Counter(patients)
    store.dispose()


def test_worker_skips_patients_another_worker_holds(pg_schema_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """On PostgreSQL a worker passes over claimed rows (SKIP LOCKED); they are advanced once released."""
    patients = _cohort(pg_schema_url, 8)
    holder = Store(pg_schema_url)
    with holder.transaction() as tx:
        held = {snap.patient_id for snap in tx.claim_due(SWEEP_AT, 3)}
        code, totals = _worker_json(capsys, pg_schema_url, "--once", "--at", SWEEP_AT.isoformat())
        assert (code, totals["advanced"]) == (0, 5)
        assert not held & set(_ticks(pg_schema_url))
    code, totals = _worker_json(capsys, pg_schema_url, "--once", "--at", SWEEP_AT.isoformat())
    assert (code, totals["advanced"]) == (0, 3)
    assert _ticks(pg_schema_url) == Counter(patients)
    holder.dispose()


def test_loop_runs_until_max_sweeps(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --once the worker keeps sweeping; later sweeps at the same time change nothing."""
    _cohort(sqlite_url, 3)
    code, totals = _worker_json(
        capsys, sqlite_url, "--at", SWEEP_AT.isoformat(), "--interval", "0", "--max-sweeps", "3"
    )
    assert code == 0
    assert (totals["sweeps"], totals["advanced"], totals["errors"]) == (3, 3, 0)


def test_text_output_reports_the_sweep(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json the worker prints each sweep that did something and a closing summary."""
    _cohort(sqlite_url, 2)
    assert main(["--db", sqlite_url, "worker", "--once", "--at", SWEEP_AT.isoformat()]) == 0
    out = capsys.readouterr().out
    assert "2 advanced" in out and "worker: 1 sweeps" in out


def test_sweep_time_defaults_to_the_clock(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --at the sweep runs at the current time, when every patient of 2026-01 is overdue."""
    if datetime.now(T0.tzinfo) < T0 + timedelta(weeks=4):
        pytest.skip("the machine clock is earlier than the cohort's overdue time")
    _cohort(sqlite_url, 2)
    code, totals = _worker_json(capsys, sqlite_url, "--once")
    assert (code, totals["advanced"]) == (0, 3)  # the two due patients and "later"


def test_once_on_an_unreachable_database_fails_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """--once against a server that refuses connections exits 5 with a one-line error."""
    assert main(["--db", UNREACHABLE, "worker", "--once", "--at", SWEEP_AT.isoformat()]) == 5
    err = capsys.readouterr().err
    assert err.startswith("carepath: error: database error") and err.count("\n") == 1


def test_loop_survives_an_unreachable_database(capsys: pytest.CaptureFixture[str]) -> None:
    """In a loop a database outage is reported and retried at the next sweep; a worker none of
    whose sweeps got through exits non-zero (5, storage unavailable) at the end."""
    code = main(["--db", UNREACHABLE, "worker", "--interval", "0", "--max-sweeps", "2", "--json"])
    captured = capsys.readouterr()
    assert code == 5
    assert json.loads(captured.out)["errors"] == 2
    assert captured.err.count("retrying") == 2


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--batch", "0"], "--batch"),
        (["--at", "2026-01-26T09:00:00"], "time zone"),
        (["--at", "yesterday"], "ISO 8601"),
        (["--at", "2100-01-01T00:00:00+00:00"], "future"),
    ],
)
def test_bad_options_exit_2(sqlite_url: str, capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    """A zero batch, a naive, unparsable or future time is refused with exit 2 and nothing written."""
    _cohort(sqlite_url, 1)
    assert main(["--db", sqlite_url, "worker", "--once", *args]) == 2
    assert needle in capsys.readouterr().err
    assert _ticks(sqlite_url) == Counter()


def test_help_shows_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    """worker --help explains the command with an example."""
    assert main(["worker", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Example: carepath" in out and "--once" in out and "--max-sweeps" not in out


@pytest.mark.slow
def test_sigterm_stops_the_loop_cleanly(sqlite_url: str) -> None:
    """SIGTERM ends a looping worker after its sweep, with exit 0 and its summary."""
    _cohort(sqlite_url, 1)
    worker = _spawn_worker(sqlite_url, "--at", SWEEP_AT.isoformat(), "--interval", "0.2")
    assert worker.stdout is not None
    first = worker.stdout.readline()  # printed once the first sweep has committed
    assert "1 advanced" in first
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "worker:" in out and "1 advanced" in out
