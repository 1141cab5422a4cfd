"""The engine as the library's one door: no process or collector change it was not asked for,
pool settings, the database from the environment, batches, and the results it hands back."""

from __future__ import annotations

import gc
import json
import multiprocessing
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from pathway import DATABASE_ENV, Engine, FakeClock, InvalidCommand, bulk_allocation
from pathway.cli import main
from persistence import DEFAULT_URL
from tests.conftest import T0
from tests.helpers import assess_data, reassess_data

WEEK = timedelta(weeks=1)
# Thresholds no library default would pick, so any change by a library call shows.
OURS = (911, 13, 17)


def _cohort(engine: Engine, size: int = 6) -> None:
    for i in range(size):
        pid = f"p{i}"
        engine.enroll(pid, T0, version=1)
        engine.send(pid, "assess", T0, assess_data(pain=8))


def _lines(size: int = 4) -> list[str]:
    lines = []
    for i in range(size):
        lines.append(json.dumps({"patient": f"q{i}", "event": "enroll", "at": T0.isoformat(), "version": 1}))
        lines.append(json.dumps({"patient": f"q{i}", "event": "assess", "at": T0.isoformat(), "data": assess_data()}))
    return lines


@pytest.fixture
def our_thresholds() -> Iterator[tuple[int, int, int]]:
    previous = gc.get_threshold()
    gc.set_threshold(*OURS)
    try:
        yield OURS
    finally:
        gc.set_threshold(*previous)


@pytest.fixture
def no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt of the library to start worker processes fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a library call started worker processes")

    monkeypatch.setattr("pathway._replay.parallel_map", refuse)
    monkeypatch.setattr("pathway._engine.parallel_map", refuse)
    monkeypatch.setattr("pathway._ingest.worker_context", refuse)


@pytest.mark.usefixtures("no_processes")
def test_library_calls_start_no_process_by_default(sqlite_engine: Engine) -> None:
    """verify, tick and ingest run in the caller's process unless workers are asked for."""
    _cohort(sqlite_engine)
    assert sqlite_engine.verify().ok
    assert sqlite_engine.tick(T0 + 3 * WEEK).advanced == 6
    assert sqlite_engine.ingest(_lines()).accepted == 8
    assert multiprocessing.active_children() == []


@pytest.mark.usefixtures("no_processes")
def test_asking_for_workers_is_what_starts_them(sqlite_engine: Engine) -> None:
    """workers=2 reaches the process pool (refused here): the check above would see a default that forks."""
    _cohort(sqlite_engine)
    with pytest.raises(AssertionError, match="worker processes"):
        sqlite_engine.verify(workers=2)
    with pytest.raises(AssertionError, match="worker processes"):
        sqlite_engine.tick(T0 + 3 * WEEK, workers=2)


def test_library_calls_leave_the_collector_alone(sqlite_engine: Engine, our_thresholds: tuple[int, int, int]) -> None:
    """The cycle collector's thresholds are the caller's before, during and after bulk library calls."""
    _cohort(sqlite_engine)
    during: list[tuple[int, int, int]] = []
    sqlite_engine.verify(progress=lambda _entries: during.append(gc.get_threshold()))
    sqlite_engine.whatif({}, progress=lambda _entries: during.append(gc.get_threshold()))
    sqlite_engine.ingest(_lines())
    sqlite_engine.tick(T0 + 3 * WEEK)
    assert during and set(during) == {our_thresholds}
    assert gc.get_threshold() == our_thresholds


def test_bulk_allocation_is_shared_by_threads_and_nests(our_thresholds: tuple[int, int, int]) -> None:
    """Overlapping blocks in two threads keep the bulk setting until the last one ends, then restore the caller's."""
    entered, first_left, done = threading.Event(), threading.Event(), threading.Event()
    seen: list[tuple[int, int, int]] = []

    def other() -> None:
        with bulk_allocation():
            entered.set()
            first_left.wait(5)
            seen.append(gc.get_threshold())  # the main thread left its block: still bulk here
        done.set()

    with bulk_allocation():
        bulk = gc.get_threshold()
        assert bulk != our_thresholds
        worker = threading.Thread(target=other)
        worker.start()
        entered.wait(5)
        with bulk_allocation():  # nested in one thread
            assert gc.get_threshold() == bulk
        assert gc.get_threshold() == bulk
    first_left.set()
    done.wait(5)
    worker.join(5)
    assert seen == [bulk]
    assert gc.get_threshold() == our_thresholds


def test_the_command_line_still_tunes_its_bulk_commands(
    sqlite_url: str, our_thresholds: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`carepath verify` runs under bulk_allocation, and leaves the thresholds as they were."""
    during: list[tuple[int, int, int]] = []
    real_verify = Engine.verify

    def watching(self: Engine, *args: object, **kwargs: object) -> object:
        during.append(gc.get_threshold())
        return real_verify(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Engine, "verify", watching)
    with Engine(sqlite_url, FakeClock(T0 + WEEK)) as engine:
        _cohort(engine, 2)
    assert main(["--db", sqlite_url, "verify", "--json"]) == 0
    assert len(during) == 1 and during[0] != our_thresholds
    assert gc.get_threshold() == our_thresholds


def test_pool_size_and_timeout_reach_the_database_pool(sqlite_url: str, clock: FakeClock) -> None:
    """pool_size and pool_timeout are the pool's; a non-positive one is refused."""
    with Engine(sqlite_url, clock, pool_size=3, pool_timeout=7.5) as engine:
        pool = engine.store.engine.pool
        assert (pool.size(), pool.timeout()) == (3, 7.5)  # type: ignore[attr-defined]
    with pytest.raises(InvalidCommand, match="pool_size must be a positive number"):
        Engine(sqlite_url, clock, pool_size=0)
    with pytest.raises(InvalidCommand, match="pool_timeout"):
        Engine(sqlite_url, clock, pool_timeout=-1)


def test_an_engine_without_a_url_reads_the_environment(
    sqlite_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Engine() opens $CAREPATH_DB, like the command line, else the default database."""
    monkeypatch.setenv(DATABASE_ENV, sqlite_url)
    assert Engine(clock=clock).url == sqlite_url
    monkeypatch.delenv(DATABASE_ENV)
    assert Engine(clock=clock).url == DEFAULT_URL


def test_an_engine_is_a_context_manager(sqlite_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Leaving the with block closes the store's connections."""
    closed: list[bool] = []
    with Engine(sqlite_url, clock) as engine:
        engine.enroll("p1", T0, version=1)
        monkeypatch.setattr(engine.store, "dispose", lambda: closed.append(True))
    assert closed == [True]


def test_a_batch_writes_all_its_commands_or_none(sqlite_engine: Engine) -> None:
    """Commands staged in a batch are written together; a refused one leaves none of them written."""
    with sqlite_engine.batch() as batch:
        batch.enroll("a", T0, version=1)
        batch.send("a", "assess", T0, assess_data())
    assert sqlite_engine.status("a").state == "first_line"
    with pytest.raises(InvalidCommand), sqlite_engine.batch() as batch:
        batch.send("a", "reassess", T0 + 2 * WEEK, reassess_data())
        batch.enroll("b", T0, version=1, actor="")
    assert [e.seq for e in sqlite_engine.history("a")] == [1, 2]
    assert sqlite_engine.enrolments("b") == []


def test_history_entries_have_the_command_line_json(sqlite_engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    """Engine.history's entries give, with to_json, what `carepath history --json` prints."""
    _cohort(sqlite_engine, 1)
    entries = [e.to_json() for e in sqlite_engine.history("p0")]
    assert [e["event"] for e in entries] == ["enroll", "assess"]
    assert main(["--db", sqlite_engine.url, "history", "p0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == entries


def test_pictures_and_exports_come_through_the_engine(sqlite_engine: Engine) -> None:
    """diagram (a pathway's or an enrolment's) and export_fhir are engine methods."""
    _cohort(sqlite_engine, 1)
    assert sqlite_engine.diagram("mermaid", pathway="piriformis", version=1).startswith(b"stateDiagram")
    assert b"first_line" in sqlite_engine.diagram("dot", patient_id="p0")
    assert sqlite_engine.export_fhir("p0")["resourceType"] == "Bundle"
