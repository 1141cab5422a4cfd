"""Replay rebuilds every patient's state from the audit log; time travel; what-if; decision records."""

from __future__ import annotations

import contextlib
import random
from datetime import datetime, timedelta
from typing import Any

import pytest

import states._definition as definition_module
from pathway import Engine, InvalidPolicy, NotEnrolledAt, ReplayDiverged, describe_decision, whatif
from persistence import UnknownPatient
from persistence._store import audit
from states import EventNotAllowed, NaiveTime, get_pathway
from states._guards import evaluate_rule
from tests.conftest import T0
from tests.helpers import TYPICAL_FINDINGS, assess_data, reassess_data

LINES = ("first_line", "second_line", "third_line")
FASCICULATIONS = ("absent", "present", "improving", "stable", "worsening")


def _reassessment(rng: random.Random) -> dict[str, Any]:
    data: dict[str, Any] = {
        "pain": rng.choice([0, 1.5, 2, 3, 4.5, 5, 6, 7, 8, 10]),
        "fasciculations": rng.choice(FASCICULATIONS[:4] * 6 + FASCICULATIONS[4:]),
        "red_flags": ["infection"] if rng.random() < 0.03 else [],
    }
    if rng.random() < 0.3:
        data["function"] = rng.randint(0, 80)
    if rng.random() < 0.1:
        data["documented_compression"] = True
    return data


def _next_event(state: str, rng: random.Random) -> tuple[str, dict[str, Any]]:
    if state in LINES:
        event = rng.choices(["reassess", "tick", "override", "withdraw"], [10, 4, 1, 0.3])[0]
        if event == "reassess":
            return event, _reassessment(rng)
        if event == "override":
            return event, {"to": rng.choice(LINES), "reason": "clinical judgement", "clinician": "dr-a"}
        if event == "withdraw":
            return event, {"reason": "moved away"}
        return event, {}
    if state == "resolved":
        return "relapse", {"pain": rng.choice([4, 6, 8]), "fasciculations": "present"}
    findings = TYPICAL_FINDINGS if rng.random() < 0.9 else [*TYPICAL_FINDINGS, "straight_leg_raise"]
    return "assess", assess_data(findings=list(findings), pain=rng.choice([3, 5, 8, 10]))


def random_history(engine: Engine, patient_id: str, rng: random.Random, steps: int = 12) -> None:
    """Enrol a patient and send it a random but valid course of events from T0 on."""
    factors = rng.choice([{}, {"age": 70}, {"anticoagulant": True, "pregnancy_weeks": 22}])
    engine.enroll(patient_id, T0, factors=factors, version=1)
    at = T0
    for _ in range(steps):
        state = engine.status(patient_id).state
        if state in ("rediagnose", "urgent_referral", "withdrawn"):
            return
        event, data = _next_event(state, rng)
        with contextlib.suppress(EventNotAllowed):  # a random event may not fit the state
            engine.send(patient_id, event, at, data, actor="clinic")
        at += timedelta(days=rng.randint(3, 12), hours=rng.randint(0, 23))


def _status_document(engine: Engine, patient_id: str) -> dict[str, Any]:
    return engine.status(patient_id).to_json()


def _replay_document(engine: Engine, patient_id: str, until: datetime | None = None) -> dict[str, Any]:
    document = engine.replay(patient_id, until=until).to_json()
    document.pop("seq")
    document.pop("until")
    document.pop("as_of")
    return document


def _escalated_patient(engine: Engine, patient_id: str = "p1") -> None:
    """Enrolled at T0, first line at T0 (pain 8), second line at 4 weeks (pain 7), reassessed at 8 weeks."""
    engine.enroll(patient_id, T0, version=1)
    engine.send(patient_id, "assess", T0, assess_data(pain=8))
    engine.send(patient_id, "tick", T0 + timedelta(weeks=2, hours=1))
    engine.send(patient_id, "reassess", T0 + timedelta(weeks=4), reassess_data(pain=7))
    engine.send(patient_id, "reassess", T0 + timedelta(weeks=8), reassess_data(pain=6))


def test_replay_equals_status_after_random_histories(engine: Engine) -> None:
    """For random valid histories, replay rebuilds exactly what status reports, on every backend."""
    rng = random.Random(20260105)
    for n in range(8):
        random_history(engine, f"r{n}", rng)
    for n in range(8):
        assert _replay_document(engine, f"r{n}") == _status_document(engine, f"r{n}")


def test_replay_reports_the_last_seq_and_revision(engine: Engine) -> None:
    """The replay result counts the entries applied and names the last seq replayed."""
    _escalated_patient(engine)
    result = engine.replay("p1")
    assert (result.seq, result.revision, result.state) == (5, 5, "second_line")
    assert result.to_json()["seq"] == 5


def test_time_travel_answers_the_state_at_several_instants(engine: Engine) -> None:
    """With `until`, replay gives the state after the last event at or before that time."""
    _escalated_patient(engine)
    second = timedelta(seconds=1)
    cases = [
        (T0, "first_line", 2, ["treatment", "line", "first_line", "monitoring", "scheduled"]),
        (T0 + timedelta(weeks=2, hours=1), "first_line", 3, ["treatment", "line", "first_line", "monitoring", "due"]),
        (T0 + timedelta(weeks=4) - second, "first_line", 3, ["treatment", "line", "first_line", "monitoring", "due"]),
        (T0 + timedelta(weeks=4), "second_line", 4, ["treatment", "line", "second_line", "monitoring", "scheduled"]),
        (T0 + timedelta(weeks=30), "second_line", 5, ["treatment", "line", "second_line", "monitoring", "scheduled"]),
    ]
    for until, state, seq, configuration in cases:
        result = engine.replay("p1", until=until)
        assert (result.state, result.seq, result.configuration) == (state, seq, configuration), until
    assert _replay_document(engine, "p1", T0 + timedelta(weeks=30)) == _status_document(engine, "p1")


def test_time_travel_keeps_the_plan_and_due_time_of_that_moment(engine: Engine) -> None:
    """The state as of a past time has that time's next_due_at and plan, not today's."""
    _escalated_patient(engine)
    then = engine.replay("p1", until=T0 + timedelta(days=1))
    assert then.next_due_at == T0 + timedelta(weeks=2)
    assert {item.id for item in then.plan} != {item.id for item in engine.status("p1").plan}


def test_time_travel_before_enrolment_is_refused(engine: Engine) -> None:
    """Asking for a time before the patient was enrolled names the patient and the time."""
    _escalated_patient(engine)
    with pytest.raises(NotEnrolledAt, match="not enrolled yet"):
        engine.replay("p1", until=T0 - timedelta(seconds=1))


def test_time_travel_needs_an_aware_time(engine: Engine) -> None:
    """A naive `until` is ambiguous and rejected."""
    _escalated_patient(engine)
    with pytest.raises(NaiveTime):
        engine.replay("p1", until=datetime(2026, 2, 1))


def test_replay_of_an_unknown_patient_raises(engine: Engine) -> None:
    """Replaying a patient id that was never enrolled raises UnknownPatient."""
    with pytest.raises(UnknownPatient):
        engine.replay("nobody")


def test_replay_names_the_first_step_that_does_not_reproduce(engine: Engine) -> None:
    """A recorded configuration the rules would not produce makes replay fail at that seq."""
    _escalated_patient(engine)
    forged = ["resolved"]
    with engine.store.engine.begin() as conn:
        conn.execute(
            audit.update().where((audit.c.patient_id == "p1") & (audit.c.seq == 4)).values(config_after=forged)
        )
    with pytest.raises(ReplayDiverged) as caught:
        engine.replay("p1")
    assert caught.value.seq == 4
    assert caught.value.reason.startswith("replay diverged: configuration after")
    assert engine.replay("p1", until=T0 + timedelta(weeks=3)).state == "first_line"


def test_replay_builds_no_chart_runner_per_event(sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replay reuses the registered definition and its chart runner instead of building one per event."""
    _escalated_patient(sqlite_engine)
    built: list[object] = []
    original = definition_module.ChartRunner.__init__

    def counting(self: Any, chart: Any) -> None:
        built.append(chart)
        original(self, chart)

    monkeypatch.setattr(definition_module.ChartRunner, "__init__", counting)
    sqlite_engine.replay("p1")
    assert built == []


# -- what the audit row tells a reader ---------------------------------------------------------


def test_escalation_record_shows_weeks_improvement_baseline_and_thresholds(sqlite_engine: Engine) -> None:
    """The escalation's audit row holds the weeks in line, improvement, baseline and thresholds."""
    _escalated_patient(sqlite_engine)
    decision = sqlite_engine.history("p1")[3].decision
    assert decision is not None
    assert decision["rule"] == "reassess.escalate_to_second_line"
    assert decision["inputs"]["weeks_in_line"] == 4.0
    assert decision["inputs"]["improvement"] == pytest.approx(0.125)
    assert decision["inputs"]["line_baseline"] == 8.0
    assert decision["thresholds"]["first_line_early_weeks"] == 4.0
    assert decision["thresholds"]["moderate_improvement"] == 0.3


def test_decision_reads_as_sentences_from_the_row_alone(sqlite_engine: Engine) -> None:
    """describe_decision explains an escalation with its values and named thresholds."""
    _escalated_patient(sqlite_engine)
    lines = describe_decision(sqlite_engine.history("p1")[3])
    assert lines[-1].startswith("reassess.escalate_to_second_line held: (weeks_in_line 4 >= 4 (first_line_early_weeks)")
    assert "improvement 0.125 < 0.3 (moderate_improvement)" in lines[-1]
    assert lines[3].startswith("reassess.resolved did not hold: pain 7 <= 2 (resolved_max_pain) [no]")
    assert describe_decision(sqlite_engine.history("p1")[0]) == []


def test_recorded_inputs_and_thresholds_reproduce_every_recorded_verdict(sqlite_engine: Engine) -> None:
    """Re-evaluating each row's recorded inputs against its recorded thresholds gives its recorded verdicts."""
    rng = random.Random(7)
    for n in range(10):
        random_history(sqlite_engine, f"r{n}", rng)
    checked = 0
    for entry in sqlite_engine.store.iter_entries():
        if entry.decision is None:
            continue
        definition = get_pathway(entry.pathway, entry.version)
        rules = {rule.name: rule for rule in definition.rules}
        policy = definition.policy.model_copy(update=entry.decision["thresholds"])
        for name, won in entry.decision["checked"]:
            assert evaluate_rule(rules[name], entry.decision["inputs"], policy).holds == won, (entry.seq, name)
            checked += 1
    assert checked > 50


# -- what-if --------------------------------------------------------------------------------------


def test_whatif_names_the_patients_a_stricter_policy_would_move(engine: Engine) -> None:
    """Under a 40 % moderate-improvement threshold a 37.5 % responder escalates at its 4-week visit."""
    engine.enroll("partial", T0, version=1)
    engine.send("partial", "assess", T0, assess_data(pain=8))
    engine.send("partial", "reassess", T0 + timedelta(weeks=4), reassess_data(pain=5))
    _escalated_patient(engine, "escalated")
    report = whatif(engine.store, {"moderate_improvement": 0.4})
    assert (report.patients, report.events) == (2, 8)
    assert [c.to_json() for c in report.changes] == [
        {
            "patient_id": "partial",
            "pathway": "piriformis",
            "recorded_state": "first_line",
            "whatif_state": "second_line",
            "first_diverging_seq": 3,
            "stopped_at_seq": None,
            "stopped_because": None,
        }
    ]


def test_whatif_stops_a_patient_at_an_event_its_new_state_does_not_allow(sqlite_engine: Engine) -> None:
    """When the what-if state refuses a recorded event, the run stops there and says so."""
    sqlite_engine.enroll("p1", T0, version=1)
    sqlite_engine.send("p1", "assess", T0, assess_data(pain=8))
    sqlite_engine.send("p1", "reassess", T0 + timedelta(weeks=2), reassess_data(pain=3, fasciculations="improving"))
    sqlite_engine.send("p1", "reassess", T0 + timedelta(weeks=4), reassess_data(pain=2, fasciculations="improving"))
    report = whatif(sqlite_engine.store, {"resolved_max_pain": 3})
    change = report.changes[0]
    assert (change.recorded_state, change.whatif_state) == ("resolved", "resolved")
    assert (change.first_diverging_seq, change.stopped_at_seq) == (3, 4)


def test_whatif_with_the_recorded_policy_changes_nobody(engine: Engine) -> None:
    """Replaying under the policy the patients were recorded with moves nobody differently."""
    rng = random.Random(11)
    for n in range(5):
        random_history(engine, f"r{n}", rng)
    assert whatif(engine.store, {}).changes == []


def test_whatif_rejects_a_policy_the_definition_does_not_accept(sqlite_engine: Engine) -> None:
    """An unknown policy field or an out-of-range threshold is refused with the field named."""
    _escalated_patient(sqlite_engine)
    with pytest.raises(InvalidPolicy, match="moderate_improvement"):
        whatif(sqlite_engine.store, {"moderate_improvement": 3})
    with pytest.raises(InvalidPolicy, match="weeks_in_purgatory"):
        whatif(sqlite_engine.store, {"weeks_in_purgatory": 3})
