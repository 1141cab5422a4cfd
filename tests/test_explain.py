"""`explain`: every outgoing rule of the current state with its inputs' values, from the same rules."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from pathway import Engine, Explanation, TimeWentBackwards, TransitionView
from pathway.cli import main
from persistence import UnknownPatient
from states import NaiveTime, get_pathway
from tests.conftest import T0
from tests.helpers import assess_data, reassess_data

RULES = get_pathway("piriformis", 1).rules

WEEK = timedelta(weeks=1)


def _in_first_line(engine: Engine, patient: str = "p1") -> None:
    """Baseline pain 7 at T0; at two weeks pain 4 (43 % better) with improving fasciculations."""
    engine.enroll(patient, T0, version=1)
    engine.send(patient, "assess", T0, assess_data(pain=7))
    engine.send(patient, "reassess", T0 + 2 * WEEK, reassess_data(pain=4, fasciculations="improving"))


def _rule(x: Explanation, name: str) -> TransitionView:
    return next(t for t in x.transitions if t.rule == name)


def test_escalation_reads_weeks_and_improvement_as_percentages(engine: Engine) -> None:
    """The escalation rule shows weeks in line at `at` and improvement in % against its thresholds."""
    _in_first_line(engine)
    x = engine.explain("p1", T0 + 2 * WEEK)
    escalate = _rule(x, "reassess.escalate_to_second_line")
    assert escalate.text.startswith("second_line when (weeks_in_line >= 4 (now 2.0) and improvement < 30 % (now 43 %))")
    assert "weeks_in_line >= 6 (now 2.0) and improvement < 50 % (now 43 %)" in escalate.text
    assert not escalate.holds_now


def test_resolution_uses_the_last_recorded_observation(engine: Engine) -> None:
    """Pain and fasciculations stand in with their last recorded values; the next value must meet the threshold."""
    _in_first_line(engine)
    resolved = _rule(engine.explain("p1", T0 + 2 * WEEK), "reassess.resolved")
    assert resolved.text == "resolved when pain <= 2 (now 4) and fasciculations in (absent, improving) (now improving)"
    pain, fasciculations = resolved.clauses[0]
    assert (pain.basis, pain.holds, fasciculations.holds) == ("last_recorded", False, True)
    assert resolved.needs == ["next pain <= 2"]


def test_time_conditions_say_when_they_will_hold(engine: Engine) -> None:
    """Clock-driven conditions are extrapolated: due at +2 weeks, escalation possible at 6 weeks in line."""
    _in_first_line(engine)
    x = engine.explain("p1", T0 + 2 * WEEK)
    due = _rule(x, "tick.due").clauses[0][0]
    assert due.basis == "clock"
    assert due.holds_from == T0 + 4 * WEEK
    assert x.next_due_at == T0 + 4 * WEEK
    escalate = _rule(x, "reassess.escalate_to_second_line")
    assert escalate.needs == ["weeks_in_line >= 6: from 2026-02-16 09:00 UTC"]


def test_every_rule_of_the_active_states_is_listed_in_definition_order(engine: Engine) -> None:
    """The transitions are the definition's own rules whose sources are active, nothing added or dropped."""
    _in_first_line(engine)
    x = engine.explain("p1", T0 + 2 * WEEK)
    active = set(x.configuration)
    assert [t.rule for t in x.transitions] == [r.name for r in RULES if r.sources & active]


def test_the_rule_that_decides_now_is_what_the_engine_then_does(engine: Engine) -> None:
    """At six weeks with the same values, explain names escalation, and the engine escalates."""
    _in_first_line(engine)
    at = T0 + 6 * WEEK
    x = engine.explain("p1", at)
    deciding = [t.rule for t in x.transitions if t.decides_now and t.event == "reassess"]
    assert deciding == ["reassess.escalate_to_second_line"]
    result = engine.send("p1", "reassess", at, reassess_data(pain=4, fasciculations="improving"))
    assert result.status.state == "second_line"


def test_a_new_patient_has_nothing_recorded_yet(engine: Engine) -> None:
    """Before assessment the inputs are unknown: the next event decides."""
    engine.enroll("p1", T0, version=1)
    x = engine.explain("p1", T0)
    criteria = _rule(x, "assess.criteria_met")
    assert all(c.basis == "not_recorded" and not c.holds for c in criteria.clauses[0])
    assert "(now not recorded)" in criteria.text
    assert _rule(x, "assess.criteria_not_met").decides_now


def test_a_final_state_has_no_way_out(engine: Engine) -> None:
    """A patient referred urgently has no outgoing rules and is reported final."""
    engine.enroll("p1", T0, version=1)
    engine.send("p1", "assess", T0, assess_data(red_flags=["cauda_equina"]))
    x = engine.explain("p1", T0 + WEEK)
    assert (x.state, x.final, x.transitions) == ("urgent_referral", True, [])


def test_explain_defaults_to_the_engine_clock_and_accepts_a_store(engine: Engine) -> None:
    """Without `at` the engine's clock is used; an engine over an open store works too."""
    _in_first_line(engine)
    assert engine.explain("p1").at == engine.clock.now  # type: ignore[attr-defined]  # FakeClock
    assert Engine(engine.store).explain("p1", T0 + 3 * WEEK).state == "first_line"


def test_bad_requests_are_refused(engine: Engine) -> None:
    """Unknown patients, times before the last event and naive times raise specific errors."""
    _in_first_line(engine)
    with pytest.raises(UnknownPatient):
        engine.explain("nobody")
    with pytest.raises(TimeWentBackwards):
        engine.explain("p1", T0 + WEEK)
    with pytest.raises(NaiveTime):
        engine.explain("p1", datetime(2026, 3, 1))


def test_cli_json_document(sqlite_engine: Engine, sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`explain --json` prints one document with the contract's keys, clauses as lists of conditions."""
    _in_first_line(sqlite_engine)
    assert main(["--db", sqlite_url, "explain", "p1", "--at", (T0 + 2 * WEEK).isoformat(), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert {"patient_id", "state", "at", "next_due_at", "transitions"} <= set(document)
    assert document["next_due_at"] == (T0 + 4 * WEEK).isoformat()
    first = document["transitions"][0]
    assert {"rule", "event", "target", "description", "clauses", "holds_now"} <= set(first)
    condition = first["clauses"][0][0]
    assert {"input", "op", "threshold", "value", "holds", "text"} <= set(condition)
    escalate = next(t for t in document["transitions"] if t["rule"] == "reassess.escalate_to_second_line")
    assert escalate["clauses"][0][1]["value"] == pytest.approx(3 / 7, abs=1e-6)


def test_cli_human_output(sqlite_engine: Engine, sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The human form groups rules by event; each rule, its values now and what would change it, in words."""
    _in_first_line(sqlite_engine)
    assert main(["--db", sqlite_url, "explain", "p1", "--at", (T0 + 2 * WEEK).isoformat()]) == 0
    out = " ".join(capsys.readouterr().out.split())  # undo the console's line wrapping
    for text in (
        "on reassess",
        "on tick",
        "escalates to second line when improvement is below 30 % at 4 weeks in line",
        "improvement 43 %",
        "needs the next pain to be at or below 2",
        "2026-01-19",
    ):
        assert text in out


def test_cli_errors_exit_with_the_contract_status(sqlite_engine: Engine, sqlite_url: str) -> None:
    """Unknown patient exits 4; a naive or malformed --at exits 2."""
    _in_first_line(sqlite_engine)
    assert main(["--db", sqlite_url, "explain", "nobody"]) == 4
    assert main(["--db", sqlite_url, "explain", "p1", "--at", "2026-03-01T00:00:00"]) == 2
    assert main(["--db", sqlite_url, "explain", "p1", "--at", "soon"]) == 2
