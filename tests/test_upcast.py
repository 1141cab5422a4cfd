"""Payloads stored in an older schema are upcast before validation: read, replayed and verified by current code."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest

from pathway import PAYLOAD_SCHEMA, Engine, verify
from persistence import NewEntry, SnapshotUpdate, Transaction
from states import get_pathway
from states._upcast import (
    UnknownPayloadSchema,
    register_upcaster,
    rename_fields,
    unregister_upcaster,
    upcast,
    upcasters,
)
from tests.conftest import T0
from tests.helpers import assess_data, reassess_data

# Schema 0 of `reassess` (an illustrative older shape): `pain_score` and `fasciculation`.
OLD_NAMES = {"pain_score": "pain", "fasciculation": "fasciculations"}


@pytest.fixture
def schema_zero() -> Iterator[None]:
    """The upcaster from schema 0 to 1 for reassess, registered for the test only."""
    register_upcaster("piriformis", "reassess", 0, rename_fields(**OLD_NAMES))
    yield
    unregister_upcaster("piriformis", "reassess", 0)


def _old_reassess(pain: float, fasciculations: str) -> dict[str, Any]:
    return {"pain_score": pain, "fasciculation": fasciculations, "red_flags": []}


def _write_old(engine: Engine, patient_id: str, event: str, at: datetime, stored: dict[str, Any]) -> None:
    """Append an entry as a schema 0 writer did: payload in the old shape, chain and snapshot correct."""
    definition = get_pathway("piriformis", 1)
    current = {new: stored[old] for old, new in OLD_NAMES.items()} | {"red_flags": stored["red_flags"]}
    payload = definition.validate(event, current)

    def work(tx: Transaction) -> None:
        snapshot = tx.load(patient_id, "piriformis")
        step = definition.apply(snapshot.configuration, snapshot.context, event, payload, at)
        after = list(step.configuration_after)
        entry = NewEntry(
            event=event,
            payload=stored,
            payload_schema=0,
            at=at,
            actor="v0",
            config_before=list(step.configuration_before),
            config_after=after,
            transitions=[dict(t) for t in step.transitions],
            decision=step.decision_record(),
            idempotency_key=None,
        )
        update = SnapshotUpdate(
            configuration=after,
            context=step.context,
            state=definition.state_name(after),
            next_due_at=definition.next_due_at(after, step.context),
            last_event_at=at,
        )
        tx.append(snapshot, entry, update, engine.clock())

    engine.store.run(work)


def _old_patient(engine: Engine, patient_id: str = "old") -> None:
    """Assessed into first line by current code, then two reassessments stored in schema 0."""
    engine.enroll(patient_id, T0, version=1)
    engine.send(patient_id, "assess", T0, assess_data(pain=8))
    _write_old(engine, patient_id, "reassess", T0 + timedelta(weeks=2), _old_reassess(7, "stable"))
    _write_old(engine, patient_id, "reassess", T0 + timedelta(weeks=4), _old_reassess(7, "present"))


def test_old_rows_keep_their_stored_shape_and_schema(engine: Engine, schema_zero: None) -> None:
    """Rows written in schema 0 stay as written: the hash covers the old shape."""
    _old_patient(engine)
    stored = engine.history("old")[2]
    assert (stored.payload_schema, stored.payload) == (0, _old_reassess(7, "stable"))


def test_old_rows_are_replayed_and_verified_by_current_code(engine: Engine, schema_zero: None) -> None:
    """Replay upcasts schema 0 payloads and reaches the stored state; verify finds nothing wrong."""
    _old_patient(engine)
    result = engine.replay("old")
    assert result.state == "second_line"
    assert result.to_json() | {"seq": None, "until": None} == engine.status("old").to_json() | {
        "seq": None,
        "until": None,
        "as_of": None,
    }
    assert verify(engine.store).to_json() == {"ok": True, "patients": 1, "enrolments": 1, "events": 4, "keyed": False}


def test_current_code_continues_a_patient_with_old_rows(engine: Engine, schema_zero: None) -> None:
    """New events append in the current schema after old ones, and the mixed log verifies."""
    _old_patient(engine)
    engine.send("old", "reassess", T0 + timedelta(weeks=6), reassess_data(pain=2, fasciculations="improving"))
    assert [e.payload_schema for e in engine.history("old")] == [1, 1, 0, 0, PAYLOAD_SCHEMA]
    assert engine.replay("old").state == "resolved"
    assert verify(engine.store).ok


def test_old_rows_without_their_upcaster_are_reported(engine: Engine) -> None:
    """Without the upcaster, verify names the first row current code cannot read."""
    register_upcaster("piriformis", "reassess", 0, rename_fields(**OLD_NAMES))
    try:
        _old_patient(engine)
    finally:
        unregister_upcaster("piriformis", "reassess", 0)
    problem = verify(engine.store).problems[0]
    assert (problem.patient_id, problem.first_bad_seq) == ("old", 3)
    assert problem.reason == (
        "replay diverged: piriformis reassess payload has schema 0, which this version (current schema 1) cannot read"
    )


# -- the chain itself ---------------------------------------------------------------------------


def _add(suffix: str) -> Any:
    def step(payload: Mapping[str, Any]) -> dict[str, Any]:
        return {**payload, "trail": payload.get("trail", "") + suffix}

    return step


@pytest.fixture
def demo_chain() -> Iterator[None]:
    """Steps 0->1 and 1->2 for the `note` event of a made-up pathway; none from 2 to 3."""
    register_upcaster("demo", "note", 0, _add("a"))
    register_upcaster("demo", "note", 1, _add("b"))
    yield
    unregister_upcaster("demo", "note", 0)
    unregister_upcaster("demo", "note", 1)


def test_upcast_runs_every_step_in_order(demo_chain: None) -> None:
    """A schema 0 payload passes through each registered step; a step without upcaster keeps it."""
    assert upcast("demo", "note", {"x": 1}, 0, 3) == {"x": 1, "trail": "ab"}
    assert upcast("demo", "note", {"x": 1}, 1, 3) == {"x": 1, "trail": "b"}
    assert upcast("demo", "other", {"x": 1}, 0, 3) == {"x": 1}
    assert sorted(upcasters("demo", "note")) == [0, 1]


def test_current_payload_is_returned_as_it_is(demo_chain: None) -> None:
    """A payload already in the current schema is not copied or changed."""
    payload = {"x": 1}
    assert upcast("demo", "note", payload, 3, 3) is payload


def test_newer_or_unknown_schemas_are_refused(demo_chain: None) -> None:
    """A schema newer than the current one, or older than any upcaster, cannot be read."""
    with pytest.raises(UnknownPayloadSchema, match="schema 4"):
        upcast("demo", "note", {}, 4, 3)
    with pytest.raises(UnknownPayloadSchema, match="schema -1"):
        upcast("demo", "note", {}, -1, 3)
    with pytest.raises(UnknownPayloadSchema):
        upcast("unregistered", "note", {}, 0, 1)


def test_a_step_is_registered_once(demo_chain: None) -> None:
    """Registering a second upcaster for the same step is an error."""
    with pytest.raises(ValueError, match="already registered"):
        register_upcaster("demo", "note", 0, _add("c"))


def test_rename_fields_leaves_other_fields_and_its_input_alone() -> None:
    """rename_fields renames only the named fields and returns a new dict."""
    stored = {"pain_score": 4, "red_flags": []}
    assert rename_fields(pain_score="pain")(stored) == {"pain": 4, "red_flags": []}
    assert stored == {"pain_score": 4, "red_flags": []}
