"""Every rule of the piriformis pathway, policy version 1 (DESIGN.md section 2), at its boundaries.

Each test is named after the rule it exercises (`assess.criteria_met` -> `test_assess_criteria_met_...`)
and checks both the resulting state and the rule the audit log records as deciding.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from pathway import Engine, SendResult
from states import EventNotAllowed
from tests.conftest import T0
from tests.helpers import assess_data, reassess_data, terms

DAY = timedelta(days=1)
WEEK = timedelta(weeks=1)
RED_FLAGS = terms("red_flag")
NON_EMERGENCY_FLAGS = [flag for flag in RED_FLAGS if flag != "cauda_equina"]
LINE_STATES = ["first_line", "second_line", "third_line"]


# -- helpers ---------------------------------------------------------------------------


def assess(engine: Engine, patient: str = "p", at: datetime = T0, **data: Any) -> SendResult:
    """Enrol `patient` at `at` and assess it with typical findings overridden by `data`."""
    engine.enroll(patient, at, version=1)
    return engine.send(patient, "assess", at, assess_data(**data))


def in_line(engine: Engine, line: str, patient: str = "p", pain: float = 10) -> None:
    """A patient in `line` since T0 with line_baseline `pain` (overridden there at once when not first)."""
    assess(engine, patient, pain=pain)
    if line != "first_line":
        engine.send(patient, "override", T0, {"to": line, "reason": "test setup", "clinician": "dr"})


def reassess(engine: Engine, after: timedelta, patient: str = "p", **data: Any) -> SendResult:
    return engine.send(patient, "reassess", T0 + after, reassess_data(**data))


def rule_of(result: SendResult) -> str | None:
    """The rule the audit entry records as deciding the event."""
    assert result.entry is not None and result.entry.decision is not None
    rule: str | None = result.entry.decision["rule"]
    return rule


def resolve(engine: Engine, patient: str = "p") -> None:
    in_line(engine, "first_line", patient)
    reassess(engine, 2 * WEEK, patient, pain=1, fasciculations="absent")


# -- assess ------------------------------------------------------------------------------


def test_assess_red_flag_emergency_for_cauda_equina(sqlite_engine: Engine) -> None:
    """Cauda equina at assessment refers the patient as an emergency, naming the flag."""
    result = assess(sqlite_engine, red_flags=["cauda_equina"])
    assert result.status.state == "urgent_referral"
    assert result.status.outcome == {"reason": "red_flag", "urgency": "emergency", "red_flags": ["cauda_equina"]}
    assert rule_of(result) == "assess.red_flag_emergency"


@pytest.mark.parametrize("flag", NON_EMERGENCY_FLAGS)
def test_assess_red_flag_urgent_for_every_other_flag(sqlite_engine: Engine, flag: str) -> None:
    """Each other red flag at assessment refers the patient urgently."""
    result = assess(sqlite_engine, red_flags=[flag])
    assert result.status.state == "urgent_referral"
    assert result.status.outcome == {"reason": "red_flag", "urgency": "urgent", "red_flags": [flag]}
    assert rule_of(result) == "assess.red_flag"


def test_assess_red_flag_emergency_when_cauda_equina_is_one_of_several(sqlite_engine: Engine) -> None:
    """Cauda equina among other flags still makes the referral an emergency, listing every flag."""
    result = assess(sqlite_engine, red_flags=["trauma", "cauda_equina"])
    assert result.status.outcome is not None
    assert result.status.outcome["urgency"] == "emergency"
    assert result.status.outcome["red_flags"] == ["trauma", "cauda_equina"]


def test_assess_red_flag_wins_over_radicular_signs(sqlite_engine: Engine) -> None:
    """Rule order: a red flag is checked before radicular signs."""
    findings = ["buttock_pain", "straight_leg_raise"]
    result = assess(sqlite_engine, findings=findings, red_flags=["infection"])
    assert result.status.state == "urgent_referral"


@pytest.mark.parametrize("sign", ["straight_leg_raise", "dermatomal_deficit"])
def test_assess_radicular_signs_rediagnose_even_when_criteria_are_met(sqlite_engine: Engine, sign: str) -> None:
    """Straight leg raise or a dermatomal deficit sends the patient to rediagnose as radiculopathy."""
    findings = ["buttock_pain", "sitting_aggravation", "fair_test", "pace_sign", "midgluteal_tenderness", sign]
    result = assess(sqlite_engine, findings=findings)
    assert result.status.state == "rediagnose"
    assert result.status.outcome == {"reason": "suspected_lumbar_radiculopathy"}
    assert rule_of(result) == "assess.radicular_signs"


@pytest.mark.parametrize(
    ("findings", "pain"),
    [
        (["buttock_pain", "sitting_aggravation", "sciatic_notch_tenderness", "fair_test"], 8),
        (["buttock_pain", "posterior_thigh_radiation", "sitting_aggravation", "pace_sign"], 8),
        (["buttock_pain", "sciatic_notch_tenderness", "sitting_aggravation", "midgluteal_tenderness"], 8),
        (["buttock_pain", "fair_test", "pace_sign", "midgluteal_tenderness"], 8),
        (["buttock_pain", "sitting_aggravation", "fair_test", "pace_sign"], 1),
    ],
    ids=["one-special-fair", "one-special-pace", "one-special-midgluteal", "three-special", "pain-1"],
)
def test_assess_criteria_met(sqlite_engine: Engine, findings: list[str], pain: float) -> None:
    """Buttock pain, pain >= 1 and 3 supporting findings with a special test start first line."""
    result = assess(sqlite_engine, findings=findings, pain=pain)
    assert result.status.configuration == ["treatment", "line", "first_line", "monitoring", "scheduled"]
    assert result.status.state == "first_line"
    assert rule_of(result) == "assess.criteria_met"


def test_assess_criteria_met_sets_line_baseline_and_start(sqlite_engine: Engine) -> None:
    """Entering first line records the assessment's pain as baseline and its time as line start."""
    status = assess(sqlite_engine, pain=7).status
    assert status.context["line_baseline"] == 7
    assert datetime.fromisoformat(status.context["line_started_at"]) == T0


@pytest.mark.parametrize(
    ("findings", "pain"),
    [
        (
            [
                "sitting_aggravation",
                "sciatic_notch_tenderness",
                "posterior_thigh_radiation",
                "fair_test",
                "pace_sign",
                "midgluteal_tenderness",
            ],
            8,
        ),
        (["buttock_pain", "fair_test", "pace_sign"], 8),
        (["buttock_pain", "sitting_aggravation", "sciatic_notch_tenderness", "posterior_thigh_radiation"], 8),
        (["buttock_pain", "sitting_aggravation", "fair_test", "pace_sign"], 0),
        ([], 8),
    ],
    ids=["no-buttock-pain", "two-supporting", "no-special-test", "pain-0", "no-findings"],
)
def test_assess_criteria_not_met(sqlite_engine: Engine, findings: list[str], pain: float) -> None:
    """Missing buttock pain, 2 supporting findings, no special test or pain 0 mean rediagnose."""
    result = assess(sqlite_engine, findings=findings, pain=pain)
    assert result.status.state == "rediagnose"
    assert result.status.outcome == {"reason": "criteria_not_met"}
    assert rule_of(result) == "assess.criteria_not_met"


# -- reassess: leaving treatment ----------------------------------------------------------------


@pytest.mark.parametrize("line", LINE_STATES)
def test_reassess_red_flag_emergency_from_every_line(engine: Engine, line: str) -> None:
    """Cauda equina at a reassessment leaves treatment for an emergency referral from any line."""
    in_line(engine, line)
    result = reassess(engine, 2 * WEEK, red_flags=["cauda_equina"])
    assert result.status.configuration == ["urgent_referral"]
    assert result.status.outcome == {"reason": "red_flag", "urgency": "emergency", "red_flags": ["cauda_equina"]}
    assert rule_of(result) == "reassess.red_flag_emergency"


@pytest.mark.parametrize("flag", NON_EMERGENCY_FLAGS)
def test_reassess_red_flag_urgent_for_every_other_flag(sqlite_engine: Engine, flag: str) -> None:
    """Each other red flag at a reassessment refers urgently, even when pain has resolved."""
    in_line(sqlite_engine, "second_line")
    result = reassess(sqlite_engine, 2 * WEEK, pain=0, fasciculations="absent", red_flags=[flag])
    assert result.status.configuration == ["urgent_referral"]
    assert result.status.outcome == {"reason": "red_flag", "urgency": "urgent", "red_flags": [flag]}
    assert rule_of(result) == "reassess.red_flag"


def test_reassess_red_flag_wins_over_worsening_fasciculations(sqlite_engine: Engine) -> None:
    """Rule order: a red flag is checked before worsening fasciculations."""
    in_line(sqlite_engine, "first_line")
    result = reassess(sqlite_engine, WEEK, fasciculations="worsening", red_flags=["cancer"])
    assert result.status.state == "urgent_referral"


def test_reassess_red_flag_from_overdue_monitoring(sqlite_engine: Engine) -> None:
    """A red flag leaves treatment whatever the monitoring region's state."""
    in_line(sqlite_engine, "third_line")
    sqlite_engine.send("p", "tick", T0 + 5 * WEEK)
    assert "overdue" in sqlite_engine.status("p").configuration
    assert reassess(sqlite_engine, 5 * WEEK, red_flags=["trauma"]).status.configuration == ["urgent_referral"]


@pytest.mark.parametrize("line", LINE_STATES)
def test_reassess_worsening_fasciculations(sqlite_engine: Engine, line: str) -> None:
    """Worsening fasciculations send the patient to rediagnose from any line, even with pain 0."""
    in_line(sqlite_engine, line)
    result = reassess(sqlite_engine, WEEK, pain=0, fasciculations="worsening")
    assert result.status.configuration == ["rediagnose"]
    assert result.status.outcome == {"reason": "worsening_fasciculations"}
    assert rule_of(result) == "reassess.worsening_fasciculations"


@pytest.mark.parametrize("fasciculations", ["absent", "improving"])
@pytest.mark.parametrize("line", LINE_STATES)
def test_reassess_resolved_at_pain_2(sqlite_engine: Engine, line: str, fasciculations: str) -> None:
    """Pain 2 with fasciculations absent or improving resolves the patient from any line."""
    in_line(sqlite_engine, line)
    result = reassess(sqlite_engine, WEEK, pain=2, fasciculations=fasciculations)
    assert result.status.configuration == ["resolved"]
    assert result.status.outcome is None
    assert result.status.next_due_at is None
    assert rule_of(result) == "reassess.resolved"


def test_reassess_resolved_not_at_pain_3(sqlite_engine: Engine) -> None:
    """Pain 3 does not resolve: with 70 % improvement before 4 weeks the patient stays."""
    in_line(sqlite_engine, "first_line")
    result = reassess(sqlite_engine, WEEK, pain=3, fasciculations="absent")
    assert result.status.state == "first_line"
    assert rule_of(result) == "reassess.stay"


@pytest.mark.parametrize("fasciculations", ["present", "stable"])
def test_reassess_resolved_not_with_fasciculations_present_or_stable(
    sqlite_engine: Engine, fasciculations: str
) -> None:
    """Pain 0 does not resolve while fasciculations are present or stable."""
    in_line(sqlite_engine, "first_line")
    result = reassess(sqlite_engine, WEEK, pain=0, fasciculations=fasciculations)
    assert result.status.state == "first_line"
    assert rule_of(result) == "reassess.stay"


# -- reassess: escalation --------------------------------------------------------------------

# (elapsed time in the line, pain against a baseline of 10, expected state)
FIRST_LINE_BOUNDARIES = [
    (27 * DAY, 10, "first_line"),  # no improvement, but not yet 4 weeks
    (28 * DAY, 7.1, "second_line"),  # 29 % at 4 weeks
    (28 * DAY, 7, "first_line"),  # 30 % at 4 weeks
    (41 * DAY, 5.1, "first_line"),  # 49 % before 6 weeks
    (42 * DAY, 5.1, "second_line"),  # 49 % at 6 weeks
    (42 * DAY, 5, "first_line"),  # 50 % at 6 weeks
    (41 * DAY, 7.1, "second_line"),  # 29 % past 4 weeks
]


@pytest.mark.parametrize(("elapsed", "pain", "expected"), FIRST_LINE_BOUNDARIES)
def test_reassess_escalate_to_second_line_boundaries(
    sqlite_engine: Engine, elapsed: timedelta, pain: float, expected: str
) -> None:
    """First line escalates at >= 4 weeks with < 30 % or >= 6 weeks with < 50 % improvement."""
    in_line(sqlite_engine, "first_line", pain=10)
    result = reassess(sqlite_engine, elapsed, pain=pain)
    assert result.status.state == expected
    expected_rule = "reassess.escalate_to_second_line" if expected == "second_line" else "reassess.stay"
    assert rule_of(result) == expected_rule


def test_reassess_escalate_to_second_line_on_both_backends(engine: Engine) -> None:
    """The 4-week / 30 % escalation gives the same answer on every backend."""
    in_line(engine, "first_line", pain=10)
    assert reassess(engine, 28 * DAY, pain=7.1).status.state == "second_line"


def test_reassess_escalate_to_second_line_not_at_exactly_30_percent_in_decimals(sqlite_engine: Engine) -> None:
    """Exactly 30 % improvement in one-decimal scores (7 -> 4.9) is not < 30 % despite binary floats."""
    in_line(sqlite_engine, "first_line", pain=7)
    assert reassess(sqlite_engine, 28 * DAY, pain=4.9).status.state == "first_line"


def test_reassess_escalate_to_second_line_not_at_exactly_50_percent_in_decimals(sqlite_engine: Engine) -> None:
    """Exactly 50 % improvement in one-decimal scores (6.4 -> 3.2) is not < 50 % at 6 weeks."""
    in_line(sqlite_engine, "first_line", pain=6.4)
    assert reassess(sqlite_engine, 42 * DAY, pain=3.2).status.state == "first_line"


@pytest.mark.parametrize(
    ("elapsed", "pain", "expected"),
    [
        (6 * WEEK - DAY, 10, "second_line"),  # no improvement, but not yet 6 weeks
        (6 * WEEK, 7.1, "third_line"),  # 29 % at 6 weeks
        (6 * WEEK, 7, "second_line"),  # 30 % at 6 weeks
        (12 * WEEK - DAY, 5.1, "second_line"),  # 49 % before 12 weeks
        (12 * WEEK, 5.1, "third_line"),  # 49 % at 12 weeks
        (12 * WEEK, 5, "second_line"),  # 50 % at 12 weeks
    ],
)
def test_reassess_escalate_to_third_line_boundaries(
    sqlite_engine: Engine, elapsed: timedelta, pain: float, expected: str
) -> None:
    """Second line escalates at >= 6 weeks with < 30 % or >= 12 weeks with < 50 % improvement."""
    in_line(sqlite_engine, "second_line", pain=10)
    result = reassess(sqlite_engine, elapsed, pain=pain)
    assert result.status.state == expected
    expected_rule = "reassess.escalate_to_third_line" if expected == "third_line" else "reassess.stay"
    assert rule_of(result) == expected_rule


@pytest.mark.parametrize(
    ("elapsed", "pain", "expected"),
    [
        (12 * WEEK - DAY, 10, "third_line"),  # no improvement, but not yet 12 weeks
        (12 * WEEK, 7.1, "rediagnose"),  # 29 % at 12 weeks
        (12 * WEEK, 7, "third_line"),  # 30 % at 12 weeks
        (6 * WEEK, 9, "third_line"),  # third line has no 6-week step
    ],
)
def test_reassess_refractory_boundaries(sqlite_engine: Engine, elapsed: timedelta, pain: float, expected: str) -> None:
    """Third line is refractory at >= 12 weeks with < 30 % improvement, and only then."""
    in_line(sqlite_engine, "third_line", pain=10)
    result = reassess(sqlite_engine, elapsed, pain=pain)
    assert result.status.state == expected
    if expected == "rediagnose":
        assert result.status.outcome == {"reason": "refractory_to_treatment"}
        assert rule_of(result) == "reassess.refractory"


def test_reassess_escalation_takes_reassessment_pain_as_baseline_and_at_as_start(sqlite_engine: Engine) -> None:
    """A line entered by escalation measures improvement from the escalating reassessment."""
    in_line(sqlite_engine, "first_line", pain=10)
    escalated = reassess(sqlite_engine, 4 * WEEK, pain=8).status
    assert escalated.state == "second_line"
    assert escalated.context["line_baseline"] == 8
    assert datetime.fromisoformat(escalated.context["line_started_at"]) == T0 + 4 * WEEK
    # 6 weeks after escalation (10 after T0), 25 % below the new baseline of 8: escalate again.
    assert reassess(sqlite_engine, 10 * WEEK - DAY, pain=6).status.state == "second_line"
    assert reassess(sqlite_engine, 10 * WEEK, pain=6).status.state == "third_line"


def test_reassess_stay_keeps_baseline_and_start(sqlite_engine: Engine) -> None:
    """Staying in a line leaves its baseline and start as they were."""
    in_line(sqlite_engine, "first_line", pain=10)
    status = reassess(sqlite_engine, 2 * WEEK, pain=6).status
    assert status.context["line_baseline"] == 10
    assert datetime.fromisoformat(status.context["line_started_at"]) == T0


def test_reassess_stay_with_zero_baseline_counts_no_improvement(sqlite_engine: Engine) -> None:
    """A line baseline of 0 (override after pain 0) means improvement 0: escalation after 4 weeks."""
    in_line(sqlite_engine, "first_line", pain=8)
    reassess(sqlite_engine, WEEK, pain=0, fasciculations="present")
    sqlite_engine.send("p", "override", T0 + WEEK, {"to": "first_line", "reason": "restart", "clinician": "dr"})
    assert sqlite_engine.status("p").context["line_baseline"] == 0
    assert reassess(sqlite_engine, 5 * WEEK, pain=0, fasciculations="present").status.state == "second_line"


@pytest.mark.parametrize("monitoring", ["due", "overdue"])
def test_reassess_returns_monitoring_to_scheduled(sqlite_engine: Engine, monitoring: str) -> None:
    """Every reassessment, staying or escalating, returns monitoring to scheduled."""
    in_line(sqlite_engine, "first_line", pain=10)
    sqlite_engine.send("p", "tick", T0 + (2 * WEEK if monitoring == "due" else 4 * WEEK))
    assert monitoring in sqlite_engine.status("p").configuration
    status = reassess(sqlite_engine, 4 * WEEK, pain=9).status
    assert status.configuration == ["treatment", "line", "second_line", "monitoring", "scheduled"]


# -- tick ----------------------------------------------------------------------------------------


def test_tick_due_at_two_weeks(sqlite_engine: Engine) -> None:
    """Monitoring becomes due exactly 2 weeks after the last assessment, not a second before."""
    in_line(sqlite_engine, "first_line")
    early = sqlite_engine.send("p", "tick", T0 + 2 * WEEK - timedelta(seconds=1))
    assert not early.changed and early.entry is None
    result = sqlite_engine.send("p", "tick", T0 + 2 * WEEK)
    assert result.status.configuration == ["treatment", "line", "first_line", "monitoring", "due"]
    assert rule_of(result) == "tick.due"


def test_tick_overdue_from_scheduled_at_four_weeks(sqlite_engine: Engine) -> None:
    """A first tick 4 weeks after the last assessment goes straight from scheduled to overdue."""
    in_line(sqlite_engine, "first_line")
    result = sqlite_engine.send("p", "tick", T0 + 4 * WEEK)
    assert result.status.configuration == ["treatment", "line", "first_line", "monitoring", "overdue"]
    assert rule_of(result) == "tick.overdue"


def test_tick_overdue_from_due_at_four_weeks(engine: Engine) -> None:
    """Due becomes overdue exactly 4 weeks after the last assessment, not a second before."""
    in_line(engine, "first_line")
    engine.send("p", "tick", T0 + 3 * WEEK)
    assert not engine.send("p", "tick", T0 + 4 * WEEK - timedelta(seconds=1)).changed
    result = engine.send("p", "tick", T0 + 4 * WEEK)
    assert "overdue" in result.status.configuration
    assert rule_of(result) == "tick.overdue"


def test_tick_measures_from_the_last_reassessment(sqlite_engine: Engine) -> None:
    """The 2-week clock restarts at each reassessment."""
    in_line(sqlite_engine, "first_line")
    reassess(sqlite_engine, 3 * WEEK, pain=9)
    assert not sqlite_engine.send("p", "tick", T0 + 5 * WEEK - timedelta(seconds=1)).changed
    assert "due" in sqlite_engine.send("p", "tick", T0 + 5 * WEEK).status.configuration


def test_tick_that_changes_nothing_writes_nothing(sqlite_engine: Engine) -> None:
    """A tick with no rule to fire (already overdue) leaves history and revision untouched."""
    in_line(sqlite_engine, "first_line")
    sqlite_engine.send("p", "tick", T0 + 4 * WEEK)
    before = sqlite_engine.status("p")
    seqs = [e.seq for e in sqlite_engine.history("p")]
    result = sqlite_engine.send("p", "tick", T0 + 20 * WEEK)
    assert not result.changed and result.entry is None
    assert [e.seq for e in sqlite_engine.history("p")] == seqs
    assert sqlite_engine.status("p").revision == before.revision
    assert sqlite_engine.status("p").last_event_at == before.last_event_at


@pytest.mark.parametrize("line", LINE_STATES)
def test_tick_never_changes_the_line(sqlite_engine: Engine, line: str) -> None:
    """However long without data, ticks move monitoring only; escalation needs a reassessment."""
    in_line(sqlite_engine, line, pain=10)
    for weeks in (2, 4, 13, 20):
        sqlite_engine.send("p", "tick", T0 + weeks * WEEK)
    assert sqlite_engine.status("p").configuration == ["treatment", "line", line, "monitoring", "overdue"]


def test_tick_sweep_advances_due_patients_only(engine: Engine) -> None:
    """Engine.tick advances patients whose monitoring a tick changes and leaves the others."""
    in_line(engine, "first_line", "a")
    engine.enroll("b", T0, version=1)
    in_line(engine, "first_line", "c")
    reassess(engine, 2 * WEEK, "c", pain=9)
    report = engine.tick(T0 + 2 * WEEK)
    assert report.advanced == 1
    assert "due" in engine.status("a").configuration
    assert engine.status("b").state == "assessment"
    assert "scheduled" in engine.status("c").configuration


@pytest.mark.parametrize("event", ["tick", "reassess", "override"])
def test_tick_reassess_override_not_allowed_outside_treatment(sqlite_engine: Engine, event: str) -> None:
    """Treatment events are refused in assessment and resolved."""
    data = {
        "tick": {},
        "reassess": reassess_data(),
        "override": {"to": "second_line", "reason": "r", "clinician": "dr"},
    }[event]
    sqlite_engine.enroll("a", T0, version=1)
    resolve(sqlite_engine, "r")
    for patient in ("a", "r"):
        with pytest.raises(EventNotAllowed):
            sqlite_engine.send(patient, event, T0 + 3 * WEEK, data)


# -- relapse ---------------------------------------------------------------------------------------


def test_relapse_returns_to_assessment(engine: Engine) -> None:
    """Relapse from resolved goes back to assessment and clears the old line's baseline."""
    resolve(engine)
    result = engine.send("p", "relapse", T0 + 8 * WEEK, {"pain": 6, "fasciculations": "present"})
    assert result.status.configuration == ["assessment"]
    assert result.status.context["line_baseline"] is None
    assert result.status.context["line_started_at"] is None
    assert rule_of(result) == "relapse"


def test_relapse_then_assess_starts_a_new_first_line(sqlite_engine: Engine) -> None:
    """After a relapse, a new assessment starts first line with the new pain and time."""
    resolve(sqlite_engine)
    sqlite_engine.send("p", "relapse", T0 + 8 * WEEK, {"pain": 6, "fasciculations": "present"})
    status = sqlite_engine.send("p", "assess", T0 + 9 * WEEK, assess_data(pain=5)).status
    assert status.state == "first_line"
    assert status.context["line_baseline"] == 5
    assert datetime.fromisoformat(status.context["line_started_at"]) == T0 + 9 * WEEK


def test_relapse_not_allowed_in_treatment(sqlite_engine: Engine) -> None:
    """Relapse is an event of the resolved state only."""
    in_line(sqlite_engine, "first_line")
    with pytest.raises(EventNotAllowed):
        sqlite_engine.send("p", "relapse", T0 + WEEK, {"pain": 6, "fasciculations": "present"})


# -- override --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "target"), [("first_line", "third_line"), ("third_line", "first_line")])
def test_override_moves_line_and_leaves_monitoring(sqlite_engine: Engine, start: str, target: str) -> None:
    """Override moves to the named line (up or down) and leaves a due monitoring state due."""
    in_line(sqlite_engine, start)
    sqlite_engine.send("p", "tick", T0 + 2 * WEEK)
    data = {"to": target, "reason": "specialist advice", "clinician": "Dr Rowe"}
    result = sqlite_engine.send("p", "override", T0 + 15 * DAY, data)
    assert result.status.configuration == ["treatment", "line", target, "monitoring", "due"]
    assert rule_of(result) == f"override.{target}"


def test_override_records_reason_and_clinician(engine: Engine) -> None:
    """The override's reason and clinician are kept in the context and the audit entry."""
    in_line(engine, "first_line")
    data = {"to": "second_line", "reason": "failed NSAIDs elsewhere", "clinician": "Dr Rowe"}
    result = engine.send("p", "override", T0 + WEEK, data, actor="dr.rowe")
    override = result.status.context["last_override"]
    assert (override["to"], override["reason"], override["clinician"]) == ("second_line", data["reason"], "Dr Rowe")
    assert result.entry is not None and result.entry.payload == data


def test_override_baseline_is_last_recorded_pain_and_start_is_at(sqlite_engine: Engine) -> None:
    """The overridden line's baseline is the last recorded pain (not the first) and starts at `at`."""
    in_line(sqlite_engine, "first_line", pain=9)
    reassess(sqlite_engine, 2 * WEEK, pain=6)
    data = {"to": "second_line", "reason": "r", "clinician": "dr"}
    status = sqlite_engine.send("p", "override", T0 + 3 * WEEK, data).status
    assert status.context["line_baseline"] == 6
    assert datetime.fromisoformat(status.context["line_started_at"]) == T0 + 3 * WEEK
    # The assessment time (what monitoring measures from) is untouched by an override.
    assert datetime.fromisoformat(status.context["last_assessed_at"]) == T0 + 2 * WEEK


# -- withdraw --------------------------------------------------------------------------------------


def _to_state(engine: Engine, state: str) -> None:
    """Put patient `p` in `state` (a top-level state, a line, or a monitoring state in first line)."""
    if state == "assessment":
        engine.enroll("p", T0, version=1)
    elif state in LINE_STATES:
        in_line(engine, state)
    elif state in ("due", "overdue"):
        in_line(engine, "first_line")
        engine.send("p", "tick", T0 + (2 if state == "due" else 4) * WEEK)
    elif state == "resolved":
        resolve(engine)
    elif state == "rediagnose":
        assess(engine, findings=["buttock_pain"])
    elif state == "urgent_referral":
        assess(engine, red_flags=["trauma"])
    elif state == "withdrawn":
        engine.enroll("p", T0, version=1)
        engine.send("p", "withdraw", T0, {"reason": "moved away"})
    assert state in engine.status("p").configuration


@pytest.mark.parametrize("state", ["assessment", *LINE_STATES, "due", "overdue", "resolved"])
def test_withdraw_from_every_non_final_state(sqlite_engine: Engine, state: str) -> None:
    """Withdraw moves every non-final state to withdrawn, keeping the reason, and ends monitoring."""
    _to_state(sqlite_engine, state)
    result = sqlite_engine.send("p", "withdraw", T0 + 5 * WEEK, {"reason": "declined treatment"})
    assert result.status.configuration == ["withdrawn"]
    assert result.status.outcome == {"reason": "declined treatment"}
    assert result.status.next_due_at is None
    assert rule_of(result) == "withdraw"


@pytest.mark.parametrize("state", ["rediagnose", "urgent_referral", "withdrawn"])
def test_withdraw_not_allowed_from_final_states(sqlite_engine: Engine, state: str) -> None:
    """Final states accept no further event, withdraw included."""
    _to_state(sqlite_engine, state)
    with pytest.raises(EventNotAllowed) as raised:
        sqlite_engine.send("p", "withdraw", T0 + WEEK, {"reason": "moved"})
    assert raised.value.configuration == (state,)


# -- next_due_at -----------------------------------------------------------------------------------


def test_next_due_at_follows_monitoring(engine: Engine) -> None:
    """next_due_at is +2 weeks while scheduled, +4 weeks while due, none when overdue."""
    engine.enroll("p", T0, version=1)
    assert engine.status("p").next_due_at is None
    assert engine.send("p", "assess", T0, assess_data()).status.next_due_at == T0 + 2 * WEEK
    assert engine.send("p", "tick", T0 + 2 * WEEK).status.next_due_at == T0 + 4 * WEEK
    assert engine.send("p", "tick", T0 + 4 * WEEK).status.next_due_at is None
    assert reassess(engine, 5 * WEEK, pain=7).status.next_due_at == T0 + 7 * WEEK


@pytest.mark.parametrize("state", ["resolved", "rediagnose", "urgent_referral", "withdrawn"])
def test_next_due_at_none_outside_treatment(sqlite_engine: Engine, state: str) -> None:
    """No tick can change a patient outside treatment, so nothing is due."""
    _to_state(sqlite_engine, state)
    assert sqlite_engine.status("p").next_due_at is None
    assert sqlite_engine.due(T0 + 52 * WEEK) == []
