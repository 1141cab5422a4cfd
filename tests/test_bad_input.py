"""Every bad input of DESIGN.md gives its documented error and writes nothing, on every backend."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest

from pathway import Engine, EventInFuture, FakeClock, TimeWentBackwards, exit_code
from persistence import DuplicatePatient, IdempotencyConflict, UnknownPatient
from states import EventNotAllowed, InvalidPayload, NaiveTime, UnknownEvent
from tests.conftest import NOW, T0
from tests.helpers import assess_data, reassess_data

WEEK = timedelta(weeks=1)
OVERRIDE = {"to": "second_line", "reason": "specialist advice", "clinician": "Dr Rowe"}


@contextmanager
def writes_nothing(engine: Engine, patient: str = "p") -> Iterator[None]:
    """Assert the block leaves the patient's history and snapshot exactly as they were."""
    history = engine.history(patient)
    snapshot = engine.status(patient).snapshot
    yield
    assert engine.history(patient) == history
    assert engine.status(patient).snapshot == snapshot


@pytest.fixture
def treated(engine: Engine) -> Engine:
    """Patient `p` in first line since T0 (pain 8), on every backend."""
    engine.enroll("p", T0, version=1)
    engine.send("p", "assess", T0, assess_data())
    return engine


@pytest.fixture
def treated_sqlite(sqlite_engine: Engine) -> Engine:
    """Patient `p` in first line since T0, on SQLite only."""
    sqlite_engine.enroll("p", T0, version=1)
    sqlite_engine.send("p", "assess", T0, assess_data())
    return sqlite_engine


# -- times --------------------------------------------------------------------------------------


def test_naive_time_is_rejected_on_send(treated: Engine) -> None:
    """An event time without a zone raises NaiveTime (exit 2) naming `at`, and writes nothing."""
    with writes_nothing(treated), pytest.raises(NaiveTime) as raised:
        treated.send("p", "reassess", datetime(2026, 2, 1, 9, 0), reassess_data())
    assert raised.value.field == "at" and "at" in str(raised.value)
    assert exit_code(raised.value) == 2


def test_naive_time_is_rejected_on_enroll(sqlite_engine: Engine) -> None:
    """Enrolling at a naive time raises NaiveTime and enrols nobody."""
    with pytest.raises(NaiveTime):
        sqlite_engine.enroll("p", datetime(2026, 1, 5, 9, 0), version=1)
    assert not sqlite_engine.store.exists("p")


def test_naive_time_is_rejected_on_tick_sweep(treated_sqlite: Engine) -> None:
    """A sweep at a naive time raises NaiveTime and advances nobody."""
    with writes_nothing(treated_sqlite), pytest.raises(NaiveTime):
        treated_sqlite.tick(datetime(2026, 3, 1, 9, 0))


def test_time_going_backwards_is_rejected(treated: Engine) -> None:
    """An event earlier than the patient's last event raises TimeWentBackwards (exit 2)."""
    treated.send("p", "reassess", T0 + 2 * WEEK, reassess_data())
    with writes_nothing(treated), pytest.raises(TimeWentBackwards) as raised:
        treated.send("p", "reassess", T0 + 2 * WEEK - timedelta(seconds=1), reassess_data())
    assert raised.value.last == T0 + 2 * WEEK
    assert exit_code(raised.value) == 2


def test_same_time_as_last_event_is_accepted(treated_sqlite: Engine) -> None:
    """Time may stand still: an event at the last event's time is not 'backwards'."""
    assert treated_sqlite.send("p", "reassess", T0, reassess_data()).changed


def test_backwards_tick_is_rejected_on_send(treated_sqlite: Engine) -> None:
    """A tick sent to one patient before its last event is refused, not silently ignored."""
    treated_sqlite.send("p", "reassess", T0 + 3 * WEEK, reassess_data())
    with writes_nothing(treated_sqlite), pytest.raises(TimeWentBackwards):
        treated_sqlite.send("p", "tick", T0 + 2 * WEEK)


def test_event_more_than_five_minutes_ahead_is_rejected(treated: Engine) -> None:
    """An event stamped more than 5 minutes after the clock raises EventInFuture (exit 2)."""
    with writes_nothing(treated), pytest.raises(EventInFuture) as raised:
        treated.send("p", "reassess", NOW + timedelta(minutes=5, seconds=1), reassess_data())
    assert exit_code(raised.value) == 2


def test_event_exactly_five_minutes_ahead_is_accepted(treated: Engine) -> None:
    """The future limit is inclusive: exactly clock + 5 minutes is accepted."""
    result = treated.send("p", "reassess", NOW + timedelta(minutes=5), reassess_data())
    assert result.changed and result.entry is not None


def test_enrolment_in_the_future_is_rejected(sqlite_engine: Engine) -> None:
    """Enrolment obeys the same 5-minute limit and then enrols nobody."""
    with pytest.raises(EventInFuture):
        sqlite_engine.enroll("p", NOW + timedelta(minutes=6), version=1)
    assert not sqlite_engine.store.exists("p")


def test_tick_sweep_in_the_future_is_rejected(treated_sqlite: Engine) -> None:
    """A sweep stamped beyond the limit is refused before touching anyone."""
    with writes_nothing(treated_sqlite), pytest.raises(EventInFuture):
        treated_sqlite.tick(NOW + timedelta(hours=1))


# -- payloads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pain", [-1, 10.5, math.nan, math.inf, "7", None, True])
def test_out_of_range_or_non_numeric_pain_is_rejected(treated: Engine, pain: Any) -> None:
    """Pain outside 0-10, NaN, infinity or not a number raises InvalidPayload naming `pain`."""
    with writes_nothing(treated), pytest.raises(InvalidPayload) as raised:
        treated.send("p", "reassess", T0 + WEEK, reassess_data(pain=pain))
    assert any(problem.location == ("pain",) for problem in raised.value.problems)
    assert exit_code(raised.value) == 2


@pytest.mark.parametrize("function", [81, -1, 40.5, "40"])
def test_out_of_range_function_is_rejected(treated_sqlite: Engine, function: Any) -> None:
    """The function score must be an integer from 0 to 80."""
    with writes_nothing(treated_sqlite), pytest.raises(InvalidPayload) as raised:
        treated_sqlite.send("p", "reassess", T0 + WEEK, reassess_data(function=function))
    assert "function" in str(raised.value)


@pytest.mark.parametrize("function", [0, 80])
def test_function_limits_are_accepted(treated_sqlite: Engine, function: int) -> None:
    """0 and 80 are valid Lower Extremity Functional Scale scores."""
    assert treated_sqlite.send("p", "reassess", T0 + WEEK, reassess_data(function=function)).changed


@pytest.mark.parametrize(
    ("event", "data", "field"),
    [
        ("reassess", reassess_data(fasciculations="twitching"), "fasciculations"),
        ("reassess", reassess_data(red_flags=["headache"]), "red_flags"),
        ("override", {**OVERRIDE, "to": "fourth_line"}, "to"),
    ],
)
def test_unknown_term_is_rejected(treated: Engine, event: str, data: dict[str, Any], field: str) -> None:
    """A term outside the vocabulary raises InvalidPayload naming the field."""
    with writes_nothing(treated), pytest.raises(InvalidPayload) as raised:
        treated.send("p", event, T0 + WEEK, data)
    assert field in str(raised.value)


def test_unknown_finding_is_rejected(sqlite_engine: Engine) -> None:
    """An unknown finding at assessment is rejected before any rule runs."""
    sqlite_engine.enroll("p", T0, version=1)
    with writes_nothing(sqlite_engine), pytest.raises(InvalidPayload) as raised:
        sqlite_engine.send("p", "assess", T0, assess_data(findings=["buttock_pain", "piriformis_sign"]))
    assert "findings" in str(raised.value)


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("reassess", reassess_data(mood="low")),
        ("tick", {"pain": 3}),
        ("withdraw", {"reason": "moved", "date": "2026-02-01"}),
    ],
)
def test_unknown_field_is_rejected(treated: Engine, event: str, data: dict[str, Any]) -> None:
    """A field the schema does not define raises InvalidPayload saying so."""
    with writes_nothing(treated), pytest.raises(InvalidPayload) as raised:
        treated.send("p", event, T0 + WEEK, data)
    assert "unknown field" in str(raised.value)


@pytest.mark.parametrize(
    ("event", "field"),
    [("reassess", "pain"), ("reassess", "fasciculations"), ("reassess", "red_flags"), ("override", "clinician")],
)
def test_missing_field_is_rejected(treated: Engine, event: str, field: str) -> None:
    """A missing required field raises InvalidPayload naming it."""
    data = dict(reassess_data() if event == "reassess" else OVERRIDE)
    del data[field]
    with writes_nothing(treated), pytest.raises(InvalidPayload) as raised:
        treated.send("p", event, T0 + WEEK, data)
    assert f"{field}: required field missing" in str(raised.value)


def test_duplicate_finding_is_rejected(sqlite_engine: Engine) -> None:
    """A finding listed twice (which could inflate the criteria count) is rejected."""
    sqlite_engine.enroll("p", T0, version=1)
    findings = ["buttock_pain", "fair_test", "fair_test", "pace_sign"]
    with writes_nothing(sqlite_engine), pytest.raises(InvalidPayload) as raised:
        sqlite_engine.send("p", "assess", T0, assess_data(findings=findings))
    assert "fair_test is listed twice in findings" in str(raised.value)


def test_duplicate_red_flag_is_rejected(treated_sqlite: Engine) -> None:
    """A red flag listed twice is rejected."""
    with writes_nothing(treated_sqlite), pytest.raises(InvalidPayload) as raised:
        treated_sqlite.send("p", "reassess", T0 + WEEK, reassess_data(red_flags=["trauma", "trauma"]))
    assert "red_flags" in str(raised.value)


@pytest.mark.parametrize("reason", ["", "x" * 501])
def test_empty_or_overlong_text_is_rejected(treated_sqlite: Engine, reason: str) -> None:
    """Reasons are 1-500 characters."""
    with writes_nothing(treated_sqlite), pytest.raises(InvalidPayload):
        treated_sqlite.send("p", "withdraw", T0 + WEEK, {"reason": reason})


def test_unknown_event_is_rejected(treated: Engine) -> None:
    """An event name the definition does not know raises UnknownEvent listing the known ones (exit 2)."""
    with writes_nothing(treated), pytest.raises(UnknownEvent) as raised:
        treated.send("p", "discharge", T0 + WEEK, {})
    assert "reassess" in raised.value.known
    assert exit_code(raised.value) == 2


@pytest.mark.parametrize("factors", [{"smoker": True}, {"age": -1}, {"pregnancy_weeks": "20"}, {"maoi": "yes"}])
def test_bad_patient_factors_are_rejected(sqlite_engine: Engine, factors: dict[str, Any]) -> None:
    """Unknown, out-of-range or mistyped patient factors refuse the enrolment."""
    with pytest.raises(InvalidPayload):
        sqlite_engine.enroll("p", T0, factors=factors, version=1)
    assert not sqlite_engine.store.exists("p")


def test_invalid_payload_wins_over_event_not_allowed(sqlite_engine: Engine) -> None:
    """Validation comes first: a bad payload in the wrong state is an input error (exit 2), not exit 3."""
    sqlite_engine.enroll("p", T0, version=1)
    with writes_nothing(sqlite_engine), pytest.raises(InvalidPayload):
        sqlite_engine.send("p", "reassess", T0, reassess_data(pain=11))


def test_future_time_wins_over_event_not_allowed(sqlite_engine: Engine) -> None:
    """Validation comes first: a future event in the wrong state is an input error."""
    sqlite_engine.enroll("p", T0, version=1)
    with writes_nothing(sqlite_engine), pytest.raises(EventInFuture):
        sqlite_engine.send("p", "reassess", NOW + WEEK, reassess_data())


# -- patients and states ------------------------------------------------------------------------------


def test_unknown_patient_is_rejected(engine: Engine) -> None:
    """Events, status and history for an unknown patient raise UnknownPatient (exit 4) and create nobody."""
    for call in (
        lambda: engine.send("ghost", "reassess", T0, reassess_data()),
        lambda: engine.status("ghost"),
        lambda: engine.history("ghost"),
    ):
        with pytest.raises(UnknownPatient) as raised:
            call()
        assert raised.value.patient_id == "ghost"
        assert exit_code(raised.value) == 4
    assert not engine.store.exists("ghost")


def test_duplicate_enrolment_is_rejected(engine: Engine) -> None:
    """Enrolling an enrolled patient again raises DuplicatePatient (exit 2) and keeps the first enrolment."""
    engine.enroll("p", T0, factors={"age": 40}, version=1)
    with writes_nothing(engine), pytest.raises(DuplicatePatient) as raised:
        engine.enroll("p", T0 + WEEK, factors={"age": 80}, version=1)
    assert exit_code(raised.value) == 2
    assert engine.status("p").context["factors"]["age"] == 40


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("assess", assess_data()),
        ("relapse", {"pain": 5, "fasciculations": "present"}),
    ],
)
def test_event_in_the_wrong_state_is_rejected(treated: Engine, event: str, data: dict[str, Any]) -> None:
    """A valid event the state does not accept raises EventNotAllowed (exit 3) naming the configuration."""
    with writes_nothing(treated), pytest.raises(EventNotAllowed) as raised:
        treated.send("p", event, T0 + WEEK, data)
    assert raised.value.event == event
    assert "first_line" in raised.value.configuration
    assert exit_code(raised.value) == 3


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("reassess", reassess_data()),
        ("tick", {}),
        ("override", OVERRIDE),
        ("relapse", {"pain": 5, "fasciculations": "present"}),
    ],
)
def test_treatment_events_are_rejected_in_assessment(sqlite_engine: Engine, event: str, data: dict[str, Any]) -> None:
    """Before assessment only assess and withdraw are accepted."""
    sqlite_engine.enroll("p", T0, version=1)
    with writes_nothing(sqlite_engine), pytest.raises(EventNotAllowed):
        sqlite_engine.send("p", event, T0 + WEEK, data)


# -- idempotency -------------------------------------------------------------------------------------


def test_idempotency_key_with_same_payload_returns_first_result(treated: Engine) -> None:
    """Repeating a keyed event returns the first entry, flagged duplicate, and writes nothing."""
    first = treated.send("p", "reassess", T0 + WEEK, reassess_data(pain=5), idempotency_key="visit-1")
    with writes_nothing(treated):
        again = treated.send("p", "reassess", T0 + WEEK, reassess_data(pain=5), idempotency_key="visit-1")
    assert again.duplicate and not again.changed
    assert again.entry == first.entry


def test_idempotency_key_is_checked_before_time_order(treated_sqlite: Engine) -> None:
    """A late retry of a keyed event is a duplicate, not a 'time went backwards' error."""
    first = treated_sqlite.send("p", "reassess", T0 + WEEK, reassess_data(), idempotency_key="visit-1")
    treated_sqlite.send("p", "reassess", T0 + 3 * WEEK, reassess_data())
    with writes_nothing(treated_sqlite):
        again = treated_sqlite.send("p", "reassess", T0 + WEEK, reassess_data(), idempotency_key="visit-1")
    assert again.duplicate and again.entry == first.entry


@pytest.mark.parametrize(
    ("event", "at", "data"),
    [
        ("reassess", T0 + WEEK, reassess_data(pain=4)),
        ("reassess", T0 + 2 * WEEK, reassess_data(pain=5)),
        ("override", T0 + WEEK, OVERRIDE),
    ],
    ids=["other-pain", "other-time", "other-event"],
)
def test_idempotency_key_with_different_payload_is_rejected(
    treated: Engine, event: str, at: datetime, data: dict[str, Any]
) -> None:
    """Reusing a key for a different event, payload or time raises IdempotencyConflict (exit 2)."""
    treated.send("p", "reassess", T0 + WEEK, reassess_data(pain=5), idempotency_key="visit-1")
    with writes_nothing(treated), pytest.raises(IdempotencyConflict) as raised:
        treated.send("p", event, at, data, idempotency_key="visit-1")
    assert raised.value.key == "visit-1"
    assert exit_code(raised.value) == 2


def test_idempotency_keys_are_per_patient(sqlite_engine: Engine) -> None:
    """The same key used for two patients records two events."""
    for patient in ("a", "b"):
        sqlite_engine.enroll(patient, T0, version=1)
        result = sqlite_engine.send(patient, "assess", T0, assess_data(), idempotency_key="k")
        assert result.changed and not result.duplicate


def test_rejected_command_reads_clock_at_most_once(treated_sqlite: Engine, clock: FakeClock) -> None:
    """Even a rejected command stamps nothing and reads the clock no more than once."""
    before = clock.reads
    with pytest.raises(InvalidPayload):
        treated_sqlite.send("p", "reassess", T0 + WEEK, reassess_data(pain=-1))
    assert clock.reads - before <= 1


@pytest.mark.parametrize(
    "url",
    ["postgresql+nosuchdriver://clinic:s3cret-pw@db.example/carepath", "mysql+nosuch://clinic:s3cret-pw@host/db"],
)
def test_an_unusable_database_url_is_reported_without_its_password(url: str) -> None:
    """A URL carepath cannot use is refused as storage unavailable, and the message hides its password."""
    from persistence import StorageUnavailable

    with pytest.raises(StorageUnavailable) as caught:
        Engine(url).status("p-1")
    assert "s3cret-pw" not in str(caught.value)
    assert "clinic:***@" in str(caught.value)
    assert exit_code(caught.value) == 5
