"""The store's contract, run unchanged on SQLite and PostgreSQL through the `db_url` fixture."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pathway.cli import main
from persistence import (
    GENESIS,
    AuditEntry,
    ConcurrentUpdate,
    DuplicatePatient,
    IdempotencyConflict,
    NewEntry,
    Snapshot,
    SnapshotUpdate,
    StorageUnavailable,
    Store,
    Transaction,
    UnknownPatient,
    entry_hash,
)
from tests.conftest import NOW, T0

FIRST_LINE = ["treatment", "line", "first_line", "monitoring", "scheduled"]
# Floats that must not come back as ints (4.0) or lose digits (4.5, 0.1), with nesting and non-ASCII text.
AWKWARD_JSON: dict[str, Any] = {
    "pain": 4.5,
    "function": 4.0,
    "count": 4,
    "ratio": 0.1,
    "nested": {"values": [1.0, 2, -0.0, 1e-7], "flag": True, "none": None},
    "note": "douleur fessière",
}


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.dispose()


def new_entry(
    event: str = "reassess", at: datetime = T0, payload: dict[str, Any] | None = None, key: str | None = None
) -> NewEntry:
    return NewEntry(
        event=event,
        payload=payload if payload is not None else {"pain": 5},
        payload_schema=1,
        at=at,
        actor="tester",
        config_before=list(FIRST_LINE),
        config_after=list(FIRST_LINE),
        transitions=[{"source": "scheduled", "target": "scheduled", "event": event}],
        decision={"rule": "reassess.stay", "values": {"improvement": 0.25, "weeks_in_line": 1.0}},
        idempotency_key=key,
    )


def new_update(
    at: datetime = T0,
    next_due_at: datetime | None = None,
    state: str = "first_line",
    context: dict[str, Any] | None = None,
) -> SnapshotUpdate:
    return SnapshotUpdate(
        configuration=list(FIRST_LINE),
        context=context if context is not None else {"line_baseline": 8.0},
        state=state,
        next_due_at=next_due_at,
        last_event_at=at,
    )


def enroll(
    store: Store, patient_id: str, at: datetime = T0, next_due_at: datetime | None = None, state: str = "first_line"
) -> AuditEntry:
    def work(tx: Transaction) -> AuditEntry:
        return tx.enroll(
            patient_id, "piriformis", 1, new_update(at, next_due_at, state), new_entry("enroll", at, {}), NOW
        )

    return store.run(work)


def append(
    store: Store, patient_id: str, entry: NewEntry | None = None, update: SnapshotUpdate | None = None
) -> AuditEntry:
    def work(tx: Transaction) -> AuditEntry:
        snapshot = tx.load(patient_id, "piriformis")
        return tx.append(snapshot, entry or new_entry(), update or new_update(), NOW)

    return store.run(work)


def chain_is_valid(entries: list[AuditEntry]) -> bool:
    previous = GENESIS
    for seq, entry in enumerate(entries, start=1):
        row = entry.as_row()
        if entry.seq != seq or entry.prev_hash != previous or entry_hash(row) != entry.hash:
            return False
        previous = entry.hash
    return True


# -- enrolment and appends ---------------------------------------------------------------


def test_enroll_creates_snapshot_and_first_entry(store: Store) -> None:
    """Enrolment writes revision 1 and seq 1 chained on the genesis hash."""
    first = enroll(store, "p1")
    snap = store.snapshot("p1", "piriformis")
    assert (first.seq, first.prev_hash) == (1, GENESIS)
    assert (snap.revision, snap.last_seq, snap.last_hash) == (1, 1, first.hash)
    assert (snap.pathway, snap.version, snap.state, snap.configuration) == ("piriformis", 1, "first_line", FIRST_LINE)
    assert snap.created_at == snap.updated_at == NOW


def test_append_advances_sequence_revision_and_chain(store: Store) -> None:
    """Each append takes the next seq and revision and chains on the previous hash."""
    first = enroll(store, "p1")
    second = append(store, "p1")
    third = append(store, "p1")
    assert [second.seq, third.seq] == [2, 3]
    assert (second.prev_hash, third.prev_hash) == (first.hash, second.hash)
    snap = store.snapshot("p1", "piriformis")
    assert (snap.revision, snap.last_seq, snap.last_hash) == (3, 3, third.hash)


def test_several_appends_in_one_transaction_commit_together(store: Store) -> None:
    """Appends buffered in one transaction are written with consecutive seqs."""
    enroll(store, "p1")

    def work(tx: Transaction) -> None:
        for _ in range(3):
            tx.append(tx.load("p1", "piriformis"), new_entry(), new_update(), NOW)

    store.run(work)
    assert [e.seq for e in store.history("p1", "piriformis")] == [1, 2, 3, 4]
    assert store.snapshot("p1", "piriformis").revision == 4


def test_store_written_chain_is_valid(store: Store) -> None:
    """Recomputing every hash from the stored rows reproduces the chain."""
    enroll(store, "p1")
    enroll(store, "p2")
    for day in range(1, 4):
        append(store, "p1", new_entry(at=T0 + timedelta(days=day), payload=dict(AWKWARD_JSON)))
    assert chain_is_valid(store.history("p1", "piriformis"))
    assert chain_is_valid(store.history("p2", "piriformis"))


def test_state_since_moves_only_when_the_state_changes(store: Store) -> None:
    """state_since keeps the entry time of the state until the state name changes."""
    enroll(store, "p1", at=T0)
    append(store, "p1", new_entry(at=T0 + timedelta(days=1)), new_update(T0 + timedelta(days=1)))
    assert store.snapshot("p1", "piriformis").state_since == T0
    later = T0 + timedelta(days=2)
    append(store, "p1", new_entry(at=later), new_update(later, state="second_line"))
    assert store.snapshot("p1", "piriformis").state_since == later


# -- round trips ---------------------------------------------------------------------------


def test_datetimes_come_back_aware_utc(store: Store) -> None:
    """Times written in another zone come back as the same instant, in UTC."""
    paris = timezone(timedelta(hours=2))
    at = datetime(2026, 1, 5, 11, 30, 15, 123456, tzinfo=paris)
    enroll(store, "p1", at=at, next_due_at=at + timedelta(weeks=2))
    snap = store.snapshot("p1", "piriformis")
    entry = store.history("p1", "piriformis")[0]
    for value in (snap.state_since, snap.last_event_at, snap.next_due_at, snap.created_at, entry.at, entry.recorded_at):
        assert value is not None
        assert value.tzinfo is not None and value.utcoffset() == timedelta(0)
    assert entry.at == at and entry.at.hour == 9 and entry.at.microsecond == 123456
    assert snap.next_due_at == at + timedelta(weeks=2)


def test_json_round_trips_exactly(store: Store) -> None:
    """Payload, context and decision come back equal, floats staying floats."""
    enroll(store, "p1")
    entry = new_entry(payload=dict(AWKWARD_JSON))
    append(store, "p1", entry, new_update(context=dict(AWKWARD_JSON)))
    stored = store.history("p1", "piriformis")[-1]
    snap = store.snapshot("p1", "piriformis")
    assert stored.payload == AWKWARD_JSON and snap.context == AWKWARD_JSON
    assert isinstance(stored.payload["function"], float) and isinstance(stored.payload["count"], int)
    assert isinstance(snap.context["function"], float)
    assert stored.decision == entry.decision and stored.transitions == entry.transitions
    assert stored.config_before == FIRST_LINE


# -- reads -----------------------------------------------------------------------------------


def test_history_until_stops_at_clinical_time(store: Store) -> None:
    """history(until=T) returns only entries whose `at` is at or before T."""
    enroll(store, "p1", at=T0)
    for day in (1, 2, 3):
        append(store, "p1", new_entry(at=T0 + timedelta(days=day)))
    assert [e.seq for e in store.history("p1", "piriformis", until=T0 + timedelta(days=2))] == [1, 2, 3]
    assert [e.seq for e in store.history("p1", "piriformis", until=T0 - timedelta(days=1))] == []


def test_iter_entries_streams_by_patient_then_seq(store: Store) -> None:
    """iter_entries orders by patient then seq, and filters by patient."""
    enroll(store, "b")
    enroll(store, "a")
    append(store, "b")
    append(store, "a")
    assert [(e.patient_id, e.seq) for e in store.iter_entries(batch=1)] == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    assert [(e.patient_id, e.seq) for e in store.iter_entries("b")] == [("b", 1), ("b", 2)]
    assert store.count_entries() == 4


def test_iter_snapshots_and_count_by_state(store: Store) -> None:
    """Snapshots stream in patient order, filter by state, and are counted per state."""
    enroll(store, "c", state="resolved")
    enroll(store, "a")
    enroll(store, "b")
    assert [s.patient_id for s in store.iter_snapshots(batch=1)] == ["a", "b", "c"]
    assert [s.patient_id for s in store.iter_snapshots("resolved")] == ["c"]
    assert store.count_by_state() == {"first_line": 2, "resolved": 1}
    assert store.count_patients() == 3
    assert store.patient_ids() == ["a", "b", "c"]


def test_due_ids_is_a_range_over_next_due_at(store: Store) -> None:
    """due_ids lists patients with next_due_at <= at, earliest first, honouring the limit."""
    enroll(store, "late", next_due_at=T0 + timedelta(weeks=3))
    enroll(store, "early", next_due_at=T0 + timedelta(weeks=1))
    enroll(store, "exact", next_due_at=T0 + timedelta(weeks=2))
    enroll(store, "never")
    at = T0 + timedelta(weeks=2)
    assert store.due_ids(at) == [("early", "piriformis"), ("exact", "piriformis")]
    assert store.due_ids(at, limit=1) == [("early", "piriformis")]
    assert [s.patient_id for s in store.due_snapshots(at)] == ["early", "exact"]


def test_claim_due_returns_due_snapshots_in_a_transaction(store: Store) -> None:
    """claim_due gives up to `limit` due snapshots, earliest first."""
    for n in range(5):
        enroll(store, f"p{n}", next_due_at=T0 + timedelta(days=n))
    with store.transaction() as tx:
        claimed = tx.claim_due(T0 + timedelta(days=3), 3)
    assert [s.patient_id for s in claimed] == ["p0", "p1", "p2"]
    assert all(isinstance(s, Snapshot) for s in claimed)


def test_find_entry_by_idempotency_key(store: Store) -> None:
    """An entry written with a key is found by it; an unused key finds nothing."""
    enroll(store, "p1")
    written = append(store, "p1", new_entry(key="k1"))
    with store.transaction() as tx:
        assert tx.find_entry("p1", "piriformis", "k1") == written
        assert tx.find_entry("p1", "piriformis", "k2") is None
        assert tx.find_entry("p2", "piriformis", "k1") is None


def test_load_many_returns_only_existing_patients(store: Store) -> None:
    """load_many skips unknown ids instead of failing."""
    enroll(store, "p1")
    with store.transaction() as tx:
        found = tx.load_many(["p1", "ghost"])
    assert list(found) == [("p1", "piriformis")]


# -- refusals -----------------------------------------------------------------------------


def test_duplicate_enrolment_raises_and_writes_nothing(store: Store) -> None:
    """Enrolling an enrolled id raises DuplicatePatient and adds no entry."""
    enroll(store, "p1")
    with pytest.raises(DuplicatePatient) as caught:
        enroll(store, "p1")
    assert caught.value.patient_id == "p1"
    assert store.count_entries() == 1 and store.snapshot("p1", "piriformis").revision == 1


def test_duplicate_enrolment_within_one_transaction_raises(store: Store) -> None:
    """Enrolling the same id twice in one transaction raises DuplicatePatient, writing neither."""

    def work(tx: Transaction) -> None:
        for _ in range(2):
            tx.enroll("p1", "piriformis", 1, new_update(), new_entry("enroll", T0, {}), NOW)

    with pytest.raises(DuplicatePatient):
        store.run(work)
    assert not store.exists("p1") and store.count_entries() == 0


def test_unknown_patient_raises_everywhere(store: Store) -> None:
    """Reads and loads of an id never enrolled raise UnknownPatient."""
    with pytest.raises(UnknownPatient):
        store.snapshot("ghost", "piriformis")
    with pytest.raises(UnknownPatient):
        store.history("ghost", "piriformis")
    with pytest.raises(UnknownPatient) as caught:
        append(store, "ghost")
    assert caught.value.patient_id == "ghost"
    assert not store.exists("ghost")


def test_stale_revision_raises_and_writes_nothing(store: Store) -> None:
    """An append based on a snapshot another writer has since updated is refused whole."""
    enroll(store, "p1")
    with store.transaction() as tx:
        stale = tx.load("p1", "piriformis")
    store.execute_raw("UPDATE carepath_patients SET revision = revision + 1 WHERE patient_id = :p", {"p": "p1"})
    with pytest.raises(ConcurrentUpdate) as caught, store.transaction() as tx:
        tx.append(stale, new_entry(), new_update(), NOW)
    assert (caught.value.patient_id, caught.value.expected_revision) == ("p1", 1)
    assert store.count_entries() == 1 and store.snapshot("p1", "piriformis").last_seq == 1


def test_stale_sequence_raises_and_writes_nothing(store: Store) -> None:
    """An append whose seq another writer already took is a conflict, never a driver error."""
    enroll(store, "p1")
    with store.transaction() as tx:
        stale = tx.load("p1", "piriformis")
    append(store, "p1")
    with pytest.raises(ConcurrentUpdate), store.transaction() as tx:
        tx.append(stale, new_entry(), new_update(), NOW)
    assert [e.seq for e in store.history("p1", "piriformis")] == [1, 2]
    assert store.snapshot("p1", "piriformis").revision == 2


def test_reused_key_in_one_transaction_is_a_conflict(store: Store) -> None:
    """Two appends with the same idempotency key in one transaction raise IdempotencyConflict."""
    enroll(store, "p1")

    def work(tx: Transaction) -> None:
        tx.append(tx.load("p1", "piriformis"), new_entry(key="k"), new_update(), NOW)
        tx.append(tx.load("p1", "piriformis"), new_entry(key="k"), new_update(), NOW)

    with pytest.raises(IdempotencyConflict):
        store.run(work)
    assert store.count_entries() == 1


def test_key_already_stored_is_a_conflict_not_a_driver_error(store: Store) -> None:
    """Writing a stored idempotency key again hits the unique index, reported as ConcurrentUpdate."""
    enroll(store, "p1")
    append(store, "p1", new_entry(key="k"))
    with pytest.raises(ConcurrentUpdate):
        append(store, "p1", new_entry(key="k"))
    assert store.count_entries() == 2


def test_run_retries_a_conflict_then_succeeds(store: Store) -> None:
    """Store.run repeats the work after a ConcurrentUpdate and returns its result."""
    enroll(store, "p1")
    attempts: list[int] = []

    def work(tx: Transaction) -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConcurrentUpdate("p1", 1)
        return tx.append(tx.load("p1", "piriformis"), new_entry(), new_update(), NOW).seq

    assert store.run(work) == 2
    assert len(attempts) == 2


def test_run_gives_up_after_bounded_retries(store: Store) -> None:
    """A conflict that never clears surfaces as ConcurrentUpdate after retries + 1 attempts."""
    attempts: list[int] = []

    def work(tx: Transaction) -> None:
        attempts.append(1)
        raise ConcurrentUpdate("p1", 1)

    with pytest.raises(ConcurrentUpdate):
        store.run(work, retries=2)
    assert len(attempts) == 3


def test_appended_records_are_the_records_read_back(store: Store) -> None:
    """The entry `append` returns and the snapshot it stages (built field by field) are whole
    records, their fields in declaration order, equal to what is read back once committed."""
    enroll(store, "p1")

    def work(tx: Transaction) -> tuple[AuditEntry, Snapshot]:
        written = tx.append(tx.load("p1", "piriformis"), new_entry(), new_update(), NOW)
        return written, tx.load("p1", "piriformis")

    written, staged = store.run(work)
    assert list(vars(written)) == [f.name for f in dataclasses.fields(AuditEntry)]
    assert list(vars(staged)) == [f.name for f in dataclasses.fields(Snapshot)]
    assert written == store.history("p1", "piriformis")[-1]
    assert staged == store.snapshot("p1", "piriformis")


def test_error_inside_a_transaction_rolls_everything_back(store: Store) -> None:
    """An exception raised by the work discards the enrolment and entries staged before it."""

    def work(tx: Transaction) -> None:
        tx.enroll("p1", "piriformis", 1, new_update(), new_entry("enroll", T0, {}), NOW)
        tx.flush()
        raise RuntimeError("work failed")

    with pytest.raises(RuntimeError):
        store.run(work)
    assert not store.exists("p1") and store.count_entries() == 0


# -- schema and driver errors ------------------------------------------------------------------


def test_migrate_is_idempotent_and_keeps_data(db_url: str) -> None:
    """Running migrate again on a populated schema changes nothing."""
    first = Store(db_url)
    first.migrate()
    enroll(first, "p1")
    first.migrate()
    first.dispose()
    second = Store(db_url)
    second.migrate()
    assert second.snapshot("p1", "piriformis").revision == 1
    second.dispose()


def test_schema_is_created_on_first_read(db_url: str) -> None:
    """A read on a fresh database creates the schema instead of failing."""
    store = Store(db_url)
    assert store.count_patients() == 0 and store.due_ids(NOW) == []
    store.dispose()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://postgres@127.0.0.1:1/test",
        "not a url",
        "nosuchdb://host/db",
        "sqlite+nosuchdriver:///carepath.db",
        "sqlite:////nonexistent-directory/carepath.db",
    ],
)
def test_bad_or_unreachable_database_is_storage_unavailable(url: str) -> None:
    """A bad URL or unreachable server raises StorageUnavailable, never a driver exception."""
    with pytest.raises(StorageUnavailable) as caught:
        Store(url).count_patients()
    assert "\n" not in str(caught.value)


def test_postgresql_url_spellings_are_normalised() -> None:
    """Plain postgresql:// and postgres:// URLs use psycopg 3."""
    assert Store("postgres://u@h/db").url == "postgresql+psycopg://u@h/db"
    assert Store("postgresql://u@h/db").dialect == "postgresql"


def test_claimed_rows_are_skipped_by_a_concurrent_claim(pg_schema_url: str) -> None:
    """On PostgreSQL a second transaction's claim skips the rows the first holds (SKIP LOCKED)."""
    store = Store(pg_schema_url)
    for n in range(4):
        enroll(store, f"p{n}", next_due_at=T0 + timedelta(days=n))
    at = T0 + timedelta(days=10)
    with store.transaction() as first:
        held = [s.patient_id for s in first.claim_due(at, 2)]
        with store.transaction() as second:
            other = [s.patient_id for s in second.claim_due(at, 10)]
    assert (held, other) == (["p0", "p1"], ["p2", "p3"])
    store.dispose()


# -- the command line on every backend ----------------------------------------------------------

ASSESS = '{"findings": ["buttock_pain", "sitting_aggravation", "fair_test", "pace_sign"], "pain": 8, ' + (
    '"fasciculations": "present", "red_flags": []}'
)


def test_every_command_runs_on_the_backend(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The commands of the CLI contract succeed through --db on each backend, the schema made on first use."""
    events = tmp_path / "events.jsonl"
    events.write_text('{"patient": "q1", "event": "enroll", "at": "2026-01-05T09:00:00+00:00"}\n')
    policy = tmp_path / "policy.json"
    policy.write_text("{}")
    at = "2026-01-05T09:00:00+00:00"
    commands = [
        ["enroll", "p1", "--version", "1", "--at", at],
        ["send", "p1", "assess", "--at", at, "--data", ASSESS, "--idempotency-key", "k1"],
        ["send", "p1", "assess", "--at", at, "--data", ASSESS, "--idempotency-key", "k1"],
        ["tick", "--at", "2026-01-26T09:00:00+00:00"],
        ["status", "p1"],
        ["history", "p1"],
        ["explain", "p1"],
        ["replay", "p1", "--until", "2026-01-20T00:00:00+00:00"],
        ["verify"],
        ["due", "--at", "2026-03-01T00:00:00+00:00"],
        ["list", "--state", "first_line"],
        ["diagram", "--patient", "p1", "--format", "mermaid"],
        ["import", str(events)],
        ["export-fhir", "p1"],
        ["whatif", "--policy", str(policy)],
        ["worker", "--once", "--at", "2026-03-01T00:00:00+00:00"],
        ["migrate"],
    ]
    for command in commands:
        assert main(["--db", db_url, *command]) == 0, (command, capsys.readouterr().err)
    capsys.readouterr()
    assert main(["--db", db_url, "status", "p1", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["state"], status["revision"], status["configuration"][-1]) == ("first_line", 4, "overdue")
    assert main(["--db", db_url, "verify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
