"""Property: ticks are observations. For any interleaving of ticks with a fixed set of clinical
events (recorded in any order, the out-of-order ones as late entries), the final state equals the
state of the same clinical events with no ticks but one final tick at the same time (derived
time counters aside, see `_state`); and verify reproduces every re-derivation."""

from __future__ import annotations

import contextlib
import itertools
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pathway import Engine, TimeWentBackwards, verify
from states import EventNotAllowed
from tests.conftest import NOW, T0
from tests.helpers import TYPICAL_FINDINGS

_patients = itertools.count()
HOUR = timedelta(hours=1)
# Clinical events at these weeks after the assessment at T0; the final tick at week 16.
WEEKS = (2, 3, 5, 7, 10, 13)
FINAL = T0 + timedelta(weeks=16)

pains = st.integers(0, 10)
fasciculations = st.sampled_from(["present", "stable", "improving", "absent"])
reassessments = st.lists(st.tuples(pains, fasciculations), min_size=len(WEEKS), max_size=len(WEEKS))
# Each tick: its time (hours after T0, before the final tick) and after how many clinical
# events it is recorded.
ticks = st.lists(st.tuples(st.integers(1, 16 * 7 * 24 - 1), st.integers(0, len(WEEKS))), max_size=6)


def _send(engine: Engine, patient: str, event: str, at: datetime, data: dict[str, object], late: bool) -> None:
    # A tick earlier than what is known; an event the state does not take (either side alike).
    with contextlib.suppress(EventNotAllowed, TimeWentBackwards):
        engine.send(patient, event, at, data, late=late)


def _state(engine: Engine, patient: str) -> tuple[object, ...]:
    """Configuration, next due time and context; derived values that count time (weeks since
    diagnosis) are as of the last event that changed the patient, which a tick may or may not be."""
    status = engine.status(patient)
    timed = set(status.definition.model.derived)
    context = {key: value for key, value in status.context.items() if key not in timed}
    return status.state, status.configuration, context, status.next_due_at


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine(f"sqlite:///{tmp_path_factory.mktemp('prop') / 'p.db'}", lambda: NOW)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reassessments, ticks, st.permutations(range(len(WEEKS))))
def test_ticks_never_change_where_the_clinical_events_lead(
    engine: Engine,
    values: list[tuple[int, str]],
    tick_plan: list[tuple[int, int]],
    order: list[int],
) -> None:
    n = next(_patients)
    ticked, plain = f"t{n}", f"q{n}"
    events = [
        (T0 + timedelta(weeks=week), {"pain": pain, "fasciculations": fasc, "red_flags": []})
        for week, (pain, fasc) in zip(WEEKS, values, strict=True)
    ]
    assess = {"side": "left", "findings": list(TYPICAL_FINDINGS), "pain": 8, "fasciculations": "present"}
    assess["red_flags"] = []
    for patient in (ticked, plain):
        engine.enroll(patient, T0)
        engine.send(patient, "assess", T0, assess)
    # Recorded in `order`, ticks interleaved; an event out of clinical order is a late entry.
    for position, index in enumerate([*order, None]):
        for hours, after in tick_plan:
            if after == position:
                _send(engine, ticked, "tick", T0 + hours * HOUR, {}, False)
        if index is not None:
            at, data = events[index]
            _send(engine, ticked, "reassess", at, data, True)
    _send(engine, ticked, "tick", FINAL, {}, False)
    for at, data in events:
        _send(engine, plain, "reassess", at, data, False)
    _send(engine, plain, "tick", FINAL, {}, False)
    assert _state(engine, ticked) == _state(engine, plain)
    report = verify(engine.store, ticked, workers=1)
    assert report.ok, report.to_json()
