"""The same bad input gets the same clean refusal on SQLite and PostgreSQL, never a driver error,
and clinical times are stored, replayed and compared as UTC instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pathway import CarepathError, Engine, InvalidCommand, InvalidPatientId, TimeWentBackwards, verify
from persistence import PersistenceError, StorageUnavailable
from states import StatesError
from tests.conftest import T0
from tests.helpers import assess_data, reassess_data

EST = timezone(timedelta(hours=-5))
EARLIEST_WITH_OFFSET = datetime.min.replace(tzinfo=timezone(timedelta(hours=14)))


def _refusal(call: Any) -> tuple[type[BaseException], str]:
    """The class and message an engine call is refused with (a driver error fails the test)."""
    with pytest.raises(Exception) as caught:
        call()
    error = caught.value
    assert isinstance(error, (CarepathError, StatesError, PersistenceError)), repr(error)
    assert not isinstance(error, StorageUnavailable), str(error)
    return type(error), str(error)


BAD_SENDS: list[tuple[str, dict[str, Any]]] = [
    ("nul in patient id", {"patient_id": "a\x00b"}),
    ("integer patient id", {"patient_id": 17}),
    ("nul in actor", {"actor": "dr\x00who"}),
    ("newline in actor", {"actor": "dr\nwho"}),
    ("long actor", {"actor": "x" * 201}),
    ("nul in key", {"idempotency_key": "k\x00"}),
    ("escape in key", {"idempotency_key": "k\x1b[31m"}),
    ("nul in pathway", {"pathway": "piri\x00formis"}),
    ("datetime.min +14:00", {"at": EARLIEST_WITH_OFFSET}),
    ("before 1900", {"at": datetime(1899, 12, 31, tzinfo=UTC)}),
]


@pytest.mark.parametrize(("case", "change"), BAD_SENDS, ids=[case for case, _ in BAD_SENDS])
def test_bad_send_is_refused_cleanly_and_alike_on_every_backend(
    engine: Engine, case: str, change: dict[str, Any], tmp_path: Any
) -> None:
    """Each bad input is refused with a domain error, the same class and message as on SQLite."""
    engine.enroll("a", T0, version=1)
    arguments: dict[str, Any] = {"patient_id": "a", "event": "assess", "at": T0, "data": assess_data()} | change
    refused = _refusal(lambda: engine.send(**arguments))
    reference = Engine(f"sqlite:///{tmp_path / 'reference.db'}", engine.clock)
    reference.enroll("a", T0, version=1)
    assert _refusal(lambda: reference.send(**arguments)) == refused
    reference.close()
    assert len(engine.history("a")) == 1


@pytest.mark.parametrize(
    ("patient_id", "actor"), [("a\x00", None), (5, None), ("a", "nul\x00"), ("a", "tab\there")], ids=repr
)
def test_bad_enrolment_is_refused_cleanly(engine: Engine, patient_id: Any, actor: Any) -> None:
    """NUL or control characters in an id or actor, or an id that is not text: refused, nothing written."""
    kind, _ = _refusal(lambda: engine.enroll(patient_id, T0, version=1, actor=actor))
    assert kind in (InvalidPatientId, InvalidCommand)
    assert engine.store.count_patients() == 0


@pytest.mark.parametrize("at", [EARLIEST_WITH_OFFSET, datetime(1, 1, 1, tzinfo=UTC), datetime(1899, 1, 1, tzinfo=UTC)])
def test_implausible_times_are_refused(engine: Engine, at: datetime) -> None:
    """Times before 1900, or that no UTC time represents, are refused as implausible."""
    kind, message = _refusal(lambda: engine.enroll("a", at, version=1))
    assert kind is InvalidCommand and "plausible" in message
    kind, message = _refusal(lambda: engine.tick(at))
    assert kind is InvalidCommand and "plausible" in message


def test_queries_with_a_nul_in_the_id_are_refused_cleanly(engine: Engine) -> None:
    """status and history of an id PostgreSQL cannot store are the same refusal everywhere."""
    for call in (lambda: engine.status("a\x00"), lambda: engine.history("a\x00")):
        assert _refusal(call)[0] is InvalidPatientId


# -- times in UTC ----------------------------------------------------------------------------------


def test_events_with_an_offset_verify(engine: Engine) -> None:
    """Assess and reassess sent at -05:00 are stored in UTC, and verify finds the log sound."""
    engine.enroll("a", T0.astimezone(EST), version=1)
    engine.send("a", "assess", (T0 + timedelta(hours=1)).astimezone(EST), assess_data(pain=8))
    engine.send("a", "reassess", (T0 + timedelta(weeks=2)).astimezone(EST), reassess_data(pain=7))
    report = verify(engine.store, workers=1)
    assert report.ok, report.to_json()
    context = engine.status("a").context
    assert all(value.endswith("+00:00") for value in context.values() if isinstance(value, str) and "T" in value)


def test_old_snapshots_with_offsets_in_their_context_still_verify(engine: Engine) -> None:
    """A snapshot written by an earlier engine (context times at -05:00) names the same instants: ok."""
    engine.enroll("a", T0, version=1)
    engine.send("a", "assess", T0 + timedelta(hours=1), assess_data(pain=8))
    context = engine.status("a").context
    shifted = {
        key: datetime.fromisoformat(value).astimezone(EST).isoformat()
        if isinstance(value, str) and value.endswith("+00:00")
        else value
        for key, value in context.items()
    }
    assert shifted != context
    import json

    engine.store.execute_raw(
        "UPDATE carepath_patients SET context = :context WHERE patient_id = 'a'", {"context": json.dumps(shifted)}
    )
    assert verify(engine.store, workers=1).ok


def test_a_daylight_saving_fold_compares_in_real_time(engine: Engine) -> None:
    """01:30 EST (second pass, fold=1) then 01:45 EDT (first pass): 45 minutes earlier, refused."""
    new_york = ZoneInfo("America/New_York")
    later = datetime(2025, 11, 2, 1, 30, fold=1, tzinfo=new_york)  # 06:30 UTC
    earlier = datetime(2025, 11, 2, 1, 45, fold=0, tzinfo=new_york)  # 05:45 UTC
    assert earlier.astimezone(UTC) < later.astimezone(UTC)
    engine.enroll("a", later, version=1)
    with pytest.raises(TimeWentBackwards):
        engine.send("a", "assess", earlier, assess_data())

    with pytest.raises(TimeWentBackwards), engine.batch() as batch:
        batch.enroll("b", later, version=1)
        batch.send("b", "assess", earlier, assess_data())
    assert not engine.enrolments("b")
    assert verify(engine.store, workers=1).ok


def test_release_0_1_0_database_still_verifies(tmp_path: Any) -> None:
    """The database of release 0.1.0 verifies unchanged with times normalised to UTC."""
    import shutil
    from pathlib import Path

    copy = tmp_path / "old.db"
    shutil.copy(Path(__file__).parent / "fixtures" / "release-0.1.0.db", copy)
    engine = Engine(f"sqlite:///{copy}")
    assert verify(engine.store, workers=1).ok
    engine.close()
