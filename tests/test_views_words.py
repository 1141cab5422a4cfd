"""Text views that read as words: why a patient is where they are, outcomes, flags, plan sources,
and rules stated as sentences (from the definition's hints and rules, naming no pathway)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from freezegun import freeze_time

from pathway import Engine, outcome_text
from pathway.cli import main, render
from tests.conftest import NOW, T0
from tests.helpers import assess_data, reassess_data
from tests.v2_helpers import assess_v2, reassess_v2

WEEK = timedelta(weeks=1)


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A wide console, so that lines are not wrapped."""
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(render, "_console", None)
    yield
    render._console = None


def _cli(url: str, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with freeze_time(NOW):
        assert main(["--db", url, *args]) == 0
    out: str = capsys.readouterr().out
    return out


def test_outcomes_read_as_words() -> None:
    red_flag = {"reason": "red_flag", "urgency": "emergency", "red_flags": ["cauda_equina"]}
    assert outcome_text(red_flag) == "red flag: cauda equina (emergency)"
    assert (
        outcome_text({"reason": "suspected_lumbar_radiculopathy", "detail": None}) == "suspected lumbar radiculopathy"
    )
    assert outcome_text({"reason": "moved away"}) == "moved away"


def test_status_says_why_the_patient_is_here_with_sources(
    sqlite_url: str, sqlite_engine: Engine, capsys: pytest.CaptureFixture[str], wide: None
) -> None:
    sqlite_engine.enroll("p1", T0)
    sqlite_engine.send("p1", "assess", T0, assess_v2(pain=7))
    sqlite_engine.send("p1", "reassess", T0 + 2 * WEEK, reassess_v2(pain=6))
    out = _cli(sqlite_url, capsys, "status", "p1")
    assert "why here: in first line since 2026-01-05" in out
    assert "baseline pain 7" in out
    assert "why here: last pain 6 on 2026-01-19" in out
    assert "weeks since diagnosis (2026-01-05)" in out
    assert "source" in out and "NICE NG59 (1.2.17-1.2.22)" in out


def test_status_prints_the_outcome_in_words(
    sqlite_url: str, sqlite_engine: Engine, capsys: pytest.CaptureFixture[str], wide: None
) -> None:
    sqlite_engine.enroll("p1", T0)
    sqlite_engine.send("p1", "assess", T0, assess_v2(red_flags=["cauda_equina"]))
    out = _cli(sqlite_url, capsys, "status", "p1")
    assert "outcome: red flag: cauda equina (emergency)" in out
    assert "red_flags=" not in out


def test_flags_show_in_status_and_list(
    sqlite_url: str, sqlite_engine: Engine, capsys: pytest.CaptureFixture[str], wide: None
) -> None:
    """Eight weeks without contact flag the patient lost to follow-up (due rows are printed alike)."""
    sqlite_engine.enroll("p1", T0)
    sqlite_engine.send("p1", "assess", T0, assess_v2())
    for weeks in (2, 4, 8, 9):
        sqlite_engine.tick(T0 + weeks * WEEK)
    assert sqlite_engine.status("p1").flags == ["lost_to_follow_up"]
    assert "flags: lost to follow up" in _cli(sqlite_url, capsys, "status", "p1")
    assert "lost to follow up" in _cli(sqlite_url, capsys, "list", "--at", (T0 + 9 * WEEK).isoformat())
    listed = _cli(sqlite_url, capsys, "list", "--json", "--at", (T0 + 9 * WEEK).isoformat())
    assert '"flags": [\n        "lost_to_follow_up"\n      ]' in listed or '"lost_to_follow_up"' in listed


def test_explain_states_rules_in_words(engine: Engine) -> None:
    """Percent inputs, policy values and times read as a sentence; the JSON keeps its keys and adds it."""
    engine.enroll("p1", T0, version=1)
    engine.send("p1", "assess", T0, assess_data(pain=7))
    engine.send("p1", "reassess", T0 + 2 * WEEK, reassess_data(pain=4, fasciculations="improving"))
    x = engine.explain("p1", T0 + 2 * WEEK)
    escalate = next(t for t in x.transitions if t.rule == "reassess.escalate_to_second_line")
    assert escalate.sentence.startswith("escalates to second line when improvement is below 30 % at 4 weeks in line")
    assert escalate.needs_words == ["6 weeks in line: from 2026-02-16 09:00 UTC"]
    resolved = next(t for t in x.transitions if t.rule == "reassess.resolved")
    assert resolved.needs_words == ["the next pain to be at or below 2"]
    record = escalate.to_json()
    assert record["sentence"] == escalate.sentence and record["text"] == escalate.text
    assert "sentence" in record["clauses"][0][0]
