"""Cohort views: `list` (state, dwell, next due, overdue, counts) and `due` (what a tick would change)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from pathway import Engine
from pathway.cli import main
from tests.conftest import T0
from tests.helpers import assess_data, reassess_data

WEEK = timedelta(weeks=1)
ROOT = Path(__file__).resolve().parent.parent


def _cohort(engine: Engine) -> None:
    """a: first line, reassessed at 1 week, ticked due at 4 weeks; b: first line, never reassessed,
    ticked overdue at 4 weeks; c: second line since 4 weeks; d: still in assessment."""
    for patient in "abcd":
        engine.enroll(patient, T0, version=1)
    for patient in "abc":
        engine.send(patient, "assess", T0, assess_data(pain=8))
    engine.send("a", "reassess", T0 + WEEK, reassess_data(pain=7))
    engine.send("c", "reassess", T0 + 4 * WEEK, reassess_data(pain=8))
    engine.tick(T0 + 4 * WEEK)


def test_list_gives_state_dwell_due_and_overdue(engine: Engine) -> None:
    """Each row carries the state, the time since entering it, next_due_at and the overdue flag."""
    _cohort(engine)
    at = T0 + 5 * WEEK
    rows = {row.patient_id: row for row in engine.cohort(at)}
    assert {p: r.state for p, r in rows.items()} == {
        "a": "first_line",
        "b": "first_line",
        "c": "second_line",
        "d": "assessment",
    }
    assert rows["c"].dwell == WEEK
    assert rows["a"].dwell_days == pytest.approx(35)
    assert rows["b"].overdue and "overdue" in rows["b"].configuration
    assert rows["b"].next_due_at is None
    # a was reassessed at 1 week and ticked due at 4 weeks: overdue from 5 weeks, not yet ticked.
    assert "due" in rows["a"].configuration
    assert rows["a"].next_due_at == T0 + 5 * WEEK
    assert (rows["a"].tick, rows["a"].overdue) == ("overdue", True)
    assert (rows["c"].tick, rows["c"].overdue) == (None, False)
    assert rows["d"].next_due_at is None


def test_list_filters_by_state(engine: Engine) -> None:
    """--state keeps only the patients in that state."""
    _cohort(engine)
    assert [row.patient_id for row in engine.cohort(T0 + 5 * WEEK, "first_line")] == ["a", "b"]
    assert list(engine.cohort(T0 + 5 * WEEK, "resolved")) == []


def test_due_predicts_what_the_tick_then_does(engine: Engine) -> None:
    """`due` lists exactly the patients with next_due_at <= at, and a tick then moves them as announced."""
    _cohort(engine)
    at = T0 + 6 * WEEK
    rows = list(engine.due_cohort(at))
    assert {row.patient_id for row in rows} == {status.patient_id for status in engine.due(at)}
    predicted = {row.patient_id: row.tick for row in rows}
    assert predicted == {"a": "overdue", "c": "due"}
    engine.tick(at)
    assert {p: engine.status(p).configuration[-1] for p in predicted} == predicted


def test_due_before_anyone_is_due_is_empty(engine: Engine) -> None:
    """Right after assessment nobody is due."""
    _cohort(engine)
    assert list(engine.due_cohort(T0 + 4 * WEEK)) == []


def test_cli_list_json(sqlite_engine: Engine, sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`list --json` prints one document with counts per state and a row per patient."""
    _cohort(sqlite_engine)
    assert main(["--db", sqlite_url, "list", "--at", (T0 + 5 * WEEK).isoformat(), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["counts"] == {"first_line": 2, "second_line": 1, "assessment": 1}
    assert document["total"] == 4
    assert document["overdue"] == 2
    c = next(row for row in document["patients"] if row["patient_id"] == "c")
    assert (c["state"], c["dwell_days"], c["dwell_weeks"]) == ("second_line", 7.0, 1.0)


def test_cli_list_state_filter_keeps_full_counts(
    sqlite_engine: Engine, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --state only matching patients are listed; the counts still cover every state."""
    _cohort(sqlite_engine)
    assert main(["--db", sqlite_url, "list", "--state", "second_line", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [row["patient_id"] for row in document["patients"]] == ["c"]
    assert document["total"] == 4


def test_cli_list_human_tables(sqlite_engine: Engine, sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The human form is a table of patients and a table of counts per state."""
    _cohort(sqlite_engine)
    assert main(["--db", sqlite_url, "list", "--at", (T0 + 5 * WEEK).isoformat()]) == 0
    out = capsys.readouterr().out
    for text in ("patients per state", "second_line", "overdue", "7 d", "5.0 wk", "total"):
        assert text in out


def test_cli_due_json_and_human(sqlite_engine: Engine, sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`due --json` counts what a tick would do; the human form says it in a sentence."""
    _cohort(sqlite_engine)
    at = (T0 + 6 * WEEK).isoformat()
    assert main(["--db", sqlite_url, "due", "--at", at, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["count"], document["actions"]) == (2, {"due": 1, "overdue": 1})
    assert [row["patient_id"] for row in document["patients"]] == ["a", "c"]
    assert main(["--db", sqlite_url, "due", "--at", at]) == 0
    assert "1 -> due, 1 -> overdue" in " ".join(capsys.readouterr().out.split())


def test_cli_rejects_bad_times(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A naive or malformed --at exits 2 with one line naming the problem."""
    assert main(["--db", sqlite_url, "due", "--at", "2026-03-01T00:00:00"]) == 2
    assert main(["--db", sqlite_url, "list", "--at", "yesterday"]) == 2
    assert "--at" in capsys.readouterr().err


def test_cli_as_a_subprocess(sqlite_engine: Engine, sqlite_url: str) -> None:
    """The installed entry point prints the same JSON document from a separate process."""
    _cohort(sqlite_engine)
    env = {**os.environ, "CAREPATH_DB": sqlite_url}
    done = subprocess.run(
        [sys.executable, "-m", "pathway", "list", "--json"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total"] == 4
