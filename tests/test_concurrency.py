"""Several OS processes writing to one database at once, on every backend.

Each child process builds its own engine, waits at a barrier so the writes really overlap, and
reports what it was told (acknowledged seqs, clean refusals) for the parent to check against
the stored history.
"""

from __future__ import annotations

import multiprocessing
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest

from pathway import Engine, FakeClock, TimeWentBackwards
from persistence import (
    GENESIS,
    ConcurrentUpdate,
    DuplicatePatient,
    NewEntry,
    SnapshotUpdate,
    Store,
    entry_hash,
)
from tests.conftest import NOW, T0
from tests.helpers import assess_data, reassess_data

pytestmark = pytest.mark.slow

PROCESSES = 3
EVENTS_PER_PROCESS = 8
BARRIER_TIMEOUT_S = 60
# Within the first line's first four weeks: a reassessment with pain 5-7 keeps the patient there.
SAME_AT = T0 + timedelta(days=1)
OPTIMISTIC_RETRIES = 200
Result = tuple[str, Any]


# -- running work in several processes -------------------------------------------------------


def _child(work: Callable[..., Any], barrier: Any, queue: Any, index: int, args: tuple[Any, ...]) -> None:
    try:
        queue.put((index, ("ok", work(barrier, index, *args))))
    except BaseException:  # report anything, so the parent fails with the child's traceback
        queue.put((index, ("crash", traceback.format_exc())))


def in_processes(work: Callable[..., Any], *args: Any, count: int = PROCESSES) -> list[Any]:
    """Run `work(barrier, index, *args)` in `count` spawned processes; their results by index."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(count, timeout=BARRIER_TIMEOUT_S)
    queue = ctx.Queue()
    children = [ctx.Process(target=_child, args=(work, barrier, queue, i, args)) for i in range(count)]
    for child in children:
        child.start()
    outcomes = dict(queue.get(timeout=BARRIER_TIMEOUT_S * 2) for _ in children)
    for child in children:
        child.join(timeout=30)
    crashes = [detail for kind, detail in outcomes.values() if kind == "crash"]
    assert not crashes, crashes[0]
    return [outcomes[i][1] for i in range(count)]


def _engine(url: str, patient: str | None = None) -> Engine:
    """An engine connected and warmed up (definition built, chart stepped once, nothing written),
    so that after the barrier the processes really write at the same moment."""
    engine = Engine(url, FakeClock(NOW))
    engine.store.ensure_schema()
    if patient is not None and engine.store.exists(patient):
        current = engine.status(patient)
        payload = current.definition.validate("reassess", reassess_data())
        current.definition.apply(current.configuration, current.context, "reassess", payload, SAME_AT)
    return engine


# -- work done in the children (module level, so spawn can import it) ---------------------------


def _migrate(barrier: Any, index: int, url: str) -> str:
    store = Store(url)
    barrier.wait()
    if index % 2 == 0:
        store.migrate()
    else:
        store.count_patients()  # first use creates the schema too
    store.dispose()
    return "ready"


def _send_reassessments(barrier: Any, index: int, url: str, patient: str, count: int) -> list[Result]:
    engine = _engine(url, patient)
    barrier.wait()
    results: list[Result] = []
    for _ in range(count):
        # One clinical time for every writer: each event is valid whatever the interleaving.
        try:
            sent = engine.send(patient, "reassess", SAME_AT, reassess_data(pain=5 + index % 3), actor=f"w{index}")
            assert sent.entry is not None
            results.append(("ack", sent.entry.seq))
        except TimeWentBackwards:
            results.append(("backwards", None))
        except ConcurrentUpdate:
            results.append(("conflict", None))
    engine.store.dispose()
    return results


def _append_optimistically(barrier: Any, index: int, url: str, patient: str, count: int) -> list[Result]:
    """Appends based on a snapshot read before the write transaction: only the revision check guards them."""
    store = Store(url)
    store.ensure_schema()
    barrier.wait()
    results: list[Result] = []
    conflicts = 0
    for n in range(count):
        for attempt in range(OPTIMISTIC_RETRIES):
            stale = store.snapshot(patient, "piriformis")  # no lock: another writer may move on before we write
            if n == attempt == 0:
                barrier.wait()  # every writer holds the same revision: all but one first writes must conflict
            update = SnapshotUpdate(stale.configuration, stale.context, stale.state, stale.next_due_at, SAME_AT)
            try:
                with store.transaction() as tx:
                    seq = tx.append(stale, _raw_entry(f"w{index}"), update, NOW).seq
            except ConcurrentUpdate:
                conflicts += 1
            else:  # acknowledged only once the transaction has committed
                results.append(("ack", seq))
                break
        else:
            results.append(("gave_up", None))
    store.dispose()
    return [*results, ("conflicts", conflicts)]


def _raw_entry(actor: str) -> NewEntry:
    config = ["treatment", "line", "first_line", "monitoring", "scheduled"]
    return NewEntry("reassess", {"pain": 5.0}, 1, SAME_AT, actor, config, config, [], None, None)


def _enroll(barrier: Any, index: int, url: str, patient: str) -> str:
    engine = _engine(url)
    barrier.wait()
    try:
        engine.enroll(patient, T0, actor=f"w{index}", version=1)
        return "enrolled"
    except DuplicatePatient:
        return "duplicate"
    finally:
        engine.store.dispose()


def _send_keyed(barrier: Any, index: int, url: str, patient: str, key: str) -> tuple[int, bool]:
    engine = _engine(url, patient)
    barrier.wait()
    sent = engine.send(patient, "reassess", SAME_AT, reassess_data(), idempotency_key=key)
    engine.store.dispose()
    assert sent.entry is not None
    return sent.entry.seq, sent.duplicate


# -- the tests ---------------------------------------------------------------------------------


def _patient_in_first_line(url: str, patient: str) -> None:
    engine = Engine(url, FakeClock(NOW))
    engine.enroll(patient, T0, version=1)
    engine.send(patient, "assess", T0, assess_data(pain=8))
    engine.store.dispose()


def _chain_ok(url: str, patient: str) -> list[int]:
    """The patient's seqs, after checking every hash and link of the stored chain."""
    store = Store(url)
    entries = store.history(patient, "piriformis")
    previous = GENESIS
    for entry in entries:
        assert entry.prev_hash == previous, f"seq {entry.seq} is not linked to its predecessor"
        assert entry_hash(entry.as_row()) == entry.hash, f"seq {entry.seq} does not match its hash"
        previous = entry.hash
    assert store.snapshot(patient, "piriformis").last_hash == previous
    store.dispose()
    return [entry.seq for entry in entries]


def test_schema_creation_races_safely(db_url: str) -> None:
    """Processes migrating and first-using a fresh database at once all succeed."""
    assert in_processes(_migrate, db_url) == ["ready"] * PROCESSES
    store = Store(db_url)
    assert store.count_patients() == 0
    store.dispose()


def test_concurrent_senders_lose_and_duplicate_nothing(db_url: str) -> None:
    """Every acknowledged event is stored once under its seq, by its writer; seqs are gapless; the chain holds."""
    _patient_in_first_line(db_url, "p1")
    outcomes: Sequence[list[Result]] = in_processes(_send_reassessments, db_url, "p1", EVENTS_PER_PROCESS)
    acked = sorted(seq for results in outcomes for kind, seq in results if kind == "ack")
    refusals = [kind for results in outcomes for kind, _ in results if kind != "ack"]
    assert set(refusals) <= {"conflict"}, "a clean refusal may only be a conflict that outlasted the retries"
    assert len(acked) == len(set(acked)), "two writers were acknowledged with the same seq"
    assert len(acked) + len(refusals) == PROCESSES * EVENTS_PER_PROCESS
    seqs = _chain_ok(db_url, "p1")
    assert seqs == list(range(1, len(seqs) + 1))
    assert seqs[2:] == acked, "the history differs from what the writers were told"
    store = Store(db_url)
    by_seq = {entry.seq: entry for entry in store.history("p1", "piriformis")}
    store.dispose()
    for index, results in enumerate(outcomes):
        for kind, seq in results:
            if kind == "ack":
                assert (by_seq[seq].actor, by_seq[seq].payload["pain"]) == (f"w{index}", 5 + index % 3)


def test_optimistic_writers_without_locks_are_caught_by_the_revision(db_url: str) -> None:
    """Writers that skip the row lock still lose nothing: stale revisions are refused and retried."""
    _patient_in_first_line(db_url, "p1")
    outcomes = in_processes(_append_optimistically, db_url, "p1", EVENTS_PER_PROCESS)
    acked = sorted(seq for results in outcomes for kind, seq in results if kind == "ack")
    refused = [kind for results in outcomes for kind, _ in results if kind == "gave_up"]
    assert len(acked) == len(set(acked)) and len(acked) + len(refused) == PROCESSES * EVENTS_PER_PROCESS
    assert sum(n for results in outcomes for kind, n in results if kind == "conflicts") >= PROCESSES - 1
    assert _chain_ok(db_url, "p1")[2:] == acked
    store = Store(db_url)
    assert store.snapshot("p1", "piriformis").revision == 2 + len(acked)
    store.dispose()


def test_racing_enrolments_admit_exactly_one(db_url: str) -> None:
    """Processes enrolling one id at once: one succeeds, the others get DuplicatePatient."""
    outcomes = in_processes(_enroll, db_url, "p1")
    assert sorted(outcomes) == ["duplicate"] * (PROCESSES - 1) + ["enrolled"]
    assert _chain_ok(db_url, "p1") == [1]


def test_racing_idempotent_retries_write_one_entry(db_url: str) -> None:
    """Processes sending one idempotency key at once share one entry and one seq."""
    _patient_in_first_line(db_url, "p1")
    outcomes = in_processes(_send_keyed, db_url, "p1", "visit-42")
    assert {seq for seq, _ in outcomes} == {3}
    assert sorted(duplicate for _, duplicate in outcomes) == [False] + [True] * (PROCESSES - 1)
    assert _chain_ok(db_url, "p1") == [1, 2, 3]
