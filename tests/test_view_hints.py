"""Views take what they show from a definition's presentation hints: a second, unrelated
definition brings its own colours, plotted field, levels, stages, goal and FHIR codes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pathway import NEUTRAL_COLOUR, Engine, FakeClock, Scenario, SimulationError, monitoring, plot_cohort
from pathway._timeline import plot_timeline
from pathway.cli.render import state_style, styled_state
from states import Pathway, model_problems, parse_definition, register
from tests.conftest import T0

WEEK = timedelta(weeks=1)
COLOURS = {"idle": "#1565c0", "working": "#00c853", "paused": "#ff6d00", "done": "#d500f9"}


def gauge(**presentation: Any) -> dict[str, Any]:
    """A small pathway unrelated to piriformis: idle -> busy (stage working / paused) -> done on a 0-20 score."""
    score = {"type": "number", "min": 0, "max": 20}
    hints: dict[str, Any] = {
        "title": "Gauge",
        "state_order": ["idle", "working", "paused", "done"],
        "stages": ["working", "paused"],
        "goal": "done",
        "colours": COLOURS,
        "timeline": {
            "input": "score",
            "label": "score (0-20)",
            "scale": [0, 20],
            "levels": {"done_below": "done at {value:g} or below"},
        },
        "fhir": {
            "condition": {"system": "SNOMED CT", "code": "38341003", "display": "Hypertensive disorder"},
            "observations": {"score": {"system": "LOINC", "code": "8480-6", "display": "Systolic blood pressure"}},
            "extra_conditions": {"note": {"system": "ICD-10-CM", "code": "R03.0", "display": "Elevated reading"}},
            "observed_events": ["start", "check"],
            "clinical_status": {"done": "resolved"},
            "careplan_status": {"done": "completed"},
        },
    }
    hints.update(presentation)
    return {
        "name": "gauge",
        "version": 1,
        "review": {"status": "approved"},
        "states": [
            {"id": "idle", "initial": True},
            {
                "id": "busy",
                "parallel": True,
                "states": [
                    {"id": "stage", "states": [{"id": "working", "initial": True}, {"id": "paused"}]},
                    {"id": "watch", "states": [{"id": "fresh", "initial": True}, {"id": "stale"}]},
                ],
            },
            {"id": "done", "final": True},
        ],
        "status_regions": ["stage"],
        "events": {
            "start": {"payload": {"score": score}},
            "check": {
                "payload": {"score": score, "note": {"type": "text", "required": False}},
                "inputs": {"score": {"payload": "score"}},
            },
            "pause": {},
            "tick": {"idle_in": "busy", "inputs": {"weeks_since_check": {"weeks_since": "last_checked_at"}}},
        },
        "policy": {"done_below": {"default": 4.0}, "stale_weeks": {"default": 3.0}},
        "context": {"last_checked_at": None},
        "updates": [{"events": ["start", "check"], "set": {"last_checked_at": "at"}}],
        "schedules": [
            {"region": "watch", "since": "last_checked_at", "due": {"fresh": "stale_weeks"}, "reset_on": ["check"]}
        ],
        "rules": [
            {"name": "start", "event": "start", "from": ["idle"], "to": "busy"},
            {
                "name": "check.done",
                "event": "check",
                "from": ["busy"],
                "to": "done",
                "when": {"all": [{"input": "score", "op": "<=", "policy": "done_below"}]},
            },
            {"name": "check.stay", "event": "check", "from": ["busy"], "to": "busy"},
            {"name": "pause", "event": "pause", "from": ["working"], "to": "paused"},
            {
                "name": "tick.stale",
                "event": "tick",
                "from": ["fresh"],
                "to": "stale",
                "when": {"all": [{"input": "weeks_since_check", "op": ">=", "policy": "stale_weeks"}]},
            },
        ],
        "presentation": hints,
    }


@pytest.fixture(scope="module")
def definition() -> Pathway:
    return register(parse_definition(gauge()))


def _course(engine: Engine, patient: str = "g1") -> None:
    engine.enroll(patient, T0, pathway="gauge")
    engine.send(patient, "start", T0, {"score": 15})
    engine.send(patient, "check", T0 + 2 * WEEK, {"score": 11, "note": "high"})
    engine.send(patient, "pause", T0 + 3 * WEEK, {})
    engine.send(patient, "check", T0 + 5 * WEEK, {"score": 3})


def _has_colour(pixels: Any, hex_colour: str, alpha: float = 0.45) -> bool:
    import numpy as np

    rgb = np.array([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    blended = alpha * rgb + (1 - alpha) * np.ones(3)
    return bool((np.abs(pixels[::2, ::2, :3] - blended).max(axis=-1) < 0.02).mean() > 0.01)


def test_the_timeline_plots_the_hinted_field_in_the_hinted_colours(
    definition: Pathway, sqlite_engine: Engine, tmp_path: Path
) -> None:
    """Bands take the definition's colours; the plotted field, axis label and levels come from its hints."""
    from matplotlib.image import imread

    _course(sqlite_engine)
    entries = sqlite_engine.history("g1")
    pixels = imread(plot_timeline(entries, definition, tmp_path / "g1.png"))
    assert _has_colour(pixels, COLOURS["working"]) and _has_colour(pixels, COLOURS["paused"])
    text = plot_timeline(entries, definition, tmp_path / "g1.svg").read_text()
    assert "score (0-20)" in text and "done at 4 or below" in text
    assert "pain" not in text and "improvement" not in text


def test_the_cohort_plot_reads_stages_goal_and_order_from_the_definition(
    definition: Pathway, sqlite_engine: Engine, tmp_path: Path
) -> None:
    """Weeks to the goal count from entering the first stage; moves between stages are counted; order is hinted."""
    _course(sqlite_engine, "g1")
    sqlite_engine.enroll("g2", T0, pathway="gauge")
    history = sqlite_engine.cohort_history()
    assert history.stages == ["working", "paused"] and history.goals == ["done"]
    assert history.resolution_weeks == [5.0]
    assert history.escalated("paused", "pause") == 1
    assert history.state_order({"done", "idle", "elsewhere"}) == ["idle", "working", "paused", "done", "elsewhere"]
    assert history.colours == COLOURS
    path = plot_cohort(history, tmp_path / "cohort.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fhir_export_uses_the_hinted_codes_and_statuses(definition: Pathway, sqlite_engine: Engine) -> None:
    """The condition, observations, extra condition and CarePlan status come from the definition's fhir hints."""
    pytest.importorskip("fhir.resources.R4B.bundle")
    from fhir.resources.R4B.bundle import Bundle

    _course(sqlite_engine)
    bundle = sqlite_engine.export_fhir("g1")
    Bundle.model_validate(bundle)
    resources = [e["resource"] for e in bundle["entry"]]
    conditions = [r for r in resources if r["resourceType"] == "Condition"]
    assert [c["code"]["coding"][0]["code"] for c in conditions] == ["38341003", "R03.0"]
    assert conditions[0]["code"]["coding"][0]["system"] == "http://snomed.info/sct"
    assert conditions[0]["clinicalStatus"]["coding"][0]["code"] == "resolved"
    observations = [r for r in resources if r["resourceType"] == "Observation"]
    assert [o["valueQuantity"]["value"] for o in observations] == [15.0, 11.0, 3.0]
    assert {o["code"]["coding"][0]["code"] for o in observations} == {"8480-6"}
    careplan = next(r for r in resources if r["resourceType"] == "CarePlan")
    assert careplan["status"] == "completed"


def test_terminal_colours_come_from_the_definition(definition: Pathway) -> None:
    """rich styles are the definition's hex colours; a state without one is neutral."""
    assert styled_state("working", definition) == f"[{COLOURS['working']}]working[/]"
    assert state_style("nowhere", definition) == NEUTRAL_COLOUR
    assert state_style("paused") == COLOURS["paused"]  # any registered definition's colour


def test_monitoring_states_come_from_the_schedules(definition: Pathway) -> None:
    """The state a schedule moves into and never out of is overdue; states it moves on past the first are due."""
    from states import get_pathway

    assert (monitoring(definition).due, monitoring(definition).overdue) == (frozenset(), {"stale"})
    piriformis = monitoring(get_pathway("piriformis", 1))
    assert (piriformis.due, piriformis.overdue) == ({"due"}, {"overdue"})


def test_a_scenario_drives_another_pathway(definition: Pathway, sqlite_url: str) -> None:
    """The simulation knows no pathway: a scenario for the gauge sends its events and reaches its goal."""
    scenario = Scenario.model_validate(
        {
            "pathway": "gauge",
            "measure": {"start": {"integer": [12, 16]}, "noise": 0.3},
            "intake": {"event": "start", "payload": {"score": "$measure"}},
            "visit": {"event": "check", "every_weeks": [1, 2], "payload": {"score": "$measure"}},
            "response": {"working": {"uniform": [0.8, 0.9]}, "paused": 0.9},
            "onset_weeks": 3,
            "archetypes": {
                "steady": {"share": 0.75},
                "leaver": {
                    "share": 0.25,
                    "event_visit": 1,
                    "at_event_visit": {"then": {"event": "pause", "in_state": "working"}},
                },
            },
        }
    )
    engine = Engine(sqlite_url, FakeClock(T0))
    try:
        result = engine.simulate(scenario=scenario, patients=8, seed=1, start=T0, weeks=8)
        states = {s.state for s in engine.patients()}
        assert states <= {"working", "paused", "done"} and "done" in states
        assert result.definition is definition
        assert {p.archetype for p in result.profiles.values()} == {"steady", "leaver"}
        history = engine.cohort_history(result.start, result.end)
        assert history.escalated("paused", "pause") >= 1
    finally:
        engine.store.dispose()


def test_a_scenario_that_does_not_fit_its_pathway_is_refused(definition: Pathway, sqlite_url: str) -> None:
    scenario = Scenario.model_validate(
        {
            "pathway": "gauge",
            "measure": {"start": 10},
            "intake": {"event": "begin", "payload": {}},
            "visit": {"event": "check", "every_weeks": [1, 2], "payload": {"pain": "$measure"}},
            "response": {"nowhere": 0.5},
            "onset_weeks": 3,
            "archetypes": {"all": {"share": 1}},
        }
    )
    engine = Engine(sqlite_url, FakeClock(T0))
    try:
        with pytest.raises(SimulationError) as caught:
            engine.simulate(scenario=scenario, patients=2, start=T0)
        message = str(caught.value)
        assert "no event 'begin'" in message and "no payload field 'pain'" in message and "'nowhere'" in message
    finally:
        engine.store.dispose()


@pytest.mark.parametrize(
    ("hints", "problem"),
    [
        ({"goal": "finished"}, "presentation.goal: unknown state 'finished'"),
        (
            {"timeline": {"input": "score", "label": "s", "levels": {"nope": "x"}}},
            "presentation.timeline.levels: policy has no field 'nope'",
        ),
        (
            {"timeline": {"input": "score", "label": "s", "improvements": {"nope": "x"}}},
            "presentation.timeline.improvements: policy has no field 'nope'",
        ),
        (
            {
                "fhir": {
                    "condition": {"system": "SNOMED CT", "code": "1", "display": "x"},
                    "careplan_status": {"finished": "completed"},
                }
            },
            "presentation.fhir.careplan_status: unknown state 'finished'",
        ),
        (
            {
                "fhir": {
                    "condition": {"system": "SNOMED CT", "code": "1", "display": "x"},
                    "verification_status": {"gone": "refuted"},
                }
            },
            "presentation.fhir.verification_status: unknown state 'gone'",
        ),
    ],
)
def test_hints_naming_unknown_states_or_fields_are_reported(hints: dict[str, Any], problem: str) -> None:
    data = gauge(**hints)
    data["name"] = "gauge-bad"
    assert problem in model_problems(parse_definition(data))


def test_cohort_rows_flag_the_definitions_overdue_state(definition: Pathway, sqlite_engine: Engine) -> None:
    """A gauge patient whose watch went stale is overdue in the cohort view, by the gauge's own schedule."""

    sqlite_engine.enroll("g1", T0, pathway="gauge")
    sqlite_engine.send("g1", "start", T0, {"score": 15})
    sqlite_engine.tick(T0 + 4 * WEEK)
    (row,) = sqlite_engine.cohort(T0 + 4 * WEEK)
    assert "stale" in row.configuration and row.overdue and not row.due
