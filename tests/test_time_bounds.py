"""Both bounds of a plausible clinical time, enforced alike on SQLite and PostgreSQL by every way in:
`enroll`, `send`, an `import` line and a sweep (`tick --at`) refuse a time before 1900 (in UTC) as
implausible, and one more than 5 minutes ahead of the clock (a day ahead, a year ahead) as future.
`correct` takes no time: a corrected entry keeps the time of the entry it corrects."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pathway import CarepathError, Engine, EventInFuture, FakeClock, InvalidCommand, exit_code
from pathway.cli import main
from tests.conftest import NOW, T0
from tests.helpers import assess_data

# The documented bounds: nothing before 1900 (in UTC), nothing more than 5 minutes ahead of the clock.
EARLIEST_YEAR = 1900
MAX_FUTURE_SKEW = timedelta(minutes=5)
PLUS_ONE = timezone(timedelta(hours=1))
TOO_EARLY: list[tuple[str, datetime]] = [
    ("1899-12-31 UTC", datetime(1899, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ("1900-01-01 00:30+01:00, still 1899 in UTC", datetime(1900, 1, 1, 0, 30, tzinfo=PLUS_ONE)),
]
TOO_LATE: list[tuple[str, datetime]] = [
    ("skew and a second", NOW + MAX_FUTURE_SKEW + timedelta(seconds=1)),
    ("a day and a second", NOW + timedelta(days=1, seconds=1)),
    ("year 9999", datetime(9999, 12, 31, tzinfo=UTC)),
]
UNREPRESENTABLE = datetime.max.replace(tzinfo=timezone(timedelta(hours=-14)))
CASES: list[tuple[str, datetime, type[Exception], str]] = [
    *((case, at, InvalidCommand, f"before {EARLIEST_YEAR}") for case, at in TOO_EARLY),
    *((case, at, EventInFuture, "in the future") for case, at in TOO_LATE),
    ("datetime.max at -14:00", UNREPRESENTABLE, InvalidCommand, "no UTC time"),
]
IDS = [case for case, *_ in CASES]
REASSESS = {"pain": 7, "fasciculations": "stable", "red_flags": []}


def _treated(engine: Engine) -> Engine:
    """Patient p enrolled and assessed at T0, due for a sweep three weeks later."""
    engine.enroll("p", T0, version=1)
    engine.send("p", "assess", T0, assess_data(pain=8))
    return engine


def _refused(call: Callable[[], Any]) -> tuple[type[BaseException], str, int]:
    with pytest.raises(CarepathError) as caught:
        call()
    return type(caught.value), str(caught.value), exit_code(caught.value)


def _ways_in(engine: Engine, at: datetime) -> dict[str, Callable[[], Any]]:
    return {
        "enroll": lambda: engine.enroll("q", at, version=1),
        "send": lambda: engine.send("p", "reassess", at, REASSESS),
        "tick": lambda: engine.tick(at),
    }


@pytest.mark.parametrize(("case", "at", "kind", "words"), CASES, ids=IDS)
def test_implausible_and_future_times_are_refused_alike_everywhere(
    engine: Engine, tmp_path: Path, case: str, at: datetime, kind: type[Exception], words: str
) -> None:
    """enroll, send and tick refuse the time with the same error class and message on both
    backends (the message naming the bound), and write nothing."""
    _treated(engine)
    reference = _treated(Engine(f"sqlite:///{tmp_path / 'reference.db'}", FakeClock(NOW)))
    for way, call in _ways_in(engine, at).items():
        refused = _refused(call)
        assert refused[0] is kind and words in refused[1] and refused[2] == 2, (way, refused)
        assert _refused(_ways_in(reference, at)[way]) == refused, way
    assert [e.seq for e in engine.history("p")] == [1, 2]
    assert not engine.store.exists("q")
    reference.close()


@pytest.mark.parametrize(("case", "at", "kind", "words"), CASES, ids=IDS)
def test_an_import_line_out_of_bounds_is_rejected_alone(
    engine: Engine, case: str, at: datetime, kind: type[Exception], words: str
) -> None:
    """An enrolment and an event at the time are rejected with the message `send` gives; the lines
    around them are applied."""
    _treated(engine)
    good = T0 + timedelta(weeks=1)
    lines = [
        json.dumps({"patient": "a", "event": "enroll", "at": good.isoformat(), "version": 1}),
        json.dumps({"patient": "b", "event": "enroll", "at": at.isoformat(), "version": 1}),
        json.dumps({"patient": "p", "event": "reassess", "at": at.isoformat(), "data": REASSESS}),
        json.dumps({"patient": "c", "event": "enroll", "at": good.isoformat(), "version": 1}),
    ]
    report = engine.ingest(lines, batch=10)
    assert report.accepted == 2
    assert [r.line for r in report.rejected] == [2, 3]
    assert all(words in r.error for r in report.rejected), report.rejected
    assert engine.store.exists("a") and engine.store.exists("c") and not engine.store.exists("b")
    assert [e.seq for e in engine.history("p")] == [1, 2]


def test_the_bounds_are_inclusive_at_the_edges(engine: Engine) -> None:
    """1900-01-01T00:00Z and exactly clock + 5 minutes are accepted, by send and by an import line."""
    engine.enroll("p", datetime(1900, 1, 1, tzinfo=UTC), version=1)
    edge = NOW + MAX_FUTURE_SKEW
    assert engine.send("p", "assess", edge, assess_data(pain=8)).changed
    line = json.dumps({"patient": "q", "event": "enroll", "at": edge.isoformat(), "version": 1})
    assert engine.ingest([line]).accepted == 1


@pytest.mark.parametrize(
    ("command", "words"),
    [
        (["enroll", "q", "--version", "1", "--at", "1899-12-31T23:59:59+00:00"], "before 1900"),
        (
            ["send", "p", "reassess", "--at", "2999-01-01T00:00:00+00:00", "--data", json.dumps(REASSESS)],
            "in the future",
        ),
        (["tick", "--at", "2999-01-01T00:00:00+00:00", "--workers", "2"], "in the future"),
        (["tick", "--at", "1899-06-01T00:00:00+00:00", "--workers", "2"], "before 1900"),
        (["worker", "--once", "--at", "2999-01-01T00:00:00+00:00"], "in the future"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else value,
)
def test_the_command_line_refuses_out_of_bounds_times_with_exit_2(
    sqlite_url: str, capsys: pytest.CaptureFixture[str], command: list[str], words: str
) -> None:
    """Each command prints one line naming the bound and exits 2 (the engine refuses alike on both
    backends, above)."""
    db_url = sqlite_url
    engine = _treated(Engine(db_url, FakeClock(NOW)))
    engine.close()
    capsys.readouterr()
    assert main(["--db", db_url, *command]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err
    reopened = Engine(db_url)
    assert [e.seq for e in reopened.history("p")] == [1, 2] and not reopened.store.exists("q")
    reopened.close()
