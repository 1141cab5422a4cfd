"""Time: the default clock is looked up at call time (freezegun moves it); a fake clock is read
exactly once per command and stamps every record of that command."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

from pathway import Engine, EventInFuture, FakeClock, system_clock
from states import InvalidPayload
from tests.conftest import NOW, T0
from tests.helpers import assess_data, reassess_data

WEEK = timedelta(weeks=1)
FROZEN = datetime(2026, 3, 2, 12, 30, tzinfo=UTC)


@pytest.fixture
def default_engine(sqlite_url: str) -> Iterator[Engine]:
    """An engine built without a clock: it uses the system clock."""
    eng = Engine(sqlite_url)
    yield eng
    eng.store.dispose()


# -- the default clock ----------------------------------------------------------------------------


def test_system_clock_is_looked_up_at_call_time() -> None:
    """system_clock follows freezegun as it moves, and is aware UTC."""
    with freeze_time(FROZEN) as frozen:
        assert system_clock() == FROZEN
        frozen.tick(timedelta(minutes=3))
        assert system_clock() == FROZEN + timedelta(minutes=3)
        assert system_clock().utcoffset() == timedelta(0)


def test_default_clock_stamps_recorded_at_with_frozen_time(default_engine: Engine) -> None:
    """Engine(url) without a clock stamps records with the (frozen) time of the command."""
    with freeze_time(FROZEN) as frozen:
        default_engine.enroll("p", T0, version=1)
        frozen.tick(timedelta(hours=1))
        default_engine.send("p", "assess", T0, assess_data())
    enrolled, assessed = default_engine.history("p")
    assert enrolled.recorded_at == FROZEN
    assert assessed.recorded_at == FROZEN + timedelta(hours=1)
    assert default_engine.status("p").snapshot.updated_at == FROZEN + timedelta(hours=1)


def test_default_clock_limits_future_events(default_engine: Engine) -> None:
    """The 5-minute future limit is measured against the frozen default clock."""
    with freeze_time(FROZEN):
        default_engine.enroll("p", FROZEN + timedelta(minutes=5), version=1)
        with pytest.raises(EventInFuture):
            default_engine.enroll("q", FROZEN + timedelta(minutes=5, seconds=1), version=1)


def test_clinical_time_is_independent_of_recorded_time(default_engine: Engine) -> None:
    """Rules measure `at`, not the clock: a reassessment recorded later is judged at its own time."""
    with freeze_time(FROZEN):
        default_engine.enroll("p", T0, version=1)
        default_engine.send("p", "assess", T0, assess_data(pain=10))
        result = default_engine.send("p", "reassess", T0 + 27 * timedelta(days=1), reassess_data(pain=10))
    assert result.status.state == "first_line"  # 27 days after T0, although the clock reads 8 weeks later


# -- a fake clock ----------------------------------------------------------------------------------


def test_fake_clock_only_moves_forward() -> None:
    """FakeClock refuses to go back or to start naive, and counts its reads."""
    clock = FakeClock(T0)
    assert clock.advance(WEEK) == T0 + WEEK
    assert clock.set(T0 + 2 * WEEK) == T0 + 2 * WEEK
    with pytest.raises(ValueError):
        clock.advance(-timedelta(seconds=1))
    with pytest.raises(ValueError):
        clock.set(T0)
    with pytest.raises(ValueError):
        FakeClock(datetime(2026, 1, 1))
    assert clock() == T0 + 2 * WEEK and clock.reads == 1


def test_fake_clock_stamps_records(sqlite_engine: Engine, clock: FakeClock) -> None:
    """Records carry the fake clock's time when each command ran."""
    sqlite_engine.enroll("p", T0, version=1)
    clock.advance(timedelta(days=1))
    sqlite_engine.send("p", "assess", T0, assess_data())
    assert [e.recorded_at for e in sqlite_engine.history("p")] == [NOW, NOW + timedelta(days=1)]
    snapshot = sqlite_engine.status("p").snapshot
    assert (snapshot.created_at, snapshot.updated_at) == (NOW, NOW + timedelta(days=1))


# -- read once per command ---------------------------------------------------------------------------


class reads_during:  # lower-case: used like a function: `with reads_during(clock) as reads`
    """Context manager measuring how many times a fake clock was read inside the block."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.count = 0

    def __enter__(self) -> reads_during:
        self._start = self.clock.reads
        return self

    def __exit__(self, *exc: object) -> None:
        self.count = self.clock.reads - self._start


def test_enroll_reads_the_clock_once(sqlite_engine: Engine, clock: FakeClock) -> None:
    """One enrolment, one clock read."""
    with reads_during(clock) as reads:
        sqlite_engine.enroll("p", T0, version=1)
    assert reads.count == 1


def test_send_reads_the_clock_once(sqlite_engine: Engine, clock: FakeClock) -> None:
    """One event, whatever its outcome (changed, unchanged, duplicate), one clock read."""
    sqlite_engine.enroll("p", T0, version=1)
    for event, at, data, key in [
        ("assess", T0, assess_data(), None),
        ("reassess", T0 + WEEK, reassess_data(), "visit-1"),
        ("reassess", T0 + WEEK, reassess_data(), "visit-1"),  # duplicate
        ("tick", T0 + WEEK, {}, None),  # changes nothing
    ]:
        with reads_during(clock) as reads:
            sqlite_engine.send("p", event, at, data, idempotency_key=key)
        assert reads.count == 1, event


def test_rejected_send_reads_the_clock_at_most_once(sqlite_engine: Engine, clock: FakeClock) -> None:
    """A refused event does not read the clock repeatedly either."""
    sqlite_engine.enroll("p", T0, version=1)
    with reads_during(clock) as reads, pytest.raises(InvalidPayload):
        sqlite_engine.send("p", "assess", T0, assess_data(pain=11))
    assert reads.count <= 1


def test_tick_sweep_reads_the_clock_once_and_stamps_every_record(sqlite_engine: Engine, clock: FakeClock) -> None:
    """A sweep over several batches reads the clock once; every entry it writes carries that time."""
    for patient in ("a", "b", "c"):
        sqlite_engine.enroll(patient, T0, version=1)
        sqlite_engine.send(patient, "assess", T0, assess_data())
    clock.advance(timedelta(hours=2))
    with reads_during(clock) as reads:
        report = sqlite_engine.tick(T0 + 2 * WEEK, batch=1)
    assert reads.count == 1
    assert report.advanced == 3
    stamps = {sqlite_engine.history(patient)[-1].recorded_at for patient in ("a", "b", "c")}
    assert stamps == {NOW + timedelta(hours=2)}


def test_queries_do_not_read_the_clock(sqlite_engine: Engine, clock: FakeClock) -> None:
    """Status, plan, history and due record nothing, so they need no clock."""
    sqlite_engine.enroll("p", T0, version=1)
    with reads_during(clock) as reads:
        sqlite_engine.status("p")
        sqlite_engine.plan("p")
        sqlite_engine.history("p")
        sqlite_engine.due(T0)
    assert reads.count == 0
