"""Property: random valid event sequences never break the chart, forbidden events write nothing,
and the stored snapshot always equals re-applying the audit log to a fresh definition."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pathway import Engine, FakeClock
from persistence import AuditEntry, Snapshot
from states import EventNotAllowed, get_pathway
from tests.conftest import T0
from tests.helpers import TYPICAL_FINDINGS, terms

LINES = set(terms("line"))
MONITORING = {"scheduled", "due", "overdue"}
TOP_LEVEL = {"assessment", "treatment", "resolved", "rediagnose", "urgent_referral", "withdrawn"}
# Which events each top-level state accepts (DESIGN.md section 2, events table).
ALLOWED = {
    "assessment": {"assess", "withdraw"},
    "treatment": {"reassess", "tick", "override", "withdraw"},
    "resolved": {"relapse", "withdraw"},
    "rediagnose": set(),
    "urgent_referral": set(),
    "withdrawn": set(),
}

_patients = itertools.count()

# -- strategies ----------------------------------------------------------------------------------

pains = st.integers(0, 100).map(lambda tenths: tenths / 10)
# Worsening (straight to rediagnose) one time in nine.
fasciculations = st.sampled_from([f for f in terms("fasciculations") if f != "worsening"] * 2 + ["worsening"])
# One time in ten a red flag, so that patients live long enough to reach the later rules.
red_flags = st.integers(0, 9).flatmap(
    lambda n: (
        st.lists(st.sampled_from(terms("red_flag")), min_size=1, max_size=2, unique=True) if n == 0 else st.just([])
    )
)
# Mostly findings that meet the criteria, sometimes any combination.
any_findings = st.lists(st.sampled_from(terms("finding")), unique=True)
findings = st.integers(0, 3).flatmap(lambda n: any_findings if n == 0 else st.just(TYPICAL_FINDINGS))
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)

PAYLOADS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "assess": st.fixed_dictionaries(
        {"findings": findings, "pain": pains, "fasciculations": fasciculations, "red_flags": red_flags}
    ),
    "reassess": st.fixed_dictionaries(
        {"pain": pains, "fasciculations": fasciculations, "red_flags": red_flags},
        optional={"function": st.integers(0, 80), "documented_compression": st.booleans()},
    ),
    "tick": st.just({}),
    "relapse": st.fixed_dictionaries({"pain": pains, "fasciculations": fasciculations}),
    "override": st.fixed_dictionaries({"to": st.sampled_from(sorted(LINES)), "reason": texts, "clinician": texts}),
    "withdraw": st.fixed_dictionaries({"reason": texts}),
}
# Weighted towards the events that keep a patient on the pathway.
EVENT_NAMES = [*["reassess"] * 5, *["tick"] * 3, "assess", "assess", "override", "relapse", "relapse", "withdraw"]
# Gaps in hours, with the policy's week boundaries (2, 4, 6, 12 weeks) drawn on purpose.
gaps = st.one_of(st.integers(0, 21 * 24), st.sampled_from([0, 14 * 24, 28 * 24, 42 * 24, 84 * 24]))


@st.composite
def events(draw: st.DrawFn) -> tuple[str, int, dict[str, Any]]:
    name = draw(st.sampled_from(EVENT_NAMES))
    return name, draw(gaps), draw(PAYLOADS[name])


# -- checks ----------------------------------------------------------------------------------------


def assert_well_formed(snapshot: Snapshot) -> None:
    """Inside treatment exactly one line and one monitoring state; outside, one top-level state."""
    configuration = snapshot.configuration
    if "treatment" in configuration:
        lines = [s for s in configuration if s in LINES]
        monitoring = [s for s in configuration if s in MONITORING]
        assert len(lines) == 1 and len(monitoring) == 1, configuration
        assert configuration == ["treatment", "line", lines[0], "monitoring", monitoring[0]]
        assert snapshot.state == lines[0]
    else:
        assert len(configuration) == 1 and configuration[0] in TOP_LEVEL, configuration
        assert snapshot.state == configuration[0]


def assert_snapshot_is_replay(snapshot: Snapshot, history: list[AuditEntry]) -> None:
    """Re-applying the logged events to a fresh definition gives every logged step and the snapshot."""
    definition = get_pathway(snapshot.pathway, snapshot.version)
    enrolment, *entries = history
    configuration, context = definition.start(definition.validate_enrollment(enrolment.payload), enrolment.at)
    assert list(configuration) == enrolment.config_after
    for entry in entries:
        payload = definition.validate(entry.event, entry.payload)
        step = definition.apply(configuration, context, entry.event, payload, entry.at)
        assert list(step.configuration_before) == entry.config_before, entry.seq
        assert list(step.configuration_after) == entry.config_after, entry.seq
        configuration, context = step.configuration_after, step.context
    assert list(configuration) == snapshot.configuration
    assert context == snapshot.context
    assert definition.next_due_at(configuration, context) == snapshot.next_due_at


def top_level(configuration: list[str]) -> str:
    return configuration[0]


# -- the property ------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=PAYLOADS["assess"], course=st.lists(events(), max_size=20))
def test_random_event_sequences_keep_the_chart_whole_and_replayable(
    sqlite_engine: Engine, clock: FakeClock, first: dict[str, Any], course: list[tuple[str, int, dict[str, Any]]]
) -> None:
    """Any valid event sequence keeps a well-formed configuration and a snapshot equal to its replay."""
    patient = f"p{next(_patients)}"  # one engine serves every example: a new patient each time
    sqlite_engine.enroll(patient, T0, version=1)
    at: datetime = T0
    for event, gap_hours, data in [("assess", 0, first), *course]:
        at += timedelta(hours=gap_hours)
        clock.set(max(clock.now, at))  # the clock never lags the events it stamps
        before = sqlite_engine.status(patient).snapshot
        history = sqlite_engine.history(patient)
        if event in ALLOWED[top_level(before.configuration)]:
            result = sqlite_engine.send(patient, event, at, data)
            if not result.changed:
                assert event == "tick" and sqlite_engine.history(patient) == history
        else:
            try:
                sqlite_engine.send(patient, event, at, data)
            except EventNotAllowed:
                pass
            else:
                raise AssertionError(f"{event} was accepted in {before.configuration}")
            assert sqlite_engine.history(patient) == history
            assert sqlite_engine.status(patient).snapshot == before
        assert_well_formed(sqlite_engine.status(patient).snapshot)
    snapshot = sqlite_engine.status(patient).snapshot
    history = sqlite_engine.history(patient)
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert_snapshot_is_replay(snapshot, history)
